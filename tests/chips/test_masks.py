"""Per-component COCO RLE: pycocotools decodes each mask back to exactly its component's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco
from scipy import ndimage

from rsbuild.chips.masks import component_masks, compress_counts, decode_rle, decompress_counts, rle_counts
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import NODATA_INDEX, get_scheme

SCHEME = get_scheme("esa_worldcover")


def seeded_tile(seed: int, size: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.full((size, size), SCHEME.index_of("grassland"), np.uint8)
    for _ in range(10):
        y, x = rng.integers(0, size - 4, 2)
        h, w = rng.integers(3, 30, 2)
        labels[y:y + h, x:x + w] = SCHEME.index_of(str(rng.choice(["water", "tree cover", "cropland"])))
    labels[:3, :] = NODATA_INDEX  # a nodata band along the top
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_masks_decode_to_the_component_pixels(seed):
    labels = seeded_tile(seed)
    stats = compute_stats(labels, SCHEME, min_component_pixels=20)
    masks = component_masks(labels, stats, SCHEME)
    assert [m["component"] for m in masks] == list(range(len(stats["components"])))
    for record, comp in zip(masks, stats["components"], strict=True):
        decoded = coco.decode({"size": record["rle"]["size"], "counts": record["rle"]["counts"].encode("ascii")})
        assert decoded.shape == labels.shape
        # the truth: the 8-connected group of that class containing the component's pixels
        groups, _ = ndimage.label(labels == SCHEME.index_of(comp["class"]), structure=np.ones((3, 3)))
        ids = np.unique(groups[decoded.astype(bool)])
        assert ids.size == 1 and ids[0] > 0
        assert np.array_equal(decoded.astype(bool), groups == ids[0])
        assert int(decoded.sum()) == comp["pixels"]
        x1, y1, x2, y2 = comp["bbox_px"]
        assert coco.toBbox({"size": record["rle"]["size"], "counts": record["rle"]["counts"].encode()}).tolist() == [
            x1, y1, x2 - x1, y2 - y1]
        assert np.array_equal(decode_rle(record["rle"]), decoded.astype(bool))


def test_counts_match_pycocotools_both_ways():
    rng = np.random.default_rng(3)
    for shape in ((1, 1), (5, 7), (64, 48), (200, 3)):
        pixels = rng.random(shape) < 0.3
        pixels[0, 0] = bool(rng.integers(0, 2))  # both starts: background run first or an empty one
        ours = compress_counts(rle_counts(pixels))
        theirs = coco.encode(np.asfortranarray(pixels.astype(np.uint8)))["counts"].decode("ascii")
        assert ours == theirs
        assert decompress_counts(ours) == rle_counts(pixels)
        assert np.array_equal(decode_rle({"size": list(shape), "counts": rle_counts(pixels)}), pixels)
