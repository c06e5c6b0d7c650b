"""The faithfulness check: does a caption agree with the tile's label statistics?

``check_caption(text, stats)`` reads free text the way a careful reader would and compares
every claim it can pin to a class with the ``stats`` document (ARCHITECTURE.md):

* **class** - a named class (name or alias, e.g. "river" for water) must be present with at
  least ``min_share`` of the valid pixels; negated mentions ("no water is visible") do not name
  a class, and a strong negation of a class that covers a real share fails instead.
* **share** - percentages ("about 40%", "forty per cent", "30-40%"), fractions ("a third",
  "half", "three quarters") and share words ("most of the tile", "the majority", "nearly
  all", "a small part", "dominates", "the second-largest class") must be near the true share.
* **position** - "in the north-east", "upper left corner", "along the western edge", "the
  southern half", "in the centre", "north of the river": the class must have pixels there
  (north is the top of the image, east is the right; left is west).
* **direction** - "runs north-south", "flows from east to west", "diagonally from the top left
  to the bottom right" must match the orientation of one of the class's elongated components.
* **rank** - "the largest class", "water is the largest (part)", "the smallest part" must fit
  the ranking of the shares.
* **text faults** seen in small models' captions: a compass word glossed with the opposite
  image side ("east (left)", "west-right"), an invented "-land" class ("rushland"), and
  degenerate repetition (a sentence three times, or most 4-word phrases repeated).

Parsing is deliberately simple and lenient: phrases are found with regular expressions, each
claim is attached to the nearest class mention in its clause, and a claim that cannot be
attached or checked is ignored. A check that is unsure passes; it fails only on a clear
contradiction, and every failure comes with a short reason naming the class and the problem.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = ["Verdict", "check_caption", "DEFAULT_MIN_SHARE"]

DEFAULT_MIN_SHARE = 0.01  # a named class must cover at least this share of the valid pixels
NEGATED_PRESENT_SHARE = 0.05  # "there is no X" fails when X covers at least this share
TRACE_MAX_PERCENT = 12.0  # "hardly any X" fails when X covers more than this
ORIENTATION_TOLERANCE_DEG = 35.0
MIN_ELONGATION_FOR_DIRECTION = 1.5
THIN_ELONGATION = 5.0  # components this elongated are judged by their major axis, not their box


@dataclass
class Verdict:
    """Result of the check: ``ok`` and one short human-readable reason per contradiction."""

    ok: bool
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons)}


# --------------------------------------------------------------------------------------------
# Vocabulary: words for land-cover classes (the scheme's names and aliases plus a lexicon of
# common words), and "sink" words that describe the tile without naming a checkable class.

_LEXICON: dict[str, tuple[str, ...]] = {
    "water": (r"waters?", r"water[- ]?bod(?:y|ies)", r"aquatic (?:areas?|surfaces?|zones?)",
              r"rivers?", r"river ?beds?", r"streams?", r"creeks?",
              r"canals?", r"channels?", r"lakes?", r"ponds?", r"reservoirs?", r"lagoons?", r"seas?", r"oceans?",
              r"bays?", r"estuar(?:y|ies)", r"coast(?:line)?s?", r"shore(?:line)?s?", r"inlets?",
              r"tributar(?:y|ies)", r"watercourses?", r"waterways?", r"oxbows?"),
    "trees": (r"trees?", r"tree[- ]cover(?:ed)?", r"forests?", r"forested(?: areas?| land)?", r"woodlands?",
              r"woods", r"wooded(?: areas?| land)?", r"treed", r"groves?", r"(?:tree )?canop(?:y|ies)"),
    "crops": (r"croplands?", r"crops?", r"farmlands?", r"farms?", r"fields?", r"agricultural(?: land| fields?|"
              r" areas?| plots?| parcels?)?", r"agriculture", r"cultivated(?: land| fields?| areas?)?",
              r"cultivation", r"farming", r"arable(?: land)?", r"ploughed(?: fields?)?", r"tilled(?: land)?",
              r"orchards?", r"plantations?"),
    "grass": (r"grass(?:es)?", r"grasslands?", r"grass(?:ed|[- ]covered)(?: areas?| land| surfaces?)?",
              r"grass[a-z]{3,}", r"grassy(?: areas?)?", r"meadows?", r"pastures?",
              r"pastureland", r"prairies?", r"savann?ahs?", r"steppes?", r"lawns?", r"herbaceous (?:cover|"
              r"vegetation)"),
    "shrubs": (r"shrubs?", r"shrublands?", r"shrub[- ]covered", r"shrub[a-z]{3,}", r"moorlands?",
               r"shrubby(?: areas?)?", r"scrubs?", r"scrublands?", r"scrubby",
               r"bush(?:es)?", r"bushland", r"bushy", r"brush(?:land)?", r"thickets?", r"heath(?:land)?s?",
               r"chaparral"),
    "built": (r"built[- ]?up(?: areas?| land| surfaces?)?", r"built(?! (?:on|in|along|by|from|into|around|"
              r"near|over|with)\b)(?: areas?| environment)?", r"buildings?", r"houses?", r"housing",
              r"urban(?:i[sz]ed)?(?: areas?| fabric| land)?", r"settlements?", r"villages?", r"towns?",
              r"cit(?:y|ies)", r"hamlets?", r"suburbs?", r"suburban(?: areas?)?", r"roads?", r"streets?",
              r"highways?", r"motorways?", r"railways?", r"railroads?", r"residential(?: areas?)?",
              r"industrial(?: areas?| zones?| estates?)?", r"infrastructure", r"impervious(?: surfaces?)?",
              r"paved(?: surfaces?| areas?)?", r"rooftops?", r"structures?", r"developed(?: land| areas?)",
              r"man[- ]made(?: surfaces?| structures?)?", r"parking lots?"),
    "bare": (r"bare(?: ground| soil| land| earth| rock| surfaces?| areas?| patch(?:es)?)?", r"barren(?: land)?",
             r"sparse(?:ly)? vegetat(?:ion|ed)", r"exposed (?:soil|rock|ground|earth)", r"sand(?:s|y)?",
             r"dunes?", r"rocks?", r"rocky(?: outcrops?)?", r"outcrops?", r"deserts?", r"gravel", r"dirt"),
    "snow": (r"snow(?:[- ]covered|[- ]capped)?", r"snowy", r"snowfields?", r"ice", r"icy", r"ice[- ]covered",
             r"glaciers?", r"glacial", r"frozen"),
    "wetland": (r"wetlands?", r"herbaceous wetlands?", r"marsh(?:es|land|y)?", r"swamps?", r"swampy", r"bogs?",
                r"boggy", r"fens?", r"mires?", r"reed ?beds?", r"reeds", r"peatlands?", r"waterlogged",
                r"flooded(?: vegetation| grass(?:land)?| areas?| land)?"),
    "mangroves": (r"mangroves?(?: forests?)?",),
    "moss": (r"moss(?:es)?", r"lichens?", r"moss and lichens?", r"tundra"),
}
# a term of the scheme that identifies the scheme class a lexicon concept belongs to
_ANCHORS: dict[str, tuple[str, ...]] = {
    "water": ("water", "river"), "trees": ("forest", "trees", "tree cover"), "crops": ("cropland", "crops", "fields"),
    "grass": ("grassland", "grass"), "shrubs": ("shrubs", "shrubland"),
    "built": ("buildings", "urban", "built-up area"),
    "bare": ("bare", "bare ground", "barren"), "snow": ("snow",), "wetland": ("wetland", "marsh"),
    "mangroves": ("mangroves",), "moss": ("moss",),
}
_SINKS = (
    r"vegetation", r"vegetated(?: areas?| land)?", r"greenery", r"green (?:areas?|spaces?|cover|patches)",
    r"plants?", r"natural (?:areas?|land|cover|vegetation)", r"clouds?", r"cloud cover", r"cloudy", r"haze",
    r"shadows?", r"no[- ]?data", r"missing data", r"other (?:classes|land[- ]?cover(?: types| classes)?|"
    r"cover types|types|categories|surfaces?|land)", r"others", r"the rest", r"(?:the )?remainder",
    r"remaining (?:area|part|portion|classes|land|pixels|surface|space)", r"everything else",
    r"mixed (?:land[- ]?cover|land[- ]?use)", r"land[- ]?cover (?:classes|types)",
    # "-land" words that name terrain or land use, not a land-cover class (see _INVENTED_LAND)
    r"(?:is|main|high|low|up|in|hinter|home|table|bottom|park|waste|open|range)lands?",
)


@dataclass(frozen=True)
class _Vocabulary:
    """Terms -> class names (None for sinks), bucketed by their first two letters for speed."""

    buckets: dict[str, tuple[tuple[re.Pattern[str], str | None], ...]]
    anywhere: tuple[tuple[re.Pattern[str], str | None], ...]  # terms that do not start with two letters

    @classmethod
    def build(cls, entries: list[tuple[str, str | None]]) -> _Vocabulary:
        buckets: dict[str, list[tuple[re.Pattern[str], str | None]]] = {}
        anywhere = []
        for pattern, owner in entries:
            compiled = re.compile(rf"\b(?:{pattern})\b")
            if re.match(r"[a-z]{2}", pattern):
                buckets.setdefault(pattern[:2], []).append((compiled, owner))
            else:
                anywhere.append((compiled, owner))
        return cls({k: tuple(v) for k, v in buckets.items()}, tuple(anywhere))

    def find(self, text: str) -> list[tuple[int, int, str | None]]:
        """Non-overlapping term matches, preferring the longest ("herbaceous wetland" over "herbaceous")."""
        found = []
        for word in re.finditer(r"\b[a-z]", text):
            pos = word.start()
            for pattern, owner in self.buckets.get(text[pos:pos + 2], ()) + self.anywhere:
                match = pattern.match(text, pos)
                if match:
                    found.append((pos, match.end(), owner))
        found.sort(key=lambda f: (f[0] - f[1], f[0]))
        taken = bytearray(len(text))
        chosen = []
        for start, end, owner in found:
            if not any(taken[start:end]):
                taken[start:end] = b"\x01" * (end - start)
                chosen.append((start, end, owner))
        return chosen


def _literal_term(term: str) -> str:
    words = [re.escape(w) for w in re.split(r"[\s\-]+", term.strip().lower()) if w]
    body = r"[- ]?".join(words)
    return body if body.endswith("s") else body + r"(?:s|es)?"


@lru_cache(maxsize=64)
def _vocabulary(scheme_name: str, stats_class_names: tuple[str, ...]) -> _Vocabulary:
    """Terms -> class names for a scheme (scheme terms, then the lexicon mapped onto the scheme)."""
    entries: list[tuple[str, str | None]] = []
    term_owner: dict[str, str] = {}
    try:
        from rsbuild.schemes import get_scheme

        scheme = get_scheme(scheme_name)
        term_owner = scheme.terms()
        class_names: tuple[str, ...] = scheme.names
    except Exception:  # unknown scheme: only the class names found in the stats
        class_names = stats_class_names
    for name in (*class_names, *stats_class_names):
        term_owner.setdefault(name.lower().replace("_", " "), name)
    entries.extend((_literal_term(term), owner) for term, owner in term_owner.items())
    for concept, patterns in _LEXICON.items():
        owner = _concept_owner(concept, term_owner)
        entries.extend((p, owner) for p in patterns)
    entries.extend((p, None) for p in _SINKS)
    cloud_class = next((n for t, n in term_owner.items() if t.startswith("cloud")), None)
    entries = [(p, cloud_class) if p.startswith("cloud") and cloud_class else (p, o) for p, o in entries]
    return _Vocabulary.build(entries)


def _unknown_class_names(stats: Mapping[str, Any]) -> tuple[str, ...]:
    """Class names of the stats that its scheme does not list (custom schemes); usually none."""
    names = sorted({str(c["name"]) for c in stats.get("classes", []) if c.get("name")})
    try:
        from rsbuild.schemes import get_scheme

        known = set(get_scheme(str(stats.get("scheme", ""))).names)
    except Exception:
        known = set()
    return tuple(n for n in names if n not in known)


def _concept_owner(concept: str, term_owner: Mapping[str, str]) -> str:
    for anchor in _ANCHORS[concept]:
        if anchor in term_owner:
            return term_owner[anchor]
    for name in term_owner.values():  # custom schemes: a class whose name holds a lexicon term
        if any(re.search(rf"\b(?:{p})\b", name.lower().replace("_", " ")) for p in _LEXICON[concept]):
            return name
    return concept  # a class this scheme cannot show: naming it always fails


# --------------------------------------------------------------------------------------------
# Text normalisation

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


def _number_word(match: re.Match[str]) -> str:
    words = re.split(r"[- ]", match.group(0))
    if words[-1] == "hundred":
        return "100"
    return str(sum(_NUMBER_WORDS[w] for w in words))


def _normalise(text: str) -> str:
    """Lowercase, ASCII dashes and quotes, spelled-out numbers as digits, compass words unified."""
    t = unicodedata.normalize("NFKC", text)
    t = re.sub(r"[\u2010-\u2015\u2212]", "-", t).replace("\u2019", "'").replace("\u00a0", " ")
    for pattern, replacement in _ABBREVIATIONS:
        t = re.sub(pattern, replacement, t)
    t = t.lower()
    t = re.sub(r"\bcentre\b", "center", t)
    t = re.sub(r"\b(north|south)[- ]?(east|west)", r"\1-\2", t)
    t = re.sub(r"\bfield of view\b", "view", t)
    return _NUMBER_RE.sub(_number_word, t)


# --------------------------------------------------------------------------------------------
# Spans: everything the check understands, found in priority order without overlaps.

@dataclass
class _Span:
    start: int
    end: int
    kind: str  # class sink share dominant rank position orient relative trace neg_pre neg_post meta
    value: Any = None
    text: str = ""
    negated: bool = False
    trace: bool = False


_DIR = r"(?:north|south)-(?:east|west)|north|south|east|west"
_DIR_ADJ = rf"(?:{_DIR})(?:ern|erly|wards?)?"
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
    rf"\b(?:from|between) (?:the )?(?:far |extreme )?(?P<a>{_DIR}|{_IMG_SIDE})(?:ern)?(?:[- ]hand)?"
    rf"(?: (?:corner|edge|side|"
    rf"part|end|border|margin|half))?(?: of the {_TILE})? (?:to(?:wards?)?|and|into) (?:the )?(?:far |extreme )?"
    rf"(?P<b>{_DIR}|{_IMG_SIDE})(?:ern)?(?:[- ]hand)?(?: (?:corner|edge|side|part|end|border|margin|half))?\b"
)
_ORIENT_PAIR = re.compile(
    rf"\b(?P<a>{_DIR})(?:ern)?\s*(?:-|/|to|towards?|-to-)\s*(?P<b>{_DIR})(?:ern)?\b(?!-)"
    r"|\b(?P<c>top|left|bottom|right)[- ]to[- ](?P<d>bottom|right|top|left)\b"
)
_ORIENT_MOTION = re.compile(
    rf"\b(?:flows?|flowing|runs?|running|heads?|heading|trends?|trending|oriented|orientated|aligned|stretch(?:es|ing)?"
    rf"|extend(?:s|ing)?|cuts?|cutting) (?:from )?(?:the )?(?P<a>{_DIR})(?:wards?)?\b"
    rf"(?! of\b)(?!(?:ern)? (?:{_MODIFIER}))"
)
_ORIENT_WORD = re.compile(r"\b(?:vertical(?:ly)?|horizontal(?:ly)?|diagonal(?:ly)?|up and down|side to side)\b")
_RELATIVE = re.compile(
    rf"\b(?:to the |just |directly |immediately |further |slightly |lying )?(?P<d>{_DIR}|left|right)(?:ern|erly|wards)?"
    rf"(?:[- ]hand)?(?: (?:side|bank|shore|edge|part|half))?(?: of| from) "
    rf"(?!(?:the |a |an |its |this )?(?:{_TILE}|center|middle|it|its|whole|entire|overall)\b)(?:the |a |an |some )?"
    r"|\b(?:above|below|beneath) the (?!(?:\d|average|rest|remainder))"
)
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
_SHARE_WORDS: tuple[tuple[re.Pattern[str], tuple[float, float, float]], ...] = tuple(
    (re.compile(p), band) for p, band in (
        (r"\b(?:the |a )?(?:vast|overwhelming|great) majority\b|\b(?:nearly|almost|virtually|practically) (?:all|"
         r"the (?:entire|whole))\b|\b(?:almost|nearly|virtually) (?:entirely|completely|exclusively|fully)\b",
         (85.0, 100.0, 8.0)),
        (r"\b(?:the |a )?(?:clear |slight |narrow |small )?majority\b|\bthe bulk of\b|\bmost of the " + _TILE + r"\b",
         (50.0, 100.0, 6.0)),
        (r"\b(?:the (?:entire|whole)(?: of the)? " + _TILE + r"|entirely|completely|exclusively|wall-to-wall)\b"
         r"(?! (?:absent|missing|free|devoid|lacking|bare of|empty))", (95.0, 100.0, 10.0)),
        (r"\b(?:a |an )?(?:very )?(?:tiny|minute|negligible|minuscule|marginal) (?:part|portion|share|fraction|"
         r"proportion|percentage|amount|area|section|piece|bit|sliver|extent|presence)s?\b"
         r"|\b(?:a )?(?:thin |narrow )?slivers? of\b",
         (0.0, 4.0, 6.0)),
        (r"\b(?:a |an )?(?:very )?(?:small|minor|limited|modest|little|slight) (?:part|portion|share|fraction|"
         r"proportion|percentage|amount|area|section|piece|bit|extent|presence)s?\b"
         r"|\b(?:a |very )?little\b(?! (?:to|or|if) )",
         (0.0, 15.0, 8.0)),
        (r"\b(?:a |an )?(?:very |huge |vast )(?:large|big|major|substantial|considerable|sizeable|sizable|extensive) "
         r"(?:part|portion|share|fraction|proportion|percentage|amount|area|section|chunk|swathe?s?|expanses?|extent)s?\b",
         (40.0, 100.0, 8.0)),
        (r"\b(?:a |an )?(?:large|big|major|substantial|significant|considerable|sizeable|sizable|good|great|wide|"
         r"extensive|vast|huge) (?:part|portion|share|fraction|proportion|percentage|amount|area|section|chunk|"
         r"swathe?s?|expanses?|extent|tracts?|stretch(?:es)?)s?\b|\bmuch of the\b|\bmuch of (?:it|its)\b",
         (25.0, 100.0, 8.0)),
    )
)
_WHOLE_TILE_SPREAD = re.compile(r"(?:across|throughout|over|around|all over|scattered|spread|distributed|dotted)\s*$")
_RANK = re.compile(
    r"\b(?:the )?(?P<ord>second|third|2nd|3rd)[- ](?:largest|biggest|most (?:common|extensive|widespread|abundant|"
    r"prevalent|dominant)|dominant|main|major)\b(?: (?:land[- ]?cover )?(?:class|category|type|cover|surface))?"
    r"|\b(?:the )?(?P<first>largest|biggest|most (?:common|extensive|widespread|abundant|prevalent)|dominant|main|"
    r"principal|primary|prevailing|predominant) (?:land[- ]?cover |surface )?(?:class|category|type|cover type|"
    r"land[- ]?cover|land use)\b"
    r"|\b(?:the )?(?P<last>smallest|least (?:common|extensive|abundant|widespread)|rarest) (?:land[- ]?cover )?"
    r"(?:class|category|type)\b"
    # predicative superlatives: "water is the largest (part)", "grassland is the smallest part of the image"
    r"|\b(?:is|are|was|were|as|being|remains?|forms?|makes? up|constitutes?) (?:by far |clearly |easily |also )?"
    r"the (?:single )?(?:(?P<pfirst>largest|biggest|most (?:common|extensive|widespread|abundant|prevalent|populated|"
    r"prominent|dominant)|dominant|main|principal|predominant)|(?P<plast>smallest|least (?:common|extensive|abundant|"
    r"widespread|populated|prominent)|rarest))(?: (?:part|parts|feature|area|class|share|portion|component|category|"
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
_BOUNDARY = re.compile(
    r"[,()\[\]]|\b(?:and|but|while|whilst|whereas|with|although|though|yet|which|where|however|plus|as well as"
    r"|alongside|accompanied by|together with|along with)\b"
)
_HARD_STOP = re.compile(r"\b(?:but|other than|except|apart from|besides|aside from|only|instead|rather|while|whereas|"
                        r"although|though|yet)\b|[;]")
_NEW_CLAUSE_LOCATIVE = re.compile(r"^\W*(?:and|but|while|whilst|whereas|yet|plus|whereas)\s+(?:in|at|on|along|across|"
                                  r"to|towards?|near|around|within|throughout|over|toward)\b")
_PRONOUN_START = re.compile(r"^\W*(?:it|its|it's|they|their|this class|the class|this cover|this land cover|this "
                            r"feature|these|this)\b")
_REGIONAL_SHARE_TAIL = re.compile(rf"^\s*of (?:the |its )?(?:{_DIR_ADJ}|{_IMG_SIDE}|center|central|middle)")
# "the other 43% of the image", "the remaining 20%": the rest of the tile, not the class named before
_OTHER_SHARE = re.compile(r"\b(?:the )?(?:other|remaining|rest of the)\s+\d+(?:\.\d+)?\s*(?:%|percent\b|per cent\b)"
                          r"(?:\s+of (?:the )?(?:image|tile|scene|area|picture)\b)?")
_TOGETHER = re.compile(r"\b(?:together|combined|jointly|between them|in total|altogether|taken together)\b")
_RESPECTIVELY = re.compile(r"\brespectively\b")
# words for a linear feature: their place and direction are those of the class's elongated parts
_LINEAR_NOUN = re.compile(r"(?:rivers?|streams?|canals?|creeks?|channels?|tributar(?:y|ies)|waterways?|watercourses?|"
                          r"roads?|streets?|highways?|motorways?|railways?|railroads?)")
_LINEAR_CUE = re.compile(r"\b(?:strips?|bands?|lines?|ribbons?|corridors?|belts?|stripes?)\s+of\s+(?:the\s+)?$")
_SENTENCE = re.compile(r"[.!?;:]+(?=\s|$)|\n+")

_VECTORS: dict[str, tuple[int, int]] = {
    "north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0), "top": (0, -1), "upper": (0, -1),
    "bottom": (0, 1), "lower": (0, 1), "left": (-1, 0), "right": (1, 0),
}


def _vector(word: str) -> tuple[int, int]:
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
        self.spans: list[_Span] = []

    def free(self, start: int, end: int) -> bool:
        return not any(self.taken[start:end])

    def add(self, start: int, end: int, kind: str, value: Any = None) -> _Span | None:
        while end > start and self.text[end - 1] == " ":
            end -= 1
        if end <= start or not self.free(start, end):
            return None
        span = _Span(start, end, kind, value, self.text[start:end])
        self.taken[start:end] = b"\x01" * (end - start)
        self.spans.append(span)
        return span

    def scan(self, pattern: re.Pattern[str], kind: str, value_of=lambda m: None) -> None:
        for match in pattern.finditer(self.text):
            if match.end() <= match.start() or not self.free(match.start(), match.end()):
                continue
            value = value_of(match)
            if value is not False:
                self.add(match.start(), match.end(), kind, value)


def _orientation_value(a: str, b: str) -> float | None:
    (ax, ay), (bx, by) = _vector(a), _vector(b)
    if (ax, ay) == (bx, by):
        return None
    if ax * bx + ay * by >= 0:  # "north-east" or "north to east": a place, not an axis
        return None
    return _axis_angle(bx - ax, by - ay)


def _pair_value(m: re.Match[str]) -> Any:
    a, b = (m.group("a"), m.group("b")) if m.group("a") else (m.group("c"), m.group("d"))
    return _orientation_value(a, b) if _orientation_value(a, b) is not None else False


def _motion_value(m: re.Match[str]) -> Any:
    return _axis_angle(*_vector(m.group("a")))


def _orient_word_value(m: re.Match[str]) -> Any:
    word = m.group(0)
    if word.startswith("vertical") or word == "up and down":
        return 0.0
    if word.startswith("horizontal") or word == "side to side":
        return 90.0
    return "diagonal"


@dataclass(frozen=True)
class _Region:
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
        return _Region("C", "C", 1 / 3, "center")
    dx, dy = _vector(base)
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
    elif mod_word == "quarter":
        depth = 0.25
    elif mod_word.startswith("corner"):
        depth, kind = 0.35, "corner"
    elif re.match(r"edge|border|margin|fringe|periphery|boundary|rim|strip|band|tip|end", mod_word):
        depth, kind = 0.2, ("corner" if (v and h) else "edge")
    if pre:
        depth, kind = min(depth, 0.25), ("corner" if (v and h) else "edge")
    return _Region(v, h, depth, kind)


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
    point_slack = max(6.0, min(12.0, 0.4 * value))
    bound_slack = max(2.5, min(10.0, 0.35 * value))
    q = (qualifier or "").strip()
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


def _rank_value(m: re.Match[str]) -> int:
    """1 for the largest class, 2 / 3 for the second / third largest, -1 for the smallest."""
    if m.group("ord"):
        return 2 if m.group("ord") in ("second", "2nd") else 3
    return 1 if (m.group("first") or m.group("pfirst")) else -1


def _scan(text: str, vocab: _Vocabulary) -> list[_Span]:
    s = _Scanner(text)
    s.scan(_META, "meta")
    s.scan(_ORIENT_FROM, "orient", lambda m: _orientation_value(m.group("a"), m.group("b")) if _orientation_value(
        m.group("a"), m.group("b")) is not None else False)
    s.scan(_ORIENT_PAIR, "orient", _pair_value)
    s.scan(_ORIENT_MOTION, "orient", _motion_value)
    s.scan(_ORIENT_WORD, "orient", _orient_word_value)
    s.scan(_TRACE, "trace")
    s.scan(_OTHER_SHARE, "sink")
    for start, end, owner in vocab.find(text):
        if s.free(start, end):
            s.add(start, end, "sink" if owner is None else "class", owner)
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
    for pattern, band in _SHARE_WORDS:
        s.scan(pattern, "share", lambda m, band=band: False if _WHOLE_TILE_SPREAD.search(text[:m.start()]) else band)
    s.scan(_DOMINANT, "dominant", lambda m: "follow" if m.group("adv") else "any")
    s.scan(_NEG_POST, "neg_post")
    s.scan(_NEG_PRE, "neg_pre", lambda m: "strong" if m.group("strong") else "weak")
    s.spans.sort(key=lambda sp: sp.start)
    return s.spans


# --------------------------------------------------------------------------------------------
# Negation: which class mentions are denied, and which attributes are.

# between two denied classes: the first one's head noun, a separator, an adjective ("no wooded terrain or open marsh")
_LIST_GAP = re.compile(r"^(?:\s+[a-z-]+){0,2}?\s*(?:,\s*(?:or|nor)?|\bor\b|\bnor\b|and/or)\s*(?:[a-z-]+\s+)?$")
_BACK_LIST_GAP = re.compile(r"^(?:\s+[a-z-]+){0,2}?\s*(?:,\s*(?:or|and|nor)?|\band\b|\bor\b|\bnor\b)\s*"
                            r"(?:[a-z-]+\s+)?$")
_FILLER_GAP = re.compile(r"^\s*(?:[\w'-]+\s+){0,4}$")


def _words_between(text: str, a: int, b: int) -> str:
    return text[a:b] if a <= b else ""


def _apply_negation(text: str, spans: list[_Span]) -> list[tuple[_Span, bool]]:
    """Mark negated / trace mentions and negated attributes; return (mention, strong) denials."""
    mentions = [sp for sp in spans if sp.kind in ("class", "sink")]
    attributes = [sp for sp in spans if sp.kind in ("share", "position", "orient", "rank", "dominant", "relative")]
    denials: list[tuple[_Span, bool]] = []
    for sp in spans:
        if sp.kind in ("neg_pre", "trace"):
            for attr in attributes:  # "not in the north", "not the dominant class"
                gap = _words_between(text, sp.end, attr.start)
                if sp.kind == "neg_pre" and attr.start >= sp.end and re.fullmatch(r"\s*(?:\w+\s+){0,1}", gap):
                    attr.negated = True
            following = [m for m in mentions if m.start >= sp.end]
            if not following:
                continue
            first = following[0]
            gap = _words_between(text, sp.end, first.start)
            if not _FILLER_GAP.match(gap) or _HARD_STOP.search(gap) or _BOUNDARY.search(gap.replace(",", "")):
                continue
            chain = [first]
            for nxt in following[1:]:
                if _LIST_GAP.match(text[chain[-1].end:nxt.start]):
                    chain.append(nxt)
                else:
                    break
            for m in chain:
                if sp.kind == "trace":
                    m.trace = True
                else:
                    m.negated = True
                    denials.append((m, sp.value == "strong"))
        elif sp.kind == "neg_post":
            preceding = [m for m in mentions if m.end <= sp.start]
            if not preceding:
                continue
            last = preceding[-1]
            if not _FILLER_GAP.match(text[last.end:sp.start]) or _HARD_STOP.search(text[last.end:sp.start]):
                continue
            chain = [last]
            for prev in reversed(preceding[:-1]):
                if _BACK_LIST_GAP.match(text[prev.end:chain[-1].start]):
                    chain.append(prev)
                else:
                    break
            for m in chain:
                m.negated = True
                denials.append((m, True))
    return denials


# --------------------------------------------------------------------------------------------
# Clauses and attachment of attributes to class mentions.

@dataclass
class _Clause:
    start: int
    end: int
    mentions: list[_Span]
    attributes: list[_Span]


@dataclass
class _Sentence:
    start: int
    end: int
    clauses: list[_Clause]

    @property
    def mentions(self) -> list[_Span]:
        return [m for c in self.clauses for m in c.mentions]


def _sentences(text: str, spans: list[_Span]) -> list[_Sentence]:
    cuts = [0]
    for match in _SENTENCE.finditer(text):
        if not any(sp.start < match.start() < sp.end for sp in spans):
            cuts.append(match.end())
    cuts.append(len(text))
    sentences = []
    for a, b in zip(cuts, cuts[1:]):
        if b <= a:
            continue
        inner = [sp for sp in spans if a <= sp.start < b]
        bounds = [a]
        for match in _BOUNDARY.finditer(text, a, b):
            if not any(sp.start <= match.start() < sp.end for sp in inner):
                bounds.append(match.start())
        bounds.append(b)
        clauses = []
        for c0, c1 in zip(bounds, bounds[1:]):
            members = [sp for sp in inner if c0 <= sp.start < c1]
            clauses.append(_Clause(
                c0, c1,
                mentions=[m for m in members if m.kind in ("class", "sink") and not m.negated],
                attributes=[m for m in members if m.kind in ("share", "position", "orient", "rank", "dominant",
                                                             "relative") and not m.negated],
            ))
        sentences.append(_Sentence(a, b, clauses))
    return sentences


def _nearest(attr: _Span, mentions: list[_Span]) -> _Span | None:
    def distance(m: _Span) -> tuple[int, int]:
        gap = attr.start - m.end if m.end <= attr.start else m.start - attr.end
        return max(gap, 0), 0 if m.end <= attr.start else 1

    return min(mentions, key=distance) if mentions else None


def _attach(text: str, sentences: list[_Sentence], subject: _Span | None) -> list[tuple[_Span, _Span]]:
    """(attribute, mention) pairs: each attribute goes to the class mention it most likely describes.

    Within a clause the nearest mention wins; a clause without one borrows from its sentence
    (forward for a leading "In the north, ..."); a sentence without one is about the first class
    of the previous sentence when it starts with a pronoun ("It lies ..."), else about ``subject``.
    """
    pairs: list[tuple[_Span, _Span]] = []
    previous_first: _Span | None = None
    for sentence in sentences:
        paired = _respectively(text, sentence)
        pairs.extend(paired)
        done = {id(a) for a, _ in paired}
        pronoun = _PRONOUN_START.match(text[sentence.start:sentence.end]) is not None
        fallback = previous_first if (pronoun and previous_first is not None) else subject
        for ci, clause in enumerate(sentence.clauses):
            for attr in clause.attributes:
                if id(attr) in done:
                    continue
                target = _target(text, sentence, ci, attr, fallback)
                if target is not None:
                    pairs.append((attr, target))
        if sentence.mentions:
            previous_first = sentence.mentions[0]
    return pairs


_FOLLOW_GAP = re.compile(r"\s*(?:(?:covered|dominated|occupied|taken up) (?:by|with|in) |made up of |composed of |"
                         r"consisting of |of |(?:an? )?)?(?:[a-z-]+ )?")


def _target(text: str, sentence: _Sentence, ci: int, attr: _Span, fallback: _Span | None) -> _Span | None:
    clause = sentence.clauses[ci]
    if attr.kind == "dominant" and attr.value == "follow":  # "mostly cropland", "mainly covered by trees"
        following = [m for c in sentence.clauses[ci:] for m in c.mentions if m.start >= attr.end]
        if following and _FOLLOW_GAP.fullmatch(text[attr.end:following[0].start]):
            return following[0]
        return None
    if attr.kind == "relative":  # "X lies north of Y": the subject comes before
        earlier = [m for c in sentence.clauses[:ci + 1] for m in c.mentions if m.end <= attr.start]
        return earlier[-1] if earlier else None
    if clause.mentions:
        return _nearest(attr, clause.mentions)
    before = [m for c in sentence.clauses[:ci] for m in c.mentions]
    after = [m for c in sentence.clauses[ci + 1:] for m in c.mentions]
    if after:
        nxt = next(c for c in sentence.clauses[ci + 1:] if c.mentions)
        lead = text[nxt.start:nxt.mentions[0].start]
        has_own = any(a.kind == attr.kind for a in nxt.attributes)
        leading = _NEW_CLAUSE_LOCATIVE.match(text[clause.start:clause.end]) is not None
        if not before or (leading and len(lead.split()) <= 3 and not has_own):
            return after[0]
    if before:
        return before[-1]
    return fallback


def _respectively(text: str, sentence: _Sentence) -> list[tuple[_Span, _Span]]:
    if not _RESPECTIVELY.search(text, sentence.start, sentence.end):
        return []
    mentions = sentence.mentions
    pairs = []
    for kind in ("share", "position"):
        attrs = [a for c in sentence.clauses for a in c.attributes if a.kind == kind]
        if len(attrs) >= 2 and len(attrs) == len(mentions):
            pairs.extend(zip(attrs, mentions))
    return pairs


# --------------------------------------------------------------------------------------------
# Comparing claims with the statistics.

class _Facts:
    """Look-ups on a stats document."""

    def __init__(self, stats: Mapping[str, Any]) -> None:
        self.stats = stats
        self.classes: dict[str, Mapping[str, Any]] = {c["name"]: c for c in stats.get("classes", []) if "name" in c}
        self.components: dict[str, list[Mapping[str, Any]]] = {}
        for comp in stats.get("components", []) or []:
            self.components.setdefault(comp.get("class"), []).append(comp)
        total = stats.get("pixels") or 0
        self.total_pixels = float(total)
        self.ranked = sorted(self.classes.values(), key=lambda c: -float(c.get("share", 0.0)))

    def share(self, name: str) -> float:
        return float(self.classes[name].get("share", 0.0)) if name in self.classes else 0.0

    def image_share(self, name: str) -> float:
        cls = self.classes.get(name)
        if not cls or not self.total_pixels or "pixels" not in cls:
            return self.share(name)
        return float(cls["pixels"]) / self.total_pixels


def _pct(share: float) -> str:
    value = 100.0 * share
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


_CELLS = (("north-west", "north", "north-east"), ("west", "centre", "east"), ("south-west", "south", "south-east"))


def _where(cls: Mapping[str, Any]) -> str:
    """'the north-west' etc.: the 3x3 cell of the class's centroid, in compass words."""
    centroid = cls.get("centroid")
    if not centroid:
        return "another part of the tile"
    col, row = (min(max(int(float(v) * 3), 0), 2) for v in centroid[:2])
    return f"the {_CELLS[row][col]}"


