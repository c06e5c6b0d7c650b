"""RGB stretch: the integer fast path (histogram percentiles, lookup table) gives the float path's bytes."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.chips.imagery import percentiles_like_numpy, rgb_from_bands, rgb_from_visual, stretch_to_uint8, to_reflectance
from rsbuild.records import BandAsset


@pytest.mark.parametrize("count", [1, 2, 3, 7, 50, 1001, 65537])
def test_percentiles_from_order_statistics_equal_numpy(count):
    rng = np.random.default_rng(count)
    values = (rng.integers(0, 4000, size=count) * np.float32(1e-4) - np.float32(0.1)).astype(np.float32)
    ordered = np.sort(values)
    for percentiles in [(2.0, 98.0), (0.0, 100.0), (13.7, 50.0), (49.99, 50.01)]:
        expected = [float(v) for v in np.percentile(values, percentiles)]
        assert percentiles_like_numpy(lambda ranks: ordered[ranks], count, percentiles) == expected


@pytest.mark.parametrize("seed", range(12))
def test_integer_bands_stretch_to_the_same_bytes_and_limits_as_floats(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 90)), int(rng.integers(1, 90)))
    bands = [rng.integers(0, int(rng.choice([4, 300, 12000, 65535])), size=shape).astype(np.uint16) for _ in range(3)]
    assets = tuple(BandAsset(key, "file:///x.tif", scale=float(rng.choice([1e-4, 1.0])), offset=float(rng.choice([0.0, -0.1])),
                             nodata=[None, 0][seed % 2]) for key in ("red", "green", "blue"))
    percentiles = (2.0, 98.0) if seed % 3 else (float(rng.uniform(0, 40)), float(rng.uniform(60, 100)))
    rgb, valid, limits = rgb_from_bands(*bands, assets, percentiles)
    values, valids = zip(*(to_reflectance(dn, asset) for dn, asset in zip(bands, assets)))
    ref_rgb, ref_valid, ref_limits = stretch_to_uint8(values, np.logical_and.reduce(valids), percentiles)
    assert np.array_equal(valid, ref_valid)
    assert np.array_equal(rgb, ref_rgb)
    assert limits == ref_limits


def test_visual_stretch_matches_the_float_path_and_keeps_nodata_black():
    rng = np.random.default_rng(5)
    visual = rng.integers(0, 256, size=(3, 40, 50)).astype(np.uint8)
    visual[:, :5, :] = 0  # nodata stripe
    rgb, valid, limits = rgb_from_visual(visual, BandAsset("visual", "file:///v.tif", nodata=0), (2.0, 98.0))
    ref = stretch_to_uint8([visual[i].astype(np.float32) for i in range(3)], valid, (2.0, 98.0))
    assert np.array_equal(rgb, ref[0]) and limits == ref[2]
    assert not valid[:5].any() and (rgb[:5] == 0).all()
