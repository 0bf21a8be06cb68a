"""A wrong text of the same shape: every sounding unit swapped for a different one, layout kept.

Why: the val loss with the text minus the loss without it (the conditioning gap) is mostly "some text of about the
right length" against "no text": a model that only counts characters earns it. The loss with a *wrong* text of the
same shape minus the loss with the right one (the content gap, stages/evaluate_tts.py) is what reading the letters
is worth. So the wrong text keeps everything a counting model could use: its length, where the spaces and the
punctuation are (pauses), and — when texts carry per-unit durations — those durations, because only the ids are
swapped, one for one.

Which units are swapped, and for what:

- ``chars``: every letter, for a letter of ANOTHER sound class of the synthetic corpus
  (hybridlm.data.synthetic.LETTER_CLASSES). There the audio of a letter is its class's tone, so a same-class swap
  ("b" for "p") would describe the same audio; across classes the described audio really differs. The classes group
  letters roughly by how they sound (``ae``, ``io``, ``bpmw``, ``dtnl``, ``gkcq``, ``fvsz``, ...), so on real
  speech the swap is also a letter that sounds different.
- ``phonemes``: every phoneme symbol, for a different phoneme symbol; stress and length marks, spaces and
  punctuation stay.

Deterministic: sentence ``i`` draws from its own ``(seed, i)`` stream, so a sentence's wrong text does not depend on
the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridlm.data.synthetic import LETTER_CLASSES
from hybridlm.text import PHONEME_SYMBOLS, PUNCTUATION, TextVocab

PROSODY_MARKS = " " + PUNCTUATION + "ˈˌː\u0329"  # kept as they are: they say where and how long, not what


def sound_groups(vocab: TextVocab) -> list[str]:
    """The swappable units of ``vocab``, grouped: a unit is replaced by a unit of another group."""
    if vocab.frontend == "chars":
        return [letters for letters, *_ in LETTER_CLASSES]
    return [unit for unit in PHONEME_SYMBOLS if unit not in PROSODY_MARKS]


def _replacements(vocab: TextVocab) -> dict[int, np.ndarray]:
    """Text id -> the ids it may be replaced by (every swappable unit of the other groups)."""
    groups = [[vocab.unit_id(unit) for unit in group] for group in sound_groups(vocab)]
    return {unit: np.array([other for g, members in enumerate(groups) if g != k for other in members])
            for k, group in enumerate(groups) for unit in group}


def wrong_texts(texts: Sequence[Sequence[int]], vocab: TextVocab, seed: int) -> list[list[int]]:
    """Each id list of ``texts`` with every swappable unit replaced (uniformly, from sentence ``i``'s own
    ``(seed, i)`` stream) by one of another sound group; all other ids (spaces, punctuation, marks, pad, unknown)
    unchanged. Same lengths, so per-unit durations still apply."""
    table = _replacements(vocab)
    out = []
    for index, ids in enumerate(texts):
        rng = np.random.default_rng([seed, index])
        out.append([int(rng.choice(table[i])) if i in table else int(i) for i in ids])
    return out