def _axis_interval(side: str | None, depth: float) -> tuple[float, float]:
    if side in ("N", "W"):
        return 0.0, depth
    if side in ("S", "E"):
        return 1.0 - depth, 1.0
    if side == "C":
        return 0.3, 0.7
    return 0.0, 1.0


def _centroid_agrees(region: _Region, cx: float, cy: float) -> bool:
    """Whether a centroid lies on the claimed side(s); corners need it well inside their quadrant."""
    if region.kind == "center":
        return 0.2 <= cx <= 0.8 and 0.2 <= cy <= 0.8
    limit = 0.45 if region.kind == "corner" else 0.6  # how far across the image the centroid may sit
    checks = {"N": cy <= limit, "S": cy >= 1 - limit, "W": cx <= limit, "E": cx >= 1 - limit}
    return all(checks[side] for side in (region.v, region.h) if side in checks)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _box_reaches(region: _Region, box: Sequence[float]) -> bool:
    """Whether a normalised box [x1, y1, x2, y2] reaches into the region's core by a few percent."""
    x0, x1 = _axis_interval(region.h, region.depth)
    y0, y1 = _axis_interval(region.v, region.depth)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    return (_overlap(bx0, bx1, x0, x1) >= min(0.03, 0.5 * (bx1 - bx0))
            and _overlap(by0, by1, y0, y1) >= min(0.03, 0.5 * (by1 - by0)))


