"""The deterministic template caption engine: captions from the label statistics alone.

No model and no randomness: the wording variant of each caption is chosen by a sha256 of the
sample key, task, subject and seed, so the same stats always give the same text. Every claim it
writes (share, 3x3 position in compass words, orientation of elongated parts) comes straight
from the stats and passes `check_caption`; a position is left out when the centroid sits on a
cell boundary, where a reader could place it in either cell.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult
from rsbuild.captions.check import DEFAULT_MIN_SHARE, check_caption, present_class_count

TEMPLATE_VERSION = "2"  # 2: the opener's class count is the tile's, not the described classes'
MIN_AREA_SHARE = 0.02  # classes below this share are left out of the area caption
MAX_AREA_CLASSES = 4
MAX_LINEAR_FEATURES = 3
POSITION_MARGIN = 0.04  # centroids closer than this to a 3x3 cell border get no position
REVISE_MIN_WORDS, REVISE_MAX_WORDS = 10, 50

_PLACES: dict[str, tuple[str, ...]] = {
    "top-left": ("in the north-west", "in the upper left", "in the north-western part"),
    "top": ("in the north", "in the upper part", "in the northern part"),
    "top-right": ("in the north-east", "in the upper right", "in the north-eastern part"),
    "left": ("in the west", "on the left (western) side", "in the western part"),
    "center": ("in the centre", "in the middle", "in the central part"),
    "right": ("in the east", "on the right (eastern) side", "in the eastern part"),
    "bottom-left": ("in the south-west", "in the lower left", "in the south-western part"),
    "bottom": ("in the south", "in the lower part", "in the southern part"),
    "bottom-right": ("in the south-east", "in the lower right", "in the south-eastern part"),
}
_ORIENTATIONS: dict[str, tuple[str, ...]] = {
    "north-south": ("north-south", "from north to south"),
    "east-west": ("east-west", "from west to east"),
    "northeast-southwest": ("north-east to south-west", "from the south-west to the north-east"),
    "northwest-southeast": ("north-west to south-east", "from the north-west to the south-east"),
}
_AREA_OPENERS = ("", "This tile shows {n} land-cover classes. ", "Seen from above, the land cover is varied. ")
_AREA_CLAUSES = (
    "{Name} covers {share} of the tile{place}.",
    "{Name} takes up {share}{place}.",
    "About {share_bare} of the tile is {name}{place}.",
)
_DOMINANT_CLAUSES = (
    "The tile is dominated by {name}, which covers {share}{place}.",
    "{Name} is the largest class, with {share} of the tile{place}.",
)
_CLASS_PATTERNS = (
    "{Name} covers {share} of the tile{place}.",
    "In this tile, {name} takes up {share}{place}.",
)
_LINEAR_PATTERNS = (
    "A long, narrow strip of {name} runs {orientation}{place}.",
    "An elongated band of {name} stretches {orientation}{place}.",
)
_REVISE_SWAPS = (
    (r"\bcovers\b", "occupies"), (r"\btakes up\b", "accounts for"), (r"\bthe tile\b", "the image"),
    (r"\babout\b", "roughly"), (r"\bruns\b", "extends"), (r"\bof the tile\b", "of the scene"),
)
_REVISE_LEADS = ("", "In this satellite image, ", "Seen from above, ", "In this scene, ")


def _hash_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _pick(options: Sequence[str], *parts: object) -> str:
    return options[_hash_int(*parts) % len(options)]


def share_phrase(share: float) -> str:
    """Share as people say it: 'about half', 'about 35%', 'about 4%' (never far from the truth)."""
    pct = 100.0 * share
    for low, high, words in ((45, 55, "about half"), (31, 36, "about a third"), (23, 27, "about a quarter"),
                             (64, 69, "about two thirds"), (73, 77, "about three quarters")):
        if low <= pct <= high:
            return words
    if pct >= 10:
        return f"about {int(5 * round(pct / 5))}%"
    return f"about {max(1, round(pct))}%"


def clear_position(centroid: Sequence[float] | None) -> str | None:
    """The 3x3 cell name of a centroid, or None when it lies within POSITION_MARGIN of a cell border."""
    if not centroid:
        return None
    cells = []
    for value in centroid[:2]:
        v = float(value)
        if any(abs(v - edge) < POSITION_MARGIN for edge in (1 / 3, 2 / 3)):
            return None
        cells.append(min(int(v * 3), 2))
    col, row = cells
    names = (("top-left", "top", "top-right"), ("left", "center", "right"), ("bottom-left", "bottom", "bottom-right"))
    return names[row][col]


def _anchor(stats: Mapping[str, Any], record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """What 'where' means for a class: the class itself, or its dominant part when it is split up.

    A class in two far-apart patches has its centroid between them, where it has no pixel; then
    the largest component speaks for it if it holds most of the pixels, else nothing does.
    """
    comps = [c for c in stats.get("components", []) if c.get("class") == record.get("name")]
    pixels = int(record.get("pixels", 0))
    if len(comps) <= 1 and not record.get("small_patches"):
        return record
    if comps and int(comps[0].get("pixels", 0)) >= 0.6 * pixels:
        return comps[0]
    return None


def _place(stats: Mapping[str, Any], record: Mapping[str, Any], *parts: object) -> str:
    """', mostly in the north-west' (or '' when the place is unclear or the check cannot confirm it)."""
    anchor = _anchor(stats, record)
    cell = clear_position(anchor.get("centroid")) if anchor else None
    if cell is None:
        return ""
    phrase = _pick(_PLACES[cell], *parts, "place")
    if not check_caption(f"{_cap(record['name'])} lies {phrase}.", stats).ok:
        return ""
    return ", mostly " + phrase


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(pattern: str, name: str, share: float, place: str, **extra: Any) -> str:
    phrase = share_phrase(share)
    return pattern.format(Name=_cap(name), name=name, share=phrase, share_bare=re.sub(r"^about ", "", phrase),
                          place=place, **extra)


def area_caption(stats: Mapping[str, Any], *salt: object) -> str | None:
    """Which classes, roughly what share and where, largest first."""
    classes = [c for c in stats.get("classes", []) if float(c.get("share", 0)) >= MIN_AREA_SHARE]
    classes = classes[:MAX_AREA_CLASSES]
    if not classes:
        return None
    opener = _pick(_AREA_OPENERS, *salt, "opener")
    count = present_class_count(stats)
    if len(classes) == 1 or ("{n}" in opener and (count is None or count < 2)):
        opener = ""  # the count is the tile's own (VQA num_classes' rule), stated only when it is clear
    opener = opener.format(n=count)
    sentences = []
    for i, record in enumerate(classes):
        name, share = record["name"], float(record["share"])
        place = _place(stats, record, *salt, name)
        if i == 0 and share >= 0.35:
            pattern = _pick(_DOMINANT_CLAUSES, *salt, "dominant")
        else:
            pattern = _pick(_AREA_CLAUSES, *salt, name, "clause")
        sentences.append(_fill(pattern, name, share, place))
    return opener + " ".join(sentences)


def class_caption(stats: Mapping[str, Any], class_name: str, *salt: object) -> str | None:
    """One class: its share, where it lies and its shape (patches, elongated parts)."""
    record = next((c for c in stats.get("classes", []) if c.get("name") == class_name), None)
    if record is None:
        return None
    share = float(record["share"])
    text = _fill(_pick(_CLASS_PATTERNS, *salt, "class"), class_name, share, _place(stats, record, *salt, class_name))
    parts = int(record.get("components", 0))
    if parts > 1:
        text += f" It forms {parts} separate patches."
    elif parts == 1:
        text += " It forms one connected area."
    comps = [c for c in stats.get("components", []) if c.get("class") == class_name and c.get("elongated")]
    if comps and comps[0].get("orientation") in _ORIENTATIONS:
        words = _pick(_ORIENTATIONS[comps[0]["orientation"]], *salt, "orientation")
        text += f" Its largest elongated part runs {words}."
    return text


def linear_caption(stats: Mapping[str, Any], *salt: object) -> str | None:
    """Elongated features (rivers, roads, field edges); None when the tile has none."""
    shares = {c.get("name"): float(c.get("share", 0.0)) for c in stats.get("classes", [])}
    comps = [c for c in stats.get("components", []) if c.get("elongated") and c.get("orientation") in _ORIENTATIONS
             and shares.get(c.get("class"), 0.0) >= DEFAULT_MIN_SHARE]
    if not comps:
        return None
    sentences = []
    for i, comp in enumerate(comps[:MAX_LINEAR_FEATURES]):
        cell = clear_position(comp.get("centroid"))
        place = "" if cell is None else " " + _pick(_PLACES[cell], *salt, i, "place")
        if place and not check_caption(f"A strip of {comp['class']} lies{place}.", stats).ok:
            place = ""
        pattern = _pick(_LINEAR_PATTERNS, *salt, i, "linear")
        orientation = _pick(_ORIENTATIONS[comp["orientation"]], *salt, i, "orientation")
        sentences.append(pattern.format(name=comp["class"], orientation=orientation, place=place))
    return " ".join(sentences)


def _fit_length(text: str) -> str:
    """Trim to at most REVISE_MAX_WORDS words (whole sentences) and pad short texts to the minimum."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    while len(sentences) > 1 and len(" ".join(sentences).split()) > REVISE_MAX_WORDS:
        sentences.pop()
    out = " ".join(sentences)
    words = out.split()
    if len(words) > REVISE_MAX_WORDS:
        out = " ".join(words[:REVISE_MAX_WORDS]).rstrip(",;") + "."
    if len(out.split()) < REVISE_MIN_WORDS:
        out = out.rstrip() + " The image is shown with north at the top."
    return out


