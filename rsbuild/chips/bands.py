"""Multispectral samples (``output.bands = "all"``): every Sentinel-2 L2A band on the 10 m tile grid
as float32 reflectance (``KEY.bands.tif``), and spectral indices per tile and per class in the stats.

**Resampling.** Each band is read onto the AOI's 10 m grid with nearest neighbour
(`rsbuild.sources.raster_io.read_on_grid`). The 20 m and 60 m grids of a Sentinel-2 tile share its
10 m grid's corner, so nearest neighbour repeats each coarse pixel over the 2 x 2 (6 x 6) 10 m pixels
it covers: every value is a measured one and the coarse band is recovered exactly by taking every
2nd (6th) pixel. Bilinear would look smoother but mixes the spectra of two classes along every
boundary, which the per-class indices would then report as if measured.

**Storage.** ``KEY.bands.tif``: a GeoTIFF with the tile's CRS and 10 m transform, one band per L2A
band in `SPECTRAL_BANDS` order (band descriptions ``B01`` ... ``B12``), float32 reflectance with the
catalog's scale and offset already applied (the rules of `rsbuild.sources.assets`, per processing
baseline), NaN where a band has no data; deflate with the floating-point predictor. Reflectance
rather than uint16 DN + scale/offset tags because the loaders people train with (torchgeo's
``RasterDataset``, TerraTorch's generic datasets, rasterio / rioxarray) take the stored numbers as
they are: DN would silently keep the -0.1 BOA offset of baseline >= 04.00 products.

**Indices.** NDVI = (B08 - B04) / (B08 + B04), NDWI (McFeeters) = (B03 - B08) / (B03 + B08),
NBR = (B08 - B12) / (B08 + B12), per pixel on the native 10 m grid, averaged over the tile's clear
pixels and per class over the class's clear pixels: ``stats["indices"]`` and
``stats["classes"][i]["indices"]``, each ``{"ndvi", "ndwi", "nbr", "pixels"}`` (a mean is null when
no pixel is clear). A 10 m pixel's class is the class of the chip pixel covering its centre in
``KEY.mask.png`` (the pixels the class shares are measured on); it is clear when that chip pixel is
valid, it is not cloudy (the 10 m cloud mask is kept as COCO RLE in ``metadata["bands"]["cloud"]``)
and the three bands have data. Everything the indices are made of is in the shard, so `rsbuild
verify` re-derives them (`indices_from_members`, to within `INDEX_TOLERANCE`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from rsbuild.chips.masks import compress_counts, decode_rle, rle_counts
from rsbuild.errors import SampleError
from rsbuild.records import BandAsset, Grid, Scene, TileStats
from rsbuild.schemes import NODATA_INDEX
from rsbuild.sources import raster_io
from rsbuild.sources.assets import SPECTRAL_BANDS, SPECTRAL_RESOLUTION_M

BANDS_MEMBER = "bands.tif"
RESAMPLING = "nearest"
# index name -> (band a, band b): (a - b) / (a + b)
INDICES = {"ndvi": ("B08", "B04"), "ndwi": ("B03", "B08"), "nbr": ("B08", "B12")}
NDVI_DENSE_VEGETATION = 0.6  # mean NDVI at or above: dense green vegetation (a checkable claim)
NDVI_SPARSE_VEGETATION = 0.2  # below: little or no green vegetation
INDEX_TOLERANCE = 1e-4  # stored means are rounded to 4 decimals: a re-derived mean lies within half of that
_READ_PREFIX = "band:"

Submit = Callable[..., "Future[Any]"]


def submit_reads(scene: Scene, grid: Grid, submit: Submit, reading: Iterable[str] = ()) -> dict[str, Future[Any]]:
    """Start reading every L2A band of ``scene`` onto ``grid`` (nearest), except those the RGB reads
    named in ``reading`` (``red green blue``) already fetch; a missing band is a bad sample."""
    missing = [band for band in SPECTRAL_BANDS if band not in scene.spectral]
    if missing:
        raise SampleError(f"scene {scene.id} has no asset for {', '.join(missing)}; output.bands = \"all\" needs "
                          f"all {len(SPECTRAL_BANDS)} Sentinel-2 L2A bands ({' '.join(SPECTRAL_BANDS)})")
    shared = _shared_reads(scene, reading)
    return {
        _READ_PREFIX + band: submit(raster_io.read_on_grid, asset.href, grid, resampling=RESAMPLING, fill=asset.nodata or 0)
        for band, asset in ((band, scene.spectral[band]) for band in SPECTRAL_BANDS) if band not in shared
    }


def _shared_reads(scene: Scene, reading: Iterable[str]) -> dict[str, str]:
    """Band id -> the RGB read (``red`` ...) of the same file, grid and nodata: read once, used twice."""
    shared: dict[str, str] = {}
    for name in reading:
        rgb = scene.assets.get(name)
        for band, asset in scene.spectral.items():
            if rgb is not None and (asset.href, asset.nodata) == (rgb.href, rgb.nodata):
                shared[band] = name
    return shared


def aoi_reflectance(arrays: dict[str, np.ndarray], scene: Scene) -> np.ndarray | None:
    """The read bands (taken out of ``arrays``; the RGB arrays they share are left) as float32
    reflectance (12, H, W), NaN without data; None when the bands were not read."""
    if not any(name.startswith(_READ_PREFIX) for name in arrays):
        return None
    shared = _shared_reads(scene, [name for name in ("red", "green", "blue") if name in arrays])
    stack = [reflectance(arrays[shared[band]] if band in shared else arrays.pop(_READ_PREFIX + band), scene.spectral[band])
             for band in SPECTRAL_BANDS]
    return np.stack(stack)


def reflectance(dn: np.ndarray, asset: BandAsset) -> np.ndarray:
    """DN x scale + offset as float32, NaN where the DN are the asset's nodata."""
    values = dn.astype(np.float32) * np.float32(asset.scale) + np.float32(asset.offset)
    if asset.nodata is not None:
        values[dn == asset.nodata] = np.nan
    return values