def _surely_inside(region: _Region, box: Sequence[float], image_share: float) -> float:
    """Share of the image that must lie in the region: pixels that cannot all fit in the box outside it."""
    x0, x1 = _axis_interval(region.h, region.depth)
    y0, y1 = _axis_interval(region.v, region.depth)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    outside = (bx1 - bx0) * (by1 - by0) - _overlap(bx0, bx1, x0, x1) * _overlap(by0, by1, y0, y1)
    return image_share - outside


def _axis_share_in(region: _Region, comp: Mapping[str, Any]) -> float:
    """Fraction of a thin component's major axis (through its centroid, inside its box) in the region."""
    x0, x1 = _axis_interval(region.h, region.depth)
    y0, y1 = _axis_interval(region.v, region.depth)
    bx0, by0, bx1, by1 = (float(v) for v in comp["bbox"])
    cx, cy = (float(v) for v in comp["centroid"])
    theta = math.radians(float(comp.get("orientation_deg", _ORIENTATION_DEG.get(str(comp.get("orientation")), 0.0))))
    dx, dy = math.sin(theta), -math.cos(theta)  # clockwise from north; image y points south
    inside = total = 0
    for i in range(-100, 101):
        t = i / 100.0 * 1.5
        px, py = cx + t * dx, cy + t * dy
        if bx0 - 1e-6 <= px <= bx1 + 1e-6 and by0 - 1e-6 <= py <= by1 + 1e-6:
            total += 1
            inside += x0 - 0.02 <= px <= x1 + 0.02 and y0 - 0.02 <= py <= y1 + 0.02
    return inside / total if total else 0.0


