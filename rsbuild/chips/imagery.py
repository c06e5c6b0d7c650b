"""RGB from Sentinel-2 bands or the `visual` asset, percentile stretch, nodata and cloud masks.

All functions work on whole-AOI arrays so neighbouring tiles share one stretch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rsbuild.records import BandAsset


def to_reflectance(dn: np.ndarray, asset: BandAsset) -> tuple[np.ndarray, np.ndarray]:
    """Apply the asset's scale/offset; return (float32 values, valid mask)."""
    valid = np.ones(dn.shape, dtype=bool) if asset.nodata is None else dn != asset.nodata
    values = dn.astype(np.float32) * np.float32(asset.scale) + np.float32(asset.offset)
    return values, valid


Stretched = tuple[np.ndarray, np.ndarray, list[list[float]]]


def stretch_to_uint8(bands: Sequence[np.ndarray], valid: np.ndarray, percentiles: tuple[float, float]) -> Stretched:
    """Stretch each band linearly between its low/high percentile over the valid pixels.

    Returns ((H, W, 3) uint8 with invalid pixels 0, valid mask, [[low, high] per band]).
    Percentiles come from the whole AOI so neighbouring tiles agree.
    """
    out = np.zeros(valid.shape + (len(bands),), dtype=np.uint8)
    limits: list[list[float]] = []
    if not valid.any():
        return out, valid, [[0.0, 0.0] for _ in bands]
    for i, band in enumerate(bands):
        lo, hi = (float(v) for v in np.percentile(band[valid], percentiles))
        limits.append([round(lo, 6), round(hi, 6)])
        span = hi - lo if hi > lo else 1e-6
        scaled = (band - np.float32(lo)) * np.float32(255.0 / span)
        np.clip(scaled, 0, 255, out=scaled)
        out[..., i] = np.where(valid, np.rint(scaled), 0).astype(np.uint8)
    return out, valid, limits


def rgb_from_bands(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    assets: tuple[BandAsset, BandAsset, BandAsset],
    percentiles: tuple[float, float],
) -> Stretched:
    """(uint8 RGB, valid mask, reflectance limits) from B04/B03/B02 digital numbers."""
    values, valids = zip(*(to_reflectance(dn, asset) for dn, asset in zip((red, green, blue), assets)))
    return stretch_to_uint8(values, np.logical_and.reduce(valids), percentiles)


def rgb_from_visual(visual: np.ndarray, asset: BandAsset, percentiles: tuple[float, float]) -> Stretched:
    """(uint8 RGB, valid mask, limits) from a 3-band true-colour image (C, H, W)."""
    nodata = 0 if asset.nodata is None else asset.nodata
    valid = ~np.all(visual == nodata, axis=0)
    return stretch_to_uint8([visual[i].astype(np.float32) for i in range(3)], valid, percentiles)


def cloud_mask(scl: np.ndarray, cloud_classes: Sequence[int]) -> np.ndarray:
    """True where the Scene Classification Layer flags cloud, shadow or cirrus."""
    return np.isin(scl, np.asarray(list(cloud_classes), dtype=scl.dtype))
