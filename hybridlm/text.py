"""Text front end for text-conditioned speech: transcript normalisation, then characters or phonemes, as ids.

Input is LJ Speech's *normalized* transcription (metadata field 3: numbers and currency already spelled out) or any
text to read aloud (a `say` prompt, a gallery prompt). What is decided, and why:

- **Numbers, money, ``&`` and ``%`` spelled out as field 3 spells them** ("1963" -> "nineteen sixty-three", "$5" ->
  "five dollars": hybridlm.spelling), so that a typed prompt reaches either front end in the form the model was
  trained on. Each of these rules needs a character outside the vocabulary (a digit, ``$ £ & %``), so text the
  vocabulary already covers — every field-3 line, the synthetic corpus — is unchanged, and so is ``VERSION``: a
  checkpoint trained before reads every such text the same.

- **Lower case.** Case does not change how a sentence is read (LJ's field 3 spells acronyms as words or with
  periods, e.g. "F.B.I."), so upper and lower case would only split each letter's training examples in two.
- **Accents removed** (Unicode NFKD, combining marks dropped: "Zürich" -> "zurich", "café" -> "cafe"). The 21
  accented letters in the 13,100 lines are a handful of French/German names that the reader anglicises; extra
  symbols with a few examples each could not be learned anyway.
- **Prosody punctuation kept**: ``, . ; : ? !`` mark pauses and intonation, ``'`` and ``-`` sit inside words
  ("prisoner's", "twenty-two"). Typographic apostrophes and dashes map to their ASCII forms.
- **Silent marks dropped**: ``"`` and typographic double quotes (the reader *says* "quote ... end quote", which
  field 3 already spells out), parentheses and square brackets (no sound of their own; the text inside is kept).
- Whitespace collapses to single spaces; leading/trailing spaces are removed.

Two front ends (``tts_model.frontend``) turn the normalised text into *units*, one id per unit:

- ``chars`` (default): its characters. Ids: 0 = padding, 1 = unknown, then space, ``a``-``z`` and the kept
  punctuation (37 in all).
- ``phonemes``: its American English IPA from espeak-ng (hybridlm.phonemes), one unit per code point (stress and
  length marks included), 54 symbols plus pad and unknown: the inventory espeak produces over the full LJ Speech
  metadata.

The vocabularies are *fixed* (not built from a corpus), so every corpus — LJ Speech, the synthetic one, a user's
``say`` prompt — maps the same unit to the same id, and a checkpoint stores its vocabulary (``to_dict``) with the
version of these rules. Any other unit (``#``, ``€``, a non-Latin letter) maps to the unknown id and is counted
(:meth:`TextVocab.unknown`), never silently dropped. On the full LJ Speech 1.1 metadata.csv the count is 0 for
both front ends.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridlm.spelling import spell_out

VERSION = "chars-v1"  # names the normalisation rules + character inventory; bump it when either changes
PAD_ID = 0
UNK_ID = 1
PUNCTUATION = "',-.:;?!"
SYMBOLS = (" ", *"abcdefghijklmnopqrstuvwxyz", *PUNCTUATION)
# Every code point espeak-ng (en-us, stress marks, punctuation kept) writes for the 13,100 LJ Speech transcripts.
PHONEME_SYMBOLS = tuple(" !,.:;?abdefhijklmnoprstuvwxzæðŋɐɑɔəɚɛɜɡɪɹɾʃʊʌʒʔˈˌː\u0329θᵻ")
FRONTENDS = {  # front end -> (version: normalisation + unit rules + inventory, symbols)
    "chars": (VERSION, SYMBOLS),
    "phonemes": ("phonemes-espeak-en-us-v2", PHONEME_SYMBOLS),  # v2: abbreviations as words
}

_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": None, "\u201d": None, "\u2013": "-",
                            "\u2014": "-", '"': None, "(": None, ")": None, "[": None, "]": None})
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The transcript as the model reads it (rules in the module docstring); idempotent."""
    decomposed = unicodedata.normalize("NFKD", spell_out(text))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", stripped.translate(_TRANSLATE).lower()).strip()


