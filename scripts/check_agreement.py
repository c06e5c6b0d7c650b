#!/usr/bin/env python
"""Measure how well `check_caption` agrees with ground truth on a labelled set of captions.

Scenes are synthetic label maps (seeded; bands, quadrants, blobs, rivers and roads) whose
statistics come from `rsbuild.chips.stats.compute_stats`. For each scene a caption is written from
the *pixels* (not the stats) in phrasings unlike the template engine's: many hand-written
sentence patterns, synonyms, numbers as words, fractions, ranges, hedges, negations. Half of
the set is correct; the other half carries exactly one injected error, judged wrong from the
pixels:

* ``class``     - names a land cover with no pixel in the tile;
* ``share``     - states a share at least 25 points (and a factor ~2) away from the truth;
* ``position``  - places a class in a region holding <= 2 % of its pixels;
* ``direction`` - rotates an elongated feature's direction by 90 degrees;
* ``left_is_east`` - mirrors east and west (RSTeller's "left is east" mistake) for a class
  that lies on one side.

Prints JSON: detection rate per error kind, overall detection, and the false rejection rate
on the correct captions. ``--show N`` prints N misses and false rejections for inspection.

It then does the same for REAL captions: ``tests/data/model_captions.jsonl`` holds SmolLM2-135M
captions written by the local engine with the project's prompts (demo tiles and fixture scenes),
each labelled by hand as correct or wrong (with its error kind: class / share / position /
direction / garbage) and a one-line justification. Both figures go into one JSON report under
``synthetic`` and ``model_captions``.

First it prints, per kind of claim, the agreement on the labelled evidence sets of
``tests/data/captions/`` (outside phrasing and real-model captions; README there); with
``--evidence-only`` it prints only those tables and their JSON.

    python scripts/check_agreement.py [--scenes 400] [--seed 0] [--show 10] [--model-captions PATH]
                                      [--evidence-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rsbuild.captions.check import check_caption
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the per-kind table is the agreement test's
from tests.captions.check.test_agreement import EVIDENCE_SETS, kind_table, rows_of

SIZE = 96
ERROR_KINDS = ("class", "share", "position", "direction", "left_is_east")
MODEL_CAPTIONS = Path(__file__).resolve().parents[1] / "tests" / "data" / "model_captions.jsonl"
MODEL_ERROR_KINDS = ("class", "share", "position", "direction", "garbage", "copy")

# ------------------------------------------------------------------------------------------
# Words a person might use for each class (independent of the checker's lexicon).

WORDS: dict[str, list[str]] = {
    "tree cover": ["tree cover", "forest", "woodland", "trees", "wooded land", "dense forest", "forested land"],
    "trees": ["trees", "forest", "woodland", "tree cover", "wooded terrain"],
    "cropland": ["cropland", "farmland", "agricultural fields", "crop fields", "fields", "cultivated land"],
    "crops": ["crops", "farmland", "agricultural land", "cropland", "fields"],
    "grassland": ["grassland", "meadows", "pasture", "grass", "open grassland"],
    "grass": ["grass", "grassland", "meadows", "pastures"],
    "shrubland": ["shrubland", "scrub", "bushes", "shrubs"],
    "shrub and scrub": ["shrubs", "scrubland", "bushland", "shrub and scrub"],
    "built-up area": ["built-up area", "buildings", "urban area", "houses", "settlement", "built-up land"],
    "bare or sparse vegetation": ["bare ground", "bare soil", "barren land", "sparse vegetation", "exposed rock"],
    "bare ground": ["bare ground", "bare soil", "barren land", "sand"],
    "snow and ice": ["snow", "ice", "snow and ice", "snowfields"],
    "water": ["water", "open water", "water bodies", "a lake"],
    "herbaceous wetland": ["wetland", "marsh", "marshland", "swamp", "herbaceous wetland"],
    "flooded vegetation": ["flooded vegetation", "wetland", "marsh", "swampy ground"],
    "mangroves": ["mangroves", "mangrove forest"],
    "moss and lichen": ["moss", "lichen", "moss and lichen"],
    "rangeland": ["rangeland", "open rangeland"],
    "clouds": ["clouds"],
}
LINE_WORDS = {
    "water": ["river", "stream", "canal", "narrow river", "small stream"],
    "built-up area": ["road", "highway", "paved road", "motorway"],
}
SCENE_CLASSES = {
    "esa_worldcover": ["tree cover", "shrubland", "grassland", "cropland", "built-up area", "bare or sparse vegetation",
                       "snow and ice", "water", "herbaceous wetland", "mangroves", "moss and lichen"],
    "dynamic_world": ["water", "trees", "grass", "flooded vegetation", "crops", "shrub and scrub", "built-up area",
                      "bare ground", "snow and ice"],
    "io_lulc": ["water", "trees", "flooded vegetation", "crops", "built-up area", "bare ground", "rangeland"],
}
COMMON = {"esa_worldcover": ["tree cover", "cropland", "grassland", "shrubland", "built-up area"],
          "dynamic_world": ["trees", "crops", "grass", "shrub and scrub", "built-up area"],
          "io_lulc": ["trees", "crops", "rangeland", "built-up area"]}

# ------------------------------------------------------------------------------------------
# Scenes with pixel ground truth


@dataclass
class Line:
    cls: str
    orientation: str  # "NS", "EW", "NESW", "NWSE"
    mask: np.ndarray | None = None  # the line's pixels (what "the river" refers to)


@dataclass
class Scene:
    scheme: str
    grid: np.ndarray  # class names index into SCENE_CLASSES[scheme]
    lines: list[Line]
    stats: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        return SCENE_CLASSES[self.scheme]


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _line_mask(orientation: str, offset: float, width: float, wiggle: float, phase: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    if orientation == "NS":
        d = xx - offset - wiggle * np.sin(yy / 9.0 + phase)
    elif orientation == "EW":
        d = yy - offset - wiggle * np.sin(xx / 9.0 + phase)
    elif orientation == "NESW":  # from bottom-left to top-right: x + y constant
        d = (xx + yy - 2 * offset) / np.sqrt(2)
    else:  # NWSE: x - y constant
        d = (xx - yy - (offset - SIZE / 2) * 2) / np.sqrt(2)
    return np.abs(d) <= width / 2


def make_scene(rng: random.Random, scheme: str) -> Scene:
    names = SCENE_CLASSES[scheme]
    idx = {n: get_scheme(scheme).index_of(n) for n in names}
    base = rng.choice(COMMON[scheme])
    grid = np.full((SIZE, SIZE), idx[base], dtype=np.uint8)
    others = [n for n in names if n != base]
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    for _ in range(rng.randint(1, 3)):
        cls = rng.choice(others)
        kind = rng.choice(["half", "half", "third", "quadrant", "blob", "blob", "blob"])
        if kind == "half":
            side = rng.choice("NSEW")
            cut = SIZE * rng.uniform(0.35, 0.55)
            mask = {"N": yy < cut, "S": yy > SIZE - cut, "W": xx < cut, "E": xx > SIZE - cut}[side]
        elif kind == "third":
            side = rng.choice("NSEW")
            cut = SIZE * rng.uniform(0.2, 0.33)
            mask = {"N": yy < cut, "S": yy > SIZE - cut, "W": xx < cut, "E": xx > SIZE - cut}[side]
        elif kind == "quadrant":
            qx, qy = rng.choice([0, 1]), rng.choice([0, 1])
            w, h = SIZE * rng.uniform(0.3, 0.5), SIZE * rng.uniform(0.3, 0.5)
            mask = ((xx < w) if qx == 0 else (xx > SIZE - w)) & ((yy < h) if qy == 0 else (yy > SIZE - h))
        else:
            cx, cy = rng.uniform(12, SIZE - 12), rng.uniform(12, SIZE - 12)
            mask = _ellipse(cx, cy, rng.uniform(5, 20), rng.uniform(5, 20))
        grid[mask] = idx[cls]
    lines: list[Line] = []
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        cls = rng.choice([n for n in ("water", "built-up area") if n in idx])
        orientation = rng.choice(["NS", "EW", "NESW", "NWSE"])
        if any(line.orientation == orientation for line in lines):
            continue
        offset = rng.uniform(0.15, 0.85) * SIZE if orientation in ("NS", "EW") else rng.uniform(0.35, 0.65) * SIZE
        wiggle = rng.choice([0.0, 0.0, 2.0]) if orientation in ("NS", "EW") else 0.0
        mask = _line_mask(orientation, offset, rng.uniform(2.0, 4.5), wiggle, rng.uniform(0, 6))
        grid[mask] = idx[cls]
        lines.append(Line(cls, orientation, mask))
    scene = Scene(scheme, grid, lines)
    scene.stats = compute_stats(grid, get_scheme(scheme))
    # a line cut by later shapes or merged with a blob of its class may no longer be one feature
    scene.lines = [ln for ln in lines if _line_intact(scene, ln)]
    return scene


def _line_intact(scene: Scene, line: Line) -> bool:
    target = {"NS": 0.0, "EW": 90.0, "NESW": 45.0, "NWSE": 135.0}[line.orientation]
    for comp in scene.stats["components"]:
        if comp["class"] == line.cls and comp["elongated"]:
            d = abs(comp["orientation_deg"] - target) % 180
            if min(d, 180 - d) <= 15:
                return True
    return False


# Regions a caption may name: (mask over x, y in 0..1) and how specific they are (area).
REGIONS: dict[str, tuple[Any, float]] = {
    "N": (lambda x, y: y < 0.5, 0.5), "S": (lambda x, y: y >= 0.5, 0.5),
    "W": (lambda x, y: x < 0.5, 0.5), "E": (lambda x, y: x >= 0.5, 0.5),
    "NW": (lambda x, y: (x < 0.5) & (y < 0.5), 0.25), "NE": (lambda x, y: (x >= 0.5) & (y < 0.5), 0.25),
    "SW": (lambda x, y: (x < 0.5) & (y >= 0.5), 0.25), "SE": (lambda x, y: (x >= 0.5) & (y >= 0.5), 0.25),
    "NW_corner": (lambda x, y: (x < 0.4) & (y < 0.4), 0.16), "NE_corner": (lambda x, y: (x >= 0.6) & (y < 0.4), 0.16),
    "SW_corner": (lambda x, y: (x < 0.4) & (y >= 0.6), 0.16), "SE_corner": (lambda x, y: (x >= 0.6) & (y >= 0.6), 0.16),
    "C": (lambda x, y: (abs(x - 0.5) < 0.2) & (abs(y - 0.5) < 0.2), 0.16),
    "N_edge": (lambda x, y: y < 0.2, 0.2), "S_edge": (lambda x, y: y >= 0.8, 0.2),
    "W_edge": (lambda x, y: x < 0.2, 0.2), "E_edge": (lambda x, y: x >= 0.8, 0.2),
}
MIRROR = {"W": "E", "E": "W", "NW": "NE", "NE": "NW", "SW": "SE", "SE": "SW", "W_edge": "E_edge", "E_edge": "W_edge",
          "NW_corner": "NE_corner", "NE_corner": "NW_corner", "SW_corner": "SE_corner", "SE_corner": "SW_corner"}


def region_fractions(scene: Scene, cls: str, line: bool = False) -> dict[str, float]:
    """Fraction of the class's pixels (or of its line's pixels) in each nameable region."""
    pixels = scene.grid == get_scheme(scene.scheme).index_of(cls)
    if line:
        pixels = pixels & next(ln.mask for ln in scene.lines if ln.cls == cls)
    ys, xs = np.nonzero(pixels)
    if len(xs) == 0:
        return dict.fromkeys(REGIONS, 0.0)
    x, y = (xs + 0.5) / SIZE, (ys + 0.5) / SIZE
    return {r: float(np.mean(f(x, y))) for r, (f, _) in REGIONS.items()}


def true_shares(scene: Scene) -> dict[str, float]:
    names = get_scheme(scene.scheme).names
    counts = np.bincount(scene.grid.ravel(), minlength=len(names))
    return {n: 100.0 * counts[i] / scene.grid.size for i, n in enumerate(names) if counts[i]}


# ------------------------------------------------------------------------------------------
# Phrases

NUMBER_WORDS = {5: "five", 10: "ten", 15: "fifteen", 20: "twenty", 25: "twenty-five", 30: "thirty",
                35: "thirty-five", 40: "forty", 45: "forty-five", 50: "fifty", 55: "fifty-five", 60: "sixty",
                65: "sixty-five", 70: "seventy", 75: "seventy-five", 80: "eighty", 85: "eighty-five",
                90: "ninety", 95: "ninety-five"}
FRACTIONS = [(50, ["about half", "roughly half", "around one half", "nearly half"]),
             (33.3, ["about a third", "roughly one third", "around a third", "one-third"]),
             (25, ["about a quarter", "roughly one quarter", "around a fourth", "a quarter"]),
             (66.7, ["about two thirds", "roughly two-thirds", "around two thirds"]),
             (75, ["about three quarters", "roughly three-quarters"]),
             (20, ["about a fifth", "roughly one fifth", "around one in five"]),
             (10, ["about a tenth", "roughly one in ten", "around one-tenth"])]
QUALIFIERS = ["about", "around", "roughly", "approximately", "some", "close to", "~", "an estimated", ""]


@dataclass
class ShareFact:
    form: str  # pct, words, fraction, range, more, less, majority, small, large
    value: float  # stated value in percent
    variant: int


def _round5(v: float) -> int:
    return int(5 * round(v / 5)) if v >= 7.5 else max(1, int(round(v)))


def share_fact(rng: random.Random, s: float, rank: int = 0, gap: float = 0.0) -> ShareFact:
    """A correct share statement; ``rank`` is the class's place by share, ``gap`` the distance in
    points to the neighbouring ranks (rank words are only used when ranks are clear)."""
    forms = ["pct", "pct", "words", "range"]
    if any(abs(s - f) <= 3.5 for f, _ in FRACTIONS):
        forms += ["fraction", "fraction"]
    if s > 62:
        forms += ["majority", "more"]
    if s < 8:
        forms += ["small", "less"]
    if 42 < s < 90:
        forms += ["large"]
    if rank == 1 and s >= 30:
        forms += ["dominant", "rank"]
    if rank in (2, 3) and gap >= 8:
        forms += ["rank"]
    form = rng.choice(forms)
    if form == "rank":
        return ShareFact(form, float(rank), rng.randrange(1000))
    value = min(FRACTIONS, key=lambda f: abs(s - f[0]))[0] if form == "fraction" else s
    return ShareFact(form, value, rng.randrange(1000))


def wrong_share(rng: random.Random, fact: ShareFact, s: float, ranked: list[float] | None = None) -> ShareFact | None:
    """The same phrasing with a value clearly far from the true share ``s``."""
    if fact.form in ("rank", "dominant"):
        ranked = ranked or []
        if fact.form == "dominant" or fact.value != 1:
            return replace(fact, form="pct", value=max(2.0, s - 35) if s > 45 else min(95.0, s + 40))
        far = [r for r in (2, 3) if len(ranked) >= r and ranked[0] - ranked[r - 1] >= 15 and
               abs(ranked[r - 1] - s) >= 15]
        return replace(fact, value=float(far[0])) if far else None
    if fact.form in ("majority", "large", "more"):
        return replace(fact, form=rng.choice(["small", "less", "pct"]), value=max(2.0, min(s / 3, s - 40)))
    if fact.form in ("small", "less"):
        return replace(fact, form=rng.choice(["majority", "large", "pct"]), value=min(95.0, max(s + 45, 60)))
    if fact.form == "fraction":
        far = [f for f, _ in FRACTIONS if abs(f - s) >= 25 and (f >= 2 * s or f <= s / 2)]
        if far:
            return replace(fact, value=rng.choice(far))
        return replace(fact, form="pct", value=min(95.0, s + 35) if s < 50 else max(3.0, s - 35))
    if s < 45:
        value = rng.uniform(max(s + 25, 2.2 * s), min(95.0, max(s + 50, 2.2 * s + 5)))
    else:
        value = rng.uniform(2.0, min(s / 2.2, s - 25))
    return replace(fact, value=value)


def render_share(fact: ShareFact) -> str:
    r = random.Random(fact.variant)
    v = fact.value
    if fact.form == "pct":
        q = r.choice(QUALIFIERS)
        num = f"{_round5(v)}%" if r.random() < 0.7 else f"{_round5(v)} percent"
        return f"{q} {num}".strip() if q != "~" else f"~{num}"
    if fact.form == "words":
        n = _round5(v)
        word = NUMBER_WORDS.get(n, str(n))
        return f"{r.choice(['about', 'around', 'roughly', 'some'])} {word} {r.choice(['percent', 'per cent'])}"
    if fact.form == "fraction":
        return r.choice(dict(FRACTIONS)[v])
    if fact.form == "range":
        low = min(90, max(0, int(5 * ((v - 3) // 5))))
        high = low + 10
        return r.choice([f"between {low} and {high} percent", f"{low}-{high}%", f"{low} to {high}%"])
    if fact.form == "more":
        low = int(10 * (v // 10)) if v < 50 or v > 60 else 50
        return r.choice([f"more than {low}%", f"over {low} percent", f"at least {low}%"]) if low != 50 else r.choice(
            ["more than half", "over half"])
    if fact.form == "less":
        high = int(10 * (v // 10) + 10)
        return r.choice([f"less than {high}%", f"under {high} percent", f"no more than {high}%"])
    if fact.form == "majority":
        return r.choice(["the majority", "most of the image", "the bulk of the tile", "the vast majority"]
                        if v > 80 else ["the majority", "most of the image", "the bulk of the tile"])
    if fact.form == "small":
        return r.choice(["a small part", "a small portion", "a tiny fraction", "a minor share"])
    if fact.form == "large":
        return r.choice(["a large part", "a substantial portion", "a big share", "much of the tile"])
    if fact.form == "rank":
        return {1: r.choice(["the largest class", "the most common land cover", "the dominant land cover type"]),
                2: r.choice(["the second-largest class", "the second most common land cover", "the 2nd largest class"]),
                3: r.choice(["the third-largest class", "the third most common land cover type"])}[int(v)]
    if fact.form == "dominant":
        return "dominant"
    raise ValueError(fact.form)


ADVERBIAL = {
    "N": ["in the north", "in the northern half", "in the upper half", "toward the top", "to the north",
          "in the top part of the image", "in the north of the tile"],
    "S": ["in the south", "in the southern half", "in the lower half", "toward the bottom", "to the south",
          "in the bottom part of the image", "in the south of the scene"],
    "W": ["in the west", "in the western half", "on the left side", "on the left-hand side", "toward the west",
          "in the left half of the image", "on the western side"],
    "E": ["in the east", "in the eastern half", "on the right side", "on the right-hand side", "toward the east",
          "in the right half of the image", "on the eastern side"],
    "NW": ["in the north-west", "in the upper left", "in the top-left quadrant",
           "in the NW", "in the north west"],
    "NE": ["in the north-east", "in the upper right", "in the top-right quadrant",
           "in the NE", "in the north east"],
    "SW": ["in the south-west", "in the lower left", "in the bottom-left quadrant",
           "in the SW", "in the south west"],
    "SE": ["in the south-east", "in the lower right", "in the bottom-right quadrant",
           "in the SE", "in the south east"],
    "NW_corner": ["in the northwest corner", "in the top-left corner", "in the upper left corner"],
    "NE_corner": ["in the northeast corner", "in the top-right corner", "in the upper right corner"],
    "SW_corner": ["in the southwest corner", "in the bottom-left corner", "in the lower left corner"],
    "SE_corner": ["in the southeast corner", "in the bottom-right corner", "in the lower right corner"],
    "C": ["in the centre", "in the middle of the image", "in the central part", "at the heart of the scene",
          "around the center"],
    "N_edge": ["along the northern edge", "along the top edge", "at the top border of the image"],
    "S_edge": ["along the southern edge", "along the bottom edge", "at the bottom border of the image"],
    "W_edge": ["along the western edge", "along the left edge", "at the left border of the image",
               "hugging the western margin"],
    "E_edge": ["along the eastern edge", "along the right edge", "at the right border of the image",
               "hugging the eastern margin"],
}
DIRECTIONS = {
    "NS": ["from north to south", "north-south", "vertically", "from the top to the bottom", "N-S",
           "from south to north"],
    "EW": ["from east to west", "east-west", "horizontally", "from left to right", "E-W", "from west to east"],
    "NESW": ["from the south-west to the north-east", "northeast-southwest", "diagonally from the lower left to the "
             "upper right", "NE-SW", "from the bottom-left corner to the top-right corner"],
    "NWSE": ["from the north-west to the south-east", "northwest-southeast", "diagonally from the upper left to the "
             "lower right", "NW-SE", "from the top-left corner to the bottom-right corner"],
}
ROTATE = {"NS": "EW", "EW": "NS", "NESW": "NWSE", "NWSE": "NESW"}


@dataclass
class ClassFact:
    cls: str  # class named (may be absent when the error is "class")
    word: str
    share: ShareFact | None = None
    region: str | None = None
    region_variant: int = 0
    line: str | None = None  # orientation of an elongated feature of this class
    pattern: int = 0


@dataclass
class Caption:
    opener: int
    facts: list[ClassFact]
    denied: list[str]  # absent classes the caption says are not there
    deny_pattern: int
    pair_pattern: int


OPENERS = ["", "This satellite image shows a rural landscape. ", "An overhead view of mixed land cover. ",
           "The tile shows several kinds of land cover. ", "Aerial view: ", "Looking down on this area, we see a "
           "patchwork of surfaces. "]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def render_fact(f: ClassFact) -> str:
    r = random.Random(f.pattern)
    w = f.word
    S = render_share(f.share) if f.share else None
    P = ADVERBIAL[f.region][f.region_variant % len(ADVERBIAL[f.region])] if f.region else None
    if f.share and f.share.form in ("rank", "dominant") and not f.line:
        where = f" It lies mostly {P}." if P else ""
        if f.share.form == "dominant":
            return r.choice([f"The scene is dominated by {w}.", f"{cap(w)} dominates the tile.",
                             f"The tile is predominantly {w}.", f"Mostly {w} can be seen here."]) + where
        return r.choice([f"{cap(w)} is {S}.", f"{cap(S)} is {w}.", f"In terms of area, {w} is {S}."]) + where
    if f.line:
        D = DIRECTIONS[f.line][f.pattern % len(DIRECTIONS[f.line])]
        options = [f"A {w} runs {D}" + (f", {P}" if P else "") + ".",
                   f"A {w} crosses the scene {D}" + (f" {P}" if P else "") + ".",
                   (f"{cap(P)}, a {w} stretches {D}." if P else f"There is a {w} that stretches {D}."),
                   f"The image is cut by a {w} running {D}" + (f" {P}" if P else "") + ".",
                   f"A narrow {w}, oriented {D}, can be seen" + (f" {P}" if P else "") + "."]
        text = r.choice(options)
        if S:
            text += " " + r.choice([f"It takes up {S} of the tile.", f"It accounts for {S} of the area."])
        return text
    if S and P:
        options = [f"{cap(w)} covers {S} of the image, mostly {P}.",
                   f"{cap(S)} of the scene is {w}, found mainly {P}.",
                   f"There is {w} {P}, making up {S} of the picture.",
                   f"Making up {S} of the tile, {w} is concentrated {P}.",
                   f"{cap(w)} ({S}) lies {P}.",
                   f"We can see {w} {P}; it takes up {S}.",
                   f"{cap(w)}, which accounts for {S} of the area, sits {P}.",
                   f"{cap(w)} appears {P} and covers {S} of the frame."]
    elif S:
        options = [f"{cap(w)} makes up {S} of the image.", f"{cap(S)} of the tile is {w}.",
                   f"{cap(w)} accounts for {S} of the land cover.", f"{cap(w)} occupies {S} of the scene.",
                   f"Roughly speaking, {w} covers {S} of the area.", f"There is also {w}, with {S} of the tile."]
    elif P:
        options = [f"{cap(w)} appears {P}.", f"{cap(P)}, there is {w}.", f"{cap(w)} is located {P}.",
                   f"You can spot {w} {P}.", f"{cap(P)} lies {w}.", f"Some {w} can be found {P}."]
    else:
        options = [f"There is also some {w}.", f"{cap(w)} is present as well.", f"The scene also contains {w}."]
    return r.choice(options)


def render_denial(denied: list[str], pattern: int) -> str:
    r = random.Random(pattern)
    words = [r.choice(WORDS[d]) for d in denied]
    if len(words) == 2 and pattern % 3 == 0:
        return f"The image contains neither {words[0]} nor {words[1]}."
    a = " or ".join(words)
    return r.choice([f"There is no {a}.", f"No {a} is visible.", f"{cap(a)} is absent.",
                     f"There are no signs of {a}.", f"I can't see any {a} here.", f"The tile has no {a}."])


def render(c: Caption) -> str:
    text = OPENERS[c.opener % len(OPENERS)]
    text += " ".join(render_fact(f) for f in c.facts)
    if c.denied:
        text += " " + render_denial(c.denied, c.deny_pattern)
    return text.strip()


def build_caption(rng: random.Random, scene: Scene) -> Caption:
    shares = true_shares(scene)
    ranked = sorted(shares, key=lambda n: -shares[n])
    chosen = [n for n in ranked if shares[n] >= 3.0][: rng.randint(2, 3)]
    line_of = {ln.cls: ln.orientation for ln in scene.lines}
    for cls in line_of:
        if cls not in chosen and shares.get(cls, 0) >= 1.5 and rng.random() < 0.85:
            chosen.append(cls)
    facts = []
    ranked_shares = [shares[n] for n in ranked]
    for cls in chosen:
        s = shares[cls]
        rank = ranked.index(cls) + 1
        neighbours = [ranked_shares[i] for i in (rank - 2, rank) if 0 <= i < len(ranked_shares)]
        gap = min((abs(s - v) for v in neighbours), default=100.0)
        is_line = cls in line_of and cls in LINE_WORDS and rng.random() < 0.8
        fracs = region_fractions(scene, cls, line=is_line)
        good = [reg for reg, f in fracs.items() if f >= 0.8]
        good.sort(key=lambda reg: REGIONS[reg][1])
        word = rng.choice(LINE_WORDS[cls]) if is_line else rng.choice(WORDS[cls])
        fact = ClassFact(cls, word, pattern=rng.randrange(1000), region_variant=rng.randrange(100))
        if is_line:
            fact.line = line_of[cls]
            if good and rng.random() < 0.4:
                fact.region = good[0]
        else:
            if rng.random() < 0.8:
                fact.share = share_fact(rng, s, rank, gap)
            if good and (rng.random() < 0.75 or fact.share is None):
                fact.region = good[0] if rng.random() < 0.7 else rng.choice(good)
        facts.append(fact)
    absent = [n for n in scene.names() if n not in shares and n != "clouds"]
    denied = rng.sample(absent, k=min(len(absent), rng.choice([0, 0, 1, 2])))
    return Caption(rng.randrange(100), facts, denied, rng.randrange(1000), rng.randrange(1000))


def inject(rng: random.Random, scene: Scene, c: Caption, kind: str) -> Caption | None:
    """A copy of ``c`` with exactly one error of ``kind``, or None when the caption has no room for it."""
    shares = true_shares(scene)
    facts = [replace(f) for f in c.facts]
    out = replace(c, facts=facts)
    if kind == "class":
        absent = [n for n in scene.names() if n not in shares and n not in c.denied and n != "clouds"]
        absent = [n for n in absent if not any(w in WORDS[n] for f in facts for w in [f.word])]
        if not absent:
            return None
        new = rng.choice(absent)
        i = rng.randrange(len(facts))
        f = facts[i]
        if f.line:
            if new not in LINE_WORDS:
                return None
            facts[i] = replace(f, cls=new, word=rng.choice(LINE_WORDS[new]))
        else:
            facts[i] = replace(f, cls=new, word=rng.choice(WORDS[new]))
        return out
    if kind == "share":
        options = [i for i, f in enumerate(facts) if f.share]
        if not options:
            return None
        i = rng.choice(options)
        ranked = sorted(shares.values(), reverse=True)
        new = wrong_share(rng, facts[i].share, shares[facts[i].cls], ranked)
        if new is None:
            return None
        facts[i] = replace(facts[i], share=new)
        return out
    if kind == "position":
        options = []
        for i, f in enumerate(facts):
            fracs = region_fractions(scene, f.cls, line=f.line is not None)
            mirrored = MIRROR.get(f.region or "")  # that error is the left_is_east kind
            bad = [reg for reg, fr in fracs.items() if fr <= 0.02 and reg != mirrored]
            if bad:
                options.append((i, bad))
        if not options:
            return None
        i, bad = rng.choice(options)
        facts[i] = replace(facts[i], region=rng.choice(bad))
        return out
    if kind == "direction":
        options = [i for i, f in enumerate(facts) if f.line]
        if not options:
            return None
        i = rng.choice(options)
        facts[i] = replace(facts[i], line=ROTATE[facts[i].line])
        return out
    if kind == "left_is_east":
        options = []
        for i, f in enumerate(facts):
            fracs = region_fractions(scene, f.cls, line=f.line is not None)
            if f.line in ("NESW", "NWSE"):
                options.append((i, "line"))
            elif f.region in MIRROR and fracs[MIRROR[f.region]] <= 0.05:
                options.append((i, "region"))
            else:
                side = next((reg for reg in ("W", "E") if fracs[reg] >= 0.95), None)
                if side and fracs[MIRROR[side]] <= 0.05:
                    options.append((i, side))
        if not options:
            return None
        i, how = rng.choice(options)
        f = facts[i]
        if how == "line":
            facts[i] = replace(f, line=ROTATE[f.line])  # mirroring a diagonal swaps NE-SW and NW-SE
        elif how == "region":
            facts[i] = replace(f, region=MIRROR[f.region])
        else:
            facts[i] = replace(f, region=MIRROR[how])
        return out
    raise ValueError(kind)


def model_caption_agreement(path: Path = MODEL_CAPTIONS, show: int = 0) -> dict[str, Any]:
    """Detection rate (by error kind) and false rejection rate of the check on hand-labelled model captions."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    caught: Counter = Counter()
    totals: Counter = Counter()
    correct = rejected = 0
    shown: list[str] = []
    for row in rows:
        verdict = check_caption(row["text"], row["stats"], subject=row.get("subject"))
        if row["label"] == "correct":
            correct += 1
            rejected += not verdict.ok
            if not verdict.ok:
                shown.append(f"* FALSE REJECTION #{row['id']}: {row['text']}\n  {verdict.reasons}\n  ({row['why']})")
        else:
            totals[row["error"]] += 1
            caught[row["error"]] += not verdict.ok
            if verdict.ok:
                shown.append(f"* MISSED {row['error']} #{row['id']}: {row['text']}\n  ({row['why']})")
    wrong = sum(totals.values())
    for line in shown[:show]:
        print(line, file=sys.stderr)
    return {
        "captions": len(rows),
        "correct_captions": correct,
        "wrong_captions": wrong,
        "wrong_by_kind": {k: totals[k] for k in MODEL_ERROR_KINDS},
        "detection_rate": {k: round(caught[k] / totals[k], 4) if totals[k] else None for k in MODEL_ERROR_KINDS},
        "overall_detection_rate": round(sum(caught.values()) / max(1, wrong), 4),
        "false_rejection_rate": round(rejected / max(1, correct), 4),
        "false_rejections": rejected,
    }