def encode_bands(tile: np.ndarray, grid: Grid, scene: Scene) -> bytes:
    """``KEY.bands.tif`` bytes of one tile's (12, H, W) reflectance on its 10 m ``grid``."""
    tags = {"UNIT": "reflectance", "SCALE_OFFSET": "applied", "RESAMPLING": RESAMPLING, "SCENE": scene.id}
    return raster_io.geotiff_bytes(tile, grid, nodata=float("nan"), descriptions=list(SPECTRAL_BANDS), tags=tags)


def bands_metadata(scene: Scene, cloud: np.ndarray | None = None) -> dict[str, Any]:
    """``metadata["bands"]``: what ``KEY.bands.tif`` holds and how it was made; ``cloud`` the tile's
    10 m cloud mask (kept as COCO RLE: the indices leave those pixels out)."""
    assets = [scene.spectral[band] for band in SPECTRAL_BANDS]
    return {
        "member": BANDS_MEMBER,
        "bands": list(SPECTRAL_BANDS),
        "dtype": "float32",
        "unit": "reflectance",
        "nodata": "nan",
        "resolution_m": 10,
        "native_resolution_m": [SPECTRAL_RESOLUTION_M[band] for band in SPECTRAL_BANDS],
        "resampling": RESAMPLING,
        "scale": [asset.scale for asset in assets],  # applied: reflectance = DN x scale + offset
        "offset": [asset.offset for asset in assets],
        "cloud": None if cloud is None else {"size": list(cloud.shape), "counts": compress_counts(rle_counts(cloud))},
    }


def normalised_difference(tile: np.ndarray, index: str) -> np.ndarray:
    """One index per pixel (float64, NaN where a band has no data or both are 0)."""
    first, second = (tile[SPECTRAL_BANDS.index(band)].astype(np.float64) for band in INDICES[index])
    total = first + second
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total != 0, (first - second) / total, np.nan)


