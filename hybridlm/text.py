"""Text front end for text-conditioned speech: transcript normalisation and a fixed character vocabulary.

Input is LJ Speech's *normalized* transcription (metadata field 3: numbers, abbreviations and currency already
spelled out). What is left to decide, and why:

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

The vocabulary is *fixed* (not built from a corpus), so every corpus — LJ Speech, the synthetic one, a user's
``say`` prompt — maps the same character to the same id, and a checkpoint stores it (``to_dict``) with the version
of these rules. Ids: 0 = padding, 1 = unknown, then space, ``a``-``z`` and the kept punctuation (37 in all).
Any other character that survives normalisation (a digit, ``&``, a non-Latin letter) maps to the unknown id and is
counted (:meth:`CharVocab.unknown`), never silently dropped. On the full LJ Speech 1.1 metadata.csv the count is 0.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

VERSION = "chars-v1"  # names the normalisation rules + symbol inventory; bump it when either changes
PAD_ID = 0
UNK_ID = 1
PUNCTUATION = "',-.:;?!"
SYMBOLS = (" ", *"abcdefghijklmnopqrstuvwxyz", *PUNCTUATION)

_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": None, "\u201d": None, "\u2013": "-",
                            "\u2014": "-", '"': None, "(": None, ")": None, "[": None, "]": None})
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The transcript as the model reads it (rules in the module docstring); idempotent."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", stripped.translate(_TRANSLATE).lower()).strip()


@dataclass(frozen=True)
class CharVocab:
    """Character ids of normalised text. ``symbols[i]`` is the character of id ``i + 2`` (0 = pad, 1 = unknown)."""

    symbols: tuple[str, ...] = SYMBOLS
    version: str = VERSION
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols) or any(len(s) != 1 for s in self.symbols):
            raise ValueError(f"text vocabulary: symbols must be distinct single characters, got {self.symbols!r}")
        object.__setattr__(self, "_index", {s: i + 2 for i, s in enumerate(self.symbols)})

    def __len__(self) -> int:
        """Number of ids, including pad and unknown (the text embedding's size)."""
        return len(self.symbols) + 2

    def encode(self, text: str) -> list[int]:
        """Normalise ``text`` and map each character to its id (unknown characters -> ``UNK_ID``)."""
        return [self._index.get(ch, UNK_ID) for ch in normalize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to normalised text; padding is skipped, unknown ids show as U+FFFD."""
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

    def unknown(self, text: str) -> Counter[str]:
        """Characters of the normalised ``text`` that map to the unknown id, with their counts."""
        return Counter(ch for ch in normalize(text) if ch not in self._index)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able form to store with a checkpoint."""
        return {"version": self.version, "pad_id": PAD_ID, "unk_id": UNK_ID, "symbols": "".join(self.symbols)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharVocab:
        """Inverse of :meth:`to_dict`. A different ``version`` means the text would be normalised differently from
        how the checkpoint was trained: an error, not a silent mismatch."""
        if not isinstance(data, dict) or "symbols" not in data or "version" not in data:
            raise ValueError(f"text vocabulary: expected a mapping with 'version' and 'symbols', got {data!r}")
        if data["version"] != VERSION:
            raise ValueError(f"text vocabulary version {data['version']!r} is not this code's {VERSION!r} "
                             f"(normalisation rules differ); use the hybridlm version that wrote the checkpoint")
        if data.get("pad_id", PAD_ID) != PAD_ID or data.get("unk_id", UNK_ID) != UNK_ID:
            raise ValueError(f"text vocabulary: pad/unk ids {data.get('pad_id')}/{data.get('unk_id')} differ from "
                             f"{PAD_ID}/{UNK_ID}")
        return cls(tuple(data["symbols"]), data["version"])


def count_unknown(vocab: CharVocab, texts: Sequence[str]) -> Counter[str]:
    """Unknown characters over many transcripts (for a stage's metrics)."""
    total: Counter[str] = Counter()
    for text in texts:
        total.update(vocab.unknown(text))
    return total
