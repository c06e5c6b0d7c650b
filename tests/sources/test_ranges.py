"""Remote COG reads through rsbuild.sources.ranges: one shared header per file, one merged range
per band per AOI, pixels identical to GDAL reading the local file, clear messages for servers
that cannot serve COGs. The reader is opt-in (``RSBUILD_HTTP_RANGES=YES``): these tests turn it on."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT

from rsbuild.records import Grid
from rsbuild.sources import ranges, raster_io
from rsbuild.testing.servers import RangeHTTPServer

SIZE, BLOCK, PIXEL_M = 1024, 256, 10.0
ORIGIN = (500000.0, 5000000.0)
CRS = "EPSG:32633"


@pytest.fixture(scope="module")
def cog_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024 px uint16 COG of seeded noise in 256 px blocks (4 x 4), and a 20 m copy of it."""
    folder = tmp_path_factory.mktemp("ranges")
    data = np.random.default_rng(7).integers(1, 10000, size=(SIZE, SIZE), dtype=np.uint16)
    coarse = data[::2, ::2].copy()
    coarse[100:120, 100:130] = 0  # nodata
    for name, array, pixel in (("band.tif", data, PIXEL_M), ("coarse.tif", coarse, 2 * PIXEL_M)):
        profile = {"driver": "COG", "width": array.shape[1], "height": array.shape[0], "count": 1, "dtype": "uint16",
                   "crs": CRS, "transform": Affine(pixel, 0, ORIGIN[0], 0, -pixel, ORIGIN[1]), "nodata": 0,
                   "blocksize": BLOCK, "compress": "DEFLATE", "overviews": "NONE"}
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(array[None])
    return folder


@pytest.fixture(autouse=True)
def ranges_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ranges.ENABLE, "YES")


@pytest.fixture()
def server(cog_folder: Path) -> Iterator[RangeHTTPServer]:
    """A fresh server per test: fresh URLs, so the process-wide header cache starts empty for them."""
    with RangeHTTPServer(cog_folder) as running:
        yield running


def aoi(col: int, row: int, size: int) -> Grid:
    """A ``size`` px grid at 10 m whose top-left is pixel (col, row) of the 10 m COG."""
    return Grid(CRS, (PIXEL_M, 0.0, ORIGIN[0] + col * PIXEL_M, 0.0, -PIXEL_M, ORIGIN[1] - row * PIXEL_M), size, size)


def kinds(server: RangeHTTPServer) -> list[str]:
    """Each request as 'probe' (no Range), 'header' (from byte 0) or 'data'."""
    return ["probe" if r.range is None else "header" if r.range.startswith("bytes=0-") else "data" for r in server.request_log]


def test_an_aoi_is_one_header_and_one_data_request_with_the_local_pixels(server: RangeHTTPServer, cog_folder: Path) -> None:
    url = f"{server.url}/band.tif"
    grid = aoi(300, 300, 600)  # blocks 1-3 in both directions: 9 of 16, three separate rows of the file
    pixels = raster_io.read_on_grid(url, grid)
    assert kinds(server) == ["header", "data"]
    expected = raster_io.read_on_grid(str(cog_folder / "band.tif"), grid)
    np.testing.assert_array_equal(pixels, expected)


def test_threads_opening_one_file_share_its_header(server: RangeHTTPServer, cog_folder: Path) -> None:
    """Eight threads open the same file at once: one header request in all, no size probes."""
    url = f"{server.url}/band.tif"
    grids = [aoi(40 * i, 30 * i, 400) for i in range(8)]
    barrier = threading.Barrier(8)

    def read(grid: Grid) -> np.ndarray:
        barrier.wait()
        try:
            return raster_io.read_on_grid(url, grid)
        finally:
            raster_io.close_thread_handles()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read, grids))
    found = kinds(server)
    assert found.count("header") == 1 and "probe" not in found
    assert found.count("data") == 8  # one per AOI
    for grid, pixels in zip(grids, results):
        np.testing.assert_array_equal(pixels, raster_io.read_on_grid(str(cog_folder / "band.tif"), grid))


def test_a_warped_read_plans_its_source_window(server: RangeHTTPServer, cog_folder: Path) -> None:
    """A grid in another UTM zone (a WarpedVRT, like a label raster): one data request, local pixels."""
    url = f"{server.url}/band.tif"
    x, y = rasterio.warp.transform(CRS, "EPSG:32634", [ORIGIN[0] + 3000.0], [ORIGIN[1] - 3000.0])
    grid = Grid("EPSG:32634", (PIXEL_M, 0.0, x[0], 0.0, -PIXEL_M, y[0]), 400, 400)
    pixels = raster_io.read_on_grid(url, grid)
    assert kinds(server) == ["header", "data"]
    np.testing.assert_array_equal(pixels, raster_io.read_on_grid(str(cog_folder / "band.tif"), grid))
    assert (pixels > 0).mean() > 0.5


