"""Compact copies of TIFFs (rsbuild.sources.tiff): the header and a read's blocks decode to the
whole file's pixels, in every layout GDAL writes; a block not in the copy is a read error, never
other bytes; headers the module cannot copy say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.windows import Window

from rsbuild.sources import ranges, tiff

DATA = np.random.default_rng(3).integers(1, 250, size=(3, 600, 700), dtype=np.uint8)
LAYOUTS: dict[str, dict[str, Any]] = {
    "COG with overviews": {"driver": "COG", "blocksize": 256, "overviews": "AUTO"},
    "tiled, band-interleaved": {"tiled": True, "blockxsize": 256, "blockysize": 256, "interleave": "band"},
    "tiled, pixel-interleaved": {"tiled": True, "blockxsize": 128, "blockysize": 128, "interleave": "pixel"},
    "strips": {"interleave": "band"},
    "big-endian BigTIFF": {"tiled": True, "BIGTIFF": "YES", "ENDIANNESS": "BIG"},
}


def write(path: Path, options: dict[str, Any]) -> bytes:
    profile = {"driver": "GTiff", "width": 700, "height": 600, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(10, 0, 500000, 0, -10, 5000000), "compress": "DEFLATE", **options}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(DATA)
    return path.read_bytes()


def copy_for(raw: bytes, layout: tiff.Layout, bands: list[int], window: Window) -> bytes:
    blocks = layout.block_ranges(bands, int(window.col_off), int(window.row_off), int(window.width), int(window.height))
    spans = [(a, raw[a:b]) for a, b in ranges.merged(((a - 4, b + 4) for a, b in blocks), gap=0)]
    return layout.compact(raw, spans)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_copy_decodes_to_the_files_pixels_and_fails_outside_its_blocks(tmp_path: Path, name: str) -> None:
    raw = write(tmp_path / "image.tif", LAYOUTS[name])
    layout = tiff.read_layout(raw[:32768], len(raw))
    window = Window(260, 270, 190, 180)
    copy = copy_for(raw, layout, [1, 3], window)
    assert len(copy) < len(raw) * 0.7
    with MemoryFile(copy) as memory, memory.open() as src:
        np.testing.assert_array_equal(src.read([1, 3], window=window), DATA[[0, 2], 270:450, 260:450])
        with pytest.raises(rasterio.errors.RasterioIOError):
            src.read(1, window=Window(0, 500, 100, 100))  # blocks not fetched
        with pytest.raises(rasterio.errors.RasterioIOError):
            src.read(1, out_shape=(150, 175))  # overviews (or the whole image): none fetched


def test_a_structure_past_the_first_bytes_asks_for_more(tmp_path: Path) -> None:
    """GDAL rewrites the IFD at the end of a file whose metadata grew after its pixels were written."""
    path = tmp_path / "late.tif"
    with rasterio.open(path, "w", driver="GTiff", width=700, height=600, count=3, dtype="uint8", tiled=True,
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000)) as dst:
        dst.write(DATA)
        dst.update_tags(notes="x" * 100_000)
    raw = path.read_bytes()
    with pytest.raises(tiff.NeedBytes) as need:
        tiff.read_layout(raw[:32768], len(raw))
    assert 32768 < need.value.size <= len(raw)
    layout = tiff.read_layout(raw, len(raw))
    window = Window(0, 0, 700, 600)
    with MemoryFile(copy_for(raw, layout, [2], window)) as memory, memory.open() as src:
        np.testing.assert_array_equal(src.read(2), DATA[1])
        assert src.tags()["notes"] == "x" * 100_000


def test_what_is_not_a_tiff_is_unsupported() -> None:
    with pytest.raises(tiff.Unsupported):
        tiff.read_layout(b"<html>not found</html>" * 10, 220)
    with pytest.raises(tiff.NeedBytes):
        tiff.read_layout(b"II", 1000)