def index_classes(mask: np.ndarray, shape: tuple[int, int], cloud: np.ndarray | None) -> np.ndarray:
    """The class index of each 10 m pixel of a ``shape`` tile for the indices: the chip pixel of
    ``mask`` (``KEY.mask.png``, 255 = invalid) covering the pixel's centre; 255 where ``cloud``."""
    height, width = shape
    rows = ((2 * np.arange(height) + 1) * mask.shape[0]) // (2 * height)
    cols = ((2 * np.arange(width) + 1) * mask.shape[1]) // (2 * width)
    classes = np.asarray(mask)[rows[:, None], cols[None, :]]
    return classes if cloud is None else np.where(cloud, NODATA_INDEX, classes).astype(classes.dtype)


def index_means(tile: np.ndarray, classes: np.ndarray) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """NDVI / NDWI / NBR means of a (12, H, W) tile over its clear pixels and per class index
    (``classes`` from `index_classes`): (tile, {class index: means})."""
    values = {name: normalised_difference(tile, name) for name in INDICES}
    usable = classes != NODATA_INDEX
    for per_pixel in values.values():
        usable &= np.isfinite(per_pixel)
    counts = np.bincount(classes[usable], minlength=256)
    sums = {name: np.bincount(classes[usable], weights=per_pixel[usable], minlength=256) for name, per_pixel in values.items()}
    whole = _means({name: float(total.sum()) for name, total in sums.items()}, int(counts.sum()))
    per_class = {int(index): _means({name: float(total[index]) for name, total in sums.items()}, int(counts[index]))
                 for index in np.flatnonzero(counts)}
    return whole, per_class


def add_indices(stats: TileStats, tile: np.ndarray, mask: np.ndarray, cloud: np.ndarray | None) -> None:
    """Put NDVI / NDWI / NBR of the tile and of each listed class into ``stats`` (``tile`` the
    (12, H, W) reflectance, ``mask`` the chip's class indices, ``cloud`` the 10 m cloud mask)."""
    whole, per_class = index_means(tile, index_classes(mask, tile.shape[1:], cloud))
    stats["indices"] = whole
    for entry in stats.get("classes", []):
        entry["indices"] = per_class.get(int(entry["index"]), _means(dict.fromkeys(INDICES, 0.0), 0))


def indices_from_members(bands_tif: bytes, mask_png_pixels: np.ndarray, bands_meta: Mapping[str, Any]
                         ) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The indices re-derived from a shard sample: its ``KEY.bands.tif``, its decoded
    ``KEY.mask.png`` and ``metadata["bands"]`` (for the cloud mask), as `index_means` gives them."""
    tile, _ = read_bands(bands_tif)
    cloud = bands_meta.get("cloud")
    return index_means(tile, index_classes(mask_png_pixels, tile.shape[1:], decode_rle(cloud) if cloud else None))


def _means(sums: Mapping[str, float], pixels: int) -> dict[str, Any]:
    means: dict[str, Any] = {name: round(total / pixels, 4) if pixels else None for name, total in sums.items()}
    means["pixels"] = pixels
    return means


def vegetation_density(ndvi: float | None) -> str | None:
    """``"dense"``, ``"moderate"`` or ``"sparse"`` green vegetation for a mean NDVI (None: unknown),
    for a check of words such as "dense vegetation" against the pixels."""
    if ndvi is None:
        return None
    if ndvi >= NDVI_DENSE_VEGETATION:
        return "dense"
    return "moderate" if ndvi >= NDVI_SPARSE_VEGETATION else "sparse"


def read_bands(data: bytes) -> tuple[np.ndarray, list[str]]:
    """A ``KEY.bands.tif`` member as (12, H, W) float32 reflectance and its band names."""
    tif = raster_io.read_geotiff_bytes(data)
    return tif.array, tif.descriptions
