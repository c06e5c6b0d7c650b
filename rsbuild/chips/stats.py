"""Label statistics of a tile: class shares, positions, boxes and connected components.

The output is the versioned, JSON-serialisable ``stats`` document described in
ARCHITECTURE.md ("Statistics", version 1). Image coordinates: x to the right (east), y down
(south); north is the top. Floats are rounded to 4 decimals so documents stay small and stable.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from rsbuild.records import ClassStats, ComponentStats, TileStats
from rsbuild.schemes import NODATA_INDEX, Scheme

STATS_VERSION = 1
DECIMALS = 4
POSITIONS = (
    ("top-left", "top", "top-right"),
    ("left", "center", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)
ORIENTATIONS = ("north-south", "northeast-southwest", "east-west", "northwest-southeast")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_PIXEL_VARIANCE = 1.0 / 12.0  # variance of a coordinate spread uniformly over one pixel


def _r(value: float) -> float:
    return round(float(value), DECIMALS)


def _normalised_box(bbox_px: tuple[int, int, int, int], height: int, width: int) -> list[float]:
    x1, y1, x2, y2 = bbox_px
    return [_r(x1 / width), _r(y1 / height), _r(x2 / width), _r(y2 / height)]


def position_name(cx: float, cy: float) -> str:
    """3x3 cell name of a normalised point (x right, y down): 'top-left' ... 'bottom-right'."""
    col = min(max(int(cx * 3), 0), 2)
    row = min(max(int(cy * 3), 0), 2)
    return POSITIONS[row][col]


def orientation_name(degrees: float) -> str:
    """Direction name of an axis at ``degrees`` clockwise from north (any real value)."""
    sector = int(((degrees % 180.0) + 22.5) // 45.0) % 4
    return ORIENTATIONS[sector]


@dataclass(frozen=True)
class _Shape:
    """Geometry of a set of pixels on an (height, width) image."""

    pixels: int
    bbox_px: tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
    centroid: tuple[float, float]  # normalised x, y of pixel centres
    elongation: float
    orientation_deg: float  # major axis, clockwise from north, [0, 180)


def _moments_shape(
    count: int, sum_x: float, sum_y: float, sum_xx: float, sum_yy: float, sum_xy: float,
    bbox_px: tuple[int, int, int, int], height: int, width: int,
) -> _Shape:
    """Shape from pixel count, coordinate sums (pixel centres) and the bounding box."""
    mean_x, mean_y = sum_x / count, sum_y / count
    var_x = max(sum_xx / count - mean_x**2, 0.0) + _PIXEL_VARIANCE
    var_y = max(sum_yy / count - mean_y**2, 0.0) + _PIXEL_VARIANCE
    cov_xy = sum_xy / count - mean_x * mean_y
    half_spread = math.hypot((var_x - var_y) / 2.0, cov_xy)
    major = (var_x + var_y) / 2.0 + half_spread
    minor = max((var_x + var_y) / 2.0 - half_spread, _PIXEL_VARIANCE)  # >= 1/12 up to rounding
    # major axis at phi from +x (image coords, y down); clockwise from north that is phi + 90 deg
    phi = 0.5 * math.degrees(math.atan2(2.0 * cov_xy, var_x - var_y))
    return _Shape(
        pixels=count,
        bbox_px=bbox_px,
        centroid=(mean_x / width, mean_y / height),
        elongation=math.sqrt(major / minor),
        orientation_deg=(phi + 90.0) % 180.0,
    )


def _component_record(class_name: str, shape: _Shape, valid_pixels: int, height: int, width: int,
                      elongation_threshold: float) -> ComponentStats:
    x1, y1, x2, y2 = shape.bbox_px
    degrees = _r(shape.orientation_deg) % 180.0
    return {
        "class": class_name,
        "pixels": shape.pixels,
        "share": _r(shape.pixels / valid_pixels),
        "bbox_px": [x1, y1, x2, y2],
        "bbox": _normalised_box(shape.bbox_px, height, width),
        "centroid": [_r(shape.centroid[0]), _r(shape.centroid[1])],
        "position": position_name(*shape.centroid),
        "elongation": _r(shape.elongation),
        "elongated": bool(shape.elongation >= elongation_threshold),
        "orientation": orientation_name(shape.orientation_deg),
        "orientation_deg": degrees,
        "touches_frame": bool(x1 == 0 or y1 == 0 or x2 == width or y2 == height),
    }


@dataclass(frozen=True)
class _Component:
    """One large component before its shape is worked out (only the listed ones need it)."""

    pixels: int
    sums: tuple[float, float, float, float, float]  # x, y, xx, yy, xy of pixel centres
    bbox_px: tuple[int, int, int, int]

    def shape(self, height: int, width: int) -> _Shape:
        return _moments_shape(self.pixels, *self.sums, self.bbox_px, height, width)


@dataclass(frozen=True)
class _ClassShapes:
    """A class's pixels on one tile: all of them, its large components, its small patches."""

    whole: _Shape
    large: list[_Component]
    small_patches: int
    small_patch_pixels: int


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: (label image with ids 1..count, count)."""
    labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    return labelled, int(count)


def _class_shapes(masks: list[np.ndarray], min_component_pixels: int) -> list[_ClassShapes]:
    """Shapes of each non-empty mask's pixels and of its 8-connected components.

    Each mask is labelled on its own, inside its bounding box (the components and their raster
    order are those of the whole mask); the component ids of all masks are then numbered in one
    image so pixel coordinates and moments come from one pass over the tile. Only the large
    components' boxes are read (a class's box is its mask's)."""
    height, width = masks[0].shape
    combined = np.zeros((height, width), dtype=np.int32)
    first_ids: list[int] = []
    unions: list[tuple[int, int, int, int]] = []
    total = 0
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        labelled, count = label_components(mask[top:bottom, left:right])
        labelled[labelled > 0] += total
        combined[top:bottom, left:right] += labelled  # masks are disjoint: zero where this one is set
        first_ids.append(total)
        unions.append((left, top, right, bottom))
        total += count
    ys, xs = np.nonzero(combined)
    ids = combined[ys, xs]
    cx, cy = xs + 0.5, ys + 0.5
    all_sizes = np.bincount(ids, minlength=total + 1)[1:]
    all_moments = np.stack([np.bincount(ids, weights=w, minlength=total + 1)[1:]
                            for w in (cx, cy, cx * cx, cy * cy, cx * cy)])
    objects = ndimage.find_objects(combined)
    shapes = []
    for start, stop, union in zip(first_ids, [*first_ids[1:], total], unions):
        sizes, moments = all_sizes[start:stop], all_moments[:, start:stop]
        is_large = sizes >= min_component_pixels
        large = []
        for i in np.flatnonzero(is_large).tolist():
            box = objects[start + i]
            large.append(_Component(int(sizes[i]), tuple(moments[:, i].tolist()),
                                    (box[1].start, box[0].start, box[1].stop, box[0].stop)))
        shapes.append(_ClassShapes(
            whole=_moments_shape(int(sizes.sum()), *moments.sum(axis=1).tolist(), union, height, width),  # type: ignore[call-arg]  # five sums
            large=large,
            small_patches=int(np.count_nonzero(~is_large)),
            small_patch_pixels=int(sizes[~is_large].sum()),
        ))
    return shapes


