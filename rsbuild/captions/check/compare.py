"""Comparing claims with the statistics.

Owns the thresholds, look-ups on a stats document, the geometry of claimed regions and
directions, and ``Checker``, which turns each contradicted claim into a reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rsbuild.captions.check.clauses import Clause, Sentence
from rsbuild.captions.check.spans import LINEAR_CUE, LINEAR_NOUN, REGIONAL_SHARE_TAIL, TOGETHER, Region, Span, vector

REASON_CODES = ("class", "share", "count", "position", "direction", "rank", "relative", "copied_example", "no_fact",
                "text", "vegetation")
"""What a failed claim was about; ``Verdict.codes`` holds one per reason (runs count rejections by code)."""
DEFAULT_MIN_SHARE = 0.01  # a named class must cover at least this share of the valid pixels
NEGATED_PRESENT_SHARE = 0.03  # "there is no X" fails when X covers at least this share
TRACE_MAX_PERCENT = 12.0  # "hardly any X" fails when X covers more than this
ORIENTATION_TOLERANCE_DEG = 35.0
MIN_ELONGATION_FOR_DIRECTION = 1.5
THIN_ELONGATION = 5.0  # components this elongated are judged by their major axis, not their box
COUNTED_CLASS_SHARE = 0.01  # the number of classes is only stated when every class holds this share


def present_class_count(stats: Mapping[str, Any]) -> int | None:
    """How many land-cover classes the tile shows, or None when a trace class (below
    ``COUNTED_CLASS_SHARE``) makes the number a matter of reading (VQA ``num_classes``' rule)."""
    shares = [float(c.get("share", 0.0)) for c in stats.get("classes", []) if "name" in c]
    return len(shares) if shares and min(shares) >= COUNTED_CLASS_SHARE else None


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


def _centroid_agrees(region: Region, cx: float, cy: float) -> bool:
    """Whether a centroid lies on the claimed side(s); corners need it well inside their quadrant."""
    if region.kind == "center":
        return 0.2 <= cx <= 0.8 and 0.2 <= cy <= 0.8
    limit = 0.45 if region.kind == "corner" else 0.6  # how far across the image the centroid may sit
    checks = {"N": cy <= limit, "S": cy >= 1 - limit, "W": cx <= limit, "E": cx >= 1 - limit}
    return all(checks[side] for side in (region.v, region.h) if side in checks)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _box_reaches(region: Region, box: Sequence[float]) -> bool:
    """Whether a normalised box [x1, y1, x2, y2] reaches into the region's core by a few percent."""
    x0, x1 = _axis_interval(region.h, region.depth)
    y0, y1 = _axis_interval(region.v, region.depth)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    return (_overlap(bx0, bx1, x0, x1) >= min(0.03, 0.5 * (bx1 - bx0))
            and _overlap(by0, by1, y0, y1) >= min(0.03, 0.5 * (by1 - by0)))


def _surely_inside(region: Region, box: Sequence[float], image_share: float) -> float:
    """Share of the image that must lie in the region: pixels that cannot all fit in the box outside it."""
    x0, x1 = _axis_interval(region.h, region.depth)
    y0, y1 = _axis_interval(region.v, region.depth)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    outside = (bx1 - bx0) * (by1 - by0) - _overlap(bx0, bx1, x0, x1) * _overlap(by0, by1, y0, y1)
    return image_share - outside


def _axis_share_in(region: Region, comp: Mapping[str, Any]) -> float:
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


def _component_in(region: Region, comp: Mapping[str, Any], total_pixels: float) -> bool:
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


# "X fills the centre (a corner)", "the centre is filled with X": X must hold a good part of it (sides and halves
# are "filled" loosely: "meadow fills the eastern half" for a strip along the edge)
_FILLS = re.compile(r"\b(?:fill(?:s|ing|ed)?|(?:is|are) (?:covered|blanketed|taken up|occupied) (?:by|with|in))\b"
                    r"|\bcover(?:s|ing)?\s+(?:all of |most of |much of )?the\s*$")
FILLED_REGION_SHARE = 0.3


# "X covers 39%, south-west", "X is 6% of the image, across the center": the place of the class as a whole
_APPOSITIVE_PLACE = re.compile(
    r"(?:\d%|\d percent|\d per cent|half|thirds?|quarters?)(?: of (?:the |this )?(?:image|tile|scene|area|picture|frame))?"
    r"\s*,\s*(?:mostly |mainly |largely |primarily |chiefly )?(?:(?:lying |located |found )?(?:in|across|at|on|along|"
    r"towards?|to|through) )?(?:the )?$")
CLEAR_SIDE = 0.03  # a class "in the north" as a whole has its centroid this far north of the middle


def _lies_mostly(region: Region, cls: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the class as a whole (its centroid, or that of a part holding half its pixels) lies at the
    claimed side: per claimed axis its 3x3 cell (the stats' ``position``) matches, is neutral or is opposite;
    a single side also matches when the centroid lies clearly on that side of the middle. No axis may be
    opposite, and one must match; a corner or quadrant needs pixels in its 3x3 corner cell."""
    single = (region.v is None) != (region.h is None)
    if not single and cls.get("bbox") and not _box_reaches(Region(region.v, region.h, 1 / 3, "corner"), cls["bbox"]):
        return False  # "south-west" with no pixel in the south-west cell
    anchors = [cls] + [c for c in comps[:1] if float(c.get("pixels", 0)) >= 0.5 * float(cls.get("pixels", 1) or 1)]
    for anchor in anchors:
        centroid = anchor.get("centroid")
        if not centroid:
            return True
        cx, cy = float(centroid[0]), float(centroid[1])
        col, row = (min(max(int(v * 3), 0), 2) for v in (cx, cy))
        states = []
        for side, cell, value in ((region.v, row, cy), (region.h, col, cx)):
            if side not in ("N", "S", "E", "W"):
                continue
            near = side in ("N", "W")
            clear = value < 0.5 - CLEAR_SIDE if near else value > 0.5 + CLEAR_SIDE
            states.append("match" if cell == (0 if near else 2) or (single and clear)
                          else "opposite" if cell == (2 if near else 0) else "neutral")
        if not states or ("opposite" not in states and "match" in states):
            return True
    return False


_RUNS = re.compile(r"\b(?:runs?|running|flows?|flowing|stretch(?:es|ing)?|cross(?:es|ing))\b")
SMALL_BESIDE_CLASS = 0.15  # a part under this share of its class's pixels, or ...
SMALL_IN_IMAGE = 0.05  # ... under this share of the image (not in a class caption), may be called small
SMALL_PART_IN_IMAGE = 0.10  # one part under this share of the image may be called "a small patch" in any caption


def _most_in(region: Region, cls: Mapping[str, Any], comps: list[Mapping[str, Any]], total_pixels: float) -> float:
    """An upper bound of the region's share that the class holds: each component's pixels, at most
    its box's overlap with the region; small patches anywhere in the class's box."""
    x0, x1 = _axis_interval(region.h, region.depth)
    y0, y1 = _axis_interval(region.v, region.depth)
    area = (x1 - x0) * (y1 - y0) * total_pixels
    if not area:
        return 1.0
    return min(1.0, _held_in(region, (x0, y0, x1, y1), cls, comps, total_pixels) / area)


def _held_in(region: Region, window: Sequence[float], cls: Mapping[str, Any], comps: Sequence[Mapping[str, Any]],
             total_pixels: float) -> float:
    """An upper bound of the class's pixels inside ``window`` [x0, y0, x1, y1] (thin parts by their axis in
    ``region``); the class's own pixels when the stats lack boxes."""
    x0, y0, x1, y1 = window

    def room(box: Sequence[float]) -> float:
        bx0, by0, bx1, by1 = (float(v) for v in box)
        return _overlap(bx0, bx1, x0, x1) * _overlap(by0, by1, y0, y1) * total_pixels

    if not cls.get("bbox") or not comps or any("bbox" not in c for c in comps):
        return float(cls.get("pixels", 0)) or total_pixels

    def part_in(comp: Mapping[str, Any]) -> float:  # a thin strip holds the share of its axis in the region
        pixels = float(comp.get("pixels", 0))
        if float(comp.get("elongation", 0.0)) >= THIN_ELONGATION and "centroid" in comp:
            return min(pixels, pixels * _axis_share_in(region, comp), room(comp["bbox"]))
        return min(pixels, room(comp["bbox"]))

    listed = sum(float(c.get("pixels", 0)) for c in comps)
    rest = max(0.0, float(cls.get("pixels", listed)) - listed)  # small patches (and any unlisted part)
    return sum(part_in(c) for c in comps) + min(rest, room(cls["bbox"]))


_CENTRE_CELL = (1 / 3, 1 / 3, 2 / 3, 2 / 3)
CENTRE_CELL_SHARE = 0.3  # a class "in the centre" may hold this share of the centre cell, or ...
CENTRE_CLASS_SHARE = 0.5  # ... this share of its own pixels may lie in it


def _reaches_centre(cls: Mapping[str, Any], comps: Sequence[Mapping[str, Any]], total_pixels: float) -> bool:
    """Whether a class's centroid lies in the 3x3 centre cell (its ``position``), or the class can hold a good
    part of that cell or have a good part of itself there."""
    centroid = cls.get("centroid")
    if not total_pixels or not centroid or _cell_in(Region("C", "C", 1 / 3, "center"), centroid):
        return True
    held = _held_in(Region("C", "C", 1 / 3, "center"), _CENTRE_CELL, cls, comps, total_pixels)
    pixels = float(cls.get("pixels", 0)) or total_pixels
    return held >= min(CENTRE_CELL_SHARE * total_pixels / 9, CENTRE_CLASS_SHARE * pixels)


def _cell_in(region: Region, centroid: Sequence[float]) -> bool:
    """Whether the 3x3 cell of a centroid (the stats' ``position``, the place the prompts state) lies
    in the claimed region: "in the center" for a class whose ``position`` is center, even when its
    parts ring the centre."""
    col, row = (min(max(int(float(v) * 3), 0), 2) for v in centroid[:2])
    if region.kind == "center":
        return (col, row) == (1, 1)
    rows = {"N": 0, "S": 2}
    cols = {"W": 0, "E": 2}
    return ((region.v is None or rows.get(region.v) == row) and (region.h is None or cols.get(region.h) == col)
            and (region.v, region.h) != (None, None))


def _present_in(region: Region, cls: Mapping[str, Any], comps: list[Mapping[str, Any]], image_share: float,
                total_pixels: float) -> bool:
    """Whether a class plausibly has pixels in a claimed region (its ``position`` cell, bbox, centroid,
    components)."""
    bbox = cls.get("bbox")
    centroid = cls.get("centroid")
    if not bbox or not centroid:
        return True
    if _cell_in(region, centroid):
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


# "along the east side", "down the left side": a part lies at that side and stretches along it
_ALONG = re.compile(r"\b(?:along|down|up)\s+(?:the\s+)?(?:entire\s+|whole\s+|full\s+)?(?:length of the\s+)?$")
ALONG_RATIO = 0.8  # a part lies along a side when its extent along it is at least this share of its extent across


def _lies_along(region: Region, comps: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some part of a class reaches the claimed side and stretches along it (one side only)."""
    sides = [side for side in (region.v, region.h) if side in ("N", "S", "E", "W")]
    if len(sides) != 1 or region.kind not in ("side", "edge") or not comps or any("bbox" not in c for c in comps):
        return True
    side = sides[0]
    for comp in comps:
        x0, y0, x1, y1 = (float(v) for v in comp["bbox"])
        along, across = (x1 - x0, y1 - y0) if side in ("N", "S") else (y1 - y0, x1 - x0)
        if _box_reaches(region, comp["bbox"]) and along >= ALONG_RATIO * across:
            return True
    return False


_LARGE_BEFORE = re.compile(r"\b(?:large|big|major|main)\b[^.;!?]*$")


class Checker:
    def __init__(self, text: str, stats: Mapping[str, Any], min_share: float,
                 asked_about: Iterable[str] = (), task: str | None = None) -> None:
        self.text = text
        self.task = task
        self.facts = _Facts(stats)
        self.min_share = min_share
        self.asked_about = set(asked_about)  # classes the prompt named (subject, linear features): no share floor
        self.part_shares: dict[str, list[float]] = {}  # shares of single parts a caption may state (linear prompt)
        self.reasons: list[str] = []
        self.codes: list[str] = []

    def fail(self, reason: str, code: str = "text") -> None:
        """Record a contradiction once, with its reason code (``REASON_CODES``)."""
        if reason not in self.reasons:
            self.reasons.append(reason)
            self.codes.append(code)

    def label(self, mention: Span) -> str:
        name = mention.value
        words = mention.text
        return f"'{words}'" if words == name else f"'{words}' ({name})"

    def check_named(self, mention: Span, claims: list[Span]) -> bool:
        """The class is present with at least min_share; returns whether its other claims can be checked."""
        name = mention.value
        share = self.facts.share(name)
        if mention.trace:
            if share * 100 > TRACE_MAX_PERCENT:
                self.fail(f"says there is hardly any {name}, but it covers {_pct(share)}", "share")
            elif mention.trace_asserts and name not in self.facts.classes:  # "a few small trees": some are there
                self.fail(f"names {self.label(mention)}, which is not in the tile", "class")
            return False
        says_none = any(c.kind == "share" and c.value[1] <= 0.5 for c in claims)  # "0% water"
        if name not in self.facts.classes:
            if not says_none:
                self.fail(f"names {self.label(mention)}, which is not in the tile", "class")
            return False
        if share < self.min_share and not says_none and name not in self.asked_about:
            self.fail(f"names {self.label(mention)}, which covers only {_pct(share)} (< {_pct(self.min_share)})",
                      "class")
            return False
        return True

    def check_share(self, mention: Span, claim: Span, partner: Span | None = None) -> None:
        """A stated share against the class's; with a ``partner`` ("trees and built-up areas occupy 52%")
        against the two classes together."""
        name = mention.value
        low, high, slack = claim.value
        shares = [self.facts.share(name), self.facts.image_share(name)]
        verb, subject = "covers", name
        if partner is not None and partner.value in self.facts.classes and partner.value != name:
            shares = [shares[0] + self.facts.share(partner.value)]
            verb, subject = "cover", f"{partner.value} and {name} together"
        start = max(self.text.rfind(".", 0, claim.start), self.text.rfind("\n", 0, claim.start)) + 1
        end = min((i for i in (self.text.find(".", claim.end), self.text.find("\n", claim.end)) if i >= 0),
                  default=len(self.text))
        if _RUNS.search(self.text, start, end):  # a strip that runs somewhere: the share may be that part's
            shares += self.part_shares.get(name, [])
        if any(low - slack <= 100 * s <= high + slack for s in shares):
            return
        self.fail(f"says {subject} {verb} {claim.text.strip()}, but {'they' if verb == 'cover' else 'it'} "
                  f"{verb} {_pct(shares[0])}", "share")

    def check_dominant(self, mention: Span, claim: Span) -> None:
        name = mention.value
        share = self.facts.share(name)
        top = self.facts.ranked[0] if self.facts.ranked else None
        if top is None or share >= 0.4 or share >= 0.75 * float(top.get("share", 0.0)):
            return
        self.fail(f"says {name} dominates, but it covers {_pct(share)} (largest: {top['name']} {_pct(top['share'])})",
                  "rank")

    def check_rank(self, mention: Span, claim: Span) -> None:
        name = mention.value
        ranked = self.facts.ranked
        if not ranked or name not in self.facts.classes:
            return
        if claim.value == -1:  # the smallest of the classes big enough to name
            smallest = [c for c in ranked if float(c.get("share", 0.0)) >= self.min_share][-1:] or ranked[-1:]
            if smallest[0]["name"] == name or self.facts.share(name) <= float(smallest[0]["share"]) + 0.02:
                return
            wanted = smallest[0]
        else:
            wanted = ranked[min(claim.value, len(ranked)) - 1]
            if wanted["name"] == name or abs(float(wanted["share"]) - self.facts.share(name)) <= 0.05:
                return
        ordinal = {-1: "smallest", 1: "largest", 2: "second-largest", 3: "third-largest"}[claim.value]
        self.fail(f"says {name} is the {ordinal} class, but that is {wanted['name']} "
                  f"({_pct(float(wanted['share']))}; {name} {_pct(self.facts.share(name))})", "rank")

    def linear_parts(self, mention: Span) -> list[Mapping[str, Any]]:
        """The elongated components a linear mention ("the river", "a strip of water") refers to."""
        if mention.kind != "class":
            return []
        linear = LINEAR_NOUN.fullmatch(mention.text) or LINEAR_CUE.search(self.text[max(0, mention.start - 30):
                                                                                        mention.start])
        if not linear:
            return []
        return [c for c in self.facts.components.get(mention.value, [])
                if c.get("elongated") or float(c.get("elongation", 0.0)) >= 3.0]

    def check_position(self, mention: Span, claim: Span) -> None:
        name = mention.value
        cls = self.facts.classes[name]
        comps = self.facts.components.get(name, [])
        parts = self.linear_parts(mention)
        if parts:  # a part lies where its axis runs, or where the stats place it (its 3x3 cell, as the prompt says)
            if not any(_component_in(claim.value, comp, self.facts.total_pixels)
                       or ("centroid" in comp and _cell_in(claim.value, comp["centroid"])) for comp in parts):
                self.fail(f"places the {mention.text} ({name}) at '{claim.text.strip()}', but it lies elsewhere",
                          "position")
            return
        if _ALONG.search(self.text, max(0, claim.start - 24), claim.start) and not _lies_along(claim.value, comps):
            self.fail(f"places {name} '{claim.text.strip()}' (along that side), but no part of it runs along it",
                      "position")
        elif not _present_in(claim.value, cls, comps, self.facts.image_share(name), self.facts.total_pixels):
            self.fail(f"places {name} at '{claim.text.strip()}', but it lies in {_where(cls)}", "position")
        elif (claim.value.kind == "center" and not re.search(r"'s\s+(?:very\s+)?$", self.text[max(0, claim.start - 12):
                                                                                            claim.start])
              and not _reaches_centre(cls, comps, self.facts.total_pixels)):  # "a wetland's center" is its own
            self.fail(f"places {name} at '{claim.text.strip()}', but little of it can lie in the centre "
                      f"(it lies in {_where(cls)})", "position")
        elif (claim.value.kind != "center" and claim.start > mention.end
              and (lead := _APPOSITIVE_PLACE.search(self.text, max(mention.end, claim.start - 80), claim.start))
              and "across" not in lead.group(0) and not _lies_mostly(claim.value, cls, comps)):
            self.fail(f"places {name} as a whole at '{claim.text.strip()}', but it lies in {_where(cls)}", "position")
        elif claim.value.kind in ("center", "corner") and _FILLS.search(self.text, min(mention.end, claim.end),
                                                             max(mention.start, claim.start)):
            most = _most_in(claim.value, cls, comps, self.facts.total_pixels)
            if most < FILLED_REGION_SHARE:
                self.fail(f"says {name} fills '{claim.text.strip()}', but at most {_pct(most)} of it is {name}",
                          "position")

    def check_count(self, mention: Span, claim: Span, region: Region | None = None) -> None:
        """Counts ("three separate patches", "a single lake") against the class's connected parts.

        The lower bound is the class's substantial components (>= 5 % of its pixels), the upper
        bound all its parts (large components and small patches), with one of slack above two.
        With a ``region`` ("two ponds in the north-east") only the components there count.
        """
        number, exact, size = claim.value
        cls = self.facts.classes[mention.value]
        if "components" not in cls:
            return
        large, small = int(cls["components"]), int(cls.get("small_patches", 0))
        comps = self.facts.components.get(mention.value, [])
        if region is not None:
            comps = [c for c in comps if _component_in(region, c, self.facts.total_pixels)]
            large = len(comps)
        pixels = float(sum(float(c.get("pixels", 0)) for c in comps) if region is not None else cls.get("pixels", 0)) or 1.0
        substantial = sum(float(c.get("pixels", 0)) >= 0.05 * pixels for c in comps) if comps else large
        slack = 0 if number <= 2 else 1 if number <= 6 else round(0.3 * number)
        beside_large = _LARGE_BEFORE.search(self.text[max(0, claim.start - 80):claim.start]) is not None
        if size == "small" and beside_large:  # "2 large patches and a few small ones": the small patches
            ok = number <= small + slack if exact else small >= 1
        elif size == "small" and exact:  # "two small ponds": any of its parts may look small
            ok = number <= large + small + slack
        elif size == "small" and number == 1:  # "a small patch of it": a small patch, or a part small in the image
            little = max(SMALL_BESIDE_CLASS * pixels, SMALL_PART_IN_IMAGE * self.facts.total_pixels)
            ok = small >= 1 or len(comps) < large or any(float(c.get("pixels", 0)) <= little for c in comps)
        elif size == "small":  # "a few small patches": small patches, or parts small beside the class
            # a class caption's prompt states "Patches: N large, M small": "small ones" are those M, or parts
            # small beside the class; elsewhere a part small in the image counts too
            little = SMALL_BESIDE_CLASS * pixels
            if self.task != "class":
                little = max(little, SMALL_IN_IMAGE * self.facts.total_pixels)
            ok = small >= 1 or sum(float(c.get("pixels", 0)) < little for c in comps) >= 2
        else:
            most = large if size == "large" else large + small
            ok = (substantial - slack <= number <= most + slack) if exact else most >= number
        if not ok:
            parts = f"{large} part{'s' if large != 1 else ''}" + (f" and {small} small patches" if small else "")
            said = (f"has small parts ('{claim.text.strip()}')" if size == "small" and not exact
                    else f"lies in '{claim.text.strip()}'")
            self.fail(f"says {mention.value} {said}, but it has {parts}", "count")

    def check_orientation(self, mention: Span, claim: Span, refinements: Sequence[Span] = ()) -> None:
        """A stated axis against the class's elongated parts; ``refinements`` are axes the same clause states
        within 45 degrees of it ("from north to south along its north-east-south-west side"): any may agree."""
        name = mention.value
        comps = self.facts.components.get(name, [])
        elongated = [c for c in comps if c.get("elongated") or float(c.get("elongation", 0.0)) >= 3.0]
        ok, actual = _orientation_agrees(claim.value, self.facts.classes[name], elongated or comps)
        ok = ok or any(_orientation_agrees(r.value, self.facts.classes[name], elongated or comps)[0] for r in refinements)
        if not ok:
            self.fail(f"says {name} runs '{claim.text.strip()}', but its elongated parts run {actual}", "direction")

    def check_relative(self, mention: Span, claim: Span, spans: list[Span]) -> None:
        other = next((m for m in spans if m.kind == "class" and not m.negated and claim.end <= m.start
                      <= claim.end + 25), None)
        if other is None or other.value == mention.value or other.value not in self.facts.classes:
            return
        a, b = self.facts.classes[mention.value], self.facts.classes[other.value]
        if "centroid" not in a or "centroid" not in b:
            return
        word = str(claim.value)
        dx, dy = vector({"above": "north", "over": "north", "below": "south", "beneath": "south",
                          "under": "south"}.get(word, word))
        ax, ay = (float(v) for v in a["centroid"])
        bx, by = (float(v) for v in b["centroid"])
        if (dx and dx * (ax - bx) < -0.1) or (dy and dy * (ay - by) < -0.1):
            self.fail(f"says {mention.value} lies '{claim.text.strip()}' {other.value}, but its centre is on the "
                      f"other side", "position")


# "X and Y occupy 52%": two classes joined before the verb of one share (not "each", "both", "respectively")
_AND_GAP = re.compile(r"\s+and\s+(?:the\s+)?")
_CLAUSE_START = re.compile(r"(?:^|[.,;:!?\n\"'(*-]\s*|\b(?:while|whereas|but|that)\s+)(?:the\s+|both\s+)?$")
_SHARE_VERB_GAP = re.compile(r"\s+(?:together\s+)?(?:cover|occupy|take up|make up|account for|span|fill)\s+"
                             r"(?:about\s+|roughly\s+|around\s+|nearly\s+|almost\s+|some\s+)?")
_EACH = re.compile(r"\b(?:each|both|respectively|apiece)\b")


def _coordinated_with(text: str, mention: Span, claim: Span, spans: Sequence[Span]) -> Span | None:
    """The class joined to ``mention`` by "and" when both are the subject of the share ``claim``."""
    if claim.start < mention.end or not _SHARE_VERB_GAP.fullmatch(text, mention.end, claim.start):
        return None
    before = [sp for sp in spans if sp.kind == "class" and not sp.negated and sp.end <= mention.start]
    if not before or not _AND_GAP.fullmatch(text, before[-1].end, mention.start):
        return None
    if not _CLAUSE_START.search(text, 0, before[-1].start):  # "... is woodland and fields take up ...": two clauses
        return None
    sentence_end = min((i for i in (text.find(".", claim.end), text.find("\n", claim.end)) if i >= 0),
                       default=len(text))
    return None if _EACH.search(text, before[-1].start, sentence_end) else before[-1]


_OF_THE_REST = re.compile(r"\b(?:rest|remainder|remaining|other \d+(?:\.\d+)?\s*%)\b[^.;,]*$")
_DIFFERENCE_TAIL = re.compile(r"\s*(?:larger|bigger|greater|wider|smaller|more|less|fewer)\s+(?:in (?:area|extent)\s+)?"
                              r"than\s+(?:the\s+|a\s+|an\s+)?")


def _near_axis(a: Any, b: Any) -> bool:
    """Whether two stated axes are at most 45 degrees apart, so that one refines the other ("diagonally" refines
    nothing: the axis stated beside it decides)."""
    if a == "diagonal" or b == "diagonal":
        return False
    return _angle_diff(float(a), float(b)) <= 45.0


def check_claim(checker: Checker, mention: Span, claim: Span, clause: Clause | None, spans: list[Span]) -> None:
    text = checker.text
    regional = clause is not None and any(a.kind == "position" for a in clause.attributes)
    if claim.kind == "share":
        if TOGETHER.search(text, max(0, claim.start - 40), claim.end + 40):
            return  # "together they cover 70%"
        if REGIONAL_SHARE_TAIL.match(text[claim.end:claim.end + 40]):
            return  # "40% of the northern half"
        difference = _DIFFERENCE_TAIL.match(text, claim.end)
        if difference and any(sp.start <= difference.end() < sp.end and (sp.kind == "class" or _REST.fullmatch(sp.text))
                              for sp in spans):
            return  # "2% larger than the rest": a difference (check_comparisons reads it)
        checker.check_share(mention, claim, _coordinated_with(checker.text, mention, claim, spans))
    elif claim.kind == "dominant" and not regional and not _OF_THE_REST.search(text, max(0, claim.start - 50),
                                                                               claim.start):
        checker.check_dominant(mention, claim)  # "the rest is mostly trees" dominates the rest, not the tile
    elif claim.kind == "rank" and not regional:
        checker.check_rank(mention, claim)
    elif claim.kind == "position":
        checker.check_position(mention, claim)
    elif claim.kind == "orient":
        checker.check_orientation(mention, claim, [a for a in (clause.attributes if clause else []) if a is not claim
                                                   and a.kind == "orient" and _near_axis(a.value, claim.value)])
    elif claim.kind == "relative":
        checker.check_relative(mention, claim, spans)
    elif claim.kind == "count":
        regions = [a.value for a in (clause.attributes if clause else []) if a.kind == "position"]
        checker.check_count(mention, claim, regions[0] if len(regions) == 1 else None)


# "this tile shows 4 land-cover classes", "there are 3 different land cover types": the number of classes
_CLASS_COUNT = re.compile(
    r"\b(?:shows?|showing|has|have|having|contains?|containing|includes?|including|features?|displays?|depicts?|"
    r"there (?:are|is)|with|comprises?|holds?)\s+(?P<q>only\s+|just\s+|exactly\s+|at least\s+)?(?P<n>\d{1,2})\s+"
    r"(?:different\s+|distinct\s+|separate\s+)?(?:land[- ]?cover\s+|land[- ]use\s+)?"
    r"(?:classes|class types|categories|(?:types|kinds) of (?:land[- ]?cover|land[- ]use|surfaces?)|cover types)\b")


def check_class_count(checker: Checker) -> None:
    """A stated number of classes must lie between the classes holding ``COUNTED_CLASS_SHARE`` and all
    classes of the tile (exactly ``present_class_count`` when no trace class blurs it)."""
    shares = [float(c.get("share", 0.0)) for c in checker.facts.classes.values()]
    if not shares:
        return
    low, high = sum(s >= COUNTED_CLASS_SHARE for s in shares), len(shares)
    for match in _CLASS_COUNT.finditer(checker.text):
        number = int(match.group("n"))
        at_least = (match.group("q") or "").startswith("at least")
        if not (number <= high if at_least else low <= number <= high):
            checker.fail(f"says the tile shows {number} land-cover classes, but it has {high}"
                         + (f" ({low} of at least {_pct(COUNTED_CLASS_SHARE)})" if low != high else ""), "count")


_CENTRE_FILLED = re.compile(r"\b(?:centre|center|middle)(?: of the (?:image|tile|scene))? (?:is|are) (?:filled|covered|"
                            r"taken up|occupied|dominated) (?:with|by) (?:the )?")


def check_filled_centre(checker: Checker, spans: Sequence[Span]) -> None:
    """"The centre is filled with X": X must hold a good part of the centre (the place is said before the class)."""
    starts = {sp.start: sp for sp in spans if sp.kind == "class" and not sp.negated}
    for match in _CENTRE_FILLED.finditer(checker.text):
        mention = starts.get(match.end())
        if mention is None or mention.value not in checker.facts.classes:
            continue
        name = mention.value
        most = _most_in(Region("C", "C", 1 / 3, "center"), checker.facts.classes[name],
                        checker.facts.components.get(name, []), checker.facts.total_pixels)
        if most < FILLED_REGION_SHARE:
            checker.fail(f"says the centre is filled with {name}, but at most {_pct(most)} of it is {name}", "position")


def check_denials(checker: Checker, sentences: Iterable[Sentence], denials: list[tuple[Span, bool]]) -> None:
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
            checker.fail(f"says there is no {mention.value}, but it covers {_pct(share)}", "class")


_MORE_BEFORE = re.compile(r"\b(?P<cmp>more|less|fewer)\s+(?:of\s+)?(?:the\s+)?$")
_THAN_GAP = re.compile(r"\s+than\s+(?:the\s+|there is\s+|of\s+)?")
_BY = r"(?:about\s+|roughly\s+|around\s+|some\s+)?(?P<by>\d+(?:\.\d+)?)\s*(?:%|percent|per cent)\s+"  # "5% less than"
_COMPARE_GAPS = (
    re.compile(r"\s+(?:covers?|occupies|occupy|takes? up|has|have|spans?|claims?|fills?|accounts? for|is|are)\s+"
               rf"(?:much\s+|far\s+|slightly\s+|a bit\s+|a little\s+|somewhat\s+|considerably\s+|{_BY})?(?P<cmp>more|less)\s+"
               r"(?:of\s+the\s+\w+\s+|area\s+|ground\s+|space\s+|land\s+|room\s+|surface\s+|extensive\s+|widespread\s+"
               r"|common\s+|abundant\s+)?than\s+(?:the\s+)?(?:do(?:es)?\s+)?"),
    re.compile(r"\s+(?:is|are|was|were|appears?|seems?|looks?)\s+(?:to be\s+)?(?:much\s+|far\s+|clearly\s+|slightly\s+|"
               rf"a bit\s+|considerably\s+|somewhat\s+|{_BY})?"
               r"(?P<cmp>larger|bigger|greater|wider|smaller|rarer|scarcer|"
               r"(?:more|less) (?:extensive|widespread|common|abundant|prevalent|dominant))\s+"
               r"(?:in (?:area|extent)\s+)?than\s+(?:the\s+|a\s+|an\s+)?"),
    re.compile(r"\s+(?:clearly\s+|seems? to\s+|far\s+|easily\s+)?(?P<cmp>outweighs?|exceeds?|outnumbers?|surpasses?|"
               r"outstrips?|outsizes?|dwarfs?|is outweighed by|is exceeded by|is dwarfed by)\s+(?:the\s+)?"),
)
_SMALLER = ("less", "fewer", "smaller", "rarer", "scarcer", "is outweighed by", "is exceeded by", "is dwarfed by",
            "less extensive", "less widespread", "less common", "less abundant", "less prevalent", "less dominant")
_REST = re.compile(r"(?:the )?(?:rest|remainder)|others|everything else|other (?:classes|land[- ]?cover(?: types| classes)?|"
                   r"cover types|types|categories)")
COMPARISON_TOLERANCE = 0.02  # "more X than Y" fails when X covers this much less than Y


def _difference_agrees(stated: float, a: float, b: float) -> bool:
    """Whether "N% more (less)" fits two shares, read as points of the image or as a part of the second share."""
    points, relative = 100.0 * abs(a - b), 100.0 * abs(a - b) / b if b else 100.0
    return (abs(points - stated) <= max(4.0, 0.35 * stated)) or abs(relative - stated) <= max(10.0, 0.35 * stated)


def check_comparisons(checker: Checker, sentences: Iterable[Sentence]) -> None:
    """'More X than Y', 'X covers less of the image than Y', 'X is larger than Y', 'X outweighs Y'."""
    text = checker.text
    for sentence in sentences:
        clauses_attrs = [a for c in sentence.clauses for a in c.attributes]
        if any(a.kind in ("position", "relative") for a in clauses_attrs):
            continue  # a regional comparison ("in the north, more X than Y")
        mentions = [m for m in sentence.mentions if m.kind == "class" or _REST.fullmatch(m.text)]
        for first, second in zip(mentions, mentions[1:]):
            gap = text[first.end:second.start]
            cmp = None
            before = _MORE_BEFORE.search(text, sentence.start, first.start)
            if before and before.end() == first.start and _THAN_GAP.fullmatch(gap):
                cmp = before.group("cmp")
            by = None
            for pattern in _COMPARE_GAPS:
                match = pattern.fullmatch(gap)
                if match:
                    cmp = match.group("cmp")
                    by = match.groupdict().get("by")
            if cmp is None or first.value == second.value:
                continue
            if first.value not in checker.facts.classes or (second.kind == "class"
                                                            and second.value not in checker.facts.classes):
                continue
            a = checker.facts.share(first.value)
            if second.kind == "class":
                seconds = [checker.facts.share(second.value)]
            else:  # "... than the rest": all the others together, or each of them
                seconds = [1.0 - a, max((float(c.get("share", 0.0)) for n, c in checker.facts.classes.items()
                                         if n != first.value), default=0.0)]
            smaller = cmp in _SMALLER
            relation = "less" if smaller else "more"
            other = second.value if second.kind == "class" else "the rest"
            b = seconds[-1]  # the other class, or the largest of the rest
            if all((a < other_share - COMPARISON_TOLERANCE) if not smaller else (a > other_share + COMPARISON_TOLERANCE)
                   for other_share in seconds):
                checker.fail(f"says there is {relation} {first.value} than {other}, but they cover {_pct(a)} "
                             f"and {_pct(b)}", "relative")
            elif by is not None and not any(_difference_agrees(float(by), a, other_share) for other_share in seconds):
                checker.fail(f"says there is {by}% {relation} {first.value} than {other}, but they cover {_pct(a)} "
                             f"and {_pct(b)}", "relative")
