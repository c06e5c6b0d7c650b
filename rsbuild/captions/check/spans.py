"""Spans: everything the check understands, found in priority order without overlaps.

Owns ``Span`` and ``Region``, the phrase patterns (shares, positions, directions, ranks,
negation and clause cues), compass vectors, and ``scan``, which turns normalised text into
non-overlapping spans.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from rsbuild.captions.check.vocabulary import Vocabulary

ATTRIBUTE_KINDS = ("share", "position", "orient", "rank", "dominant", "relative", "count")


@dataclass
class Span:
    start: int
    end: int
    kind: str  # class sink share dominant rank position orient relative count trace neg_pre neg_post meta
    value: Any = None
    text: str = ""
    negated: bool = False
    trace: bool = False
    trace_asserts: bool = False  # a trace that says the class is there ("a few small trees"), not "hardly any"
    frame: bool = False  # a sink that is a share's denominator ("38% of the vegetation"): no subject of a claim
    judged: bool = False  # a share word that judges a size ("a considerable amount"): a stated number outranks it


DIR = r"(?:north|south)-(?:east|west)|north|south|east|west"
_DIR_ADJ = rf"(?:{DIR})(?:ern|erly|wards?)?"
_IMG_SIDE = r"(?:top|upper|bottom|lower)(?:[- ](?:left|right))?|left|right"
_MODIFIER = (r"two[- ]thirds|2[- ]thirds|half|halves|third|quarter|quadrant|corners?|edges?|borders?|margins?|fringes?"
             r"|periphery|boundary|rim|sides?|parts?|portions?|sections?|areas?|regions?|sectors?|reaches|zones?"
             r"|strips?|end|band|tip")
_TILE = r"(?:image|tile|scene|frame|picture|chip|view|photo|patch|area|map|square|crop)"

_META = re.compile(
    r"\b(?:with |where |since |as )?north (?:is |being |points? |pointing |facing |lies )?(?:at the top|up(?:wards)?|"
    r"to the top|upward)\b"
    r"|\b(?:the )?top (?:of the \w+ )?(?:is|being|points?|faces?) (?:to(?:wards)? )?(?:the )?north\b"
    r"|\b(?:north|south|east|west)[- ]facing\b|\bnorth[- ]up\b"
)
_ORIENT_FROM = re.compile(
    rf"\b(?:from|between) (?:the )?(?:far |extreme )?(?P<a>{DIR}|{_IMG_SIDE})(?:ern)?(?:[- ]hand)?"
    rf"(?: (?:corner|edge|side|"
    rf"part|end|border|margin|half))?(?: of the {_TILE})? (?:to(?:wards?)?|and|into) (?:the )?(?:far |extreme )?"
    rf"(?P<b>{DIR}|{_IMG_SIDE})(?:ern)?(?:[- ]hand)?(?: (?:corner|edge|side|part|end|border|margin|half))?\b"
)
_ORIENT_PAIR = re.compile(
    rf"\b(?P<a>{DIR})(?:ern)?\s*(?:-|/|to|towards?|-to-)\s*(?P<b>{DIR})(?:ern)?\b(?!-)"
    r"|\b(?P<c>top|left|bottom|right)[- ]to[- ](?P<d>bottom|right|top|left)\b"
)
_ORIENT_MOTION = re.compile(
    rf"\b(?:flows?|flowing|runs?|running|heads?|heading|trends?|trending|oriented|orientated|aligned|stretch(?:es|ing)?"
    rf"|extend(?:s|ing)?|cuts?|cutting) (?:from )?(?:the )?(?P<a>{DIR})(?:wards?)?\b"
    rf"(?! of\b)(?!(?:ern)? (?:{_MODIFIER}))"
)
# a heading: where one stretch of a feature goes ("then heads east to the image edge", "turns north"), not
# the axis of the whole feature; read as a place the feature reaches
_HEADING = re.compile(
    rf"\b(?:then\s+(?:\w+\s+)?(?:flows?|runs?|heads?|turns?|bends?|curves?|veers?|continues?|goes|extends?)"
    rf"|(?:heads?|heading|turns?|turning|bends?|bending|curves?|curving|veers?|veering))"
    rf"\s+(?:off\s+)?(?:to(?:wards?)?\s+)?(?:the\s+)?(?P<a>{DIR})(?:wards?|ern)?\b(?!-)"
)
_ORIENT_WORD = re.compile(r"\b(?:vertical(?:ly)?|horizontal(?:ly)?|diagonal(?:ly)?|up and down|side to side)\b")
_RELATIVE = re.compile(
    rf"\b(?:to the |just |directly |immediately |further |slightly |lying )?(?P<d>{DIR}|left|right)(?:ern|erly|wards)?"
    rf"(?:[- ]hand)?(?: (?:side|bank|shore|edge|part|half))?(?: of| from) "
    rf"(?!(?:the |a |an |its |this )?(?:{_TILE}|center|middle|it|its|whole|entire|overall)\b)(?:the |a |an |some )?"
    r"|\b(?:above|below|beneath) the (?!(?:\d|average|rest|remainder))"
)
# "east of the centre", "south of the top": the side of the tile, not a relation to another class
_SIDE_OF_CENTRE = re.compile(rf"\b(?P<core>{DIR})(?:ern)?(?: part)? of the (?:center|middle|(?:top|bottom|left|right)"
                             r"(?: side| edge| half| part)?)\b")
_POSITION = re.compile(
    rf"\b(?P<pre>(?:far|extreme|very|outer)[- ])?"
    rf"(?P<core>{_DIR_ADJ}|{_IMG_SIDE}|center|central|centrally|middle|midst|heart)"
    rf"(?:[- ]hand)?(?:[- ](?:central|center))?(?P<mod>[- ](?:{_MODIFIER}))?\b"
)
_SHARE_QUAL = (
    r"(?:about|around|roughly|approximately|approx\.?|some|circa|ca\.|~|close to|nearly|almost|just under|just over|"
    r"just below|just above|an estimated|estimated at|on the order of|in the region of|over|more than|above|at least|"
    r"upwards of|in excess of|exceeding|greater than|no less than|not less than|well over|well above|under|less than|"
    r"below|at most|up to|no more than|not more than|fewer than|barely|only|just|a mere|merely|nearly|well under|"
    r"a little (?:over|under|more than|less than)|slightly (?:over|under|more than|less than|above|below))\s*"
)
_PCT = r"\s*(?:%|percent\b|per cent\b|pct\b|per-cent\b)"
_NUM = r"(\d+(?:\.\d+)?)"
_SHARE_RANGE = re.compile(rf"\bbetween {_NUM}\s*(?:%|percent|per cent)?\s*and\s*{_NUM}{_PCT}"
                          rf"|(?<![\d.])(?:from )?{_NUM}\s*(?:%|percent|per cent)?\s*(?:-|to)\s*{_NUM}{_PCT}")
_SHARE_NUMBER = re.compile(rf"(?:(?<!\w)(?P<q>{_SHARE_QUAL}))?(?<![\d.]){_NUM}{_PCT}")
_FRACTION_DEN = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4,
                 "fourths": 4, "fifth": 5, "fifths": 5, "tenth": 10, "tenths": 10}
_SHARE_FRACTION = re.compile(
    rf"(?:(?<!\w)(?P<q>{_SHARE_QUAL}))?\b(?:(?P<num>a|an|one|1|2|3|4|9)[- ]?"
    r"(?P<den>halves|half|thirds?|quarters?|fourths?|fifths?|tenths?)\b(?![- ]?(?:largest|biggest|most|class|"
    r"main|major|dominant|place|ranked|position|row|column))"
    r"|half\b(?![- ](?:moon|circle|way|mile|hectare))"
    r"|(?P<n2>\d)\s*(?:/|in|out of)\s*(?:every\s+)?(?P<d2>\d{1,2})\b(?!\s*(?:m\b|km\b|metres|meters|\d)))"
)
# share words: (pattern, (low, high, slack), whether the word judges a size rather than stating a quantity)
_SHARE_WORDS: tuple[tuple[re.Pattern[str], tuple[float, float, float], bool], ...] = tuple(
    (re.compile(p), band, judged) for p, band, judged in (
        (r"\b(?:the |a )?(?:vast|overwhelming|great) majority\b|\b(?:nearly|almost|virtually|practically) (?:all|"
         r"the (?:entire|whole))\b|\b(?:almost|nearly|virtually) (?:entirely|completely|exclusively|fully)\b",
         (85.0, 100.0, 8.0), False),
        (r"\b(?:the |a )?(?:clear |slight |narrow |small )?majority\b|\bthe bulk of\b|\bmost of the " + _TILE + r"\b",
         (50.0, 100.0, 6.0), False),
        (r"\b(?:the (?:entire|whole)(?: of the)? " + _TILE + r"|entirely|completely|exclusively|wall-to-wall)\b"
         r"(?! (?:absent|missing|free|devoid|lacking|bare of|empty))", (95.0, 100.0, 10.0), False),
        (r"\b(?:a |an )?(?:very )?(?:tiny|minute|negligible|minuscule|marginal) (?:part|portion|share|fraction|"
         r"proportion|percentage|amount|area|section|piece|bit|sliver|extent|presence)s?\b"
         r"|\b(?:a )?(?:thin |narrow )?slivers? of\b",
         (0.0, 4.0, 6.0), True),
        (r"\b(?:a |an )?(?:very )?(?:small|minor|limited|modest|little|slight) (?:part|portion|share|fraction|"
         r"proportion|percentage|amount|area|section|piece|bit|extent|presence)s?\b"
         r"|\b(?:a |very )?little\b(?! (?:to|or|if) )",
         (0.0, 15.0, 8.0), True),
        (r"\b(?:a |an )?(?:very |huge |vast )(?:large|big|major|substantial|considerable|sizeable|sizable|extensive) "
         r"(?:part|portion|share|fraction|proportion|percentage|amount|area|section|chunk|swathe?s?|expanses?|extent)s?\b",
         (40.0, 100.0, 8.0), True),
        (r"\b(?:a |an )?(?:large|big|major|substantial|significant|considerable|sizeable|sizable|good|great|wide|"
         r"extensive|vast|huge) (?:part|portion|share|fraction|proportion|percentage|amount|area|section|chunk|"
         r"swathe?s?|expanses?|extent|tracts?|stretch(?:es)?)s?\b|\bmuch of the\b|\bmuch of (?:it|its)\b",
         (25.0, 100.0, 8.0), True),
    )
)
_WHOLE_TILE_SPREAD = re.compile(r"(?:across|throughout|over|around|all over|scattered|spread|distributed|dotted)\s*$")
# "40% of the whole image is X", "of the entire tile, a third is X": the whole tile is the frame, not a claim
_FRAME_OF = re.compile(r"\bof\s*$")
# "the small ones", "and a small one" (normalised "a small 1"): the class's small parts, however many
_COUNT_NUMBER = (r"(?P<n>\d{1,2}(?: single)?|a single|only (?:a single|1)|just (?:a single|1)|single|several|multiple|many|"
                 r"numerous|a few|the few|a couple(?: of)?|a pair of|a handful of"
                 r"|the(?= (?:small|smaller|tiny|little) ones\b)|an?(?= (?:small|smaller|tiny|little) 1\b))")
_COUNT_ADJ = (r"(?P<adj>(?:(?:separate|distinct|isolated|individual|discrete|disconnected|detached|continuous|connected|"
              r"contiguous|unbroken|solid|compact|large|big|major|main|sizeable|sizable|larger|bigger|small|smaller|tiny|"
              r"little|irregular|elongated|narrow|long|wide|dense|scattered|similar|rectangular|round|oval)[ ,]+"
              r"(?:and )?)*)")
_COUNT_UNIT = (r"(?:patch(?:es)?|areas?|blocks?|clusters?|pockets?|parts?|pieces?|sections?|zones?|bod(?:y|ies)|stands?|"
               r"clumps?|parcels?|islands?|fragments?|segments?|tracts?|expanses?|spots?|plots?|stretch(?:es)?|strips?|ones"
               r"|(?<=small )1|(?<=smaller )1|(?<=tiny )1|(?<=little )1)")
# a number of countable things: "three separate patches", "a single lake" (the class word itself is the unit)
_COUNT = re.compile(
    rf"\b{_COUNT_NUMBER}\s+{_COUNT_ADJ}(?:{_COUNT_UNIT}\b|(?=(?:lakes?|ponds?|reservoirs?|rivers?|streams?|canals?|"
    r"creeks?|roads?|highways?|towns?|villages?|settlements?|forests?|woods|woodlands?|meadows?|glaciers?|lagoons?)\b))"
)
# the prompts' own patch facts, echoed: "1 large, 0 small", "2 large and 3 small"
_PATCH_FACTS = re.compile(r"\b(?P<large>\d{1,2}) large,?\s+(?:and\s+)?(?P<small>\d{1,2}) small\b")
# ... or one of them alone, with no unit after it ("the small patch of 1 small")
_PATCH_FACT = re.compile(r"\b(?P<n>\d{1,2}) (?P<size>large|small)\b(?![- ](?:[a-z]+ )?(?:patch|areas?\b|parts?\b|pieces?\b|"
                         r"ones?\b|bod|blocks?\b|clusters?\b|pockets?\b|lakes?\b|ponds?\b|fields?\b|islands?\b))")
# small parts of a class in any construction, with or without a number: "where the large and small water patches
# meet", "with the small patches a bit smaller", "a small patch of it", "small and large pockets of X": the class has
# small parts (one, for a singular unit). A class word may stand between the size and the unit; "a small part of the
# image" is a share, "a smaller patch" compares two parts, and numbered counts ("two small ponds", "a few small
# patches") are read by _COUNT first.
_SMALL_UNIT = (r"patch(?:es)?|pieces|bits|spots?|fragments?|pockets?|clusters?|specks?|islands?|plots?|parcels?|clumps?"
               r"|stands?|blocks?|areas|parts|sections|segments?|ones")
_SMALL_PARTS = re.compile(
    rf"\b(?P<det>(?:a|an|the|some|its|their|other|few|several|many|various|numerous)\s+)?"
    r"(?:(?:large|big|larger|bigger)\s+(?:and|or|&)\s+)?(?:small|tiny|little)(?:\s+(?:and|or|&)\s+(?:large|big))?"
    rf"(?:\s+(?P<unit>{_SMALL_UNIT})\b|(?=\s+[a-z-]+\s+(?P<unit2>{_SMALL_UNIT})\b))"
    rf"(?!\s+of\s+(?:the\s+|this\s+)?{_TILE}\b)"
)
# ... and one large part: "a large patch of water" claims a part beyond the small patches
_LARGE_PART = re.compile(rf"\b(?:a|an|one|its)\s+(?:large|big|sizeable|sizable)\s+(?:patch|block|cluster|pocket|parcel|"
                         rf"plot|stand|clump|island)\b(?!\s+of\s+(?:the\s+|this\s+)?{_TILE}\b)")
_COUNT_WORDS = {"several": 2, "multiple": 2, "many": 2, "numerous": 2, "a few": 2, "the few": 2, "a handful of": 2,
                "the": 2, "a": 1, "an": 1}
_RANK = re.compile(
    r"\b(?:the )?(?P<ord>second|third|2nd|3rd)[- ](?:largest|biggest|most (?:common|extensive|widespread|abundant|"
    r"prevalent|dominant)|dominant|main|major)\b(?: (?:land[- ]?cover )?(?:class|category|type|cover|surface))?"
    r"|\b(?:the )?(?P<first>largest|biggest|most (?:common|extensive|widespread|abundant|prevalent)|dominant|main|"
    r"principal|primary|prevailing|predominant) (?:land[- ]?cover |surface )?(?:class|category|type|cover type|"
    r"land[- ]?cover|land use)\b"
    r"|\b(?:the )?(?P<last>smallest|least (?:common|extensive|abundant|widespread)|rarest) (?:land[- ]?cover )?"
    r"(?:class|category|type)\b"
    # predicative superlatives: "water is the largest (part)", "grassland is the smallest part of the image"
    # ... of a class, not of one of its parts ("with the large patch being the largest")
    r"|(?<!patch )(?<!patches )(?<!part )(?<!parts )(?<!one )(?<!ones )"
    r"\b(?:is|are|was|were|as|being|remains?|forms?|makes? up|constitutes?|provides?|occupies|occupy|covers?|takes? up|"
    r"accounts? for|has|have) (?:by far |clearly |easily |also )?"
    r"the (?:single )?(?:(?P<pfirst>largest|biggest|most (?:common|extensive|widespread|abundant|prevalent|populated|"
    r"prominent|dominant)|dominant|main|principal|predominant)|(?P<plast>smallest|least (?:common|extensive|abundant|"
    r"widespread|populated|prominent)|rarest))(?: (?:part|parts|patch|feature|area|class|share|portion|component|category|"
    r"type|cover|one|land[- ]?cover(?: class| type)?))?(?=\s*(?:[.,;:!?)]|$|and\b|but\b|while\b|with\b|in\b|of "
    r"(?:the |this )?(?:image|tile|scene|area|picture)\b|here\b|at\b|covering\b))"
)
_DOMINANT = re.compile(
    r"\b(?:pre)?dominat(?:es|ed|ing|e|ion)\b|\b(?:pre)?dominant(?:ly)?\b|\bprevail(?:s|ing)?\b"
    r"|\b(?P<adv>mostly|mainly|largely|chiefly|primarily|principally)\b"
)
_TRACE = re.compile(
    r"\b(?:(?:hardly|barely|scarcely) any|almost no|nearly no|virtually no|practically no|next to no|"
    r"little(?: to| or) no|little if any|few if any|(?:only )?(?:a )?traces? of|a (?:hint|touch) of|minimal|negligible|"
    r"no (?:significant|major|notable|large|substantial|extensive|considerable|sizeable|sizable|big|real|meaningful|"
    r"appreciable|obvious large)|not much|not many|very little|only (?:a )?(?:little|few)"
    r"|a (?:few|couple of) (?:tiny|small|scattered))\b"
)
# traces that say the class is there, a little of it ("a few small trees", "traces of water"); the others
# ("hardly any", "little or no") also fit a class that is absent
_TRACE_ASSERTS = re.compile(r"(?:only )?(?:a )?traces? of|a (?:hint|touch) of|only (?:a )?(?:little|few)"
                            r"|a (?:few|couple of) (?:tiny|small|scattered)")
_NEG_PRE = re.compile(
    r"\b(?P<strong>no|without(?: any)?|neither|nor|none of(?: the)?|free of|free from|devoid of|lacks?|lacking|lack of|"
    r"absence of|absent of|zero|void of|nothing|none)\b(?! (?:more|less|fewer|longer|doubt|matter)\b)"
    r"|(?:\b(?P<weak>not|never)|(?<=\w)n't)\b(?! only\b)(?! just\b)"
)
_NEG_POST = re.compile(
    r"\b(?:(?:is|are|was|were|appears?|seems?|remains?)\s+(?:completely\s+|entirely\s+|totally\s+|wholly\s+)?"
    r"(?:absent|missing|lacking|non[- ]?existent)|(?:is|are)\s*(?:not|n't)\s+(?:present|visible|seen|found|observed|"
    r"detected|apparent|evident|shown|represented)|(?:isn't|aren't) (?:present|visible|seen|found)|(?:does|do)\s*"
    r"(?:not|n't)\s+(?:appear|occur|feature|exist|show)|(?:doesn't|don't) (?:appear|occur|feature|exist|show)|"
    r"nowhere to be (?:seen|found)|(?:cannot|can't|can not) be (?:seen|found|detected))\b"
)
BOUNDARY = re.compile(
    r"[,()\[\]]|\b(?:and|but|while|whilst|whereas|with|although|though|yet|which|where|however|plus|as well as"
    r"|alongside|accompanied by|together with|along with)\b"
)
HARD_STOP = re.compile(r"\b(?:but|other than|except|apart from|besides|aside from|only|instead|rather|while|whereas|"
                        r"although|though|yet)\b|[;]")
NEW_CLAUSE_LOCATIVE = re.compile(r"^\W*(?:and|but|while|whilst|whereas|yet|plus|whereas)\s+(?:in|at|on|along|across|"
                                  r"to|towards?|near|around|within|throughout|over|toward)\b")
PRONOUN_START = re.compile(r"^\W*(?:it|its|it's|they|their|(?:this|the) (?:land[- ]?cover )?(?:class|category|type)"
                            r"|this cover|this land cover|this feature|these|this)\b")
REGIONAL_SHARE_TAIL = re.compile(rf"^\s*of (?:the |its )?(?:{_DIR_ADJ}|{_IMG_SIDE}|center|central|middle)")
# "the other 43% of the image", "the remaining 20%": the rest of the tile, not the class named before
_OTHER_SHARE = re.compile(r"\b(?:the )?(?:other|remaining|rest of the)\s+\d+(?:\.\d+)?\s*(?:%|percent\b|per cent\b)"
                          r"(?:\s+of (?:the )?(?:image|tile|scene|area|picture)\b)?")
# a class word that modifies the class word after it ("freshwater wetlands", "farm buildings"); a non-vegetated
# class's adjective on another class ("built-up vegetation", "a snowy crop") is nonsense instead (faults.py)
_COMPOUND_GAP = re.compile(r"[- ]")
FUSING_ADJECTIVE = re.compile(r"(?:built[- ]?up|urban|snowy|icy|(?:snow|ice)[- ]covered|frozen|snow)")
# the denominator of a share: "38% of the vegetation" (the vegetation is no subject of what follows)
_DENOMINATOR = re.compile(r"\d\s*(?:%|percent|per cent) of (?:the |its |all )?$")
TOGETHER = re.compile(r"\b(?:together|combined|jointly|between them|in total|altogether|taken together)\b")
RESPECTIVELY = re.compile(r"\brespectively\b")
# words for a linear feature: their place and direction are those of the class's elongated parts
LINEAR_NOUN = re.compile(r"(?:rivers?|streams?|canals?|creeks?|channels?|tributar(?:y|ies)|waterways?|watercourses?|"
                          r"roads?|streets?|highways?|motorways?|railways?|railroads?)")
LINEAR_CUE = re.compile(r"\b(?:strips?|bands?|lines?|ribbons?|corridors?|belts?|stripes?)\s+of\s+(?:the\s+)?$")
SENTENCE = re.compile(r"[.!?;]+(?=\s|$)|:(?=\s|$)(?!\s*(?:~|about |around |roughly |approx\S* |some |nearly |almost )?\d)"
                      r"|\n+")

_VECTORS: dict[str, tuple[int, int]] = {
    "north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0), "top": (0, -1), "upper": (0, -1),
    "bottom": (0, 1), "lower": (0, 1), "left": (-1, 0), "right": (1, 0),
}


def vector(word: str) -> tuple[int, int]:
    dx = dy = 0
    for part in re.split(r"[- ]", word):
        vx, vy = _VECTORS.get(part, (0, 0))
        dx, dy = dx + vx, dy + vy
    return dx, dy


def _axis_angle(dx: float, dy: float) -> float | None:
    """Angle of the axis along (dx, dy) (image coordinates, y down), degrees clockwise from north, [0, 180)."""
    if dx == 0 and dy == 0:
        return None
    return math.degrees(math.atan2(dx, -dy)) % 180.0


class _Scanner:
    """Finds non-overlapping spans of each kind, in priority order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.taken = bytearray(len(text))
        self.spans: list[Span] = []

    def free(self, start: int, end: int) -> bool:
        return self.taken.find(1, start, end) < 0

    def add(self, start: int, end: int, kind: str, value: Any = None) -> Span | None:
        while end > start and self.text[end - 1] == " ":
            end -= 1
        if end <= start or not self.free(start, end):
            return None
        span = Span(start, end, kind, value, self.text[start:end])
        self.taken[start:end] = b"\x01" * (end - start)
        self.spans.append(span)
        return span

    def scan(self, pattern: re.Pattern[str], kind: str, value_of=lambda m: None, judged: bool = False) -> None:
        for match in pattern.finditer(self.text):
            if match.end() <= match.start() or not self.free(match.start(), match.end()):
                continue
            value = value_of(match)
            if value is not False:
                span = self.add(match.start(), match.end(), kind, value)
                if span is not None:
                    span.judged = judged