def _component_in(region: _Region, comp: Mapping[str, Any], total_pixels: float) -> bool:
    if "bbox" not in comp or "centroid" not in comp:
        return True
    if float(comp.get("elongation", 0.0)) >= THIN_ELONGATION:
        return _axis_share_in(region, comp) >= 0.2
    if not _box_reaches(region, comp["bbox"]):
        return False
    cx, cy = (float(v) for v in comp["centroid"])
    comp_share = float(comp.get("pixels", 0)) / total_pixels if total_pixels else float(comp.get("share", 0.0))
    return _centroid_agrees(region, cx, cy) or _surely_inside(region, comp["bbox"], comp_share) >= max(
        0.005, 0.2 * comp_share)


def _present_in(region: _Region, cls: Mapping[str, Any], comps: list[Mapping[str, Any]], image_share: float,
                total_pixels: float) -> bool:
    """Whether a class plausibly has pixels in a claimed region (bbox, centroid, components)."""
    bbox = cls.get("bbox")
    centroid = cls.get("centroid")
    if not bbox or not centroid:
        return True
    if not _box_reaches(region, bbox):
        return False
    listed = sum(int(c.get("pixels", 0)) for c in comps)
    if comps and listed >= 0.9 * float(cls.get("pixels", listed + 1)):
        return any(_component_in(region, comp, total_pixels) for comp in comps)  # the components are the class
    if _centroid_agrees(region, float(centroid[0]), float(centroid[1])):
        return True
    if any(_component_in(region, comp, total_pixels) for comp in comps):
        return True
    return _surely_inside(region, bbox, image_share) >= max(0.01, 0.2 * image_share)


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


