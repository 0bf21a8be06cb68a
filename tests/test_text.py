"""Text front end: normalisation rules, vocabulary round trips, unknown units, phonemes (espeak-ng), the full LJ
metadata under both front ends."""

from __future__ import annotations

import json

import pytest

from hybridlm.data.ljspeech import parse_metadata
from hybridlm.text import PAD_ID, UNK_ID, VERSION, TextVocab, normalize



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
    vocab = TextVocab()
    assert len(vocab) == 2 + 1 + 26 + 8
    ids = vocab.encode("Quote. He was a dangerous man, end quote!")
    assert PAD_ID not in ids and UNK_ID not in ids
    assert vocab.decode(ids + [PAD_ID, PAD_ID]) == "quote. he was a dangerous man, end quote!"
    assert vocab.encode(" ") == [] and vocab.encode("a b") == [3, 2, 4]


def test_unknown_characters_are_mapped_and_counted():
    vocab = TextVocab()
    ids = vocab.encode("In #3 € after")  # digits are spelled out (tests/test_spelling.py); these are not
    assert ids.count(UNK_ID) == 2
    assert vocab.unknown("In #3 € after") == {"#": 1, "€": 1}
    assert vocab.decode(vocab.encode("a#b")) == "a\ufffdb"
    with pytest.raises(ValueError, match="outside this vocabulary"):
        vocab.decode([len(vocab)])


def test_to_dict_from_dict_round_trip_and_version_check():
    vocab = TextVocab()
    stored = json.loads(json.dumps(vocab.to_dict()))
    assert TextVocab.from_dict(stored) == vocab
    assert TextVocab.from_dict(stored).encode("abc") == vocab.encode("abc")
    with pytest.raises(ValueError, match="version 'chars-v0'"):
        TextVocab.from_dict({**stored, "version": "chars-v0"})
    with pytest.raises(ValueError, match="expected a mapping"):
        TextVocab.from_dict({"symbols": "abc"})
    with pytest.raises(ValueError, match="distinct single characters"):
        TextVocab("chars", ("a", "a"), VERSION)
    with pytest.raises(ValueError, match=r"front end must be one of \['chars', 'phonemes'\], got 'graphemes'"):
        TextVocab.for_frontend("graphemes")
    old_checkpoint = {k: v for k, v in stored.items() if k != "frontend"}  # written before phonemes existed
    assert TextVocab.from_dict(old_checkpoint) == vocab


def test_phonemes_are_espeaks_ipa_stored_and_checked():
    vocab = TextVocab.for_frontend("phonemes")
    assert len(vocab) == 56 and vocab.version == "phonemes-espeak-en-us-v2"
    ids = vocab.encode("Hello there, Zürich!")  # normalised first: the accent goes, as for characters
    assert vocab.decode(ids) == "həlˈoʊ ðˈɛɹ, zjˈʊɹɪk!" and UNK_ID not in ids
    assert vocab.encode_many(["a.", "the"]) == [vocab.encode("a."), vocab.encode("the")]  # one espeak pass, same ids
    assert vocab.decode(vocab.encode("In 1963.")) == "ɪn nˈaɪntiːn sˈɪkstiθɹˈiː."  # spelled out before espeak
    assert vocab.units(["a", "", "()"]) == ["ˈeɪ", "", ""]  # empty texts keep their place in the batch
    stored = json.loads(json.dumps(vocab.to_dict()))
    assert stored["frontend"] == "phonemes" and TextVocab.from_dict(stored) == vocab
    with pytest.raises(ValueError, match="version 'chars-v1' is not this code's 'phonemes-espeak-en-us-v2'"):
        TextVocab.from_dict({**stored, "version": "chars-v1"})


def test_phonemes_without_espeak_is_a_clear_error(monkeypatch):
    import sys

    from hybridlm import phonemes

    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # as if not installed
    phonemes._backend.cache_clear()
    try:
        with pytest.raises(ValueError, match="tts_model.frontend: phonemes needs the packages phonemizer and "
                                             "espeakng-loader .*or set tts_model.frontend: chars"):
            TextVocab.for_frontend("phonemes").encode("a word")
    finally:
        phonemes._backend.cache_clear()


def test_full_lj_metadata_has_no_unknown_characters(shared):
    rows = parse_metadata(shared("ljspeech-meta/metadata.csv"))
    assert len(rows) == 13_100
    texts = [r.normalized for r in rows]
    for frontend, longest in (("chars", 200), ("phonemes", 200)):
        vocab = TextVocab.for_frontend(frontend)
        assert vocab.unknown_many(texts) == {}, frontend  # every phoneme espeak writes for LJ is in the inventory
        lengths = [len(ids) for ids in vocab.encode_many(texts)]
        assert min(lengths) > 0 and max(lengths) < longest, (frontend, max(lengths))
