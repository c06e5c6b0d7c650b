"""Text normalisation: lowercase, ASCII dashes, spelled-out numbers as digits ("four and a half" 4.5), unified compass words."""

from __future__ import annotations

import re
import unicodedata

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_TENS = "twenty|thirty|forty|fourty|fifty|sixty|seventy|eighty|ninety"
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_NUMBER_RE = re.compile(
    rf"\b(?:(?:a|one) hundred|(?:{_TENS})(?:[- ](?:{_UNITS}))?|zero|one|two|three|four|five|six|seven|eight|nine|"
    r"ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)\b"
)
_ABBREVIATIONS = (
    (r"\bNE\s*[-/]\s*SW\b", "north-east-to-south-west"), (r"\bSW\s*[-/]\s*NE\b", "south-west-to-north-east"),
    (r"\bNW\s*[-/]\s*SE\b", "north-west-to-south-east"), (r"\bSE\s*[-/]\s*NW\b", "south-east-to-north-west"),
    (r"\bN\s*[-/]\s*S\b", "north-south"), (r"\bS\s*[-/]\s*N\b", "south-north"),
    (r"\bE\s*[-/]\s*W\b", "east-west"), (r"\bW\s*[-/]\s*E\b", "west-east"),
    (r"\bNE\b", "north-east"), (r"\bNW\b", "north-west"), (r"\bSE\b", "south-east"), (r"\bSW\b", "south-west"),
)

_ABBREVIATED = re.compile(r"\b[NSEW]")
_AND_A_HALF = re.compile(r"\b(\d+) and a half\b")  # "four and a half percent" -> "4.5 percent"


def _number_word(match: re.Match[str]) -> str:
    words = re.split(r"[- ]", match.group(0))
    if words[-1] == "hundred":
        return "100"
    return str(sum(_NUMBER_WORDS[w] for w in words))


def normalise(text: str) -> str:
    """Lowercase, ASCII dashes and quotes, spelled-out numbers as digits, compass words unified."""
    t = unicodedata.normalize("NFKC", text)
    t = re.sub(r"[\u2010-\u2015\u2212]", "-", t).replace("\u2019", "'").replace("\u00a0", " ")
    if _ABBREVIATED.search(t):  # every abbreviation starts with a capital N, S, E or W at a word start
        for pattern, replacement in _ABBREVIATIONS:
            t = re.sub(pattern, replacement, t)
    t = t.lower()
    t = re.sub(r"\bcentre\b", "center", t)
    t = re.sub(r"\b(north|south)[- ]?(east|west)", r"\1-\2", t)
    t = re.sub(r"\bfield of view\b", "view", t)
    t = _NUMBER_RE.sub(_number_word, t)
    return _AND_A_HALF.sub(r"\1.5", t) if " and a half" in t else t
