"""Text front end: normalisation rules, vocabulary round trips, unknown characters, the full LJ metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridlm.data.ljspeech import parse_metadata
from hybridlm.text import PAD_ID, UNK_ID, VERSION, CharVocab, count_unknown, normalize

FULL_METADATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "ljspeech-meta" / "metadata.csv"


@pytest.mark.parametrize("raw, expected", [
    ('He said, "the type was worn," and put it aside.', "he said, the type was worn, and put it aside."),
    ("Zürich, Besançon and São Paulo", "zurich, besancon and sao paulo"),
    ("the naïve prisoner’s “coöperative”", "the naive prisoner's cooperative"),
    ("(which was [sic] wrong)  ;  twenty-two!", "which was sic wrong ; twenty-two!"),
    ("  Tabs\tand\nnewlines  ", "tabs and newlines"),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected
    assert normalize(expected) == expected  # idempotent


def test_vocab_ids_and_round_trip():
    vocab = CharVocab()
    assert len(vocab) == 2 + 1 + 26 + 8
    ids = vocab.encode("Quote. He was a dangerous man, end quote!")
    assert PAD_ID not in ids and UNK_ID not in ids
    assert vocab.decode(ids + [PAD_ID, PAD_ID]) == "quote. he was a dangerous man, end quote!"
    assert vocab.encode(" ") == [] and vocab.encode("a b") == [3, 2, 4]


def test_unknown_characters_are_mapped_and_counted():
    vocab = CharVocab()
    ids = vocab.encode("In 1963 & after")
    assert ids.count(UNK_ID) == 5
    assert vocab.unknown("In 1963 & after") == {"1": 1, "9": 1, "6": 1, "3": 1, "&": 1}
    assert vocab.decode(vocab.encode("a&b")) == "a\ufffdb"
    with pytest.raises(ValueError, match="outside this vocabulary"):
        vocab.decode([len(vocab)])


def test_to_dict_from_dict_round_trip_and_version_check():
    vocab = CharVocab()
    stored = json.loads(json.dumps(vocab.to_dict()))
    assert CharVocab.from_dict(stored) == vocab
    assert CharVocab.from_dict(stored).encode("abc") == vocab.encode("abc")
    with pytest.raises(ValueError, match="version 'chars-v0'"):
        CharVocab.from_dict({**stored, "version": "chars-v0"})
    with pytest.raises(ValueError, match="expected a mapping"):
        CharVocab.from_dict({"symbols": "abc"})
    with pytest.raises(ValueError, match="distinct single characters"):
        CharVocab(("a", "a"), VERSION)


@pytest.mark.skipif(not FULL_METADATA.is_file(), reason="../shared/ljspeech-meta not present")
def test_full_lj_metadata_has_no_unknown_characters():
    rows = parse_metadata(FULL_METADATA)
    assert len(rows) == 13_100
    vocab = CharVocab()
    assert count_unknown(vocab, [r.normalized for r in rows]) == {}
    lengths = [len(vocab.encode(r.normalized)) for r in rows]
    assert min(lengths) > 0 and max(lengths) < 200