def _orientation_value(a: str, b: str) -> float | None:
    (ax, ay), (bx, by) = vector(a), vector(b)
    if (ax, ay) == (bx, by):
        return None
    if ax * bx + ay * by >= 0:  # "north-east" or "north to east": a place, not an axis
        return None
    return _axis_angle(bx - ax, by - ay)


def _pair_value(m: re.Match[str]) -> Any:
    a, b = (m.group("a"), m.group("b")) if m.group("a") else (m.group("c"), m.group("d"))
    return _orientation_value(a, b) if _orientation_value(a, b) is not None else False


def _motion_value(m: re.Match[str]) -> Any:
    return _axis_angle(*vector(m.group("a")))


def _orient_word_value(m: re.Match[str]) -> Any:
    word = m.group(0)
    if word.startswith("vertical") or word == "up and down":
        return 0.0
    if word.startswith("horizontal") or word == "side to side":
        return 90.0
    return "diagonal"


@dataclass(frozen=True)
class Region:
    """A claimed place: vertical / horizontal side ("N", "S", "E", "W", "C" or None) and depth."""

    v: str | None
    h: str | None
    depth: float  # how far from the side the region reaches (1/3 for "north", 0.5 for "northern half")
    kind: str  # "side", "quadrant", "corner", "edge", "center"


