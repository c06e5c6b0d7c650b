"""Referring expressions: a phrase that picks out exactly one connected component of a tile.

A phrase is built from the component's class, whether it is elongated, its 3x3 compass cell and
its size rank within the class, and only kept when no other pixel group of the tile matches it:
attributes that small patches (below the component size) could share are only used when the
class has none, and every phrase is tried against all listed components of the class. A
component that no phrase isolates is skipped and counted (`Referring.ambiguous`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rsbuild.captions.engines.template import POSITION_MARGIN, clear_position
from rsbuild.captions.vqa import COMPASS
from rsbuild.chips.stats import POSITIONS

COMPACT_EXTENT = 0.5  # a ranked component gets its compass cell when its box spans at most this much


@dataclass(frozen=True)
class Referent:
    """A component (index into ``stats["components"]``) and the phrase that refers to it alone."""

    component: int
    class_name: str
    phrase: str
    bbox: tuple[float, float, float, float]  # normalised [x1, y1, x2, y2]


@dataclass(frozen=True)
class Referring:
    """The referents of a tile and how many components had no unambiguous phrase."""

    referents: tuple[Referent, ...]
    ambiguous: int


@dataclass(frozen=True)
class _Description:
    """Attributes a phrase asserts (None: not asserted)."""

    class_name: str
    elongated: bool | None = None
    cell: str | None = None
    rank: int | None = None  # 0 largest, 1 second largest


def _could_be_in(cell: str, centroid: Sequence[float]) -> bool:
    """Whether a reader could place a centroid in ``cell``: inside it or within POSITION_MARGIN of it."""
    row, col = next((r, c) for r, names in enumerate(POSITIONS) for c, name in enumerate(names) if name == cell)
    return all(k / 3 - POSITION_MARGIN <= float(v) <= (k + 1) / 3 + POSITION_MARGIN
               for k, v in ((col, centroid[0]), (row, centroid[1])))


def _matches(desc: _Description, comp: Mapping[str, Any], rank: int) -> bool:
    """Whether another component could be what ``desc`` describes (a border place counts for both cells)."""
    return (comp["class"] == desc.class_name
            and (desc.elongated is None or bool(comp.get("elongated")) == desc.elongated)
            and (desc.cell is None or _could_be_in(desc.cell, comp["centroid"]))
            and (desc.rank is None or rank == desc.rank))


def phrase_of(desc: _Description) -> str:
    """'the elongated water area in the north-east', 'the largest tree cover area', ..."""
    size = {None: "", 0: "largest ", 1: "second-largest "}[desc.rank]
    shape = "elongated " if desc.elongated else ""
    noun = "feature" if desc.elongated else ("" if desc.class_name.endswith(" area") else "area")
    where = f" in the {COMPASS[desc.cell]}" if desc.cell else ""
    return f"the {size}{shape}{desc.class_name}{' ' + noun if noun else ''}{where}"


def _descriptions(comp: Mapping[str, Any], rank: int, clean: bool) -> list[_Description]:
    """Phrases for a component, simplest first; ``clean``: the class has no small patches and all
    its components are listed, so attributes other than the size rank can be checked against all."""
    name, cell = str(comp["class"]), clear_position(comp.get("centroid"))
    elongated = bool(comp.get("elongated"))
    out = []
    if clean:
        out.append(_Description(name))
        if elongated:
            out.append(_Description(name, elongated=True))
        if cell:
            out.append(_Description(name, elongated=True if elongated else None, cell=cell))
    if rank <= 1:  # a compact component's place is added: true, and the size rank alone is unique
        x1, y1, x2, y2 = (float(v) for v in comp["bbox"])
        out.append(_Description(name, rank=rank, cell=cell if max(x2 - x1, y2 - y1) <= COMPACT_EXTENT else None))
    return out


def _unique(desc: _Description, comps: Sequence[Mapping[str, Any]], own: int, complete: bool) -> bool:
    """``desc`` matches component ``own`` (index within ``comps``) and no other; a size rank needs
    strictly different sizes around it, and a component after the last listed one could tie."""
    if any(_matches(desc, c, r) for r, c in enumerate(comps) if r != own):
        return False
    if desc.rank is not None:
        pixels = [int(c["pixels"]) for c in comps]
        if own > 0 and pixels[own - 1] == pixels[own]:
            return False
        if own + 1 < len(pixels) and pixels[own + 1] == pixels[own]:
            return False
        if own + 1 == len(pixels) and not complete:
            return False
    return True


def referring_expressions(stats: Mapping[str, Any]) -> Referring:
    """One unambiguous phrase per component where one exists, in the stats' component order."""
    classes = {str(c["name"]): c for c in stats.get("classes", [])}
    components = list(stats.get("components", []))
    referents, ambiguous = [], 0
    for index, comp in enumerate(components):
        name = str(comp["class"])
        same = [c for c in components if c["class"] == name]
        own = next(i for i, c in enumerate(same) if c is comp)
        cls = classes.get(name, {})
        complete = len(same) == int(cls.get("components", len(same)))
        clean = complete and not cls.get("small_patches")
        chosen = next((d for d in _descriptions(comp, own, clean) if _unique(d, same, own, complete)), None)
        if chosen is None:
            ambiguous += 1
            continue
        x1, y1, x2, y2 = (round(min(max(float(v), 0.0), 1.0), 3) for v in comp["bbox"])
        referents.append(Referent(index, name, phrase_of(chosen), (x1, y1, x2, y2)))
    return Referring(tuple(referents), ambiguous)