@pytest.mark.parametrize(("col", "row", "size"), [(0, 0, 512), (301, 299, 500), (-7, 5, 300), (1900, 2000, 300)])
def test_a_raster_coarser_by_an_integer_factor_matches_gdals_nearest_warp(
    server: RangeHTTPServer, cog_folder: Path, col: int, row: int, size: int
) -> None:
    """A 20 m raster onto a 10 m grid (like SCL) is upsampled without a warp: the same pixels as
    GDAL's nearest WarpedVRT (nodata and outside -> fill), from one data request."""
    grid = aoi(col, row, size)
    with rasterio.open(cog_folder / "coarse.tif") as src, WarpedVRT(
        src, crs=CRS, transform=Affine(*grid.transform), width=size, height=size, resampling=Resampling.nearest,
        src_nodata=0, nodata=7,
    ) as vrt:
        expected = vrt.read(1)
    pixels = raster_io.read_on_grid(f"{server.url}/coarse.tif", grid, fill=7)
    np.testing.assert_array_equal(pixels, expected)
    assert kinds(server) in (["header"], ["header", "data"])
    if (col, row) == (0, 0):
        assert (pixels[200:240, 200:260] == 7).all() and (pixels == 7).sum() < 40 * 60 + 50  # nodata block only


def test_an_aoi_partly_outside_the_file_is_filled(server: RangeHTTPServer, cog_folder: Path) -> None:
    url = f"{server.url}/band.tif"
    grid = aoi(SIZE - 100, -50, 300)
    pixels = raster_io.read_on_grid(url, grid, fill=0)
    np.testing.assert_array_equal(pixels, raster_io.read_on_grid(str(cog_folder / "band.tif"), grid, fill=0))
    assert (pixels[:50] == 0).all() and (pixels[:, 100:] == 0).all() and (pixels[50:, :100] > 0).all()


def test_a_server_that_ignores_ranges_is_named_not_retried(cog_folder: Path) -> None:
    """`python -m http.server` answers 200 with the whole file: a permanent, readable error."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(cog_folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(raster_io.RasterReadError) as info:
            raster_io.read_on_grid(f"http://127.0.0.1:{httpd.server_address[1]}/band.tif?token=secret", aoi(0, 0, 64))
    finally:
        httpd.shutdown()
        httpd.server_close()
    message = str(info.value)
    assert "ignores HTTP Range requests" in message and "band.tif" in message and "secret" not in message
    assert not info.value.transient and not info.value.cause


def test_a_missing_file_says_404(server: RangeHTTPServer) -> None:
    with pytest.raises(raster_io.RasterReadError) as info:
        raster_io.read_on_grid(f"{server.url}/nope.tif", aoi(0, 0, 64))
    assert "HTTP 404" in str(info.value) and not info.value.transient


@pytest.mark.parametrize("setting", ["GDAL_HTTP_HEADERS", "RSBUILD_HTTP_RANGES"])
def test_gdal_http_settings_send_reads_through_gdal(server: RangeHTTPServer, cog_folder: Path,
                                                    monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    """Without the opt-in, and for users who configured GDAL's HTTP (headers, auth, proxies), GDAL's
    reader: same pixels."""
    if setting == "GDAL_HTTP_HEADERS":
        monkeypatch.setenv(setting, "X-Test: 1")
    else:
        monkeypatch.delenv(setting)
    grid = aoi(100, 100, 300)
    pixels = raster_io.read_on_grid(f"{server.url}/band.tif", grid)
    raster_io.close_thread_handles()
    found = kinds(server)
    assert "probe" in found or found.count("data") == 2  # GDAL: a size probe, one request per row of blocks
    np.testing.assert_array_equal(pixels, raster_io.read_on_grid(str(cog_folder / "band.tif"), grid))


def test_ranges_closer_than_the_gap_merge() -> None:
    assert ranges.merged([(500, 600), (0, 100), (150, 200)], gap=50) == [(0, 200), (500, 600)]
    assert ranges.merged([(0, 100), (50, 80), (100, 120)], gap=0) == [(0, 120)]
