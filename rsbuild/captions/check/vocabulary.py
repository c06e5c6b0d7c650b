"""Vocabulary: words for land-cover classes, and "sink" words that name no checkable class.

Owns the lexicon of common class words, its mapping onto a scheme's classes (with the scheme's
own names and aliases), and ``Vocabulary``, the compiled term matcher the scanner uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

_LEXICON: dict[str, tuple[str, ...]] = {
    "water": (r"waters?", r"(?:fresh|open|surface)[- ]?waters?", r"water[- ]?bod(?:y|ies)", r"aquatic (?:areas?|surfaces?|zones?)",
              r"rivers?", r"river ?beds?", r"streams?", r"creeks?",
              r"canals?", r"channels?", r"lakes?", r"ponds?", r"reservoirs?", r"lagoons?", r"seas?", r"oceans?",
              r"bays?", r"estuar(?:y|ies)", r"coast(?:line)?s?", r"shore(?:line)?s?", r"inlets?",
              r"tributar(?:y|ies)", r"watercourses?", r"waterways?", r"oxbows?"),
    "trees": (r"trees?", r"tree[- ]cover(?:ed)?", r"forests?", r"forested(?: areas?| land)?", r"woodlands?",
              r"woods?", r"woodlots?", r"copses?", r"wooded(?: areas?| land)?", r"treed", r"groves?", r"(?:tree )?canop(?:y|ies)"),
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
    "built": (r"built[- ]?up(?: areas?| land| surfaces?)?", r"build-?up(?: areas?| land)?", r"built(?! (?:on|in|along|by|from|into|around|"
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
                r"boggy", r"fens?", r"mires?", r"reed ?beds?", r"reeds", r"peatlands?",
                r"(?:waterlogged|wetland|marsh(?:y|land)?|swamp(?:y)?|boggy|aquatic)(?: vegetation| ground| land| areas?)?",
                r"flooded(?: vegetation| grass(?:land)?| areas?| land)?", r"floating vegetation"),
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


_WORD_START = re.compile(r"\b[a-z]")


@dataclass(frozen=True)
class Vocabulary:
    """Terms -> class names (None for sinks), bucketed by their first two letters for speed."""

    buckets: dict[str, tuple[tuple[re.Pattern[str], str | None], ...]]
    anywhere: tuple[tuple[re.Pattern[str], str | None], ...]  # terms that do not start with two letters
    # a bucket followed by the terms that may start anywhere, per first two letters (filled as texts are read)
    _candidates: dict[str, tuple[tuple[re.Pattern[str], str | None], ...]] = field(default_factory=dict, compare=False,
                                                                                 repr=False)

    @classmethod
    def build(cls, entries: list[tuple[str, str | None]]) -> Vocabulary:
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
        candidates = self._candidates
        for word in _WORD_START.finditer(text):
            pos = word.start()
            key = text[pos:pos + 2]
            terms = candidates.get(key)
            if terms is None:
                terms = candidates[key] = self.buckets.get(key, ()) + self.anywhere
            for pattern, owner in terms:
                match = pattern.match(text, pos)
                if match:
                    found.append((pos, match.end(), owner))
        found.sort(key=lambda f: (f[0] - f[1], f[0]))
        taken = bytearray(len(text))
        chosen = []
        for start, end, owner in found:
            if taken.find(1, start, end) < 0:
                taken[start:end] = b"\x01" * (end - start)
                chosen.append((start, end, owner))
        return chosen


def _literal_term(term: str) -> str:
    words = [re.escape(w) for w in re.split(r"[\s\-]+", term.strip().lower()) if w]
    body = r"[- ]?".join(words)
    return body if body.endswith("s") else body + r"(?:s|es)?"


@lru_cache(maxsize=64)
def vocabulary_for(scheme_name: str, stats_class_names: tuple[str, ...]) -> Vocabulary:
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
    return Vocabulary.build(entries)


def unknown_class_names(stats: Mapping[str, Any]) -> tuple[str, ...]:
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