def compute_stats(
    index: np.ndarray,
    scheme: Scheme,
    *,
    valid: np.ndarray | None = None,
    cloud: np.ndarray | None = None,
    unknown_code_pixels: int = 0,
    min_component_pixels: int = 30,
    max_components: int = 20,
    elongation_threshold: float = 3.0,
) -> TileStats:
    """Statistics (version 1, see ARCHITECTURE.md) of an (H, W) class-index tile.

    ``index`` holds class indices into ``scheme.classes`` with 255 for nodata. A pixel is valid
    when its label is known and ``valid`` (image data present, default all) is True. Shares are
    fractions of valid pixels and count every valid pixel; components smaller than
    ``min_component_pixels`` are folded into their class's small patches; the
    ``max_components`` largest components are listed. ``cloud`` only feeds ``cloud_share``.
    """
    labels = np.asarray(index)
    if labels.ndim != 2:
        raise ValueError(f"label index must have shape (H, W), got {labels.shape}")
    height, width = labels.shape
    total = height * width
    known = labels != NODATA_INDEX
    if known.any() and int(labels[known].max()) >= len(scheme.classes):
        raise ValueError(f"label index holds {int(labels[known].max())}, but scheme {scheme.name!r} "
                         f"has only {len(scheme.classes)} classes")
    for name, mask in (("valid", valid), ("cloud", cloud)):
        if mask is not None and np.shape(mask) != labels.shape:
            raise ValueError(f"{name} mask has shape {np.shape(mask)}, expected {labels.shape}")
    is_valid = known if valid is None else known & np.asarray(valid, dtype=bool)
    valid_pixels = int(np.count_nonzero(is_valid))
    cloudy = 0 if cloud is None else int(np.count_nonzero(cloud))
    counts = np.bincount(labels[is_valid], minlength=len(scheme.classes))

    classes: list[ClassStats] = []
    components: list[tuple[tuple[int, int, int, int], str, _Component]] = []  # (sort key, class, component)
    present = np.flatnonzero(counts)
    masked = np.where(is_valid, labels, NODATA_INDEX)
    all_shapes = _class_shapes([masked == class_index for class_index in present], min_component_pixels) if present.size else []
    for class_index, shapes in zip(present, all_shapes):
        info = scheme.classes[class_index]
        whole = shapes.whole
        classes.append({
            "name": info.name,
            "code": info.code,
            "index": int(class_index),
            "pixels": whole.pixels,
            "share": _r(whole.pixels / valid_pixels),
            "centroid": [_r(whole.centroid[0]), _r(whole.centroid[1])],
            "position": position_name(*whole.centroid),
            "bbox": _normalised_box(whole.bbox_px, height, width),
            "components": len(shapes.large),
            "small_patches": shapes.small_patches,
            "small_patch_pixels": shapes.small_patch_pixels,
        })
        for shape in shapes.large:
            key = (-shape.pixels, int(class_index), shape.bbox_px[1], shape.bbox_px[0])
            components.append((key, info.name, shape))

    classes.sort(key=lambda record: (-record["pixels"], record["index"]))
    components.sort(key=lambda item: item[0])
    kept = [_component_record(name, component.shape(height, width), valid_pixels, height, width, elongation_threshold)
            for _, name, component in components[:max_components]]
    return {
        "version": STATS_VERSION,
        "scheme": scheme.name,
        "size": [height, width],
        "pixels": total,
        "valid_pixels": valid_pixels,
        "valid_share": _r(valid_pixels / total) if total else 0.0,
        "cloud_share": _r(cloudy / total) if total else 0.0,
        "unknown_code_pixels": int(unknown_code_pixels),
        "dominant_class": classes[0]["name"] if classes else None,
        "num_classes": len(classes),
        "classes": classes,
        "components": kept,
    }


def stats_sha256(stats: dict[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of a stats document (sorted keys, no spaces).

    The text is `rsbuild.dataset.layout.canonical_json` with ``allow_nan=False``, spelled out here
    because the chips layer sits below the dataset layer and does not import it."""
    canonical = json.dumps(stats, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