def _position_value(m: re.Match[str], text: str) -> Any:
    core, mod, pre = m.group("core"), (m.group("mod") or "").strip(" -"), m.group("pre")
    before = text[max(0, m.start() - 12):m.start()]
    after = text[m.end():m.end() + 6]
    base = re.sub(r"(?:ern|erly|wards?|[- ]hand)$", "", core)
    if base in ("left", "right", "top", "bottom"):
        if not (mod or re.search(r"\b(?:the|far|extreme)\s*$", before)):
            return False
        if base == "top" and re.match(r"\s*of\b", after) and re.search(r"\bon\s*$", before):
            return False
    if base in ("upper", "lower") and not mod:
        return False
    if base == "heart" and not re.search(r"\bthe\s*$", before):
        return False
    if base in ("center", "central", "centrally", "middle", "midst", "heart"):
        if re.match(r"[- ]pivot", after):
            return False
        return Region("C", "C", 1 / 3, "center")
    dx, dy = vector(base)
    v = {-1: "N", 1: "S"}.get(dy)
    h = {-1: "W", 1: "E"}.get(dx)
    if v is None and h is None:
        return False
    mod_word = re.split(r"[- ]", mod)[0] if mod else ""
    kind = "quadrant" if (v and h) else "side"
    depth = 0.5  # "in the west", "north-eastern part": the half (quadrant) on that side
    if mod_word.startswith("two") or mod_word.startswith("2"):
        depth = 2 / 3
    elif mod_word == "third":
        depth = 1 / 3
    elif mod_word == "quarter":  # "the lower-left quarter" is a quadrant; "the northern quarter" a strip
        depth = 0.5 if (v and h) else 0.25
    elif mod_word.startswith("corner"):
        depth, kind = 0.35, "corner"
    elif re.match(r"edge|border|margin|fringe|periphery|boundary|rim|strip|band|tip|end", mod_word):
        depth, kind = 0.2, ("corner" if (v and h) else "edge")
    if pre:
        depth, kind = min(depth, 0.25), ("corner" if (v and h) else "edge")
    return Region(v, h, depth, kind)