_ORIENTATION_DEG = {"north-south": 0.0, "northeast-southwest": 45.0, "east-west": 90.0, "northwest-southeast": 135.0}


def _direction_name(angle: float) -> str:
    names = ["north-south", "north-east to south-west", "east-west", "north-west to south-east"]
    return names[int(((angle % 180.0) + 22.5) // 45.0) % 4]


def _orientation_agrees(claim: Any, cls: Mapping[str, Any], comps: list[Mapping[str, Any]]) -> tuple[bool, str]:
    """Whether any elongated part of the class runs along the claimed axis; also the true directions."""
    shaped = []
    for comp in comps:
        if float(comp.get("elongation", 0.0)) < MIN_ELONGATION_FOR_DIRECTION:
            continue
        deg = comp.get("orientation_deg")
        if deg is None:
            deg = _ORIENTATION_DEG.get(str(comp.get("orientation")))
        if deg is not None:
            shaped.append(float(deg))
    if not shaped:
        return True, ""
    targets = [45.0, 135.0] if claim == "diagonal" else [float(claim)]
    tolerance = 30.0 if claim == "diagonal" else ORIENTATION_TOLERANCE_DEG
    if any(_angle_diff(t, d) <= tolerance for t in targets for d in shaped):
        return True, ""
    bbox = cls.get("bbox")
    if bbox and claim != "diagonal":
        w, h = float(bbox[2]) - float(bbox[0]), float(bbox[3]) - float(bbox[1])
        if (float(claim) == 0.0 and h >= 1.3 * w) or (float(claim) == 90.0 and w >= 1.3 * h):
            return True, ""
    return False, " and ".join(sorted({_direction_name(d) for d in shaped}))


class _Checker:
    def __init__(self, text: str, stats: Mapping[str, Any], min_share: float) -> None:
        self.text = text
        self.facts = _Facts(stats)
        self.min_share = min_share
        self.reasons: list[str] = []

    def fail(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def label(self, mention: _Span) -> str:
        name = mention.value
        words = mention.text
        return f"'{words}'" if words == name else f"'{words}' ({name})"

    def check_named(self, mention: _Span, claims: list[_Span]) -> bool:
        """The class is present with at least min_share; returns whether its other claims can be checked."""
        name = mention.value
        share = self.facts.share(name)
        if mention.trace:
            if share * 100 > TRACE_MAX_PERCENT:
                self.fail(f"says there is hardly any {name}, but it covers {_pct(share)}")
            return False
        says_none = any(c.kind == "share" and c.value[1] <= 0.5 for c in claims)  # "0% water"
        if name not in self.facts.classes:
            if not says_none:
                self.fail(f"names {self.label(mention)}, which is not in the tile")
            return False
        if share < self.min_share and not says_none:
            self.fail(f"names {self.label(mention)}, which covers only {_pct(share)} (< {_pct(self.min_share)})")
            return False
        return True

    def check_share(self, mention: _Span, claim: _Span) -> None:
        name = mention.value
        low, high, slack = claim.value
        shares = [self.facts.share(name), self.facts.image_share(name)]
        if any(low - slack <= 100 * s <= high + slack for s in shares):
            return
        self.fail(f"says {name} covers {claim.text.strip()}, but it covers {_pct(shares[0])}")

    def check_dominant(self, mention: _Span, claim: _Span) -> None:
        name = mention.value
        share = self.facts.share(name)
        top = self.facts.ranked[0] if self.facts.ranked else None
        if top is None or share >= 0.4 or share >= 0.75 * float(top.get("share", 0.0)):
            return
        self.fail(f"says {name} dominates, but it covers {_pct(share)} (largest: {top['name']} {_pct(top['share'])})")

    def check_rank(self, mention: _Span, claim: _Span) -> None:
        name = mention.value
        ranked = self.facts.ranked
        if not ranked or name not in self.facts.classes:
            return
        if claim.value == -1:  # the smallest of the classes big enough to name
            wanted = [c for c in ranked if float(c.get("share", 0.0)) >= self.min_share][-1:] or ranked[-1:]
            if wanted[0]["name"] == name or self.facts.share(name) <= float(wanted[0]["share"]) + 0.02:
                return
            wanted = wanted[0]
        else:
            wanted = ranked[min(claim.value, len(ranked)) - 1]
            if wanted["name"] == name or abs(float(wanted["share"]) - self.facts.share(name)) <= 0.05:
                return
        ordinal = {-1: "smallest", 1: "largest", 2: "second-largest", 3: "third-largest"}[claim.value]
        self.fail(f"says {name} is the {ordinal} class, but that is {wanted['name']} "
                  f"({_pct(float(wanted['share']))}; {name} {_pct(self.facts.share(name))})")

    def linear_parts(self, mention: _Span) -> list[Mapping[str, Any]]:
        """The elongated components a linear mention ("the river", "a strip of water") refers to."""
        if mention.kind != "class":
            return []
        linear = _LINEAR_NOUN.fullmatch(mention.text) or _LINEAR_CUE.search(self.text[max(0, mention.start - 30):
                                                                                        mention.start])
        if not linear:
            return []
        return [c for c in self.facts.components.get(mention.value, [])
                if c.get("elongated") or float(c.get("elongation", 0.0)) >= 3.0]

    def check_position(self, mention: _Span, claim: _Span) -> None:
        name = mention.value
        cls = self.facts.classes[name]
        comps = self.facts.components.get(name, [])
        parts = self.linear_parts(mention)
        if parts:
            if not any(_component_in(claim.value, comp, self.facts.total_pixels) for comp in parts):
                self.fail(f"places the {mention.text} ({name}) at '{claim.text.strip()}', but it lies elsewhere")
            return
        if not _present_in(claim.value, cls, comps, self.facts.image_share(name), self.facts.total_pixels):
            self.fail(f"places {name} at '{claim.text.strip()}', but it lies in {_where(cls)}")

    def check_orientation(self, mention: _Span, claim: _Span) -> None:
        name = mention.value
        comps = self.facts.components.get(name, [])
        elongated = [c for c in comps if c.get("elongated") or float(c.get("elongation", 0.0)) >= 3.0]
        ok, actual = _orientation_agrees(claim.value, self.facts.classes[name], elongated or comps)
        if not ok:
            self.fail(f"says {name} runs '{claim.text.strip()}', but its elongated parts run {actual}")

    def check_relative(self, mention: _Span, claim: _Span, spans: list[_Span]) -> None:
        other = next((m for m in spans if m.kind == "class" and not m.negated and claim.end <= m.start
                      <= claim.end + 25), None)
        if other is None or other.value == mention.value or other.value not in self.facts.classes:
            return
        a, b = self.facts.classes[mention.value], self.facts.classes[other.value]
        if "centroid" not in a or "centroid" not in b:
            return
        word = str(claim.value)
        dx, dy = _vector({"above": "north", "over": "north", "below": "south", "beneath": "south",
                          "under": "south"}.get(word, word))
        ax, ay = (float(v) for v in a["centroid"])
        bx, by = (float(v) for v in b["centroid"])
        if (dx and dx * (ax - bx) < -0.1) or (dy and dy * (ay - by) < -0.1):
            self.fail(f"says {mention.value} lies '{claim.text.strip()}' {other.value}, but its centre is on the "
                      f"other side")


def check_caption(text: str, stats: Mapping[str, Any], *, subject: str | None = None,
                  min_share: float = DEFAULT_MIN_SHARE) -> Verdict:
    """Check a caption against a tile's ``stats`` (ARCHITECTURE.md schema).

    Fails when the caption names a class that is absent or below ``min_share`` of the valid
    pixels, states a share far from the true one, places a class where it is not, or gives a
    wrong direction for an elongated feature. ``subject`` (a class name) is the class a
    single-class caption is about; sentences that name no class ("It lies in the south.") are
    then read as being about it. Returns ``Verdict(ok, reasons)``.
    """
    if not isinstance(text, str) or not text.strip():
        return Verdict(False, ["caption is empty"])
    vocab = _vocabulary(str(stats.get("scheme", "")), _unknown_class_names(stats))
    normalised = _normalise(text)
    spans = _scan(normalised, vocab)
    denials = _apply_negation(normalised, spans)
    sentences = _sentences(normalised, spans)
    subject_span = _Span(-1, -1, "subject", subject, subject or "") if subject else None
    pairs = _attach(normalised, sentences, subject_span)

    checker = _Checker(normalised, stats, min_share)
    claims_by_mention: dict[int, list[_Span]] = {}
    mention_by_id: dict[int, _Span] = {}
    for attr, mention in pairs:
        if mention.kind in ("class", "subject") and mention.value:
            claims_by_mention.setdefault(id(mention), []).append(attr)
            mention_by_id[id(mention)] = mention
    checkable: set[int] = set()
    for sp in spans:
        if sp.kind == "class" and not sp.negated and checker.check_named(sp, claims_by_mention.get(id(sp), [])):
            checkable.add(id(sp))
    if subject_span is not None and subject in checker.facts.classes:
        checkable.add(id(subject_span))
    clause_of = {id(a): c for sentence in sentences for c in sentence.clauses for a in c.attributes}
    for mention_id, claims in claims_by_mention.items():
        if mention_id in checkable:
            for claim in claims:
                _check_claim(checker, mention_by_id[mention_id], claim, clause_of.get(id(claim)), spans)
    _check_denials(checker, sentences, denials)
    for reason in (*_invented_classes(normalised, spans), *_contradictory_directions(normalised),
                   *_degenerate(normalised)):
        checker.fail(reason)
    return Verdict(not checker.reasons, checker.reasons)


def _check_claim(checker: _Checker, mention: _Span, claim: _Span, clause: _Clause | None, spans: list[_Span]) -> None:
    text = checker.text
    regional = clause is not None and any(a.kind == "position" for a in clause.attributes)
    if claim.kind == "share":
        if _TOGETHER.search(text, max(0, claim.start - 40), claim.end + 40):
            return  # "together they cover 70%"
        if _REGIONAL_SHARE_TAIL.match(text[claim.end:claim.end + 40]):
            return  # "40% of the northern half"
        checker.check_share(mention, claim)
    elif claim.kind == "dominant" and not regional:
        checker.check_dominant(mention, claim)
    elif claim.kind == "rank" and not regional:
        checker.check_rank(mention, claim)
    elif claim.kind == "position":
        checker.check_position(mention, claim)
    elif claim.kind == "orient":
        checker.check_orientation(mention, claim)
    elif claim.kind == "relative":
        checker.check_relative(mention, claim, spans)


def _check_denials(checker: _Checker, sentences: Iterable[_Sentence], denials: list[tuple[_Span, bool]]) -> None:
    """'There is no water' fails when water covers a real share (unless the denial is regional)."""
    for mention, strong in denials:
        if not strong or mention.kind != "class":
            continue
        sentence = next((s for s in sentences if s.start <= mention.start < s.end), None)
        if sentence is not None:
            attributes = [a for c in sentence.clauses for a in c.attributes]
            sentence_text = checker.text[sentence.start:sentence.end]
            if any(a.kind in ("position", "relative") for a in attributes) or re.search(
                    r"\b(?:other than|except|apart from|besides|only|aside from)\b", sentence_text):
                continue
        share = checker.facts.share(mention.value)
        if share >= NEGATED_PRESENT_SHARE:
            checker.fail(f"says there is no {mention.value}, but it covers {_pct(share)}")


# --------------------------------------------------------------------------------------------
# Text-level faults: invented land-cover words, self-contradicting directions, degenerate text.

# a "-land" compound ("rushland", "rough-land") that the vocabulary does not know: an invented class
_INVENTED_LAND = re.compile(r"\b(?:[a-z]{3,}-?lands?)\b")
_DIRECTION_GLOSS = re.compile(
    rf"\b(?P<compass>{_DIR})(?:ern)?(?:\s*\(|-)(?P<side>(?:top|upper|bottom|lower)(?:[- ](?:left|right))?|left|right)"
    r"(?:[- ](?:side|corner|edge|half))?(?:\)|\b)")
REPEATED_SENTENCE_LIMIT = 3  # the same sentence this many times is degenerate text
REPEATED_NGRAM_SHARE = 0.5  # ... as is text where this share of its word 4-grams repeat earlier ones
MIN_WORDS_FOR_NGRAMS = 24


def _invented_classes(text: str, spans: Sequence[_Span]) -> list[str]:
    """Reasons for land-cover nouns of the "-land" kind that name no class ("rushland covers a fifth")."""
    covered = bytearray(len(text))
    for sp in spans:
        covered[sp.start:sp.end] = b"\x01" * (sp.end - sp.start)
    reasons = []
    for match in _INVENTED_LAND.finditer(text):
        if not any(covered[match.start():match.end()]):
            reasons.append(f"names '{match.group(0)}', which is no land-cover class")
    return reasons


def _contradictory_directions(text: str) -> list[str]:
    """Reasons for a compass word glossed with the opposite image side ("east (left)")."""
    reasons = []
    for match in _DIRECTION_GLOSS.finditer(text):
        (cx, cy), (sx, sy) = _vector(match.group("compass")), _vector(match.group("side"))
        if cx * sx < 0 or cy * sy < 0 or (cx and not cy and sy and not sx) or (cy and not cx and sx and not sy):
            reasons.append(f"contradicts itself: '{match.group(0)}' (north is the top, east the right)")
    return reasons


def _degenerate(text: str) -> list[str]:
    """A reason when the text repeats itself: one sentence again and again, or mostly repeated phrases."""
    sentences = [re.sub(r"\W+", " ", s).strip() for s in re.split(r"[.!?;\n]+", text)]
    counts: dict[str, int] = {}
    for sentence in filter(None, sentences):
        counts[sentence] = counts.get(sentence, 0) + 1
    if counts and max(counts.values()) >= REPEATED_SENTENCE_LIMIT:
        return ["repetitive text (a sentence repeats)"]
    words = re.findall(r"[a-z0-9%]+", text)
    if len(words) >= MIN_WORDS_FOR_NGRAMS:
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        seen: set[tuple[str, ...]] = set()
        repeats = 0
        for gram in grams:
            repeats += gram in seen
            seen.add(gram)
        if repeats / len(grams) >= REPEATED_NGRAM_SHARE:
            return ["repetitive text (most phrases repeat)"]
    return []