def revise_captions(source: str, n: int, *salt: object) -> list[str]:
    """Up to ``n`` distinct rephrasings of ``source`` (10-50 words each) that keep every claim."""
    candidates: list[str] = []
    sentences = re.split(r"(?<=[.!?])\s+", source.strip())
    can_rotate = len(sentences) > 1 and not any(re.match(r"(?i)(it|its|they|this)\b", s) for s in sentences[1:])
    for variant in range(4 * len(_REVISE_SWAPS)):
        h = _hash_int(*salt, "revise", variant)
        text = source.strip()
        for bit, (pattern, replacement) in enumerate(_REVISE_SWAPS):
            if (h >> bit) & 1:
                text = re.sub(pattern, replacement, text)
        if can_rotate and (h >> 8) & 1:
            parts = re.split(r"(?<=[.!?])\s+", text)
            text = " ".join(parts[1:] + parts[:1])
        lead = _REVISE_LEADS[(h >> 12) % len(_REVISE_LEADS)]
        if lead:
            text = lead + text[:1].lower() + text[1:]
        text = _fit_length(text)
        if text != source.strip() and text not in candidates:
            candidates.append(text)
        if len(candidates) >= n:
            break
    return candidates[:n]


class TemplateEngine(CaptionEngine):
    """Deterministic captions from stats (tasks: area, class, linear, revise)."""

    name = "rsbuild-template"
    needs_prompts = False

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: CaptionRequest) -> CaptionResult:
        salt = (request.key, request.task, request.subject or "", request.seed)
        if request.task == "area":
            texts = [area_caption(request.stats, *salt)]
        elif request.task == "class":
            if not request.subject:
                return CaptionResult(request, [], self.name, error="class task needs a class name as subject")
            texts = [class_caption(request.stats, request.subject, *salt)]
        elif request.task == "linear":
            texts = [linear_caption(request.stats, *salt)]
        elif request.task == "revise":
            if not request.subject:
                return CaptionResult(request, [], self.name, error="revise task needs the source caption as subject")
            texts = list(revise_captions(request.subject, max(1, request.n), *salt))
        else:
            return CaptionResult(request, [], self.name, error=f"unknown task {request.task!r}")
        return CaptionResult(request, [t for t in texts if t], self.name)

    def builtin_prompt(self, task: str) -> tuple[str, str]:
        """('template:TASK', sha256 of this module's wording tables and version)."""
        tables = {
            "version": TEMPLATE_VERSION, "task": task, "places": _PLACES, "orientations": _ORIENTATIONS,
            "area": [_AREA_OPENERS, _AREA_CLAUSES, _DOMINANT_CLAUSES], "class": _CLASS_PATTERNS,
            "linear": _LINEAR_PATTERNS, "revise": [_REVISE_SWAPS, _REVISE_LEADS],
        }
        digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode("utf-8")).hexdigest()
        return f"template:{task}", digest
