"""Remote COG reads through rsbuild.sources.ranges: one shared header per file, one merged range
per band per AOI, pixels identical to GDAL reading the local file, clear messages for servers
that cannot serve COGs, datasets freed in any thread. The reader is the default
(``RSBUILD_HTTP_RANGES=NO`` turns it off)."""

from __future__ import annotations

import functools
import gc
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
from rsbuild.sources import ranges, raster_io, tiff
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
def default_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader as users get it, whatever the environment running the tests says."""
    monkeypatch.delenv(ranges.ENABLE, raising=False)
    for name in ranges.GDAL_HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)


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
    """With the off switch, and for users who configured GDAL's HTTP (headers, auth, proxies), GDAL's
    reader: same pixels."""
    monkeypatch.setenv(setting, "X-Test: 1" if setting == "GDAL_HTTP_HEADERS" else "NO")
    grid = aoi(100, 100, 300)
    pixels = raster_io.read_on_grid(f"{server.url}/band.tif", grid)
    raster_io.close_thread_handles()
    found = kinds(server)
    assert "probe" in found or found.count("data") == 2  # GDAL: a size probe, one request per row of blocks
    np.testing.assert_array_equal(pixels, raster_io.read_on_grid(str(cog_folder / "band.tif"), grid))


def test_ranges_closer_than_the_gap_merge() -> None:
    assert ranges.merged([(500, 600), (0, 100), (150, 200)], gap=50) == [(0, 200), (500, 600)]
    assert ranges.merged([(0, 100), (50, 80), (100, 120)], gap=0) == [(0, 120)]


def test_datasets_freed_in_any_thread_by_the_collector(server: RangeHTTPServer, cog_folder: Path) -> None:
    """Threads that end without closing their datasets, a missing file among the reads, and the
    garbage collector on the main thread freeing what they left (an earlier reader crashed here)."""
    url = f"{server.url}/band.tif"
    expected = raster_io.read_on_grid(str(cog_folder / "band.tif"), aoi(64, 64, 256))
    for _round in range(3):
        def read(index: int) -> np.ndarray | None:
            try:
                return raster_io.read_on_grid(url if index % 3 else f"{server.url}/missing{index}.tif", aoi(64, 64, 256))
            except raster_io.RasterReadError:
                return None

        threads = [threading.Thread(target=read, args=(index,)) for index in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        gc.collect()
    np.testing.assert_array_equal(raster_io.read_on_grid(url, aoi(64, 64, 256)), expected)


def test_a_block_the_plan_missed_is_read_by_gdal(server: RangeHTTPServer, cog_folder: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that needs a block outside its plan (here: a plan left empty) fails in the compact
    copy and is read through GDAL's /vsicurl/: the same pixels, never zeros."""
    monkeypatch.setattr(tiff.Layout, "block_ranges", lambda *_args: set())
    grid = aoi(300, 300, 600)
    pixels = raster_io.read_on_grid(f"{server.url}/band.tif", grid)
    raster_io.close_thread_handles()
    np.testing.assert_array_equal(pixels, raster_io.read_on_grid(str(cog_folder / "band.tif"), grid))
    assert kinds(server).count("data") >= 2  # GDAL's requests, one per row of blocks


def test_a_header_longer_than_the_first_bytes_costs_one_more_request(server: RangeHTTPServer, cog_folder: Path) -> None:
    """A GeoTIFF whose IFD GDAL moved to its end (metadata written after the pixels): a small file
    is then read whole, its pixels served from those bytes."""
    data = np.arange(700 * 600, dtype=np.uint16).reshape(1, 600, 700)
    with rasterio.open(cog_folder / "late.tif", "w", driver="GTiff", width=700, height=600, count=1, dtype="uint16",
                       tiled=True, crs=CRS, transform=Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])) as dst:
        dst.write(data)
        dst.update_tags(notes="x" * 100_000)
    pixels = raster_io.read_on_grid(f"{server.url}/late.tif", aoi(100, 200, 300))
    np.testing.assert_array_equal(pixels, data[0, 200:500, 100:400])
    assert len(server.request_log) == 2 and kinds(server)[0] == "header"
