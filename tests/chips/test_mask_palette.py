"""Masks are palette PNGs: viewers show the scheme's colours, loaders still read class indices."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from rsbuild.chips.fetch import encode_png
from rsbuild.report.preview import overlay_png
from rsbuild.schemes import NODATA_INDEX, get_scheme

SCHEME = get_scheme("esa_worldcover")


def _mask() -> np.ndarray:
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = SCHEME.index_of("water")
    mask[0, 0] = NODATA_INDEX
    return mask


def test_mask_png_keeps_indices_and_carries_the_schemes_colours() -> None:
    mask = _mask()
    png = encode_png(mask, 1, SCHEME.colormap())
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), mask)  # what a loader reads: the class indices
        rgb = np.asarray(image.convert("RGB"))  # what a viewer shows
    assert tuple(rgb[5, 2]) == SCHEME.classes[0].color and tuple(rgb[5, 12]) == SCHEME.classes[int(mask[5, 12])].color
    assert encode_png(mask, 1, SCHEME.colormap()) == png  # deterministic bytes


def test_preview_overlay_reads_palette_and_grey_masks_alike() -> None:
    mask = _mask()
    assert overlay_png(encode_png(mask, 1, SCHEME.colormap()), SCHEME) == overlay_png(encode_png(mask, 1), SCHEME)
