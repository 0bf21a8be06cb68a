"""American English phonemes (IPA) of normalised transcripts, through espeak-ng, offline.

Why phonemes at all: English spelling says how a word sounds only loosely ("though", "through", "tough"), and a
small model trained on one speaker's 13,100 sentences has to learn those rules from the audio alone; phonemes hand
it the pronunciation. Why espeak-ng through phonemizer: the standard front end of open TTS recipes (VITS, Piper),
and the ``espeakng-loader`` wheel ships the espeak-ng library *and* its data, so nothing is installed from the
system or downloaded. Deterministic: the same text gives the same phonemes.

Abbreviations that LJ's transcripts keep ("Mr.", "Dr.", "St.") reach espeak as the words the reader says
(hybridlm.spelling.expand_abbreviations): espeak pronounces "dr." right but reads its period as the end of a sentence,
a pause the speaker never makes.

Output keeps stress (ˈ ˌ) and length (ː) marks and the prosody punctuation ``, . ; : ? !``; espeak drops
``'`` and ``-``. hybridlm.text maps each code point to an id (``tts_model.frontend: phonemes``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

from hybridlm.spelling import expand_abbreviations

LANGUAGE = "en-us"


@lru_cache(maxsize=1)
def _backend():
    try:
        import espeakng_loader
        from phonemizer.backend import EspeakBackend
        from phonemizer.backend.espeak.wrapper import EspeakWrapper
    except ImportError as exc:
        raise ValueError(f"tts_model.frontend: phonemes needs the packages phonemizer and espeakng-loader "
                         f"({exc}); `make install` installs them, or set tts_model.frontend: chars") from exc
    EspeakWrapper.set_library(espeakng_loader.get_library_path())
    EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
    quiet = logging.getLogger("hybridlm.phonemes")  # phonemizer warns on every batch whose word count changes
    quiet.setLevel(logging.ERROR)                  # (espeak reads "1963" as four words): expected, not a problem
    return EspeakBackend(LANGUAGE, preserve_punctuation=True, with_stress=True, logger=quiet)


def phonemize(texts: Sequence[str]) -> list[str]:
    """IPA strings of ``texts`` (already normalised: hybridlm.text.normalize), one per text, in one espeak pass.

    Batched on purpose: a call costs espeak's start-up, so a training set (13,100 LJ sentences: about 6 s) is
    phonemised in one call, not one per sentence."""
    spoken = [expand_abbreviations(text) for text in texts if text]  # phonemizer drops empty lines: keep them out
    ipa = iter(_backend().phonemize(spoken, strip=True) if spoken else [])
    return [" ".join(next(ipa).split()) if text else "" for text in texts]
