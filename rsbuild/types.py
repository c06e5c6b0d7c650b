"""Typed records that flow between stages.

Every stage is a function over an iterator of these records (see ARCHITECTURE.md).
They are plain dataclasses so they pickle across processes and serialise to JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Poi:
    """A point of interest read from the user's table."""

    poi_id: str
    lat: float
    lon: float
    row: int = 0  # 1-based row number in the source table (for messages)


@dataclass(frozen=True)
class BandAsset:
    """One raster asset of a scene, resolved to an href with its radiometric rules."""

    key: str  # asset key in the STAC item (e.g. "red", "B04", "B04_10m")
    href: str = field(repr=False)  # may carry a signing token: never in reprs or logs
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


@dataclass(frozen=True)
class Scene:
    """A Sentinel-2 scene chosen for a POI, with canonical band names.

    ``assets`` maps canonical names ``red``, ``green``, ``blue``, ``visual``, ``scl``
    to resolved assets; missing ones are simply absent.
    """

    id: str
    collection: str
    datetime: str  # ISO 8601
    cloud_cover: float | None
    crs: str | None  # "EPSG:32633" (from proj:code), None when the item does not say
    bbox: tuple[float, float, float, float]  # WGS84 lon/lat
    assets: dict[str, BandAsset] = field(default_factory=dict)
    transform: tuple[float, ...] | None = None  # proj:transform of the 10 m bands if known
    shape: tuple[int, int] | None = None  # proj:shape (rows, cols) if known
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: CRS, affine transform (rasterio order a, b, c, d, e, f), size."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        return {"crs": self.crs, "transform": list(self.transform), "shape": [self.height, self.width]}


@dataclass
class Sample:
    """One tile as it lives in a shard: encoded images plus JSON-able metadata.

    The fetch half produces Samples with empty ``annotations``; the caption half adds them.
    ``image_png`` and ``mask_png`` are carried as bytes so later stages never re-encode pixels.
    """

    key: str
    split: str
    image_png: bytes
    mask_png: bytes | None
    metadata: dict[str, Any]
    stats: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # per-caption failures kept in KEY.json

    def json_payload(self) -> dict[str, Any]:
        """The ``KEY.json`` document."""
        doc: dict[str, Any] = {"metadata": self.metadata, "stats": self.stats, "annotations": self.annotations}
        if self.failures:
            doc["caption_failures"] = self.failures
        return doc


@dataclass(frozen=True)
class Failure:
    """A bad sample: recorded with its reason, counted, and the run goes on."""

    stage: str  # "poi", "search", "read", "tile", "caption"
    reason: str  # short machine code: "no_scene", "missing_asset", "all_nodata", "cloudy", ...
    poi_id: str | None = None
    key: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "reason": self.reason, "poi_id": self.poi_id, "key": self.key, "detail": self.detail}


def sample_key(poi_id: str, tile: int) -> str:
    """``{poi_id}_t{tile:04d}``; poi ids are sanitised to ``[A-Za-z0-9_-]`` when read."""
    key = f"{poi_id}_t{tile:04d}"
    if not KEY_PATTERN.match(key):
        raise ValueError(f"sample key {key!r} has characters outside [A-Za-z0-9_-]")
    return key
