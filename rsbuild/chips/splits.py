"""Train / validation / test assignment by sha256, and the footprint overlap report.

A split key is the POI id (``by = "poi"``) or a geographic grid cell (``by = "cell"``), so that
neighbouring POIs can be made to share a split. The split is a pure function of the key, the
fractions and the salt: the same POI lands in the same split in every run.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rsbuild.config import SplitsConfig
from rsbuild.records import SPLITS, Poi

BBox = tuple[float, float, float, float]  # west, south, east, north (WGS84 degrees)


def split_fraction(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from sha256 of ``key`` (prefixed by ``salt`` when given)."""
    text = f"{salt}:{key}" if salt else key
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), salt: str = "") -> str:
    """``train`` / ``validation`` / ``test`` for a split key, by sha256 against cumulative fractions."""
    if len(fractions) != len(SPLITS):
        raise ValueError(f"fractions needs {len(SPLITS)} numbers (train, validation, test), got {list(fractions)}")
    u = split_fraction(key, salt)
    cumulative = 0.0
    for name, fraction in zip(SPLITS, fractions):
        cumulative += fraction
        if u < cumulative:
            return name
    # u is just below 1 and the fractions sum to slightly less than 1: the last non-empty split.
    return next(name for name, fraction in reversed(list(zip(SPLITS, fractions))) if fraction > 0)


def cell_of(lat: float, lon: float, cell_size_deg: float) -> tuple[int, int]:
    """The (row, column) index of the square grid cell holding a point."""
    return math.floor(lat / cell_size_deg), math.floor(lon / cell_size_deg)


def split_key_for(poi: Poi, cfg: SplitsConfig) -> str:
    """The key hashed into a split: the POI id, or ``cell:{row}:{col}`` of its grid cell."""
    if cfg.by == "poi":
        return poi.poi_id
    row, col = cell_of(poi.lat, poi.lon, cfg.cell_size_deg)
    return f"cell:{row}:{col}"


def split_for(poi: Poi, cfg: SplitsConfig) -> str:
    """The split a POI (and every tile cut around it) belongs to."""
    return assign_split(split_key_for(poi, cfg), cfg.fractions, cfg.salt)


def _intersects(a: BBox, b: BBox) -> bool:
    """True when two boxes share a positive area (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@dataclass
class OverlapReport:
    """Counts pairs of tile footprints in different splits that intersect, as tiles stream in.

    Footprints are bucketed on a ``bucket_deg`` grid, so each new tile is compared only with
    tiles in the buckets it touches (not with the whole dataset). Tiles of the same split may
    overlap freely (tiles of one POI always do); only cross-split pairs leak.
    """

    bucket_deg: float = 0.1
    max_examples: int = 10
    tiles: int = 0
    overlapping_pairs: int = 0
    pairs_by_splits: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)
    _footprints: list[tuple[str, BBox, str]] = field(default_factory=list, repr=False)
    _buckets: dict[tuple[int, int], list[int]] = field(default_factory=dict, repr=False)

    def _bucket_range(self, bbox: BBox) -> Iterable[tuple[int, int]]:
        west, south, east, north = bbox
        row0, col0 = cell_of(south, west, self.bucket_deg)
        row1, col1 = cell_of(north, east, self.bucket_deg)
        for row in range(row0, row1 + 1):
            for col in range(col0, col1 + 1):
                yield row, col

    def add(self, key: str, bbox: Sequence[float], split: str) -> int:
        """Record one tile footprint; returns how many cross-split overlaps it adds."""
        box: BBox = tuple(float(v) for v in bbox)  # type: ignore[assignment]
        if len(box) != 4 or box[0] > box[2] or box[1] > box[3]:
            raise ValueError(f"footprint of {key!r} must be [west, south, east, north], got {list(bbox)}")
        buckets = list(self._bucket_range(box))
        candidates = sorted({i for b in buckets for i in self._buckets.get(b, ())})
        added = 0
        for index in candidates:
            other_key, other_box, other_split = self._footprints[index]
            if other_split != split and _intersects(box, other_box):
                added += 1
                self.pairs_by_splits["/".join(sorted((split, other_split)))] += 1
                if len(self.examples) < self.max_examples:
                    self.examples.append((other_key, key))
        index = len(self._footprints)
        self._footprints.append((key, box, split))
        for b in buckets:
            self._buckets.setdefault(b, []).append(index)
        self.tiles += 1
        self.overlapping_pairs += added
        return added

    def to_json(self) -> dict[str, Any]:
        """Counts for summary.json and the dataset card."""
        return {
            "tiles": self.tiles,
            "overlapping_pairs": self.overlapping_pairs,
            "pairs_by_splits": dict(sorted(self.pairs_by_splits.items())),
            "examples": [list(pair) for pair in self.examples],
        }


def overlap_report(footprints: Iterable[tuple[str, Sequence[float], str]], bucket_deg: float = 0.1) -> OverlapReport:
    """An `OverlapReport` over ``(key, bbox_wgs84, split)`` triples."""
    report = OverlapReport(bucket_deg=bucket_deg)
    for key, bbox, split in footprints:
        report.add(key, bbox, split)
    return report