def _side_region(word: str) -> Region:
    """The half (or quadrant) of the tile on a compass side: "north", "south-east"."""
    dx, dy = vector(word)
    v, h = {-1: "N", 1: "S"}.get(dy), {-1: "W", 1: "E"}.get(dx)
    return Region(v, h, 0.5, "quadrant" if (v and h) else "side")


def _fraction_percent(m: re.Match[str]) -> float | None:
    if m.group("den"):
        num = {"a": 1, "an": 1}.get(m.group("num")) or int(m.group("num"))
        den = _FRACTION_DEN[m.group("den")]
    elif m.group("d2"):
        num, den = int(m.group("n2")), int(m.group("d2"))
        if den == 0 or num > den or den > 10:
            return None
    else:  # "half"
        num, den = 1, 2
    if num > den:
        return None
    return 100.0 * num / den


def _share_band(value: float, qualifier: str | None) -> tuple[float, float, float]:
    """(low, high, slack) in percent for a stated share and its qualifier."""
    q = (qualifier or "").strip()
    hedged = re.fullmatch(r"about|around|roughly|approximately|approx\.?|some|circa|ca\.|~|on the order of|in the region of", q)
    point_slack = max(4.0 if hedged else 3.0, min(9.0, 0.25 * value))  # "about 5%" for 8.4 %: a few points
    bound_slack = max(2.5, min(10.0, 0.35 * value))
    if re.search(r"no more|not more|under|(?<!no )(?<!not )less than|below|at most|up to|fewer", q):
        return 0.0, value, bound_slack
    if re.search(r"over|more than|above|at least|upwards|excess|exceeding|greater|no less|not less", q):
        return value, 100.0, bound_slack
    return value, value, point_slack


