"""VQA pairs whose answers follow exactly from a tile's label statistics.

Kinds (``VqaPair.kind``): ``presence`` (yes/no, absent classes of the scheme included),
``largest``, ``share_bin``, ``count`` (separate areas of a class), ``position`` (compass cell of a
class), ``compare`` (yes/no: more of one class than another), ``orientation`` (of an elongated
feature) and ``num_classes``. A question is only asked when its answer is unambiguous (no share
within a hair of a bin edge, no centroid on a cell border, no class split into many small
patches); `derive_answer` is that rule, so `rsbuild verify` re-derives every answer from the
stats. Yes/no questions are balanced per tile: as many "yes" as "no". Wording is picked by
sha256 of (key, kind, subjects), never by ``random``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rsbuild.captions.engines.template import clear_position
from rsbuild.schemes import scheme_or_none

TILE_IMAGE = "this Sentinel-2 satellite image"  # how the questions of a tile's rows name its image
KINDS = ("presence", "largest", "share_bin", "count", "position", "compare", "orientation", "num_classes")
YES, NO = "yes", "no"
PRESENCE_MIN_SHARE = 0.01  # a class below this share is neither "present" nor "absent": not asked
LARGEST_MARGIN = 0.02  # largest class asked only when it leads the second by this share
COMPARE_MARGIN = 0.05  # "more A than B" asked only when the shares differ by this much
BIN_MARGIN = 0.01  # share bins asked only when the share is this far from a bin edge
ORIENTATION_MARGIN_DEG = 7.5  # orientation asked only this far from a sector edge (22.5 + 45 k)
MAX_PRESENCE = 3  # of each answer: up to 3 yes and 3 no questions per tile
MAX_SHARE_BINS, MAX_COUNTS, MAX_POSITIONS, MAX_COMPARES, MAX_ORIENTATIONS = 3, 2, 2, 2, 2

SHARE_BINS = ((0.0, 0.10, "less than 10%"), (0.10, 0.25, "10-25%"), (0.25, 0.50, "25-50%"),
              (0.50, 0.75, "50-75%"), (0.75, 1.01, "more than 75%"))
COMPASS = {"top-left": "north-west", "top": "north", "top-right": "north-east", "left": "west", "center": "centre",
           "right": "east", "bottom-left": "south-west", "bottom": "south", "bottom-right": "south-east"}
ORIENTATION_WORDS = {"north-south": "north-south", "east-west": "east-west",
                     "northeast-southwest": "north-east to south-west", "northwest-southeast": "north-west to south-east"}

QUESTIONS: dict[str, tuple[str, ...]] = {
    "presence": ("Is there any {a} in {image}?", "Does {image} contain {a}?", "Can {a} be seen in {image}?"),
    "largest": ("Which land-cover class covers the largest part of {image}?",
                "What is the dominant land cover in {image}?", "Which class takes up most of {image}?"),
    "share_bin": ("How much of {image} is covered by {a}? Answer with one of: " + ", ".join(b[2] for b in SHARE_BINS) + ".",
                  "What share of {image} is {a}? Choose from: " + ", ".join(b[2] for b in SHARE_BINS) + "."),
    "count": ("How many separate {a} areas are there in {image}?", "Count the distinct {a} patches in {image}."),
    "position": ("In which part of {image} is the {a}? Answer with a compass direction (north is up).",
                 "Where is the {a} located in {image}? Give a compass direction; north is the top."),
    "compare": ("Is there more {a} than {b} in {image}?", "Does {a} cover a larger area than {b} in {image}?"),
    "orientation": ("In which direction does the elongated {a} feature run in {image}? North is up.",
                    "How is the long, narrow {a} feature in {image} oriented? North is the top."),
    "num_classes": ("How many land-cover classes are present in {image}?",
                    "How many different kinds of land cover does {image} show?"),
}


@dataclass(frozen=True)
class VqaPair:
    """One question with its exact answer; ``subjects`` are the classes it names (0-2)."""

    kind: str
    subjects: tuple[str, ...]
    question: str
    answer: str
    paraphrased: bool = False  # the question is an LLM's checked rewording (rsbuild.captions.paraphrase)

    def detail(self) -> dict[str, Any]:
        """What `derive_answer` needs to re-derive the answer (kept in the row's ``meta.detail``)."""
        detail: dict[str, Any] = {"kind": self.kind, "subjects": list(self.subjects)}
        if self.paraphrased:
            detail["paraphrased"] = True
        return detail


def _hash(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _classes(stats: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c["name"]): c for c in stats.get("classes", [])}


def share_bin(share: float) -> str | None:
    """The bin label of a share, or None when it lies within BIN_MARGIN of an inner bin edge."""
    if any(abs(share - low) < BIN_MARGIN for low, _, _ in SHARE_BINS[1:]):
        return None
    return next(label for low, high, label in SHARE_BINS if low <= share < high)


def _one_blob(cls: Mapping[str, Any]) -> bool:
    """The class is one connected area (no second component, no small patches)."""
    return int(cls.get("components", 0)) <= 1 and not cls.get("small_patches")


def _orientation(stats: Mapping[str, Any], name: str) -> str | None:
    comps = [c for c in stats.get("components", []) if c.get("class") == name]
    cls = _classes(stats).get(name)
    elongated = [c for c in comps if c.get("elongated")]
    if cls is None or len(comps) != int(cls.get("components", 0)) or len(elongated) != 1:
        return None  # not every component listed, or no single elongated one
    offset = (float(elongated[0]["orientation_deg"]) - 22.5) % 45.0
    if min(offset, 45.0 - offset) < ORIENTATION_MARGIN_DEG:
        return None
    return ORIENTATION_WORDS[str(elongated[0]["orientation"])]


def derive_answer(stats: Mapping[str, Any], kind: str, subjects: Sequence[str]) -> str | None:
    """The exact answer of a question of ``kind`` about ``subjects``, or None when the stats do not
    make it unambiguous (then the question is not asked)."""
    classes = _classes(stats)
    shares = {name: float(c["share"]) for name, c in classes.items()}
    if kind == "presence":
        (name,) = subjects
        scheme = scheme_or_none(stats.get("scheme"))
        if name not in classes:
            return NO if scheme is not None and name in scheme.names else None
        return YES if shares[name] >= PRESENCE_MIN_SHARE else None
    if kind == "largest":
        ordered = sorted(shares.values(), reverse=True)
        if not ordered or (len(ordered) > 1 and ordered[0] - ordered[1] < LARGEST_MARGIN):
            return None
        return str(stats.get("classes", [])[0]["name"])
    if kind == "num_classes":
        return str(len(shares)) if shares and min(shares.values()) >= PRESENCE_MIN_SHARE else None
    if kind == "compare":
        a, b = subjects
        if a not in shares or b not in shares or abs(shares[a] - shares[b]) < COMPARE_MARGIN:
            return None
        return YES if shares[a] > shares[b] else NO
    (name,) = subjects
    cls = classes.get(name)
    if cls is None or shares[name] < PRESENCE_MIN_SHARE:
        return None
    if kind == "share_bin":
        return share_bin(shares[name])
    if kind == "count":
        return None if cls.get("small_patches") else str(int(cls["components"]))
    if kind == "position":
        cell = clear_position(cls.get("centroid")) if _one_blob(cls) else None
        return COMPASS[cell] if cell else None
    if kind == "orientation":
        return _orientation(stats, name)
    raise ValueError(f"unknown VQA kind {kind!r}; kinds are {', '.join(KINDS)}")


def _question(key: str, kind: str, subjects: tuple[str, ...], image: str) -> str:
    phrasings = QUESTIONS[kind]
    pattern = phrasings[_hash(key, kind, *subjects) % len(phrasings)]
    return pattern.format(image=image, a=subjects[0] if subjects else "", b=subjects[1] if len(subjects) > 1 else "")


def _by_hash(names: Sequence[str], key: str, kind: str) -> list[str]:
    return sorted(names, key=lambda name: _hash(key, kind, "order", name))


def _candidates(stats: Mapping[str, Any], key: str) -> list[tuple[str, tuple[str, ...]]]:
    """(kind, subjects) of the questions a tile gets, before their answers are derived."""
    present = [str(c["name"]) for c in stats.get("classes", []) if float(c["share"]) >= PRESENCE_MIN_SHARE]
    scheme = scheme_or_none(stats.get("scheme"))
    absent = [n for n in (scheme.names if scheme else ()) if n not in _classes(stats)]
    k = min(len(present), len(absent), MAX_PRESENCE)
    out: list[tuple[str, tuple[str, ...]]] = [("presence", (n,)) for n in _by_hash(present, key, "presence")[:k]]
    out += [("presence", (n,)) for n in _by_hash(absent, key, "presence")[:k]]
    out.append(("largest", ()))
    out.append(("num_classes", ()))
    for kind, limit in (("share_bin", MAX_SHARE_BINS), ("count", MAX_COUNTS), ("position", MAX_POSITIONS),
                        ("orientation", MAX_ORIENTATIONS)):
        out += [(kind, (n,)) for n in present if derive_answer(stats, kind, (n,)) is not None][:limit]
    pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1:]
             if derive_answer(stats, "compare", (a, b)) is not None][:MAX_COMPARES]
    for i, (larger, smaller) in enumerate(pairs):  # present is share-descending: (larger, smaller) answers yes
        want_yes = i % 2 == 0 if len(pairs) > 1 else _hash(key, "compare", larger, smaller) % 2 == 0
        out.append(("compare", (larger, smaller) if want_yes else (smaller, larger)))
    return out


def vqa_pairs(stats: Mapping[str, Any], key: str, image: str = "this image") -> list[VqaPair]:
    """Every VQA pair of one tile (``image`` names the image in the questions)."""
    pairs = []
    for kind, subjects in _candidates(stats, key):
        answer = derive_answer(stats, kind, subjects)
        if answer is not None:
            pairs.append(VqaPair(kind, subjects, _question(key, kind, subjects, image), answer))
    return pairs
