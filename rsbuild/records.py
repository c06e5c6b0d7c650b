"""Typed records that flow between stages, and the typed JSON they carry.

Every stage is a function over an iterator of these records (see ARCHITECTURE.md).
They are plain dataclasses so they pickle across processes and serialise to JSON. The JSON
documents inside a sample (``stats``, ``annotations``, caption failures) are TypedDicts, so
every module reads the same keys; ARCHITECTURE.md has the statistics schema with units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
SPLITS = ("train", "validation", "test")


class ClassStats(TypedDict):
    """One land-cover class present in a tile (``stats["classes"]``, share descending)."""

    name: str
    code: int
    index: int
    pixels: int
    share: float  # of the valid pixels
    centroid: list[float]  # normalised [x, y]
    position: str  # 3x3 cell of the centroid: "top-left" ... "bottom-right"
    bbox: list[float]  # normalised [x1, y1, x2, y2] of all its pixels
    components: int
    small_patches: int
    small_patch_pixels: int
    indices: NotRequired[dict[str, Any]]  # output.bands = "all": mean NDVI / NDWI / NBR of its clear pixels, "pixels"


ComponentStats = TypedDict(
    "ComponentStats",
    {
        "class": str,
        "pixels": int,
        "share": float,  # of the valid pixels
        "bbox_px": list[int],  # [x1, y1, x2, y2], x2/y2 exclusive
        "bbox": list[float],  # normalised [x1, y1, x2, y2]
        "centroid": list[float],
        "position": str,
        "elongation": float,  # sqrt(major / minor eigenvalue of the pixel covariance)
        "elongated": bool,
        "orientation": str,  # north-south | east-west | northeast-southwest | northwest-southeast
        "orientation_deg": float,  # major axis, degrees clockwise from north, in [0, 180)
        "touches_frame": bool,
    },
)
ComponentStats.__doc__ = "One connected component above the minimum size (``stats[\"components\"]``, area descending)."

ComponentMask = TypedDict(
    "ComponentMask",
    {
        "component": int,  # index into stats["components"]
        "class": str,
        "pixels": int,
        "bbox_px": list[int],
        "rle": dict[str, Any],  # COCO RLE {"size": [height, width], "counts": compressed string}
    },
)
ComponentMask.__doc__ = "COCO RLE of one listed component (``KEY.json`` → ``masks``, task ``masks``)."


class TileStats(TypedDict, total=False):
    """Label statistics of one tile (``KEY.json`` → ``stats``; schema in ARCHITECTURE.md)."""

    version: int
    scheme: str
    size: list[int]  # [height, width] of the output image
    pixels: int
    valid_pixels: int
    valid_share: float
    cloud_share: float
    unknown_code_pixels: int
    dominant_class: str | None
    num_classes: int
    classes: list[ClassStats]
    components: list[ComponentStats]
    indices: dict[str, Any]  # output.bands = "all": mean NDVI / NDWI / NBR of the clear pixels, "pixels"


Annotation = TypedDict(
    "Annotation",
    {
        "task": str,  # "area", "linear", "class", "revise", ...
        "text": str,
        "annotator": str,  # engine:model
        "prompt": str,  # the template file name
        "prompt_sha256": str,
        "sampling": dict[str, Any],
        "seed": int,
        "verified": "bool | None",
        "check_reasons": list[str],
        "class": NotRequired[str],  # task "class": the class described
        "source_task": NotRequired[str],  # task "revise": the task of the caption revised
        "attempts": NotRequired[int],
        "candidate": NotRequired[int],  # best-of-n: index of the kept text among its request's candidates
        "rejected": NotRequired[dict[str, int]],  # texts of this caption slot rejected before it, by reason
        "finish_reason": NotRequired[str],
        "cached_prompt_tokens": NotRequired[int],
    },
)
Annotation.__doc__ = "One caption of a tile (``KEY.json`` → ``annotations``)."

CaptionFailure = TypedDict(
    "CaptionFailure",
    {
        "stage": str,  # "caption"
        "key": str,
        "task": str,
        "annotator": "str | None",
        "seed": int,
        "attempts": int,
        "reason": str,  # "engine_error", "check_failed", "truncated", ...
        "detail": NotRequired[str],
        "text": "str | None",
        "check_reasons": list[str],
        "class": NotRequired[str],
        "rejected": NotRequired[dict[str, int]],  # every text of this caption slot rejected, by reason (incl. ``text``)
        "transient": NotRequired[bool],  # an engine error after retries of a transient fault: a rerun may succeed
    },
    total=False,
)
CaptionFailure.__doc__ = "A caption that was asked for and not kept (``KEY.json`` → ``caption_failures``)."


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
    spectral: dict[str, BandAsset] = field(default_factory=dict)  # B01 ... B12 -> asset (output.bands = "all")


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
    stats: TileStats
    annotations: list[Annotation] = field(default_factory=list)
    failures: list[CaptionFailure] = field(default_factory=list)  # per-caption failures kept in KEY.json
    masks: list[ComponentMask] = field(default_factory=list)  # per-component RLE (task "masks")
    bands_tif: bytes | None = None  # KEY.bands.tif: every L2A band as float32 reflectance (output.bands = "all")
    # members as read from a local shard, by extension: header + data + padding blocks, written again
    # verbatim while the member is unchanged (recaption copies them, never re-serialised)
    source_blocks: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def json_payload(self) -> dict[str, Any]:
        """The ``KEY.json`` document."""
        doc: dict[str, Any] = {"metadata": self.metadata, "stats": self.stats, "annotations": self.annotations}
        if self.failures:
            doc["caption_failures"] = self.failures
        if self.masks:
            doc["masks"] = self.masks
        return doc


@dataclass(frozen=True)
class Failure:
    """A bad sample: recorded with its reason, counted, and the run goes on."""

    stage: str  # "poi", "search", "read", "tile", "caption"
    reason: str  # short machine code: "no_scene", "missing_asset", "all_nodata", "cloudy", ...
    poi_id: str | None = None
    key: str | None = None
    detail: str = ""
    transient: bool = False  # a retry may succeed (connection error, timeout, 429, 5xx): `--retry-failed` redoes it

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "reason": self.reason, "poi_id": self.poi_id, "key": self.key, "detail": self.detail,
                "transient": self.transient}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Failure:
        """A Failure read back from ``to_json`` (older records without ``transient`` read as False)."""
        return cls(stage=str(doc.get("stage", "")), reason=str(doc.get("reason", "")), poi_id=doc.get("poi_id"),
                   key=doc.get("key"), detail=str(doc.get("detail", "")), transient=bool(doc.get("transient", False)))


def sample_key(poi_id: str, tile: int) -> str:
    """``{poi_id}_t{tile:04d}``; poi ids are sanitised to ``[A-Za-z0-9_-]`` when read."""
    key = f"{poi_id}_t{tile:04d}"
    if not KEY_PATTERN.match(key):
        raise ValueError(f"sample key {key!r} has characters outside [A-Za-z0-9_-]")
    return key