def _range_value(m: re.Match[str]) -> Any:
    numbers = [float(g) for g in m.groups() if g is not None]
    low, high = numbers
    if not low <= high <= 100:
        return False
    return low, high, max(5.0, min(10.0, 0.35 * high))


def _count_value(m: re.Match[str]) -> tuple[int, bool, str | None]:
    """(number, exact, size): "3 large patches" -> (3, True, "large"); "several areas" -> (2, False, None)."""
    word = m.group("n")
    adjectives = m.group("adj") or ""
    size = ("small" if re.search(r"\b(?:small|smaller|tiny|little)\b", adjectives)
            else "large" if re.search(r"\b(?:large|big|major|main|sizeable|sizable|larger|bigger)\b", adjectives) else None)
    if word in _COUNT_WORDS:
        return _COUNT_WORDS[word], False, size
    if word in ("a couple of", "a couple", "a pair of"):
        return 2, True, size
    digits = re.search(r"\d+", word)
    return (int(digits.group(0)) if digits else 1), True, size


def _small_parts_value(m: re.Match[str]) -> tuple[int, bool, str]:
    """(1, False, "small") for one small part ("a small patch of it"), (2, False, "small") for small parts."""
    unit = m.group("unit") or m.group("unit2")
    return (2 if unit.endswith("s") else 1), False, "small"


