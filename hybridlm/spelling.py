"""Numbers, money and symbols spelled out the way LJ Speech's *normalized* transcripts spell them.

Why: the model learns to read from LJ's metadata.csv field 3, in which "1963" is "nineteen sixty-three", "$13.87" is
"thirteen dollars, eighty-seven cents" and "No. 78" is "Number seventy-eight". A prompt typed with digits must reach
the model in that same form (the characters front end has no digits; espeak reads "1963" as "nineteen hundred sixty
three" and "$5" as "dollar five"), so hybridlm.text.normalize calls :func:`spell_out` before anything else, for both
front ends and for `hybridlm say`. Number words come from ``inflect`` (maintained, pure Python, offline).

The rules, as field 3 has them (measured against field 2 of all 13,100 lines: docs/tts.md):

- cardinals without "and", groups separated by a comma: "629" -> "six hundred twenty-nine", "81,791" -> "eighty-one
  thousand, seven hundred ninety-one";
- 1001-2999 read as years: "1963" -> "nineteen sixty-three", "1808" -> "eighteen oh eight", "1900" -> "nineteen
  hundred", "2005" -> "two thousand five";
- ordinals: "2nd" -> "second"; decimals: "11.2" -> "eleven point two"; times keep their colon: "2:15" -> "two:fifteen"
  ("2:05" -> "two:oh five", "2:00" -> "two o'clock", which LJ never has); decades: "1960s" -> "nineteen sixties";
- labels in pairs: "Exhibit No. 162" -> "Exhibit Number one sixty-two"; codes digit by digit: "C2766" -> "C two seven
  six six"; a caliber's leading period goes: ".38" -> "thirty-eight";
- money: "$12.78" -> "twelve dollars, seventy-eight cents", "$1" -> "one dollar", "£500" -> "five hundred pounds";
- "No." before a number -> "Number"; "&" -> "and"; "%" -> "percent".

Every rule needs a character that the text vocabulary does not have (a digit, "$", "£", "&", "%"), so the function is
the identity on any text that the front ends could already read (all 13,100 field-3 lines, the synthetic corpus):
sentence shards and checkpoints made before it read the same. Abbreviations that field 3 keeps ("Mr.", "Dr.", "St.")
stay: the characters front end learns them from LJ's audio; espeak needs them as words (:func:`expand_abbreviations`).
"""

from __future__ import annotations

import re
from functools import lru_cache

# Abbreviations LJ's field 3 keeps, as the reader says them. The characters front end learns each from the audio;
# espeak would read the period as the end of a sentence (a pause), so the phonemes front end gets the word instead.
# "st." is "saint" in most LJ lines ("St. James's", "St. Sepulchre"); "Giltspur St." is the exception.
ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "co": "company", "jr": "junior",
                 "lt": "lieutenant", "capt": "captain", "gen": "general", "col": "colonel", "maj": "major",
                 "sgt": "sergeant", "rev": "reverend", "hon": "honorable", "esq": "esquire", "messrs": "messers"}
_ABBREVIATION = re.compile(r"\b(" + "|".join(ABBREVIATIONS) + r")\.( |$)")

_AMOUNT = r"(\d{1,3}(?:,\d{3})+(?!\d)|\d+)"  # "81,791" or "2372": LJ writes "thousand," only for the first
_AMPERSAND = re.compile(r"\s*&\s*")
_NUMBER_SIGN = re.compile(r"\b([Nn])o\.(?= ?[A-Z]*\d)")
_CALIBER = re.compile(r"(?<![\w.])\.(?=\d)")  # ".38-caliber"
_CODE = re.compile(r"\b([A-Za-z]+)(\d+)\b")  # "C2766": letters, then digit by digit
_SUFFIX = re.compile(r"(\d)-([A-Z])\b")  # "133-A"
_LABEL = re.compile(r"\b(Number|number|Exhibit|exhibit|page|frame) (\d)(\d\d)\b")  # "Exhibit 162"
_POUNDS = re.compile(r"£" + _AMOUNT)
_DOLLARS = re.compile(r"\$" + _AMOUNT + r"(?:\.(\d\d))?(?!\d)")
_PERCENT = re.compile(r"(\d) ?%")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d\d)\b")
_DECADE = re.compile(r"\b(\d{3}0)s\b")  # "1960s"
_NUMBER = re.compile(_AMOUNT)


