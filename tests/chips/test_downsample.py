"""Downsampling: exact area means, majority labels that never invent a class, mask fractions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from rsbuild.chips.downsample import downsample_labels, downsample_mask, downsample_rgb, shared_output_size
from rsbuild.grid import tile_windows


def reference_weights(n: int, size: int) -> np.ndarray:
    """(size, n) fraction of each output pixel's footprint covered by each source pixel, by loops."""
    weights = np.zeros((size, n))
    for j in range(size):
        lo, hi = j * n / size, (j + 1) * n / size
        for i in range(n):
            weights[j, i] = max(0.0, min(hi, i + 1) - max(lo, i))
    return weights / (n / size)


def smooth_class_map(shape: tuple[int, int], classes: int, seed: int) -> np.ndarray:
    """Blobby class map like real land cover: smoothed noise cut into equal-ish quantiles."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 12)
    cuts = np.quantile(noise, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(noise, cuts).astype(np.uint8)


def test_rgb_integer_factor_is_the_rounded_block_mean():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    expected = np.floor(rgb.reshape(16, 4, 16, 3, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    assert np.array_equal(downsample_rgb(rgb, 16), expected)
    two = np.array([[[10], [11]], [[10], [10]]], dtype=np.uint8)  # mean 10.25 -> 10
    assert downsample_rgb(two, 1)[0, 0, 0] == 10
    half = np.array([[[10], [11]], [[11], [10]]], dtype=np.uint8)  # mean 10.5 -> 11 (half up)
    assert downsample_rgb(half, 1)[0, 0, 0] == 11


@pytest.mark.parametrize(("height", "width", "size"), [(12, 12, 5), (30, 17, 7), (9, 9, 4)])
def test_rgb_non_integer_factor_matches_exact_area_weights(height, width, size):
    rgb = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    reference = np.einsum("yi,ijc,xj->yxc", reference_weights(height, size), rgb.astype(float),
                          reference_weights(width, size))
    out = downsample_rgb(rgb, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert np.abs(out - reference).max() <= 0.5 + 1e-9


def test_rgb_float_input_on_0_255_scale_gives_same_result():
    rgb = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.array_equal(downsample_rgb(rgb.astype(np.float32), 17), downsample_rgb(rgb, 17))


def test_rgb_512_to_224_keeps_flat_colour_and_mean():
    flat = np.full((512, 512, 3), (12, 200, 77), dtype=np.uint8)
    assert (downsample_rgb(flat, 224) == (12, 200, 77)).all()
    rgb = np.random.default_rng(2).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    assert abs(downsample_rgb(rgb, 224).mean() - rgb.mean()) < 0.5


def test_majority_picks_the_true_majority_with_exact_area_weights():
    # 3 -> 2: output pixel (0, 0) covers source (0, 0) fully, (0, 1) and (1, 0) by half, (1, 1) by a quarter
    labels = np.array([[5, 2, 9], [2, 2, 9], [9, 9, 9]], dtype=np.uint8)
    assert downsample_labels(labels, 2)[0, 0] == 2  # class 2: 0.5 + 0.5 + 0.25 = 1.25 > 1
    labels = np.array([[5, 2, 9], [2, 5, 9], [9, 9, 9]], dtype=np.uint8)
    assert downsample_labels(labels, 2)[0, 0] == 5  # class 5: 1 + 0.25 beats class 2: 0.5 + 0.5
    # plain pixel counting would call the second case a 2:2 tie


def test_majority_ties_go_to_the_lowest_class_and_nodata_loses_ties():
    labels = np.array(
        [[3, 5, 255, 4],
         [5, 3, 4, 255],
         [255, 255, 2, 2],
         [255, 1, 2, 1]], dtype=np.uint8)
    out = downsample_labels(labels, 2)
    assert out[0, 0] == 3  # 2 x class 3 vs 2 x class 5
    assert out[0, 1] == 4  # 2 x class 4 vs 2 x nodata
    assert out[1, 0] == 255  # nodata 3 of 4: nodata is a real candidate
    assert out[1, 1] == 2


def majority_by_loops(labels: np.ndarray, size: int, nodata: int = 255) -> np.ndarray:
    """Majority with integer area weights (units of 1 / size source pixel), pixel by pixel: the
    highest area wins, ties to the lowest class index, nodata loses every tie."""
    height, width = labels.shape

    def overlaps(n: int, j: int) -> list[tuple[int, int]]:
        return [(i, min((i + 1) * size, (j + 1) * n) - max(i * size, j * n)) for i in range(n)
                if min((i + 1) * size, (j + 1) * n) > max(i * size, j * n)]

    out = np.zeros((size, size), dtype=np.uint8)
    for j in range(size):
        for k in range(size):
            area: dict[int, int] = {}
            for r, wr in overlaps(height, j):
                for c, wc in overlaps(width, k):
                    area[int(labels[r, c])] = area.get(int(labels[r, c]), 0) + wr * wc
            out[j, k] = min(area, key=lambda value: (-area[value], value == nodata, value))
    return out


@pytest.mark.parametrize(("shape", "size", "seed"), [((45, 45), 19, 0), ((64, 48), 28, 1), ((60, 60), 26, 2), ((32, 32), 16, 3)])
def test_majority_equals_the_pixel_by_pixel_vote(shape, size, seed):
    """Blobby maps (mostly one class per footprint) and salt noise (every footprint mixed), with nodata."""
    rng = np.random.default_rng(seed)
    blobby = smooth_class_map(shape, 5, seed)
    blobby[rng.random(shape) < 0.02] = 255
    noisy = rng.choice(np.array([0, 3, 7, 255], dtype=np.uint8), size=shape)
    for labels in (blobby, noisy):
        np.testing.assert_array_equal(downsample_labels(labels, size), majority_by_loops(labels, size))


def test_majority_never_invents_a_class():
    labels = np.random.default_rng(3).choice(np.array([0, 3, 7, 255], dtype=np.uint8), size=(45, 45))
    size = 19
    out = downsample_labels(labels, size)
    for j in range(size):
        rows = slice(math.floor(j * 45 / size), math.ceil((j + 1) * 45 / size))
        for i in range(size):
            cols = slice(math.floor(i * 45 / size), math.ceil((i + 1) * 45 / size))
            assert out[j, i] in labels[rows, cols]


def test_majority_512_to_224_preserves_class_shares():
    labels = smooth_class_map((512, 512), 6, seed=4)
    labels[:40, :40] = 255
    out = downsample_labels(labels, 224)
    assert out.shape == (224, 224) and out.dtype == np.uint8
    for value in np.unique(labels):
        before = np.mean(labels == value)
        after = np.mean(out == value)
        assert abs(after - before) < 0.01, (value, before, after)


def test_majority_integer_factor_equals_block_vote():
    labels = smooth_class_map((64, 64), 4, seed=5)
    blocks = labels.reshape(16, 4, 16, 4).transpose(0, 2, 1, 3).reshape(16, 16, 16)
    counts = np.stack([(blocks == c).sum(axis=-1) for c in range(4)])
    assert np.array_equal(downsample_labels(labels, 16), np.argmax(counts, axis=0).astype(np.uint8))


def test_nearest_takes_the_source_pixel_at_each_output_centre():
    labels = (np.arange(512)[:, None] * 3 + np.arange(512)[None, :] * 7) % 250
    labels = labels.astype(np.uint8)
    out = downsample_labels(labels, 224, method="nearest")
    centres = np.floor((np.arange(224) + 0.5) * 512 / 224).astype(int)
    assert np.array_equal(out, labels[np.ix_(centres, centres)])


def test_single_class_tile_stays_that_class():
    assert (downsample_labels(np.full((512, 512), 6, dtype=np.uint8), 224) == 6).all()


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="majority"):
        downsample_labels(np.zeros((4, 4), dtype=np.uint8), 2, method="mode")


def test_mask_uses_footprint_fraction_and_threshold():
    mask = np.array(
        [[1, 0, 1, 1],
         [0, 0, 0, 0],
         [1, 1, 1, 1],
         [1, 0, 1, 1]], dtype=bool)  # block fractions: 0.25, 0.5, 0.75, 1.0
    assert downsample_mask(mask, 2).tolist() == [[False, True], [True, True]]
    assert downsample_mask(mask, 2, threshold=0.75).tolist() == [[False, False], [True, True]]


def test_mask_512_to_224_keeps_its_share():
    mask = smooth_class_map((512, 512), 3, seed=6) == 1
    assert abs(downsample_mask(mask, 224).mean() - mask.mean()) < 0.01


@pytest.mark.parametrize(("aoi", "tile", "stride", "size"), [(1024, 512, 256, 224), (256, 128, 64, 128), (96, 48, 16, 21)])
def test_tiles_cut_from_the_downsampled_aoi_equal_tiles_downsampled_alone(aoi, tile, stride, size):
    windows = tile_windows(aoi, tile, stride)
    small_size = shared_output_size(aoi, tile, size, [w.row_off for w in windows] + [w.col_off for w in windows])
    assert small_size == aoi * size // tile
    rng = np.random.default_rng(aoi + size)
    rgb = rng.integers(0, 256, size=(aoi, aoi, 3), dtype=np.uint8)
    labels = smooth_class_map((aoi, aoi), 5, seed=3)
    labels[rng.random((aoi, aoi)) < 0.05] = 255  # nodata competes like a class
    mask = rng.random((aoi, aoi)) < 0.4
    small = downsample_rgb(rgb, small_size), downsample_labels(labels, small_size), downsample_mask(mask, small_size)
    for w in windows:
        rows, cols = slice(w.row_off, w.row_off + tile), slice(w.col_off, w.col_off + tile)
        r0, c0 = w.row_off * size // tile, w.col_off * size // tile
        cut = slice(r0, r0 + size), slice(c0, c0 + size)
        assert np.array_equal(small[0][cut], downsample_rgb(rgb[rows, cols], size))
        assert np.array_equal(small[1][cut], downsample_labels(labels[rows, cols], size))
        assert np.array_equal(small[2][cut], downsample_mask(mask[rows, cols], size))


def test_no_shared_grid_when_tiles_start_between_weight_periods():
    # 512 -> 224 repeats every 16 source pixels: a tile starting at 8 is not a slice of the AOI
    assert shared_output_size(1024, 512, 224, [0, 8]) is None
    assert shared_output_size(1000, 512, 224, [0]) is None
