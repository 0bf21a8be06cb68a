"""The wrong text of the content gap: same shape (length, spaces, punctuation, marks), every sounding unit changed,
for a unit of another sound class of the synthetic corpus, deterministically from the seed."""

from __future__ import annotations

from hybridlm.data.synthetic import LETTERS
from hybridlm.text import TextVocab
from hybridlm.wrong_text import PROSODY_MARKS, wrong_texts

CHARS = TextVocab.for_frontend("chars")
TEXTS = ["A quiet word.", "zz top, yes! it's twenty-two; ok: fine?", "b", "  ", "aaaa eeee"]


def test_every_letter_swapped_for_another_sound_class_and_the_layout_kept():
    ids = CHARS.encode_many(TEXTS)
    wrong = wrong_texts(ids, CHARS, seed=0)
    assert [len(w) for w in wrong] == [len(i) for i in ids]
    for right, swapped in zip(ids, wrong):
        for a, b in zip(CHARS.decode(right), CHARS.decode(swapped)):
            if a in LETTERS:
                assert b in LETTERS and LETTERS[b][0] != LETTERS[a][0], (a, b)  # another class: other audio
            else:
                assert b == a  # spaces and punctuation: where the pauses are stays
    # the draws vary (not one fixed substitute per class)
    assert len(set(CHARS.decode(wrong[4]).replace(" ", ""))) > 2
    assert wrong == wrong_texts(ids, CHARS, seed=0)
    assert wrong != wrong_texts(ids, CHARS, seed=1)
    # sentence i's wrong text does not depend on the other sentences
    assert wrong_texts(ids[:2], CHARS, seed=0) == wrong[:2]
    assert wrong_texts([[0, 1, *ids[0]]], CHARS, 0)[0][:2] == [0, 1]  # pad and unknown ids stay


def test_phonemes_swap_symbols_and_keep_stress_length_and_punctuation():
    vocab = TextVocab.for_frontend("phonemes")
    ipa = "ɐ kwˈaɪət wˈɜːd."
    ids = [vocab.unit_id(u) for u in ipa]
    wrong = vocab.decode(wrong_texts([ids], vocab, seed=3)[0])
    assert len(wrong) == len(ipa)
    for a, b in zip(ipa, wrong):
        assert (b == a) if a in PROSODY_MARKS else (b != a and b not in PROSODY_MARKS), (a, b)