@dataclass(frozen=True)
class TextVocab:
    """Unit ids of normalised text. ``symbols[i]`` is the unit of id ``i + 2`` (0 = pad, 1 = unknown); the units
    are the text's characters or, with ``frontend`` ``phonemes``, the code points of its IPA."""

    frontend: str = "chars"
    symbols: tuple[str, ...] = SYMBOLS
    version: str = VERSION
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.frontend not in FRONTENDS:
            raise ValueError(f"text vocabulary: front end must be one of {sorted(FRONTENDS)}, got {self.frontend!r}")
        if len(set(self.symbols)) != len(self.symbols) or any(len(s) != 1 for s in self.symbols):
            raise ValueError(f"text vocabulary: symbols must be distinct single characters, got {self.symbols!r}")
        object.__setattr__(self, "_index", {s: i + 2 for i, s in enumerate(self.symbols)})

    @classmethod
    def for_frontend(cls, frontend: str) -> TextVocab:
        """The fixed vocabulary of a front end (``tts_model.frontend``)."""
        if frontend not in FRONTENDS:
            raise ValueError(f"text vocabulary: front end must be one of {sorted(FRONTENDS)}, got {frontend!r}")
        version, symbols = FRONTENDS[frontend]
        return cls(frontend, symbols, version)

    def __len__(self) -> int:
        """Number of ids, including pad and unknown (the text embedding's size)."""
        return len(self.symbols) + 2

    def units(self, texts: Sequence[str]) -> list[str]:
        """Each text normalised, then as its phonemes with the ``phonemes`` front end (one espeak pass for all)."""
        normalized = [normalize(text) for text in texts]
        if self.frontend == "chars":
            return normalized
        from hybridlm.phonemes import phonemize  # espeak only where phonemes are asked for

        return phonemize(normalized)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text (unknown units -> ``UNK_ID``)."""
        return [[self._index.get(unit, UNK_ID) for unit in units] for units in self.units(texts)]

    def encode(self, text: str) -> list[int]:
        return self.encode_many([text])[0]

    def unit_id(self, unit: str) -> int:
        """The id of one unit of this vocabulary (a character or phoneme symbol); others are an error."""
        if unit not in self._index:
            raise ValueError(f"text vocabulary {self.version}: {unit!r} is not one of its units")
        return self._index[unit]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to units (normalised text or IPA); padding is skipped, unknown ids show as U+FFFD."""
        out = []
        for i in ids:
            i = int(i)
            if i == PAD_ID:
                continue
            if i == UNK_ID:
                out.append("\ufffd")
            elif 2 <= i < len(self):
                out.append(self.symbols[i - 2])
            else:
                raise ValueError(f"text id {i} is outside this vocabulary (0..{len(self) - 1})")
        return "".join(out)

    def unknown_many(self, texts: Sequence[str]) -> Counter[str]:
        """Units of ``texts`` that map to the unknown id, with their counts (for a stage's metrics)."""
        return Counter(unit for units in self.units(texts) for unit in units if unit not in self._index)

    def unknown(self, text: str) -> Counter[str]:
        return self.unknown_many([text])

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able form to store with a checkpoint."""
        return {"frontend": self.frontend, "version": self.version, "pad_id": PAD_ID, "unk_id": UNK_ID,
                "symbols": "".join(self.symbols)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextVocab:
        """Inverse of :meth:`to_dict` (a dict without ``frontend`` is a characters vocabulary). A different
        ``version`` means the text would be turned into units differently from how the checkpoint was trained: an
        error, not a silent mismatch."""
        if not isinstance(data, dict) or "symbols" not in data or "version" not in data:
            raise ValueError(f"text vocabulary: expected a mapping with 'version' and 'symbols', got {data!r}")
        frontend = data.get("frontend", "chars")
        if frontend not in FRONTENDS:
            raise ValueError(f"text vocabulary: front end {frontend!r} is not one of this code's {sorted(FRONTENDS)}")
        version = FRONTENDS[frontend][0]
        if data["version"] != version:
            raise ValueError(f"text vocabulary version {data['version']!r} is not this code's {version!r} "
                             f"(normalisation rules differ); use the hybridlm version that wrote the checkpoint")
        if data.get("pad_id", PAD_ID) != PAD_ID or data.get("unk_id", UNK_ID) != UNK_ID:
            raise ValueError(f"text vocabulary: pad/unk ids {data.get('pad_id')}/{data.get('unk_id')} differ from "
                             f"{PAD_ID}/{UNK_ID}")
        return cls(frontend, tuple(data["symbols"]), data["version"])