@lru_cache(maxsize=1)
def _inflect():
    """The number speller, built on first use: texts without digits (all training text) never import it."""
    import inflect

    return inflect.engine()


def cardinal(digits: str) -> str:
    """A quantity in words as LJ writes it: no "and"; "thousand," only where the digits were grouped ("81,791")."""
    words = _inflect().number_to_words(int(digits.replace(",", "")), andword="")
    return words if "," in digits else words.replace(", ", " ")


def year_or_cardinal(digits: str) -> str:
    """Digits in words, read as a year between 1001 and 2999 ("nineteen sixty-three", "eighteen oh eight")."""
    number = int(digits.replace(",", ""))
    if "," in digits or not 1000 < number < 3000 or number == 2000:
        return cardinal(digits)
    if 2000 < number < 2010:
        return "two thousand " + cardinal(str(number % 100))
    if number % 100 == 0:
        return cardinal(str(number // 100)) + " hundred"
    return _inflect().number_to_words(number, andword="", zero="oh", group=2).replace(", ", " ")


def _label(match: re.Match) -> str:
    """A three-digit exhibit, page or frame number in pairs: "162" -> "one sixty-two", "602" -> "six oh two"."""
    word, first, rest = match.groups()
    return f"{word} {cardinal(first)} {'oh ' if rest[0] == '0' else ''}{cardinal(rest)}"


def _money(amount: str, unit: str, units: str) -> str:
    return f"{cardinal(amount)} {unit if int(amount.replace(',', '')) == 1 else units}"


def _dollars(match: re.Match) -> str:
    dollars, cents = match.groups()
    if cents is None or int(cents) == 0:
        return _money(dollars, "dollar", "dollars")
    if int(dollars.replace(",", "")) == 0:
        return _money(cents, "cent", "cents")
    return f"{_money(dollars, 'dollar', 'dollars')}, {_money(cents, 'cent', 'cents')}"


def _time(match: re.Match) -> str:
    """"2:15" -> "two:fifteen" (LJ keeps the colon), "2:05" -> "two:oh five", "2:00" -> "two o'clock"."""
    hour, minutes = match.groups()
    if minutes == "00":
        return f"{cardinal(hour)} o'clock"
    return f"{cardinal(hour)}:{'oh ' if minutes[0] == '0' else ''}{cardinal(minutes)}"


def _code(match: re.Match) -> str:
    letters, digits = match.groups()
    return " ".join([" ".join(letters) if letters.isupper() else letters, *map(cardinal, digits)])


def spell_out(text: str) -> str:
    """``text`` with its numbers, money and ``&``/``%`` in words as LJ's field 3 writes them (rules: module
    docstring); the identity on text without digits and these symbols."""
    if not re.search(r"[\d&%$£]", text):
        return text
    text = _AMPERSAND.sub(" and ", text)
    text = _NUMBER_SIGN.sub(lambda m: "Number" if m.group(1) == "N" else "number", text)
    text = _CALIBER.sub("", text)
    text = _CODE.sub(_code, text)
    text = _SUFFIX.sub(r"\1 \2", text)
    text = _LABEL.sub(_label, text)
    text = _POUNDS.sub(lambda m: _money(m.group(1), "pound", "pounds"), text)
    text = _DOLLARS.sub(_dollars, text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _DECIMAL.sub(lambda m: f"{cardinal(m.group(1))} point {' '.join(map(cardinal, m.group(2)))}", text)
    text = _ORDINAL.sub(lambda m: _inflect().ordinal(cardinal(m.group(1))), text)
    text = _TIME.sub(_time, text)
    text = _DECADE.sub(lambda m: re.sub(r"y$", "ie", year_or_cardinal(m.group(1))) + "s", text)
    return _NUMBER.sub(lambda m: year_or_cardinal(m.group(0)), text)


def expand_abbreviations(normalized: str) -> str:
    """Normalised (lower-case) text with the abbreviations LJ keeps as the words the reader says, for espeak: "dr.
    smith" -> "doctor smith". A period that ends the text stays (it ends the sentence too)."""
    return _ABBREVIATION.sub(lambda m: ABBREVIATIONS[m.group(1)] + (" " if m.group(2) else "."), normalized)
