#!/usr/bin/env python
"""Write the outside-phrasing evidence set tests/data/captions/outside_set.jsonl.

Tiles are seeded synthetic label maps (``check_agreement.make_scene``: bands, halves, quadrants,
blobs, rivers, roads) whose statistics come from ``compute_stats``. Each caption is written in
one of several authors' styles (terse, hedged, multi-sentence, percentages, fractions, pronouns)
with phrasings chosen to differ from the project's prompts and from ``check_agreement.py``, and
each is labelled from the *pixels* of its tile, not from the checker:

* a position is stated when >= 80 % of the class's pixels lie in the region, and is wrong when
  <= 0.5 % do; a share is stated within a few points of the truth, and is wrong when it is >= 25
  points (and a factor ~2) away; a count states the number of large components (wrong: a
  number outside [large, large + small] by more than one); a direction is an intact elongated
  feature's axis (wrong: rotated 90 degrees, with no other feature of the class on that axis);
  a relative claim compares two shares more than 8 points apart; a class word names a class
  with >= 3 % of the pixels (wrong: a class with no pixel);
* ``copy`` captions repeat a worked example of the shipped prompts (whole or most of it), and
  ``no_fact`` captions state nothing checkable: both are wrong whatever the tile.

Every row holds the text, label, kind of claim, a one-line reason and the tile's stats. Labels
were then reviewed by reading rows against their stats (README beside the data). Rows with
``author: "hand"`` were written by hand for twelve further tiles; a rerun keeps them.

    python scripts/make_outside_captions.py OUT.jsonl [--tiles 190] [--seed 12]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_agreement import REGIONS, Scene, make_scene, region_fractions, true_shares

SCHEMES = ("esa_worldcover", "dynamic_world", "io_lulc")
# singular and plural nouns an outside author uses for each class (independent of the checker's lexicon)
NOUNS: dict[str, list[str]] = {
    "tree cover": ["forest", "woodland", "trees", "wooded land", "a wood", "tree canopy"],
    "trees": ["forest", "woods", "a woodland", "trees", "tree cover"],
    "cropland": ["farmland", "cropland", "fields", "crops", "arable land", "a field"],
    "crops": ["cropland", "farmland", "crop fields", "crops", "farm fields"],
    "grassland": ["grassland", "meadow", "pasture", "grass", "meadows"],
    "grass": ["grass", "pasture", "a meadow", "grassland"],
    "shrubland": ["shrubland", "scrub", "bushes", "shrubs", "brush"],
    "shrub and scrub": ["scrub", "shrubland", "bushes", "shrubs"],
    "built-up area": ["buildings", "an urban area", "settlement", "a town", "built-up land", "houses"],
    "bare or sparse vegetation": ["bare ground", "bare soil", "barren land", "exposed rock"],
    "bare ground": ["bare ground", "bare soil", "barren land", "sand"],
    "snow and ice": ["snow", "ice", "a glacier", "snowfields"],
    "water": ["water", "a lake", "open water", "a pond", "a reservoir"],
    "herbaceous wetland": ["wetland", "marsh", "a marsh", "swamp"],
    "flooded vegetation": ["flooded vegetation", "marsh", "a swamp", "wetland"],
    "mangroves": ["mangroves", "mangrove forest"],
    "moss and lichen": ["moss", "lichen"],
    "rangeland": ["rangeland"],
}
LINE_NOUNS = {"water": ["river", "stream", "canal", "creek"], "built-up area": ["road", "highway", "motorway"]}
PATCH_NOUNS = ["patches", "areas", "blocks", "clusters", "pockets", "parts"]
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
PLACES: dict[str, list[str]] = {
    "N": ["the northern half", "the north", "the upper half", "the top half of the image"],
    "S": ["the southern half", "the south", "the lower half", "the bottom half of the tile"],
    "W": ["the western half", "the west", "the left half", "the left-hand half"],
    "E": ["the eastern half", "the east", "the right half", "the right-hand half"],
    "NW": ["the upper-left quarter", "the north-western quadrant", "the top-left quarter", "the NW quarter"],
    "NE": ["the upper-right quarter", "the north-eastern quadrant", "the top-right quarter", "the NE quarter"],
    "SW": ["the lower-left quarter", "the south-western quadrant", "the bottom-left quarter", "the SW quarter"],
    "SE": ["the lower-right quarter", "the south-eastern quadrant", "the bottom-right quarter", "the SE quarter"],
    "C": ["the centre", "the middle of the scene", "the central part of the image"],
    "N_edge": ["the northern edge", "the top edge"], "S_edge": ["the southern edge", "the bottom edge"],
    "W_edge": ["the western edge", "the left edge"], "E_edge": ["the eastern edge", "the right edge"],
}
OPPOSITE = {"N": "S", "S": "N", "W": "E", "E": "W", "NW": "SE", "SE": "NW", "NE": "SW", "SW": "NE",
            "N_edge": "S_edge", "S_edge": "N_edge", "W_edge": "E_edge", "E_edge": "W_edge"}
AXES = {"NS": ["north-south", "from north to south", "from the top of the image to the bottom", "vertically"],
        "EW": ["east-west", "from west to east", "across the image from left to right", "horizontally"],
        "NESW": ["from the south-west to the north-east", "diagonally from the bottom left to the top right",
                 "along a north-east to south-west line"],
        "NWSE": ["from the north-west to the south-east", "diagonally from the top left to the bottom right",
                 "along a north-west to south-east line"]}
ROTATE = {"NS": "EW", "EW": "NS", "NESW": "NWSE", "NWSE": "NESW"}
AXIS_DEG = {"NS": 0.0, "EW": 90.0, "NESW": 45.0, "NWSE": 135.0}
EXAMPLES = [  # the worked examples of rsbuild/captions/templates/*.j2 (assistant turns)
    "Cropland covers about three fifths of the image, across the center. Tree cover fills the north-west corner "
    "and water lies along the east side.",
    "Tree cover takes up about a third of the image, mostly in the south-west, in three large patches and a few "
    "small ones.",
    "A thin river crosses the image from north to south along its west side.",
    "Most of this scene, roughly three fifths, is farmland in the middle, while trees occupy the north-west corner.",
]
FACT_FREE = [
    "This is a satellite image of the Earth's surface.", "The image shows a landscape seen from above.",
    "An aerial view with a mix of colours and textures.", "A typical rural scene, photographed from space.",
    "The picture shows various surfaces and a varied pattern of land.", "Nice view of the terrain from orbit.",
    "Green vegetation and other surfaces appear throughout the scene.", "It is a Sentinel-2 chip of some region.",
    "The tile displays several land cover types in a natural arrangement.", "Overhead imagery of an area.",
]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def bare(noun: str) -> str:
    return noun.split(" ", 1)[1] if noun.startswith(("a ", "an ")) else noun


def pct_phrase(rng: random.Random, v: float) -> str:
    n = int(round(v)) if v < 10 else int(5 * round(v / 5))
    return rng.choice([f"{n}%", f"about {n} %", f"roughly {n} percent", f"around {n} per cent", f"~{n}%",
                       f"approximately {n}%", f"some {n} percent"])


def fraction_phrase(rng: random.Random, v: float) -> str | None:
    options = [(50, ["half", "about half", "roughly half"]), (33.3, ["a third", "about one third", "roughly a third"]),
               (25, ["a quarter", "about a quarter", "roughly one quarter"]), (66.7, ["two thirds", "about two-thirds"]),
               (75, ["three quarters", "about three-quarters"]), (20, ["a fifth", "about one fifth"]),
               (10, ["a tenth", "about a tenth"])]
    close = [words for value, words in options if abs(v - value) <= 3.5]
    if v >= 62:
        close.append(["most", "the bulk", "the majority"])
    if v <= 8:
        close.append(["a small part", "a small fraction", "only a little"])
    return rng.choice(rng.choice(close)) if close else None


def share_phrase(rng: random.Random, v: float) -> str:
    frac = fraction_phrase(rng, v) if rng.random() < 0.4 else None
    return frac or pct_phrase(rng, v)


def wrong_value(rng: random.Random, v: float) -> float:
    if v < 40:
        return min(95.0, max(v * 2.2, v + 25) + rng.uniform(0, 20))
    return max(2.0, min(v / 2.2, v - 25) - rng.uniform(0, 10))


SHARE_FRAMES = [  # (author style, pattern) with {W} class noun and {S} share phrase
    ("terse", "{W}: {S}."), ("terse", "{W} ({S})."), ("terse", "{W} at {S}, the rest mixed."),
    ("plain", "{W} spreads over {S} of the image."), ("plain", "{W} extends across {S} of the tile."),
    ("plain", "{W} takes up {S} of the scene."), ("plain", "{W} makes up {S} of the picture."),
    ("plain", "{W} occupies {S} of the frame."), ("plain", "{W} accounts for {S} of the area shown."),
    ("plain", "{W} stretches over {S} of the chip."), ("plain", "{W} sprawls across {S} of the view."),
    ("plain", "{W} blankets {S} of the land."), ("plain", "{W} is spread across {S} of the tile."),
    ("plain", "{W} represents {S} of the land cover."), ("plain", "{W} amounts to {S} of the scene."),
    ("frame", "{S} of the whole image is {w}."), ("frame", "{S} of the entire tile consists of {w}."),
    ("frame", "Across the whole scene, {w} makes up {S}."), ("frame", "Of the entire image, {S} is {w}."),
    ("hedged", "It looks like {w} covers maybe {S} of the image, though it is hard to say."),
    ("hedged", "I would estimate that {w} takes up {S} of this view."),
    ("hedged", "Probably {S} of the scene is {w}, give or take."),
    ("multi", "The image shows {w}. It covers {S} of the area."),
    ("multi", "Look at the {w2}. It extends over {S} of the picture."),
    ("pronoun", "There is {w} here; it spans {S} of the tile."),
]
COUNT_FRAMES = [
    ("plain", "There are {N} separate {P} of {w}."), ("plain", "{W} appears as {N} distinct {P}."),
    ("plain", "{W} is split into {N} {P}."), ("plain", "{W} forms {N} isolated {P} across the scene."),
    ("hedged", "I count {N} separate {P} of {w}, more or less."), ("multi", "Look at the {w2}. It lies in {N} {P}."),
    ("terse", "{W}: {N} {P}."),
]
SINGLE_FRAMES = [("plain", "{W} forms a single continuous patch."), ("plain", "There is only one patch of {w}."),
                 ("plain", "{W} occurs as one connected area."), ("terse", "One single block of {w}.")]


def noun_for(rng: random.Random, cls: str) -> str:
    return rng.choice(NOUNS.get(cls, [cls]))


def fill(pattern: str, noun: str, **more: str) -> str:
    text = pattern.format(W=cap(bare(noun)), w=bare(noun), w2=bare(noun), **more)
    return cap(text)


def position_row(rng: random.Random, scene: Scene, cls: str, wrong: bool) -> tuple[str, str] | None:
    fracs = region_fractions(scene, cls)
    if wrong:
        regions = [r for r in PLACES if fracs[r] <= 0.005 and r in OPPOSITE and fracs[OPPOSITE[r]] >= 0.6]
    else:
        regions = [r for r in PLACES if fracs[r] >= 0.8]
        regions = [r for r in regions if REGIONS[r][1] <= 0.25] or regions  # the most specific places
    if not regions:
        return None
    region = rng.choice(regions)
    place = rng.choice(PLACES[region])
    noun = noun_for(rng, cls)
    verb = "lies" if region in ("C",) else rng.choice(["fills", "lies in", "occupies", "is found in", "covers"])
    if region.endswith("_edge"):
        verb = rng.choice(["runs along", "lies along", "is strung along"])
    style, pattern = rng.choice([
        ("plain", "{W} {V} {Q}."), ("hedged", "There seems to be some {w} in {Q}, if I read it right."),
        ("multi", "The {w2} is easy to spot. It {V} {Q}."), ("terse", "{W} in {Q}."),
        ("pronoun", "You can see {w} here: it {V} {Q}."),
    ])
    if verb == "lies" and "{V} {Q}" in pattern:
        verb = "lies in"
    text = fill(pattern, noun, V=verb, Q=place)
    why = f"{100 * fracs[region]:.0f}% of {cls} pixels lie in {region}"
    return text, f"{style}: {why}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--tiles", type=int, default=240)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []

    def add(scene: Scene, kind: str, label: str, text: str, why: str, task: str = "area",
            subject: str | None = None) -> None:
        style, _, reason = why.partition(": ")
        rows.append({"id": len(rows), "task": task, "subject": subject, "kind": kind, "label": label,
                     "style": style, "text": text, "why": reason, "stats": scene.stats, "author": "generated"})

    for t in range(args.tiles):
        scene = make_scene(rng, SCHEMES[t % 3])
        shares = true_shares(scene)
        ranked = sorted(shares, key=lambda n: -shares[n])
        present = [n for n in ranked if shares[n] >= 3.0 and n in NOUNS]
        absent = [n for n in scene.names() if n not in shares and n in NOUNS and n != "mangroves"]
        for _ in range(2):
            kind = rng.choice(["share", "share", "frame", "count", "position", "position", "direction", "class",
                               "relative", "copy", "no_fact"])
            wrong = rng.random() < 0.4
            cls = rng.choice(present)
            noun = noun_for(rng, cls)
            s = shares[cls]
            if kind in ("share", "frame"):
                frames = [f for f in SHARE_FRAMES if (f[0] == "frame") == (kind == "frame")]
                style, pattern = rng.choice(frames)
                value = wrong_value(rng, s) if wrong else s
                phrase = pct_phrase(rng, value) if wrong else share_phrase(rng, value)
                text = fill(pattern, noun, S=phrase)
                add(scene, kind, "wrong" if wrong else "correct", text,
                    f"{style}: {cls} is {s:.0f}%, caption says {phrase}")
            elif kind == "count":
                info = next(c for c in scene.stats["classes"] if c["name"] == cls)
                large, small = int(info["components"]), int(info["small_patches"])
                if wrong:
                    n = 1 if large >= 3 else large + small + 2
                else:
                    n = large
                if not 1 <= n <= 6 or (wrong and n == 1 and large < 3):
                    continue
                if n == 1:
                    style, pattern = rng.choice(SINGLE_FRAMES)
                    text = fill(pattern, noun)
                else:
                    style, pattern = rng.choice(COUNT_FRAMES)
                    text = fill(pattern, noun, N=COUNT_WORDS[n] if rng.random() < 0.7 else str(n),
                                P=rng.choice(PATCH_NOUNS))
                add(scene, "count", "wrong" if wrong else "correct", text,
                    f"{style}: {cls} has {large} large and {small} small components, caption says {n}")
            elif kind == "position":
                row = position_row(rng, scene, cls, wrong)
                if row:
                    add(scene, "position", "wrong" if wrong else "correct", row[0], row[1])
            elif kind == "direction":
                lines = [ln for ln in scene.lines if ln.cls in LINE_NOUNS]
                if not lines:
                    continue
                line = rng.choice(lines)
                axis = ROTATE[line.orientation] if wrong else line.orientation
                if wrong and any(ln.cls == line.cls and ln.orientation == axis for ln in scene.lines):
                    continue
                if wrong and any(c["class"] == line.cls and c["elongation"] >= 1.5 and min(
                        abs(c["orientation_deg"] - AXIS_DEG[axis]) % 180, 180 - abs(c["orientation_deg"] - AXIS_DEG[
                            axis]) % 180) <= 40 for c in scene.stats["components"]):
                    continue
                word = rng.choice(LINE_NOUNS[line.cls])
                style, pattern = rng.choice([
                    ("plain", "A {L} runs {D}."), ("plain", "A narrow {L} cuts across the tile {D}."),
                    ("hedged", "What looks like a {L} seems to run {D}."),
                    ("multi", "There is a {L} in the image. It is oriented {D}."),
                    ("terse", "{L2} running {D}."), ("plain", "The {L} crosses the scene {D}."),
                ])
                text = cap(pattern.format(L=word, L2=cap(word), D=rng.choice(AXES[axis])))
                add(scene, "direction", "wrong" if wrong else "correct", text,
                    f"{style}: the {line.cls} feature runs {line.orientation}, caption says {axis}")
            elif kind == "class":
                if wrong:
                    if not absent:
                        continue
                    other = rng.choice(absent)
                    bad = noun_for(rng, other)
                    style, pattern = rng.choice([
                        ("plain", "{M2} with {X} in one part of the image."),
                        ("plain", "{X2} can be seen beside the {M}."), ("terse", "{M2} and {X}."),
                        ("hedged", "There might be {X} somewhere near the {M}."),
                    ])
                    text = cap(pattern.format(M=bare(noun), M2=cap(bare(noun)), X=bad, X2=cap(bad)))
                    add(scene, "class", "wrong", text, f"{style}: {other} has no pixel (caption names '{bad}')")
                else:
                    others = [n for n in present if n != cls]
                    if not others:
                        continue
                    second = noun_for(rng, others[0])
                    style, pattern = rng.choice([
                        ("plain", "{M2} and {X} appear in this tile."), ("terse", "{M2}, {X}."),
                        ("hedged", "I think I see {M} and maybe some {X}."),
                        ("multi", "There is {M}. There is also {X}."),
                    ])
                    text = cap(pattern.format(M=bare(noun), M2=cap(bare(noun)), X=bare(second)))
                    add(scene, "class", "correct", text, f"{style}: {cls} {s:.0f}% and {others[0]} present")
            elif kind == "relative":
                others = [n for n in present if abs(shares[n] - s) > 8]
                if not others:
                    continue
                other = rng.choice(others)
                bigger = s > shares[other]
                claim_bigger = bigger != wrong
                second = noun_for(rng, other)
                a, b = bare(noun), bare(second)
                if claim_bigger:
                    style, pattern = rng.choice([("plain", "There is more {A} than {B}."),
                                                 ("plain", "{A2} covers more of the image than {B}."),
                                                 ("hedged", "{A2} seems to outweigh {B}."),
                                                 ("terse", "{B2} is smaller than {A}.")])
                else:
                    style, pattern = rng.choice([("plain", "There is less {A} than {B}."),
                                                 ("plain", "{A2} covers less of the image than {B}."),
                                                 ("terse", "{B2} is larger than {A}.")])
                text = pattern.format(A=a, B=b, A2=cap(a), B2=cap(b))
                add(scene, "relative", "wrong" if wrong else "correct", text,
                    f"{style}: {cls} {s:.0f}% vs {other} {shares[other]:.0f}%")
                top = ranked[0]
                if len(ranked) > 1 and shares[top] - shares[ranked[1]] > 8 and rng.random() < 0.7:
                    pick = top if rng.random() < 0.6 else rng.choice([n for n in present if shares[top] - shares[n]
                                                                      > 15] or [top])
                    noun2 = bare(noun_for(rng, pick))
                    style, pattern = rng.choice([("plain", "{A2} is the largest class."),
                                                 ("plain", "The scene is mostly {A}."),
                                                 ("plain", "{A2} dominates the tile."),
                                                 ("terse", "Mainly {A}.")])
                    add(scene, "relative", "correct" if pick == top else "wrong",
                        pattern.format(A=noun2, A2=cap(noun2)),
                        f"{style}: largest is {top} {shares[top]:.0f}%, caption names {pick} {shares[pick]:.0f}%")
            elif kind == "copy":
                if not wrong:
                    continue
                example = rng.choice(EXAMPLES)
                sentences = [x.strip() + "." for x in example.split(".") if x.strip()]
                text = example if rng.random() < 0.5 or len(sentences) == 1 else sentences[0]
                if len(sentences) == 1 and rng.random() < 0.5:
                    text = text.replace("about", "roughly").replace("thin", "narrow")
                add(scene, "copy", "wrong", text, "copy: repeats a worked example of the prompts")
            elif kind == "no_fact":
                if not wrong:
                    continue
                add(scene, "no_fact", "wrong", rng.choice(FACT_FREE), "no_fact: states nothing checkable")
    # class-task captions in the pronoun style: the subject is not named
    for t in range(40):
        scene = make_scene(rng, SCHEMES[t % 3])
        shares = true_shares(scene)
        cls = max((n for n in shares if n in NOUNS), key=lambda n: shares[n])
        wrong = rng.random() < 0.4
        value = wrong_value(rng, shares[cls]) if wrong else shares[cls]
        phrase = pct_phrase(rng, value)
        text = rng.choice([f"It covers {phrase} of the image.", f"This class takes up {phrase} of the tile.",
                           f"It spreads across {phrase} of the scene."])
        add(scene, "share", "wrong" if wrong else "correct", text,
            f"pronoun: {cls} is {shares[cls]:.0f}%, caption says {phrase}", task="class", subject=cls)
    # captions written by hand (author "hand") live only in the data file: keep them
    kept = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.is_file() else []
    for row in (r for r in kept if r.get("author") == "hand"):
        rows.append({**row, "id": len(rows)})
    with args.out.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    print(len(rows), "captions;", sum(r["label"] == "correct" for r in rows), "correct")


if __name__ == "__main__":
    main()
