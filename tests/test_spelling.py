"""Numbers, money and abbreviations as LJ Speech's normalised transcripts read them (hybridlm.spelling), through
both front ends; agreement with the full LJ metadata from the shared data (skipped without it)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from hybridlm.data.ljspeech import parse_metadata
from hybridlm.data.synthetic import TRAPS
from hybridlm.spelling import expand_abbreviations, spell_out
from hybridlm.text import UNK_ID, TextVocab, normalize

@pytest.mark.parametrize("raw, lj", [  # field 2 -> field 3 of real LJ lines (shortened), then rules LJ never needs
    ("as early as 1790 by Mr. Blackburn", "as early as seventeen ninety by Mr. Blackburn"),
    ("between 1797 and 1808,", "between seventeen ninety-seven and eighteen oh eight,"),
    ("had again risen to 629;", "had again risen to six hundred twenty-nine;"),
    ("at £170,000, the first forgery dating back to 1814.",
     "at one hundred seventy thousand pounds, the first forgery dating back to eighteen fourteen."),
    ("was £81,791.", "was eighty-one thousand, seven hundred ninety-one pounds."),
    ("whose income was £2372.", "whose income was two thousand three hundred seventy-two pounds."),
    ("He took with him $13.87 and", "He took with him thirteen dollars, eighty-seven cents and"),
    ("that pension is $20,000 a year.", "that pension is twenty thousand dollars a year."),
    ("discovered on the 2nd February.", "discovered on the second February."),
    ("on the corner of 10th and Patton", "on the corner of tenth and Patton"),
    ("At 12:45 p.m. the dispatcher ordered No. 78 (Tippit)",
     "At twelve:forty-five p.m. the dispatcher ordered Number seventy-eight (Tippit)"),
    ("a speed of 11.2 miles per hour.", "a speed of eleven point two miles per hour."),
    ("a Smith & Wesson 38 caliber revolver", "a Smith and Wesson thirty-eight caliber revolver"),
    ("Commission Exhibit No. 162 as the jacket", "Commission Exhibit Number one sixty-two as the jacket"),
    ("Each agent carried a .38-caliber pistol,", "Each agent carried a thirty-eight-caliber pistol,"),
    ("the serial number C2766.", "the serial number C two seven six six."),
    ("Exhibit No. 133-A, shows", "Exhibit Number one thirty-three A, shows"),
    ("Did England let nature take her course? No.", "Did England let nature take her course? No."),
    ("$1, $0.50, $2.00, £1", "one dollar, fifty cents, two dollars, one pound"),
    ("In 1900, 2000 and 2005; 50% at 2:05 or 3:00 in the 1960s, the 103rd",
     "In nineteen hundred, two thousand and two thousand five; fifty percent at two:oh five or three o'clock in "
     "the nineteen sixties, the one hundred third"),
])
def test_spell_out_reads_as_lj(raw, lj):
    assert spell_out(raw) == lj
    assert spell_out(lj) == lj  # nothing left to spell: idempotent


def test_normalize_spells_out_for_both_front_ends():
    text = "In 1963, Dr. Smith paid $5 for No. 3 & the 2nd."
    assert normalize(text) == "in nineteen sixty-three, dr. smith paid five dollars for number three and the second."
    chars = TextVocab.for_frontend("chars")
    assert UNK_ID not in chars.encode(text) and chars.unknown(text) == {}
    phonemes = TextVocab.for_frontend("phonemes")
    assert phonemes.encode("In 1963, $5.") == phonemes.encode("in nineteen sixty-three, five dollars.")
    # before: "ɪn nˈaɪntiːnhˈʌndɹɪd sˈɪksti θɹˈiː" (espeak's own digits) and "dˈɑːlɚ fˈaɪv"
    assert phonemes.decode(phonemes.encode("$5")) == "fˈaɪv dˈɑːlɚz"


def test_the_synthetic_corpus_traps_normalise_to_their_field_3():
    for raw, lj in TRAPS:  # "£5" -> "five pounds", "1963" -> "nineteen sixty-three", quotes, accents
        assert normalize(raw) == normalize(lj), raw


def test_abbreviations_reach_espeak_as_words_without_a_pause():
    assert expand_abbreviations("mr. and mrs. smith met dr. jones at st. paul's.") == \
        "mister and missus smith met doctor jones at saint paul's."
    assert expand_abbreviations("robarts and co.") == "robarts and company."  # the period that ends the text stays
    assert expand_abbreviations("he said no. then left. amr. dr.x") == "he said no. then left. amr. dr.x"
    phonemes = TextVocab.for_frontend("phonemes")
    ipa = phonemes.decode(phonemes.encode("Dr. Smith went home."))
    assert ipa == phonemes.decode(phonemes.encode("doctor Smith went home.")) and ipa.count(".") == 1
    chars = TextVocab.for_frontend("chars")
    assert chars.decode(chars.encode("Dr. Smith")) == "dr. smith"  # characters keep LJ's field-3 form


def test_text_without_digits_never_imports_the_number_speller():
    code = ("import sys; from hybridlm.text import normalize; assert normalize('Mr. Smith, No.') == 'mr. smith, no.'; "
            "assert 'inflect' not in sys.modules; normalize('1'); assert 'inflect' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_agreement_with_the_full_lj_metadata(shared):
    rows = parse_metadata(shared("ljspeech-meta/metadata.csv"))
    assert len(rows) == 13_100
    # Field 3 is what the models train on: the spelling must leave every line of it as it is.
    assert [row.normalized for row in rows if spell_out(row.normalized) != row.normalized] == []
    spelled = re.compile(r"[\d$£&%]|\b(Mr|Mrs|Dr|No|St)\.")
    lines = [row for row in rows if spelled.search(row.text)]
    agree = sum(normalize(row.text) == normalize(row.normalized) for row in lines)
    control = sum(" ".join(row.text.lower().split()) == " ".join(row.normalized.lower().split()) for row in lines)
    assert len(lines) == 1954 and agree >= 1870, agree  # measured 1885 (96.5%)
    assert control < 500, control  # not spelling at all: 456 (only the abbreviation-only lines)
