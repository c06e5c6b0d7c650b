"""Seeded synthetic fixtures: a ground-truth land-cover map, Sentinel-2-like COGs, label COGs,
POIs and STAC metadata in the Earth Search v1 layout (in the spirit of torchgeo's
``tests/data/*/data.py``). Used by the tests and by ``rsbuild demo``.

Everything derives from ``numpy.random.default_rng(seed)``: the same seed gives byte-identical
files. All rasters render ONE truth map (ESA WorldCover codes on a 10 m EPSG:32633 grid), so
labels align with every scene. rasterio is used only to write / read fixture files and to
transform coordinates, all in the "rasterio section" near the end of this module.

Layout under ``out_dir``::

    truth.tif                         uint8 WorldCover codes, the scene grid
    pois.csv                          id,lat,lon
    fixture.json                      what ``FixtureInfo.load`` reads back
    cogs/                             the folder to serve over HTTP
        sentinel-s2-l2a-cogs/<scene id>/{B04,B03,B02,TCI,SCL}.tif
        sentinel-s2-l2a-cogs/<scene id>/{B01,B05,B06,B07,B08,B8A,B09,B11,B12}.tif   the other L2A
                                      bands at their native 10 / 20 / 60 m, per-class reflectance
                                      (``SPECTRA``) without noise, so values are known exactly
        worldcover_4326.tif           labels, EPSG:4326, 1/12000 deg
        worldcover_32634.tif          labels, EPSG:32634 (neighbouring UTM zone), 10 m
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsbuild.records import Grid, Poi, TileStats

# --------------------------------------------------------------------------- constants

SCENE_CRS = "EPSG:32633"
PIXEL_M = 10.0
ORIGIN_X = 700000.0
ORIGIN_Y = 5000000.0
LABEL_CRS_UTM = "EPSG:32634"
WORLDCOVER_PIXEL_DEG = 1.0 / 12000.0
DN_SCALE = 0.0001
DN_OFFSET = -0.1  # Earth Search v1, processing baseline >= 04.00
PROCESSING_BASELINE = "05.10"

S2_COLLECTION = "sentinel-2-l2a"
NOBLUE_COLLECTION = "sentinel-2-l2a-noblue"
LABEL_COLLECTION = "esa-worldcover"
LABEL_ITEM_ID = "ESA_WorldCover_10m_2021_v200_synthetic"
CATALOG_ID = "rsbuild-synthetic"
UNKNOWN_CODE = 254

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_VERSION = "1.1.0"
S2_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
]
LABEL_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
]

# ESA WorldCover codes used by the truth map
TREE, SHRUB, GRASS, CROP, BUILT, BARE, WATER, WETLAND = 10, 20, 30, 40, 50, 60, 80, 90
WORLDCOVER_NAMES = {
    10: "Tree cover", 20: "Shrubland", 30: "Grassland", 40: "Cropland", 50: "Built-up",
    60: "Bare / sparse vegetation", 70: "Snow and ice", 80: "Permanent water bodies",
    90: "Herbaceous wetland", 95: "Mangroves", 100: "Moss and lichen",
}  # fmt: skip

# SCL classes
SCL_NODATA, SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 0, 3, 4, 5, 6
SCL_UNCLASSIFIED, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 7, 8, 9, 10
SCL_CLOUDY = (SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)


@dataclass(frozen=True)
class Band:
    """An Earth Search v1 reflectance asset."""

    key: str
    file: str
    title: str
    wavelength: float
    fwhm: float
    resolution: int = 10  # native pixel size in metres


RGB_BANDS = (
    Band("red", "B04", "Red (band 4) - 10m", 0.665, 0.038),
    Band("green", "B03", "Green (band 3) - 10m", 0.56, 0.045),
    Band("blue", "B02", "Blue (band 2) - 10m", 0.49, 0.098),
)
# The other L2A bands (noise-free per-class reflectance, ``SPECTRA``); their bytes never touch the RGB bands'
EXTRA_BANDS = (
    Band("coastal", "B01", "Coastal aerosol (band 1) - 60m", 0.443, 0.027, 60),
    Band("rededge1", "B05", "Red edge 1 (band 5) - 20m", 0.704, 0.019, 20),
    Band("rededge2", "B06", "Red edge 2 (band 6) - 20m", 0.74, 0.018, 20),
    Band("rededge3", "B07", "Red edge 3 (band 7) - 20m", 0.783, 0.028, 20),
    Band("nir", "B08", "NIR 1 (band 8) - 10m", 0.842, 0.145, 10),
    Band("nir08", "B8A", "NIR 2 (band 8A) - 20m", 0.865, 0.033, 20),
    Band("nir09", "B09", "NIR 3 (band 9) - 60m", 0.945, 0.026, 60),
    Band("swir16", "B11", "SWIR 1 (band 11) - 20m", 1.61, 0.143, 20),
    Band("swir22", "B12", "SWIR 2 (band 12) - 20m", 2.19, 0.242, 20),
)
VISUAL_FILE = "TCI"
SCL_FILE = "SCL"


@dataclass(frozen=True)
class SceneSpec:
    """One synthetic acquisition: its metadata and how its clouds / swath look."""

    id: str
    datetime: str
    cloud_cover: float
    clouds: str  # "none" | "blobs" (large random blobs) | "northeast" (NE quadrant fully covered)
    west_half_only: bool = False  # partial swath: east half is nodata

    @property
    def platform(self) -> str:
        return "sentinel-2a" if self.id.startswith("S2A") else "sentinel-2b"


SCENES = (
    SceneSpec("S2A_33TXL_20240710_0_L2A", "2024-07-10T10:00:00Z", 4.0, "none"),
    SceneSpec("S2B_33TXL_20240715_0_L2A", "2024-07-15T10:00:00Z", 65.0, "blobs"),
    SceneSpec("S2A_33TXL_20240720_0_L2A", "2024-07-20T10:00:00Z", 1.0, "none", west_half_only=True),
    SceneSpec("S2B_33TXL_20240712_0_L2A", "2024-07-12T10:00:00Z", 12.0, "northeast"),
)

# (id, row fraction, column fraction) inside the band of allowed POI centres; < 0.5 is west
POI_LAYOUT = (
    ("west1", 0.15, 0.20),
    ("west2", 0.50, 0.40),
    ("west3", 0.85, 0.10),
    ("east1", 0.10, 0.90),
    ("east2", 0.45, 0.65),
    ("east3", 0.90, 0.80),
)
OUTSIDE_POI = ("outside", 10.0, 10.0)  # id, lat, lon: no scene covers it

# Surface reflectance (red, green, blue) per WorldCover code
REFLECTANCE = {
    TREE: (0.030, 0.055, 0.030),
    SHRUB: (0.070, 0.080, 0.050),
    GRASS: (0.090, 0.110, 0.060),
    CROP: (0.060, 0.100, 0.040),
    BUILT: (0.200, 0.190, 0.180),
    BARE: (0.260, 0.230, 0.190),
    WATER: (0.015, 0.035, 0.050),
    WETLAND: (0.050, 0.080, 0.050),
}
CROP_STATES = ((0.050, 0.100, 0.040), (0.150, 0.140, 0.080), (0.170, 0.140, 0.110))  # green, ripe, soil
# Reflectance of the EXTRA_BANDS (B01 B05 B06 B07 B08 B8A B09 B11 B12) per WorldCover code: vegetation bright
# in the NIR, water dark beyond green, bare ground and built-up bright in the SWIR
SPECTRA = {
    TREE: (0.020, 0.070, 0.200, 0.250, 0.300, 0.310, 0.100, 0.150, 0.070),
    SHRUB: (0.040, 0.100, 0.180, 0.210, 0.240, 0.250, 0.080, 0.220, 0.130),
    GRASS: (0.050, 0.130, 0.240, 0.280, 0.320, 0.330, 0.100, 0.250, 0.140),
    CROP: (0.040, 0.100, 0.280, 0.340, 0.380, 0.390, 0.120, 0.220, 0.110),
    BUILT: (0.220, 0.210, 0.220, 0.230, 0.240, 0.240, 0.100, 0.280, 0.250),
    BARE: (0.240, 0.280, 0.290, 0.300, 0.310, 0.320, 0.120, 0.380, 0.330),
    WATER: (0.040, 0.020, 0.015, 0.012, 0.010, 0.009, 0.005, 0.005, 0.003),
    WETLAND: (0.040, 0.090, 0.160, 0.190, 0.220, 0.230, 0.080, 0.140, 0.080),
}
CROP_STATE_SPECTRA = (  # green, ripe, soil: as CROP_STATES
    (0.040, 0.100, 0.280, 0.340, 0.380, 0.390, 0.120, 0.220, 0.110),
    (0.060, 0.170, 0.220, 0.250, 0.270, 0.280, 0.090, 0.300, 0.200),
    (0.080, 0.190, 0.210, 0.220, 0.230, 0.240, 0.080, 0.340, 0.280),
)
CLOUD_SPECTRUM = (0.50, 0.55, 0.56, 0.56, 0.57, 0.57, 0.30, 0.45, 0.35)
CLOUD_REFLECTANCE = (0.52, 0.54, 0.58)
SHADOW_FACTOR = 0.45
TCI_FULL_SCALE = 0.3  # reflectance shown as 255 in the visual asset

SCL_FROM_CODE = np.full(256, SCL_UNCLASSIFIED, dtype=np.uint8)
SCL_FROM_CODE[[TREE, SHRUB, GRASS, CROP, WETLAND]] = SCL_VEGETATION
SCL_FROM_CODE[[BUILT, BARE]] = SCL_NOT_VEGETATED
SCL_FROM_CODE[WATER] = SCL_WATER


# --------------------------------------------------------------------------- ground truth


def _bspline_matrix(positions: np.ndarray, n: int) -> np.ndarray:
    """Cubic B-spline weights (len(positions) x n) from lattice samples 0..n-1 to ``positions``.

    Smoothing a 2-D lattice is then separable: ``rows_matrix @ lattice @ cols_matrix.T``.
    """
    weights = np.zeros((len(positions), n), dtype=np.float32)
    rows = np.arange(len(positions))
    base = np.floor(positions).astype(np.intp)
    t = positions - base
    taps = ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)
    for offset, tap in zip(range(-1, 3), taps):
        np.add.at(weights, (rows, np.clip(base + offset, 0, n - 1)), tap)
    return weights


def _linear_taps(samples_at: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every index 0..n-1: the sample to its left (index into ``samples_at``) and the weight of the right one."""
    position = np.interp(np.arange(n), samples_at, np.arange(len(samples_at)))
    left = np.minimum(np.floor(position).astype(np.intp), len(samples_at) - 2)
    return left, position - left


