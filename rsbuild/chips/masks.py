"""Per-component masks as COCO run-length encodings, computed where the label pixels are.

Each component of ``stats["components"]`` is found again among its class's 8-connected
components (`rsbuild.chips.stats.label_components`, the labelling the statistics used) by its
pixel count and box, and encoded as COCO RLE: runs over the pixels in column-major order
(down the first column, then the next), starting with a run of background, with the counts
compressed into pycocotools' ASCII form (``rleToString``). ``pycocotools.mask.decode`` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rsbuild.chips.stats import label_components
from rsbuild.records import ComponentMask
from rsbuild.schemes import Scheme


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a boolean (H, W) mask: alternating run lengths, background first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def compress_counts(counts: Sequence[int]) -> str:
    """pycocotools' ``rleToString``: each count (minus the one two back, after the third) as
    5-bit groups, low first, 0x20 marking "more", offset by 48 into printable ASCII."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if c & 0x10 else (x != 0)
            out.append(chr(c + (0x20 if more else 0) + 48))
    return "".join(out)


def decompress_counts(text: str) -> list[int]:
    """pycocotools' ``rleFrString``: the inverse of `compress_counts`."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x, shift, more = 0, 0, True
        while more:
            c = ord(text[pos]) - 48
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                x |= -1 << shift
        counts.append(x + (counts[-2] if len(counts) > 2 else 0))
    return counts


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The boolean (H, W) mask of a COCO RLE (compressed string or list counts)."""
    height, width = rle["size"]
    counts = rle["counts"]
    runs = decompress_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    if flat.size != height * width:
        raise ValueError(f"RLE counts sum to {flat.size}, expected {height * width} pixels")
    return flat.reshape((width, height)).T


def component_masks(mask_index: np.ndarray, stats: Mapping[str, Any], scheme: Scheme) -> list[ComponentMask]:
    """A COCO RLE per listed component of ``stats`` (same order), from the (H, W) class-index
    tile the stats were measured on (nodata and invalid pixels = 255)."""
    labels = np.asarray(mask_index)
    height, width = labels.shape
    by_class: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out: list[ComponentMask] = []
    for index, comp in enumerate(stats.get("components", [])):
        name = str(comp["class"])
        if name not in by_class:
            labelled, count = label_components(labels == scheme.index_of(name))
            by_class[name] = labelled, np.bincount(labelled.ravel(), minlength=count + 1)
        labelled, sizes = by_class[name]
        pixels = _component_pixels(labelled, sizes, comp)
        out.append({
            "component": index,
            "class": name,
            "pixels": int(comp["pixels"]),
            "bbox_px": list(comp["bbox_px"]),
            "rle": {"size": [height, width], "counts": compress_counts(rle_counts(pixels))},
        })
    return out


def _component_pixels(labelled: np.ndarray, sizes: np.ndarray, comp: Mapping[str, Any]) -> np.ndarray:
    """The pixels of the labelled component with the stats' pixel count and box (searched in the box)."""
    x1, y1, x2, y2 = comp["bbox_px"]
    crop = labelled[y1:y2, x1:x2]
    for label in np.unique(crop[crop > 0]):
        if sizes[label] != int(comp["pixels"]):
            continue
        inside = crop == label
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1) == (0, 0, y2 - y1, x2 - x1) and inside.sum() == sizes[label]:
            pixels = np.zeros(labelled.shape, dtype=bool)
            pixels[y1:y2, x1:x2] = inside
            return pixels
    raise ValueError(f"no {comp['class']} component of {comp['pixels']} pixels in box {comp['bbox_px']}")
