"""Every rasterio / GDAL call of the pipeline: reads onto a target grid, raster headers.

Reads go straight onto the chip grid: an aligned source (same CRS and pixel size, integer
offset) is read as a plain window; anything else (another CRS, another resolution) goes through
a WarpedVRT with the requested resampling, so each pixel is resampled once.

Remote files are read through GDAL's /vsicurl/ (http, https) and /vsis3/ (s3://) with options
that skip the HEAD request and directory listing, merge consecutive ranges and cache headers.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rsbuild.errors import SampleError
from rsbuild.records import Grid

# Config options GDAL reads from the environment; users can override any of them.
GDAL_DEFAULTS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.vrt",
    "CPL_VSIL_CURL_USE_HEAD": "NO",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": "8388608",  # per open file handle: keep small (16 handles x threads)
    "CPL_VSIL_CURL_CACHE_SIZE": "33554432",
    "GDAL_CACHEMAX": "64",  # MB; larger caches only grew peak memory with dataset size
}
for _name, _value in GDAL_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
if not any(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN")):
    os.environ.setdefault("AWS_NO_SIGN_REQUEST", "YES")

RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear, "average": Resampling.average}


class RasterReadError(SampleError):
    """A raster could not be opened or read (a bad sample, not a bad run)."""


@dataclass(frozen=True)
class RasterInfo:
    """Header of a raster: its grid, band count and nodata value."""

    grid: Grid
    count: int
    dtype: str
    nodata: float | None


def gdal_path(href: str) -> str:
    """Local paths stay; http(s) and s3 URLs are read by GDAL's virtual file systems."""
    if href.startswith("file://"):
        return href[len("file://") :]
    return href


class _HandleCache:
    """Open datasets kept per thread (LRU) so a scene's headers are read once per worker."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.local = threading.local()

    def get(self, href: str) -> Any:
        handles: OrderedDict[str, Any] = getattr(self.local, "handles", None) or OrderedDict()
        self.local.handles = handles
        if href in handles:
            handles.move_to_end(href)
            return handles[href]
        try:
            dataset = rasterio.open(gdal_path(href))
        except rasterio.errors.RasterioIOError as exc:
            raise RasterReadError(f"cannot open {_redact(href)}: {_first_line(exc)}", transient=_transient(exc)) from None
        handles[href] = dataset
        while len(handles) > self.size:
            _, old = handles.popitem(last=False)
            old.close()
        return dataset

    def close_thread(self) -> None:
        """Close this thread's handles."""
        handles = getattr(self.local, "handles", None) or {}
        for dataset in handles.values():
            dataset.close()
        handles.clear()


_HANDLES = _HandleCache()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_TRANSIENT = re.compile(r"could not connect|failed to connect|timed out|timeout|connection reset|"
                        r"HTTP response code: (?:0|429|5\d\d)\b", re.IGNORECASE)
_CACHED_FAILURE = re.compile(r"/vsi(?:curl|s3|gs|az)\S*' does not exist in the file system")  # GDAL replays an earlier failure


def _transient(exc: BaseException) -> bool:
    """Whether GDAL's error is one a later retry may not meet (no connection, timeout, 429, 5xx, or
    a remote open GDAL refuses because an earlier open of that URL failed in this process)."""
    return bool(_TRANSIENT.search(str(exc)) or _CACHED_FAILURE.search(str(exc)))


def _redact(href: str) -> str:
    """Drop query strings (signed URLs carry tokens) from messages."""
    return href.split("?", 1)[0]


def raster_info(href: str) -> RasterInfo:
    """Read a raster's header (CRS, transform, size, dtype, nodata)."""
    src = _HANDLES.get(href)
    crs = src.crs.to_string() if src.crs else ""
    grid = Grid(crs=crs, transform=tuple(src.transform)[:6], width=src.width, height=src.height)
    return RasterInfo(grid=grid, count=src.count, dtype=src.dtypes[0], nodata=src.nodata)


def _aligned_window(src: Any, grid: Grid) -> Window | None:
    """The integer window of ``src`` that is exactly ``grid``, or None if the grids differ."""
    if not src.crs or src.crs != rasterio.crs.CRS.from_user_input(grid.crs):
        return None
    a, b, c, d, e, f = tuple(src.transform)[:6]
    ga, gb, gc, gd, ge, gf = grid.transform
    if b or d or gb or gd or abs(a - ga) > 1e-9 * abs(a) or abs(e - ge) > 1e-9 * abs(e):
        return None
    col = (gc - c) / a
    row = (gf - f) / e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(int(round(col)), int(round(row)), grid.width, grid.height)


def read_on_grid(
    href: str,
    grid: Grid,
    *,
    bands: int | list[int] = 1,
    resampling: str = "nearest",
    fill: float = 0,
) -> np.ndarray:
    """Read ``bands`` of ``href`` onto ``grid``; pixels outside the source get ``fill``.

    Returns (H, W) for one band, (N, H, W) for a list of bands, in the source dtype.
    """
    src = _HANDLES.get(href)
    indexes = bands
    try:
        window = _aligned_window(src, grid)
        if window is not None:
            inside = (
                window.col_off >= 0
                and window.row_off >= 0
                and window.col_off + window.width <= src.width
                and window.row_off + window.height <= src.height
            )
            return src.read(indexes, window=window, boundless=not inside, fill_value=fill)
        with WarpedVRT(
            src,
            crs=grid.crs,
            transform=rasterio.Affine(*grid.transform),
            width=grid.width,
            height=grid.height,
            resampling=RESAMPLING[resampling],
            src_nodata=src.nodata,
            nodata=fill,
        ) as vrt:
            return vrt.read(indexes)
    except rasterio.errors.RasterioError as exc:
        raise RasterReadError(f"cannot read {_redact(href)}: {_first_line(exc)}", transient=_transient(exc)) from None


def close_thread_handles() -> None:
    """Close datasets opened by the calling thread (call when a worker ends)."""
    _HANDLES.close_thread()


def write_geotiff(path: str, array: np.ndarray, grid: Grid, *, nodata: float | None = None, cog: bool = True) -> None:
    """Write a (H, W) or (N, H, W) array on ``grid`` as a tiled, deflated GeoTIFF."""
    data = array[np.newaxis] if array.ndim == 2 else array
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": rasterio.Affine(*grid.transform),
        "nodata": nodata,
        "compress": "deflate",
    }
    if cog and grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