def _linear_upsample(
    coarse: np.ndarray, rows_at: np.ndarray, cols_at: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Bilinear interpolation of ``coarse`` (known at rows ``rows_at`` x cols ``cols_at``) to ``shape``."""
    r0, fr = _linear_taps(rows_at, shape[0])
    c0, fc = _linear_taps(cols_at, shape[1])
    by_row = coarse[r0] * (1 - fr)[:, None] + coarse[r0 + 1] * fr[:, None]
    return by_row[:, c0] * (1 - fc) + by_row[:, c0 + 1] * fc


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-variance noise (float32) with features about ``scale_px`` pixels across."""
    height, width = shape
    lattice = rng.standard_normal((math.ceil(height / scale_px) + 4, math.ceil(width / scale_px) + 4), dtype=np.float32)
    rows = _bspline_matrix(np.arange(height) / scale_px + 1.5, lattice.shape[0])
    cols = _bspline_matrix(np.arange(width) / scale_px + 1.5, lattice.shape[1])
    noise = rows @ lattice @ cols.T
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _field_partition(rng: np.random.Generator, size: int, hedge_px: int = 3) -> tuple[np.ndarray, int]:
    """Rectangular fields of 50-200 px separated by ``hedge_px`` strips (id -1); returns ids, count."""
    ids = np.full((size, size), -1, dtype=np.int32)
    count = 0
    top = 0
    while top < size:
        height = int(rng.integers(60, 201))
        left = 0
        while left < size:
            width = int(rng.integers(50, 201))
            ids[top : top + height - hedge_px, left : left + width - hedge_px] = count
            count += 1
            left += width
        top += height
    return ids, count


def _ellipse(
    shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float], angle_deg: float
) -> np.ndarray:
    """Boolean mask of a rotated ellipse; ``centre`` (row, col), ``axes`` (along rows, along cols)."""
    mask = np.zeros(shape, dtype=bool)
    reach = max(axes) + 1
    r0, r1 = max(int(centre[0] - reach), 0), min(int(centre[0] + reach) + 1, shape[0])
    c0, c1 = max(int(centre[1] - reach), 0), min(int(centre[1] + reach) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return mask
    rows, cols = np.ogrid[r0:r1, c0:c1]
    dr, dc = rows + 0.5 - centre[0], cols + 0.5 - centre[1]
    theta = math.radians(angle_deg)
    u = dr * math.cos(theta) + dc * math.sin(theta)
    v = -dr * math.sin(theta) + dc * math.cos(theta)
    mask[r0:r1, c0:c1] = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1.0
    return mask


def _river(rng: np.random.Generator, size: int) -> np.ndarray:
    """A meandering north-south river 12-20 px wide (measured across its course), top to bottom."""
    rows = np.arange(size, dtype=np.float64)
    phases = rng.uniform(0, 2 * math.pi, 3)
    amp1, amp2 = 0.05 * size, 0.02 * size
    k1, k2, k3 = 2 * math.pi / (0.35 * size), 2 * math.pi / (0.13 * size), 2 * math.pi / (0.2 * size)
    centre = 0.42 * size + amp1 * np.sin(k1 * rows + phases[0]) + amp2 * np.sin(k2 * rows + phases[1])
    slope = amp1 * k1 * np.cos(k1 * rows + phases[0]) + amp2 * k2 * np.cos(k2 * rows + phases[1])
    width = 16.0 + 4.0 * np.sin(k3 * rows + phases[2])
    half_horizontal = 0.5 * width * np.sqrt(1.0 + slope**2)
    cols = np.arange(size, dtype=np.float64)[None, :]
    return np.abs(cols + 0.5 - centre[:, None]) <= half_horizontal[:, None]


def render_truth(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The class map (uint8 WorldCover codes) plus field ids (-1 outside fields) and field count."""
    shape = (size, size)
    truth = np.full(shape, GRASS, dtype=np.uint8)

    field_ids, n_fields = _field_partition(rng, size)
    is_crop = rng.random(n_fields) < 0.5
    truth[(field_ids >= 0) & is_crop[np.maximum(field_ids, 0)]] = CROP

    shrub_noise = _smooth_noise(rng, shape, 60.0)
    truth[shrub_noise > np.quantile(shrub_noise, 0.93)] = SHRUB
    tree_noise = _smooth_noise(rng, shape, 40.0) + 0.5 * _smooth_noise(rng, shape, 15.0)
    truth[tree_noise > np.quantile(tree_noise, 0.80)] = TREE

    for _ in range(max(3, round(2 * (size / 512) ** 2))):  # quarries / bare ground
        centre = (rng.uniform(0.05, 0.95) * size, rng.uniform(0.05, 0.95) * size)
        radius = rng.uniform(15, 35)
        truth[_ellipse(shape, centre, (radius, radius * rng.uniform(1.0, 1.8)), rng.uniform(0, 180))] = BARE

    town_radius = float(np.clip(0.07 * size, 36, 150))
    rows, cols = np.ogrid[:size, :size]
    town_distance = np.hypot(rows - 0.30 * size, cols - 0.68 * size) / town_radius
    town_noise = _smooth_noise(rng, shape, town_radius / 2)
    truth[town_distance + 0.25 * town_noise < 1.0] = BUILT

    lake_axis = float(np.clip(0.055 * size, 30, 120))
    lake_centre, lake_angle = (0.72 * size, 0.20 * size), rng.uniform(0, 180)
    truth[_ellipse(shape, lake_centre, (lake_axis + 10, 1.5 * lake_axis + 10), lake_angle)] = WETLAND
    truth[_ellipse(shape, lake_centre, (lake_axis, 1.5 * lake_axis), lake_angle)] = WATER

    truth[_river(rng, size)] = WATER
    return truth, field_ids, n_fields


# --------------------------------------------------------------------------- imagery


def _surface_reflectance(
    rng: np.random.Generator, truth: np.ndarray, field_ids: np.ndarray, n_fields: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud-free surface reflectance, float32 (3, H, W): per-class colours, crop states, noise;
    and the crop state of each field."""
    lut = np.zeros((256, 3), dtype=np.float32)
    for code, rgb in REFLECTANCE.items():
        lut[code] = rgb
    reflectance = lut[truth]  # (H, W, 3)
    crop_state = rng.integers(0, len(CROP_STATES), n_fields)
    crop = truth == CROP
    reflectance[crop] = np.asarray(CROP_STATES, dtype=np.float32)[crop_state[field_ids[crop]]]
    reflectance = np.moveaxis(reflectance, -1, 0).copy()
    brightness = 1.0 + 0.06 * _smooth_noise(rng, truth.shape, 30.0)
    reflectance *= brightness[None]
    reflectance += 0.004 * rng.standard_normal(reflectance.shape, dtype=np.float32)
    return reflectance, crop_state


def extra_band_surface(truth: np.ndarray, field_ids: np.ndarray, crop_state: np.ndarray, index: int) -> np.ndarray:
    """Cloud-free reflectance (float32, H x W, 10 m) of ``EXTRA_BANDS[index]``: ``SPECTRA`` per class, crop
    fields by their state (no noise, no randomness: the RGB bands' random draws are untouched)."""
    lut = np.zeros(256, dtype=np.float32)
    for code, spectrum in SPECTRA.items():
        lut[code] = spectrum[index]
    surface = lut[truth]
    crop = truth == CROP
    states = np.asarray([spectrum[index] for spectrum in CROP_STATE_SPECTRA], dtype=np.float32)
    surface[crop] = states[crop_state[field_ids[crop]]]
    return surface


def _cloud_opacity(rng: np.random.Generator, spec: SceneSpec, size: int) -> np.ndarray:
    """Cloud opacity in [0, 1] (float32, H x W) for a scene."""
    if spec.clouds == "none":
        return np.zeros((size, size), dtype=np.float32)
    if spec.clouds == "blobs":
        noise = _smooth_noise(rng, (size, size), 120.0)
        threshold = np.quantile(noise, 1.0 - spec.cloud_cover / 100.0)
        return np.clip((noise - threshold) / 0.4, 0.0, 1.0).astype(np.float32)
    if spec.clouds == "northeast":
        rows, cols = np.ogrid[:size, :size]
        below = np.maximum(rows - (size // 2 - 1), 0)  # distance south of the quadrant
        west = np.maximum(size // 2 - cols, 0)  # distance west of the quadrant
        distance = np.hypot(below, west)
        return np.clip(1.0 - distance / 24.0, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unknown cloud pattern {spec.clouds!r}")


def _cloud_shadow(opacity: np.ndarray, shift_px: int = 30) -> np.ndarray:
    """Shadow cast north-west of the clouds (sun in the south-east), outside the clouds."""
    cloud = opacity >= 0.3
    shadow = np.zeros_like(cloud)
    shadow[:-shift_px, :-shift_px] = cloud[shift_px:, shift_px:]
    return shadow & (opacity < 0.1)


def _scl(truth: np.ndarray, opacity: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """10 m SCL codes consistent with the truth and the clouds (sampled to 20 m by the caller)."""
    scl = SCL_FROM_CODE[truth]
    scl[shadow] = SCL_SHADOW
    scl[(opacity >= 0.1) & (opacity < 0.3)] = SCL_CIRRUS
    scl[(opacity >= 0.3) & (opacity < 0.6)] = SCL_CLOUD_MEDIUM
    scl[opacity >= 0.6] = SCL_CLOUD_HIGH
    return scl


def to_dn(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance to uint16 DN: ``round((reflectance - offset) / scale)``, never the nodata 0."""
    dn = (reflectance - np.float32(DN_OFFSET)) * np.float32(1.0 / DN_SCALE)
    np.rint(dn, out=dn)
    np.clip(dn, 1, 65535, out=dn)
    return dn.astype(np.uint16)


def _scene_rasters(
    spec: SceneSpec, surface: np.ndarray, truth: np.ndarray, opacity: np.ndarray, extra: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """Arrays of one scene's files: B04/B03/B02 (uint16), TCI (uint8 x3), SCL (uint8, 20 m), and the
    ``EXTRA_BANDS`` (uint16 at their own resolution: the top-left 10 m pixel of each coarse pixel)."""
    shadow = _cloud_shadow(opacity)
    reflectance = surface
    if opacity.any():
        alpha = opacity[None]
        cloud_rgb = np.asarray(CLOUD_REFLECTANCE, dtype=np.float32)[:, None, None]
        reflectance = surface * (1.0 - alpha) + cloud_rgb * alpha
        reflectance[:, shadow] *= np.float32(SHADOW_FACTOR)
    dn = to_dn(reflectance)
    tci = reflectance * np.float32(255.0 / TCI_FULL_SCALE)
    np.rint(tci, out=tci)
    tci = np.clip(tci, 1, 255, out=tci).astype(np.uint8)
    scl = _scl(truth, opacity, shadow)[::2, ::2]
    if spec.west_half_only:
        half = truth.shape[1] // 2
        dn[:, :, half:] = 0
        tci[:, :, half:] = 0
        scl[:, half // 2 :] = SCL_NODATA
    rasters = {band.file: dn[i] for i, band in enumerate(RGB_BANDS)}
    rasters[VISUAL_FILE] = tci
    rasters[SCL_FILE] = scl
    for band, band_surface, cloud_value in zip(EXTRA_BANDS, extra, CLOUD_SPECTRUM):
        values = band_surface
        if opacity.any():
            values = band_surface * (1.0 - opacity) + np.float32(cloud_value) * opacity
            values[shadow] *= np.float32(SHADOW_FACTOR)
        step = band.resolution // int(PIXEL_M)
        band_dn = to_dn(values[::step, ::step])
        if spec.west_half_only:
            band_dn[:, -(-(truth.shape[1] // 2) // step) :] = 0  # coarse pixels that start east of the half
        rasters[band.file] = band_dn
    return rasters


# --------------------------------------------------------------------------- labels


def _sample_truth(truth: np.ndarray, grid: Grid, step: int = 16) -> np.ndarray:
    """The truth (nearest, at each pixel centre of ``grid``), 0 outside the scene.

    Pixel centres are projected exactly every ``step`` pixels and interpolated in between
    (the projection is smooth: the error is far below a millimetre).
    """
    a, _, c, _, e, f = grid.transform
    rows_at = np.unique(np.r_[np.arange(0, grid.height, step), grid.height - 1])
    cols_at = np.unique(np.r_[np.arange(0, grid.width, step), grid.width - 1])
    xs = np.broadcast_to(c + (cols_at + 0.5) * a, (len(rows_at), len(cols_at)))
    ys = np.broadcast_to((f + (rows_at + 0.5) * e)[:, None], (len(rows_at), len(cols_at)))
    sx, sy = _transform_points(grid.crs, SCENE_CRS, xs.ravel(), ys.ravel())
    shape = (grid.height, grid.width)
    scene_x = _linear_upsample(sx.reshape(xs.shape), rows_at, cols_at, shape)
    scene_y = _linear_upsample(sy.reshape(ys.shape), rows_at, cols_at, shape)
    col = np.floor((scene_x - ORIGIN_X) / PIXEL_M).astype(np.int64)
    row = np.floor((ORIGIN_Y - scene_y) / PIXEL_M).astype(np.int64)
    inside = (row >= 0) & (row < truth.shape[0]) & (col >= 0) & (col < truth.shape[1])
    labels = np.zeros(shape, dtype=np.uint8)
    labels[inside] = truth[row[inside], col[inside]]
    return labels


def _label_grid_4326(scene_grid: Grid, margin_deg: float = 0.01) -> Grid:
    """WorldCover's 1/12000-degree grid over the scene plus a margin."""
    lon_min, lat_min, lon_max, lat_max = _grid_bounds_in(scene_grid, "EPSG:4326")
    per_degree = round(1.0 / WORLDCOVER_PIXEL_DEG)
    col0 = math.floor((lon_min - margin_deg) * per_degree)
    col1 = math.ceil((lon_max + margin_deg) * per_degree)
    row0 = math.ceil((lat_max + margin_deg) * per_degree)
    row1 = math.floor((lat_min - margin_deg) * per_degree)
    transform = (WORLDCOVER_PIXEL_DEG, 0.0, col0 / per_degree, 0.0, -WORLDCOVER_PIXEL_DEG, row0 / per_degree)
    return Grid("EPSG:4326", transform, col1 - col0, row0 - row1)


def _label_grid_utm(scene_grid: Grid, crs: str, margin_m: float = 500.0) -> Grid:
    """A 10 m grid in another UTM zone over the scene plus a margin."""
    x_min, y_min, x_max, y_max = _grid_bounds_in(scene_grid, crs)
    left = math.floor((x_min - margin_m) / PIXEL_M) * PIXEL_M
    top = math.ceil((y_max + margin_m) / PIXEL_M) * PIXEL_M
    width = math.ceil((x_max + margin_m - left) / PIXEL_M)
    height = math.ceil((top - (y_min - margin_m)) / PIXEL_M)
    return Grid(crs, (PIXEL_M, 0.0, left, 0.0, -PIXEL_M, top), width, height)


def _sprinkle_unknown(labels: np.ndarray, rng: np.random.Generator, count: int = 4, side: int = 5) -> None:
    """Overwrite a few ``side``-px squares of valid labels with the unknown code 254."""
    valid_rows, valid_cols = np.nonzero(labels[:-side, :-side])
    for index in rng.choice(len(valid_rows), size=count, replace=False):
        r, c = valid_rows[index], valid_cols[index]
        labels[r : r + side, c : c + side] = UNKNOWN_CODE


# --------------------------------------------------------------------------- geometry helpers


def _outline(x0: float, y0: float, x1: float, y1: float, per_edge: int = 8) -> list[tuple[float, float]]:
    """Closed, densified ring (counter-clockwise) around the rectangle [x0, x1] x [y0, y1]."""
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    south = [(x0 + (x1 - x0) * s, y0) for s in t]
    east = [(x1, y0 + (y1 - y0) * s) for s in t]
    north = [(x1 - (x1 - x0) * s, y1) for s in t]
    west = [(x0, y1 - (y1 - y0) * s) for s in t]
    ring = south + east + north + west
    return ring + [ring[0]]


def _grid_bounds_in(grid: Grid, crs: str) -> tuple[float, float, float, float]:
    """Bounds (min x, min y, max x, max y) of a grid's densified outline in another CRS."""
    a, _, c, _, e, f = grid.transform
    ring = _outline(c, f + grid.height * e, c + grid.width * a, f)
    xs, ys = _transform_points(grid.crs, crs, np.array([p[0] for p in ring]), np.array([p[1] for p in ring]))
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _footprint(x0: float, y0: float, x1: float, y1: float) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon (WGS84) and bbox of a scene-CRS rectangle."""
    ring = _outline(x0, y0, x1, y1)
    lons, lats = _transform_points(
        SCENE_CRS, "EPSG:4326", np.array([p[0] for p in ring]), np.array([p[1] for p in ring])
    )
    coordinates = [[round(float(lon), 9), round(float(lat), 9)] for lon, lat in zip(lons, lats)]
    coordinates[-1] = coordinates[0]
    bbox = [
        min(p[0] for p in coordinates),
        min(p[1] for p in coordinates),
        max(p[0] for p in coordinates),
        max(p[1] for p in coordinates),
    ]
    return {"type": "Polygon", "coordinates": [coordinates]}, bbox


# --------------------------------------------------------------------------- STAC documents


def _join(base_url: str, relative: str) -> str:
    return f"{base_url.rstrip('/')}/{relative}"


def _proj_fields(shape: tuple[int, int], transform: Iterable[float]) -> dict[str, Any]:
    return {"proj:shape": list(shape), "proj:transform": [float(v) for v in transform]}


def _band_asset(band: Band, href: str, size: int, transform: tuple[float, ...]) -> dict[str, Any]:
    step = band.resolution // int(PIXEL_M)
    a, b, c, d, e, f = transform
    return {
        "href": href,
        "type": COG_TYPE,
        "title": band.title,
        "eo:bands": [
            {
                "name": band.key,
                "common_name": band.key,
                "center_wavelength": band.wavelength,
                "full_width_half_max": band.fwhm,
            }
        ],
        "gsd": band.resolution,
        **_proj_fields((-(-size // step), -(-size // step)), (a * step, b, c, d, e * step, f)),
        "raster:bands": [
            {
                "nodata": 0,
                "data_type": "uint16",
                "bits_per_sample": 15,
                "spatial_resolution": band.resolution,
                "scale": DN_SCALE,
                "offset": DN_OFFSET,
            }
        ],
        "roles": ["data", "reflectance"],
    }


def _visual_asset(href: str, size: int, transform: tuple[float, ...]) -> dict[str, Any]:
    return {
        "href": href,
        "type": COG_TYPE,
        "title": "True color image",
        "eo:bands": [
            {"name": b.key, "common_name": b.key, "center_wavelength": b.wavelength, "full_width_half_max": b.fwhm}
            for b in RGB_BANDS
        ],
        **_proj_fields((size, size), transform),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 10} for _ in RGB_BANDS],
        "roles": ["visual"],
    }


def _scl_asset(href: str, size: int, transform: tuple[float, ...]) -> dict[str, Any]:
    a, b, c, d, e, f = transform
    return {
        "href": href,
        "type": COG_TYPE,
        "title": "Scene classification map (SCL)",
        **_proj_fields((size // 2, size // 2), (2 * a, b, c, d, 2 * e, f)),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        "roles": ["data", "reflectance"],
    }


def _collection(
    collection_id: str,
    title: str,
    description: str,
    bbox: list[float],
    interval: list[str | None],
    extensions: list[str],
) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": collection_id,
        "title": title,
        "description": description,
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}},
        "links": [],
    }


# --------------------------------------------------------------------------- the fixture


@dataclass
class FixtureInfo:
    """Where a generated fixture lives and how to describe it in STAC.

    ``cog_dir`` is the folder to serve over HTTP; STAC hrefs are ``{base_url}/{path under cog_dir}``.
    """

    root: Path
    seed: int
    size: int
    aoi_size: int
    unknown_codes: bool
    truth_path: Path
    pois_path: Path
    cog_dir: Path
    label_4326_path: Path
    label_32634_path: Path
    scene_ids: tuple[str, ...]
    poi_pixels: dict[str, tuple[int, int]]  # poi id -> (col, row) on the scene grid
    pois: tuple[Poi, ...]
    label_grids: dict[str, Grid] = field(default_factory=dict)  # "4326" / "32634" -> grid
    _truth: np.ndarray | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ grids and truth
    @property
    def grid(self) -> Grid:
        """The scene grid (10 m, EPSG:32633) on which the truth and every scene lie."""
        return scene_grid(self.size)

    @property
    def truth(self) -> np.ndarray:
        """The full class map (uint8 WorldCover codes), read once from ``truth.tif``."""
        if self._truth is None:
            self._truth = _read_raster(self.truth_path)
        return self._truth

    def truth_window(self, col_off: int, row_off: int, width: int, height: int) -> np.ndarray:
        """Truth codes of a window of the scene grid (must lie inside the scene)."""
        if col_off < 0 or row_off < 0 or col_off + width > self.size or row_off + height > self.size:
            raise ValueError(f"window ({col_off}, {row_off}, {width}, {height}) leaves the {self.size} px scene")
        return self.truth[row_off : row_off + height, col_off : col_off + width].copy()

    def scene_path(self, scene_id: str, file: str) -> Path:
        """Local path of one scene file (``B04``, ``B03``, ``B02``, ``TCI`` or ``SCL``)."""
        return self.cog_dir / _scene_folder(scene_id) / f"{file}.tif"

    def href(self, base_url: str, path: Path) -> str:
        """URL of a file under ``cog_dir`` on a server rooted at ``cog_dir``."""
        return _join(base_url, path.relative_to(self.cog_dir).as_posix())

    # ------------------------------------------------------------------ STAC
    def items(
        self, base_url: str, *, collection: str = S2_COLLECTION, drop_assets: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Earth Search v1 style Sentinel-2 L2A items, asset hrefs under ``base_url``."""
        dropped = set(drop_assets)
        items = []
        for spec in _scene_specs(self.scene_ids):
            east = ORIGIN_X + (self.size // 2 if spec.west_half_only else self.size) * PIXEL_M
            geometry, bbox = _footprint(ORIGIN_X, ORIGIN_Y - self.size * PIXEL_M, east, ORIGIN_Y)
            assets = self._scene_assets(base_url, spec.id)
            items.append({
                "type": "Feature",
                "stac_version": STAC_VERSION,
                "stac_extensions": S2_EXTENSIONS,
                "id": spec.id,
                "collection": collection,
                "geometry": geometry,
                "bbox": bbox,
                "properties": {
                    "datetime": spec.datetime,
                    "platform": spec.platform,
                    "constellation": "sentinel-2",
                    "instruments": ["msi"],
                    "eo:cloud_cover": spec.cloud_cover,
                    "proj:code": SCENE_CRS,
                    "mgrs:utm_zone": 33,
                    "mgrs:latitude_band": "T",
                    "mgrs:grid_square": "XL",
                    "grid:code": "MGRS-33TXL",
                    "s2:processing_baseline": PROCESSING_BASELINE,
                    "s2:product_type": "S2MSI2A",
                    "s2:nodata_pixel_percentage": 50.0 if spec.west_half_only else 0.0,
                },
                "links": [],
                "assets": {key: value for key, value in assets.items() if key not in dropped},
            })  # fmt: skip
        return items

    def _scene_assets(self, base_url: str, scene_id: str) -> dict[str, Any]:
        """Assets red / green / blue / visual / scl of one scene."""

        def href(file: str) -> str:
            return self.href(base_url, self.scene_path(scene_id, file))

        transform = self.grid.transform
        assets = {band.key: _band_asset(band, href(band.file), self.size, transform) for band in RGB_BANDS}
        assets.update((band.key, _band_asset(band, href(band.file), self.size, transform)) for band in EXTRA_BANDS)
        assets["visual"] = _visual_asset(href(VISUAL_FILE), self.size, transform)
        assets["scl"] = _scl_asset(href(SCL_FILE), self.size, transform)
        return assets

    def label_items(self, base_url: str) -> list[dict[str, Any]]:
        """The ``esa-worldcover`` item (WorldCover's layout) whose ``map`` asset is the 4326 label COG."""
        grid = self.label_grids["4326"]
        a, _, c, _, e, f = grid.transform
        lon0, lat0, lon1, lat1 = c, f + grid.height * e, c + grid.width * a, f
        ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
        classes = [{"value": code, "description": name} for code, name in WORLDCOVER_NAMES.items()]
        return [{
            "type": "Feature",
            "stac_version": STAC_VERSION,
            "stac_extensions": LABEL_EXTENSIONS,
            "id": LABEL_ITEM_ID,
            "collection": LABEL_COLLECTION,
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "bbox": [lon0, lat0, lon1, lat1],
            "properties": {
                "datetime": None,
                "start_datetime": "2021-01-01T00:00:00Z",
                "end_datetime": "2021-12-31T23:59:59Z",
                "description": "Synthetic ESA WorldCover 2021 (v200) rendered from the rsbuild fixture truth",
                "esa_worldcover:product_version": "2.0.0",
                "esa_worldcover:product_tile": "synthetic",
                "mission": "sentinel-1, sentinel-2",
                "proj:code": "EPSG:4326",
            },
            "links": [],
            "assets": {
                "map": {
                    "href": self.href(base_url, self.label_4326_path),
                    "type": COG_TYPE,
                    "title": "Land Cover Classes",
                    **_proj_fields((grid.height, grid.width), grid.transform),
                    "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 10}],
                    "classification:classes": classes,
                    "roles": ["data"],
                }
            },
        }]  # fmt: skip

    def collections(self) -> list[dict[str, Any]]:
        """Collections: ``sentinel-2-l2a``, its no-blue variant and ``esa-worldcover``."""
        _, bbox = _footprint(ORIGIN_X, ORIGIN_Y - self.size * PIXEL_M, ORIGIN_X + self.size * PIXEL_M, ORIGIN_Y)
        dates = sorted(spec.datetime for spec in _scene_specs(self.scene_ids))
        s2 = [
            _collection(
                collection_id,
                "Sentinel-2 Level-2A (synthetic)",
                f"Synthetic Sentinel-2 L2A scenes in the Earth Search v1 layout{note}",
                bbox,
                [dates[0], dates[-1]],
                S2_EXTENSIONS,
            )
            for collection_id, note in ((S2_COLLECTION, "."), (NOBLUE_COLLECTION, ", without the blue asset."))
        ]
        label_grid = self.label_grids["4326"]
        a, _, c, _, e, f = label_grid.transform
        label_bbox = [c, f + label_grid.height * e, c + label_grid.width * a, f]
        labels = _collection(
            LABEL_COLLECTION,
            "ESA WorldCover (synthetic)",
            "Synthetic ESA WorldCover 10 m land cover rendered from the fixture truth.",
            label_bbox,
            ["2021-01-01T00:00:00Z", "2021-12-31T23:59:59Z"],
            LABEL_EXTENSIONS,
        )
        return [*s2, labels]

    def _collection_items(self, base_url: str) -> dict[str, list[dict[str, Any]]]:
        """Items per collection id (the no-blue variant drops the ``blue`` asset)."""
        return {
            S2_COLLECTION: self.items(base_url),
            NOBLUE_COLLECTION: self.items(base_url, collection=NOBLUE_COLLECTION, drop_assets=("blue",)),
            LABEL_COLLECTION: self.label_items(base_url),
        }

    def write_item_collection(
        self, base_url: str, path: Path, *, collection: str = S2_COLLECTION, drop_assets: Iterable[str] = ()
    ) -> Path:
        """Write the Sentinel-2 items as a GeoJSON FeatureCollection (what ``rustac serve`` loads)."""
        items = self.items(base_url, collection=collection, drop_assets=drop_assets)
        return _write_json(path, {"type": "FeatureCollection", "features": items})

    def write_stac_api_files(self, base_url: str, folder: Path) -> list[Path]:
        """Collections then item collections of all three collections, in the order to load them."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [_write_json(folder / f"collection-{c['id']}.json", c) for c in self.collections()]
        for collection_id, items in self._collection_items(base_url).items():
            paths.append(
                _write_json(folder / f"items-{collection_id}.json", {"type": "FeatureCollection", "features": items})
            )
        return paths

    def write_static_catalog(self, base_url: str, folder: Path) -> Path:
        """A self-contained static catalog with relative links; returns the ``catalog.json`` path.

        Layout (STAC best practices): ``catalog.json``, ``<collection>/collection.json``,
        ``<collection>/<item>/<item>.json``.
        """
        folder.mkdir(parents=True, exist_ok=True)
        collections = {c["id"]: c for c in self.collections()}
        catalog = {
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": CATALOG_ID,
            "title": "rsbuild synthetic catalog",
            "description": "Synthetic Sentinel-2 scenes and land-cover labels generated by rsbuild.",
            "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
            + [{"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json"} for cid in collections],
        }
        for collection_id, items in self._collection_items(base_url).items():
            collection = dict(collections[collection_id])
            collection["links"] = [
                {"rel": "root", "href": "../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            ] + [
                {"rel": "item", "href": f"./{item['id']}/{item['id']}.json", "type": "application/geo+json"}
                for item in items
            ]
            _write_json(folder / collection_id / "collection.json", collection)
            for item in items:
                item = dict(item)
                item["links"] = [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "../collection.json", "type": "application/json"},
                ]
                _write_json(folder / collection_id / item["id"] / f"{item['id']}.json", item)
        return _write_json(folder / "catalog.json", catalog)

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "size": self.size,
            "aoi_size": self.aoi_size,
            "unknown_codes": self.unknown_codes,
            "scene_ids": list(self.scene_ids),
            "poi_pixels": {k: list(v) for k, v in self.poi_pixels.items()},
            "pois": [asdict(p) for p in self.pois],
            "label_grids": {k: asdict(g) for k, g in self.label_grids.items()},
        }

    @classmethod
    def load(cls, root: Path) -> FixtureInfo:
        """Describe a fixture generated earlier into ``root`` (reads ``fixture.json``)."""
        doc = json.loads((root / "fixture.json").read_text(encoding="utf-8"))
        grids = {
            k: Grid(g["crs"], tuple(g["transform"]), g["width"], g["height"]) for k, g in doc["label_grids"].items()
        }
        return _fixture_info(
            root, doc["seed"], doc["size"], doc["aoi_size"], doc["unknown_codes"],
            {k: (v[0], v[1]) for k, v in doc["poi_pixels"].items()},
            tuple(Poi(**p) for p in doc["pois"]), grids,
        )  # fmt: skip


def scene_grid(size: int) -> Grid:
    """The synthetic scene grid: ``size`` x ``size`` px of 10 m in EPSG:32633, top-left (700000, 5000000)."""
    return Grid(SCENE_CRS, (PIXEL_M, 0.0, ORIGIN_X, 0.0, -PIXEL_M, ORIGIN_Y), size, size)


def _scene_specs(scene_ids: Iterable[str]) -> list[SceneSpec]:
    by_id = {spec.id: spec for spec in SCENES}
    return [by_id[scene_id] for scene_id in scene_ids]


def _scene_folder(scene_id: str) -> str:
    return f"sentinel-s2-l2a-cogs/{scene_id}"


def _fixture_info(
    root: Path, seed: int, size: int, aoi_size: int, unknown_codes: bool,
    poi_pixels: dict[str, tuple[int, int]], pois: tuple[Poi, ...], label_grids: dict[str, Grid],
) -> FixtureInfo:  # fmt: skip
    cog_dir = root / "cogs"
    return FixtureInfo(
        root=root, seed=seed, size=size, aoi_size=aoi_size, unknown_codes=unknown_codes,
        truth_path=root / "truth.tif", pois_path=root / "pois.csv", cog_dir=cog_dir,
        label_4326_path=cog_dir / "worldcover_4326.tif", label_32634_path=cog_dir / "worldcover_32634.tif",
        scene_ids=tuple(spec.id for spec in SCENES), poi_pixels=poi_pixels, pois=pois, label_grids=label_grids,
    )  # fmt: skip


def _poi_pixels(size: int, aoi_size: int) -> dict[str, tuple[int, int]]:
    """(col, row) of each in-scene POI: its AOI stays >= 8 px inside every scene edge."""
    margin = aoi_size // 2 + 8
    span = size - 2 * margin
    if span < 16:
        raise ValueError(f"size {size} is too small for aoi_size {aoi_size}: use size >= {aoi_size + 32}")
    return {poi_id: (margin + int(fc * span), margin + int(fr * span)) for poi_id, fr, fc in POI_LAYOUT}


def _write_pois(path: Path, poi_pixels: dict[str, tuple[int, int]]) -> tuple[Poi, ...]:
    """pois.csv (id,lat,lon) with each POI at the centre of its pixel, plus the outside POI."""
    cols = np.array([c + 0.5 for c, _ in poi_pixels.values()])
    rows = np.array([r + 0.5 for _, r in poi_pixels.values()])
    lons, lats = _transform_points(SCENE_CRS, "EPSG:4326", ORIGIN_X + cols * PIXEL_M, ORIGIN_Y - rows * PIXEL_M)
    pois = [
        Poi(poi_id, round(float(lat), 7), round(float(lon), 7), i + 1)
        for i, (poi_id, lat, lon) in enumerate(zip(poi_pixels, lats, lons))
    ]
    pois.append(Poi(OUTSIDE_POI[0], OUTSIDE_POI[1], OUTSIDE_POI[2], len(pois) + 1))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "lat", "lon"])
        writer.writerows((p.poi_id, f"{p.lat:.7f}", f"{p.lon:.7f}") for p in pois)
    return tuple(pois)


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def generate(
    out_dir: Path,
    *,
    seed: int = 0,
    size: int = 2048,
    aoi_size: int = 1024,
    unknown_codes: bool = False,
    overviews: bool = False,
) -> FixtureInfo:
    """Write the whole fixture into ``out_dir`` (see the module docstring) and describe it.

    ``size`` (a multiple of 16) is the scene side in 10 m pixels; POIs are placed so an AOI of
    ``aoi_size`` px around each lies inside the scene. ``unknown_codes`` sprinkles a few 254
    squares into the label COGs (never into the truth). Same arguments, same bytes.
    """
    if size % 16 or size < 64:
        raise ValueError(f"size must be a multiple of 16 and >= 64, got {size}")
    out_dir = Path(out_dir)
    poi_pixels = _poi_pixels(size, aoi_size)
    rng = np.random.default_rng(seed)
    grid = scene_grid(size)

    truth, field_ids, n_fields = render_truth(rng, size)
    surface, crop_state = _surface_reflectance(rng, truth, field_ids, n_fields)
    extra = [extra_band_surface(truth, field_ids, crop_state, index) for index in range(len(EXTRA_BANDS))]
    label_grids = {"4326": _label_grid_4326(grid), "32634": _label_grid_utm(grid, LABEL_CRS_UTM)}
    info = _fixture_info(out_dir, seed, size, aoi_size, unknown_codes, poi_pixels, (), label_grids)
    info.cog_dir.mkdir(parents=True, exist_ok=True)

    _write_cog(info.truth_path, truth, grid, nodata=0, overviews=overviews)
    info._truth = truth
    for spec in SCENES:
        opacity = _cloud_opacity(rng, spec, size)
        for file, array in _scene_rasters(spec, surface, truth, opacity, extra).items():
            file_grid = _coarse(grid, round(grid.height / array.shape[-2]), array.shape[-1], array.shape[-2])
            _write_cog(info.scene_path(spec.id, file), array, file_grid, nodata=0, overviews=overviews)
    for key, path in (("4326", info.label_4326_path), ("32634", info.label_32634_path)):
        labels = _sample_truth(truth, label_grids[key])
        if unknown_codes:
            _sprinkle_unknown(labels, rng)
        _write_cog(path, labels, label_grids[key], nodata=0, overviews=overviews)

    info.pois = _write_pois(info.pois_path, poi_pixels)
    _write_json(out_dir / "fixture.json", info.to_json())
    return info


def seeded_tile_stats(seed: int) -> TileStats:
    """Real stats of a seeded 64 px tile: two classes split by a line, plus a thin strip of a third
    (for prompt tests and LLM benchmarks)."""
    from rsbuild.chips.stats import compute_stats
    from rsbuild.schemes import get_scheme

    scheme = get_scheme("esa_worldcover")
    rng = np.random.default_rng(seed)
    first, second, strip = rng.choice(len(scheme.classes), size=3, replace=False)
    index = np.full((64, 64), first, dtype=np.uint8)
    cut = int(rng.integers(16, 48))
    if rng.random() < 0.5:
        index[:cut, :] = second
    else:
        index[:, :cut] = second
    column = int(rng.integers(4, 60))
    index[:, column : column + 3] = strip
    return compute_stats(index, scheme)


def _coarse(grid: Grid, factor: int, width: int, height: int) -> Grid:
    """``grid`` with ``factor`` times larger pixels and the given size (same top-left corner)."""
    a, b, c, d, e, f = grid.transform
    return Grid(grid.crs, (a * factor, b, c, d, e * factor, f), width, height)


# --------------------------------------------------------------------------- rasterio section
# The only place this module touches rasterio: writing / reading fixture files, projecting points.


def _write_cog(path: Path, array: np.ndarray, grid: Grid, *, nodata: int, overviews: bool) -> None:
    """Write a deflate-compressed, 512-px tiled COG (no timestamp tags: reproducible bytes)."""
    import rasterio
    from rasterio.transform import Affine

    data = array[None] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": Affine(*grid.transform),
        "nodata": nodata,
        "blocksize": 512,
        "compress": "DEFLATE",
        "level": 1,  # fast; readers do not care
        "overviews": "AUTO" if overviews else "NONE",
    }
    with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _read_raster(path: Path) -> np.ndarray:
    """First band of a raster file."""
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def _transform_points(src_crs: str, dst_crs: str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project points (x / lon first, whatever the CRS's axis order)."""
    from rasterio.warp import transform

    out_x, out_y = transform(src_crs, dst_crs, np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    return np.asarray(out_x), np.asarray(out_y)
