"""Chip and mask PNGs (fetch.encode_png): lossless for every shape and mode, the same bytes every
time, read back by Pillow, and checked chunk by chunk (CRCs, no time or text chunks)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rsbuild.chips.fetch import encode_png
from rsbuild.schemes import get_scheme

PALETTE = get_scheme("esa_worldcover").colormap()


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, every CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    found, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        found.append((kind, data))
        at += 12 + length
    return found


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    smooth = np.cumsum(rng.integers(-3, 4, size=(224, 224, 3)), axis=1).clip(0, 255).astype(np.uint8)
    return [
        smooth,  # a chip-like gradient image
        rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8),  # noise, odd sizes
        np.zeros((1, 1, 3), np.uint8),
        np.full((5, 300, 3), 255, np.uint8),
        rng.integers(0, 256, size=(64, 65), dtype=np.uint8),  # grey
    ]


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_pixels_come_back_exactly(index: int, level: int) -> None:
    array = _images()[index]
    png = encode_png(array, level)
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == ("RGB" if array.ndim == 3 else "L")
        np.testing.assert_array_equal(np.asarray(image), array)
    assert encode_png(array, level) == png
    kinds = [kind for kind, _ in _chunks(png)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}  # no time or text chunks


def test_a_palette_mask_keeps_its_indices_and_colours() -> None:
    mask = np.random.default_rng(5).choice(np.array([0, 1, 4, 7, 255], np.uint8), size=(224, 224))
    png = encode_png(mask, 1, PALETTE)
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), mask)
        assert image.getpalette()[: 3 * 256] == PALETTE.astype(np.uint8).ravel().tolist()
    chunks = dict(_chunks(png))
    assert len(chunks[b"PLTE"]) == 768
    raw = zlib.decompress(b"".join(data for kind, data in _chunks(png) if kind == b"IDAT"))
    assert raw[:: 224 + 1] == bytes(224)  # palette rows are never filtered (filter type 0)


def test_a_chip_is_smaller_than_its_raw_pixels() -> None:
    chip = _images()[0]
    assert len(encode_png(chip, 1)) < 0.8 * chip.nbytes