def _rank_value(m: re.Match[str]) -> int:
    """1 for the largest class, 2 / 3 for the second / third largest, -1 for the smallest."""
    if m.group("ord"):
        return 2 if m.group("ord") in ("second", "2nd") else 3
    return 1 if (m.group("first") or m.group("pfirst")) else -1


def scan(text: str, vocab: Vocabulary) -> list[Span]:
    s = _Scanner(text)
    s.scan(_META, "meta")
    s.scan(_ORIENT_FROM, "orient", lambda m: _orientation_value(m.group("a"), m.group("b")) if _orientation_value(
        m.group("a"), m.group("b")) is not None else False)
    s.scan(_ORIENT_PAIR, "orient", _pair_value)
    s.scan(_HEADING, "position", lambda m: _side_region(m.group("a")))
    s.scan(_ORIENT_MOTION, "orient", _motion_value)
    s.scan(_ORIENT_WORD, "orient", _orient_word_value)
    for m in _PATCH_FACTS.finditer(text):
        if s.free(m.start(), m.end()):
            s.add(m.start("large"), m.end("large") + len(" large"), "count", (int(m.group("large")), True, "large"))
            s.add(m.start("small"), m.end(), "count", (int(m.group("small")), True, "small"))
    s.scan(_PATCH_FACT, "count", lambda m: (int(m.group("n")), True, m.group("size")))
    s.scan(_COUNT, "count", _count_value)  # before traces: "a few small patches" is a count
    s.scan(_SMALL_PARTS, "count", _small_parts_value)
    s.scan(_LARGE_PART, "count", lambda m: (1, False, "large"))
    s.scan(_TRACE, "trace", lambda m: "asserts" if _TRACE_ASSERTS.fullmatch(m.group(0)) else None)
    s.scan(_OTHER_SHARE, "sink")
    found = sorted(vocab.find(text))
    i = 0
    while i < len(found):
        start, end, owner = found[i]
        i += 1
        if not s.free(start, end):
            continue
        # class words in a compound name the last one's class: "freshwater wetlands" (wetland), "farm fields"; a
        # non-vegetated class's adjective on another ("built-up vegetation") stays two, for faults.py
        while (owner is not None and i < len(found) and found[i][2] is not None and s.free(*found[i][:2])
               and _COMPOUND_GAP.fullmatch(text, end, found[i][0]) and not FUSING_ADJECTIVE.fullmatch(text[start:end])):
            end, owner = found[i][1], found[i][2]
            i += 1
        span = s.add(start, end, "sink" if owner is None else "class", owner)
        if span is not None and owner is None and _DENOMINATOR.search(text, max(0, start - 30), start):
            span.frame = True
    s.scan(_SIDE_OF_CENTRE, "position", lambda m: _side_region(m.group("core")))
    s.scan(_RELATIVE, "relative", lambda m: m.group("d") or m.group(0).split()[0])
    s.scan(_RANK, "rank", _rank_value)
    s.scan(_POSITION, "position", lambda m: _position_value(m, text))
    s.scan(_SHARE_RANGE, "share", _range_value)
    s.scan(_SHARE_NUMBER, "share", lambda m: _share_band(float(m.group(2)), m.group("q")) if float(m.group(2)) <= 100
           else False)

    def fraction(m: re.Match[str]) -> Any:
        value = _fraction_percent(m)
        return False if value is None else _share_band(value, m.group("q"))

    s.scan(_SHARE_FRACTION, "share", fraction)
    for pattern, band, judged in _SHARE_WORDS:
        s.scan(pattern, "share", lambda m, band=band: False if (_WHOLE_TILE_SPREAD.search(text[:m.start()])
                                                              or _FRAME_OF.search(text[:m.start()])) else band,
               judged=judged)
    s.scan(_DOMINANT, "dominant", lambda m: "follow" if m.group("adv") else "any")
    s.scan(_NEG_POST, "neg_post")
    s.scan(_NEG_PRE, "neg_pre", lambda m: "strong" if m.group("strong") else "weak")
    s.spans.sort(key=lambda sp: sp.start)
    return s.spans