def evidence_table(name: str, show: int = 0) -> dict[str, dict[str, Any]]:
    """Per kind of claim: wrong captions caught and correct captions rejected, on one labelled set
    (``model_set.jsonl:heldout`` is the model set's held-out slice)."""
    shown: list[str] = []

    def disagreement(row: dict[str, Any], verdict: Any) -> None:
        if len(shown) < show:
            shown.append(f"* {row['label']} {row['kind']} #{row['id']}: {row['text']!r}\n  {verdict.reasons} ({row['why']})")

    table: dict[str, dict[str, Any]] = dict(kind_table(rows_of(name), disagreement))
    for line in shown:
        print(line, file=sys.stderr)
    for entry in table.values():
        entry["caught_rate"] = round(entry["caught"] / entry["wrong"], 4) if entry["wrong"] else None
        entry["rejected_rate"] = round(entry["rejected"] / entry["correct"], 4) if entry["correct"] else None
    return table


def print_table(name: str, table: dict[str, dict[str, Any]]) -> None:
    print(f"\n{name}\n{'kind':<10} {'wrong':>6} {'caught':>7} {'correct':>8} {'rejected':>9}", file=sys.stderr)
    for kind, e in table.items():
        caught = f"{100 * e['caught_rate']:.1f}%" if e["caught_rate"] is not None else "-"
        rejected = f"{100 * e['rejected_rate']:.1f}%" if e["rejected_rate"] is not None else "-"
        print(f"{kind:<10} {e['wrong']:>6} {caught:>7} {e['correct']:>8} {rejected:>9}", file=sys.stderr)
    wrong, correct = sum(e["wrong"] for e in table.values()), sum(e["correct"] for e in table.values())
    caught, rejected = sum(e["caught"] for e in table.values()), sum(e["rejected"] for e in table.values())
    print(f"{'all':<10} {wrong:>6} {100 * caught / max(1, wrong):>6.1f}% {correct:>8} "
          f"{100 * rejected / max(1, correct):>8.1f}%", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=400, help="number of scenes (one correct caption each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=0, help="print this many misses and false rejections")
    parser.add_argument("--model-captions", type=Path, default=MODEL_CAPTIONS,
                        help="hand-labelled real model captions (JSONL)")
    parser.add_argument("--evidence-only", action="store_true",
                        help="only the per-kind tables of the labelled sets in tests/data/captions/")
    args = parser.parse_args(argv)
    evidence = {name: evidence_table(name, args.show) for name in EVIDENCE_SETS}
    for name, table in evidence.items():
        print_table(name, table)
    if args.evidence_only:
        print(json.dumps(evidence, indent=2))
        return evidence

    correct: list[tuple[str, Scene]] = []
    wrong: list[tuple[str, str, Scene, str]] = []  # (kind, caption, scene, correct version)
    kind_cycle = 0
    attempts = 0
    while len(correct) < args.scenes and attempts < args.scenes * 5:
        attempts += 1
        seed = int.from_bytes(hashlib.sha256(f"{args.seed}:{attempts}".encode()).digest()[:8], "big")
        rng = random.Random(seed)
        scheme = rng.choices(list(SCENE_CLASSES), weights=[6, 2.5, 1.5])[0]
        scene = make_scene(rng, scheme)
        caption = build_caption(rng, scene)
        if not caption.facts:
            continue
        text = render(caption)
        correct.append((text, scene))
        for offset in range(len(ERROR_KINDS)):  # the next kind this caption can carry
            kind = ERROR_KINDS[(kind_cycle + offset) % len(ERROR_KINDS)]
            bad = inject(rng, scene, caption, kind)
            if bad is not None and render(bad) != text:
                wrong.append((kind, render(bad), scene, text))
                kind_cycle = (kind_cycle + offset + 1) % len(ERROR_KINDS)
                break

    rejected_correct = [(t, s, check_caption(t, s.stats)) for t, s in correct]
    false_rejections = [(t, s, v) for t, s, v in rejected_correct if not v.ok]
    caught: Counter = Counter()
    totals: Counter = Counter()
    misses: dict[str, list[tuple[str, Scene]]] = defaultdict(list)
    for kind, text, scene, _ in wrong:
        totals[kind] += 1
        if not check_caption(text, scene.stats).ok:
            caught[kind] += 1
        else:
            misses[kind].append((text, scene))
    report = {
        "correct_captions": len(correct),
        "wrong_captions": len(wrong),
        "detection_rate": {k: round(caught[k] / totals[k], 4) if totals[k] else None for k in ERROR_KINDS},
        "wrong_by_kind": {k: totals[k] for k in ERROR_KINDS},
        "overall_detection_rate": round(sum(caught.values()) / max(1, len(wrong)), 4),
        "false_rejection_rate": round(len(false_rejections) / max(1, len(correct)), 4),
    }
    report = {"synthetic": report, "model_captions": model_caption_agreement(args.model_captions, args.show),
              **evidence}
    print(json.dumps(report, indent=2))
    if args.show:
        print("\n--- false rejections", file=sys.stderr)
        for t, s, v in false_rejections[: args.show]:
            print(f"* {t}\n  {v.reasons}\n  {_brief(s)}", file=sys.stderr)
        for kind in ERROR_KINDS:
            print(f"\n--- missed {kind}", file=sys.stderr)
            for t, s in misses[kind][: args.show]:
                print(f"* {t}\n  {_brief(s)}", file=sys.stderr)
    return report


def _brief(scene: Scene) -> str:
    classes = ", ".join(f"{c['name']} {100 * c['share']:.0f}% {c['position']} bbox={c['bbox']}"
                        for c in scene.stats["classes"])
    comps = ", ".join(f"{c['class']} {c['orientation']} e={c['elongation']:.1f}"
                      for c in scene.stats["components"] if c["elongated"])
    return f"[{scene.scheme}] {classes} | elongated: {comps}"


if __name__ == "__main__":
    main()
