"""Downsampling of RGB chips, class-index label tiles and boolean masks by exact area weights.

Output pixel ``j`` of an axis of ``n`` source pixels resized to ``size`` covers the source
interval ``[j * n / size, (j + 1) * n / size)``. Measured in units of ``1 / size`` source pixel
every overlap is an integer, so area sums of integer data are exact and ties are real ties.
With ``g = gcd(n, size)`` the overlaps repeat every ``n // g`` source pixels, so each axis is
one small batched matrix product (512 -> 224: 32 blocks of 16 -> 7); integer factors are plain
block sums.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

LabelMethod = Literal["majority", "nearest"]

_FLOAT32_EXACT_LIMIT = 2**24  # integers below this are exact in float32


def _check_size(shape: tuple[int, ...], size: int) -> None:
    if size < 1:
        raise ValueError(f"output size must be >= 1, got {size}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"cannot resample an empty array of shape {shape}")


def _block_weights(n: int, size: int) -> tuple[int, np.ndarray]:
    """Number of periods and the (size // g, n // g) overlap matrix of one period, g = gcd(n, size)."""
    periods = math.gcd(n, size)
    src = np.arange(n // periods, dtype=np.int64)[None, :]
    out = np.arange(size // periods, dtype=np.int64)[:, None]
    overlap = np.minimum((src + 1) * size, (out + 1) * n) - np.maximum(src * size, out * n)
    return periods, np.clip(overlap, 0, None)


def _sum_dtype(planes: np.ndarray) -> type[np.floating]:
    """float32 when every area integral is an integer it can hold exactly, else float64."""
    height, width = planes.shape[-2:]
    if planes.dtype == np.bool_:
        peak = 1
    elif planes.dtype.kind == "u":
        peak = int(np.iinfo(planes.dtype).max)
    else:
        return np.float64
    return np.float32 if peak * height * width < _FLOAT32_EXACT_LIMIT else np.float64


def _sum_within_blocks(blocks: np.ndarray, axis: int) -> np.ndarray:
    """Sum over a short block axis by adding slices (numpy reduces short inner axes slowly)."""
    def part(k: int) -> np.ndarray:
        return blocks[(slice(None),) * (blocks.ndim + axis) + (k,)]

    total = part(0).copy()
    for k in range(1, blocks.shape[axis]):
        total += part(k)
    return total


def _area_sums(planes: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Area integrals of (..., H, W) planes over each pixel of a (size, size) output grid.

    Returns the (..., size, size) integrals and the footprint area of one output pixel in the
    same units: ``integrals / area`` are area-weighted means. Integer input gives exact integers.
    """
    *lead, height, width = planes.shape
    dtype = _sum_dtype(planes)
    row_periods, row_weights = _block_weights(height, size)
    col_periods, col_weights = _block_weights(width, size)
    if planes.dtype == np.bool_:
        planes = planes.view(np.uint8)  # uint8 -> float converts much faster than bool -> float
    blocks = np.ascontiguousarray(planes, dtype=dtype).reshape(*lead, row_periods, height // row_periods, width)
    if row_weights.shape[0] == 1:  # integer factor: each source row lies wholly in one output row
        by_rows = _sum_within_blocks(blocks, axis=-2) * dtype(size)
    else:
        by_rows = np.matmul(row_weights.astype(dtype), blocks)
    blocks = by_rows.reshape(*lead, size, col_periods, width // col_periods)
    if col_weights.shape[0] == 1:
        sums = _sum_within_blocks(blocks, axis=-1) * dtype(size)
    else:
        flat = blocks.reshape(-1, width // col_periods)  # one large product instead of many small ones
        sums = flat @ col_weights.T.astype(dtype)
    return sums.reshape(*lead, size, size), height * width


def downsample_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Area-average an (H, W, C) image to (size, size, C) uint8.

    Integer input is averaged exactly and rounded half up (a 2x factor gives the rounded 2x2
    mean). Float input is taken on the 0-255 scale; NaN counts as 0; results are clipped.
    """
    image = np.asarray(rgb)
    if image.ndim != 3:
        raise ValueError(f"rgb must have shape (H, W, channels), got {image.shape}")
    _check_size(image.shape, size)
    if image.dtype.kind not in "uif":
        raise ValueError(f"rgb must be numeric, got dtype {image.dtype}")
    planes = np.moveaxis(image, -1, 0)
    if image.dtype.kind == "f":
        planes = np.nan_to_num(planes.astype(np.float64), nan=0.0)
    sums, area = _area_sums(planes, size)
    if image.dtype.kind == "f":
        means = np.floor(sums / area + 0.5)
    else:
        exact = np.rint(sums).astype(np.int64)  # already integers; rint only drops the float type
        means = (2 * exact + area) // (2 * area)  # exact round-half-up of exact / area
    return np.ascontiguousarray(np.moveaxis(np.clip(means, 0, 255).astype(np.uint8), 0, -1))


def shared_output_size(aoi_size: int, tile_size: int, size: int, offsets: list[int]) -> int | None:
    """Output size of the whole AOI when each tile's downsampling is a slice of the AOI's.

    Area weights repeat every ``tile_size // gcd(tile_size, size)`` source pixels; when the AOI
    and every tile offset are whole periods, resizing the AOI by the same factor and slicing
    gives the tiles' bytes exactly (the same integer area sums, scaled by one common
    factor). None when the layout does not allow it."""
    period = tile_size // math.gcd(tile_size, size)
    if aoi_size % period or any(offset % period for offset in offsets):
        return None
    return aoi_size * size // tile_size


def _nearest_indices(n: int, size: int) -> np.ndarray:
    """Source pixel under the centre of each output pixel: floor((j + 0.5) * n / size)."""
    return ((2 * np.arange(size, dtype=np.int64) + 1) * n) // (2 * size)


def downsample_labels(index: np.ndarray, size: int, method: LabelMethod = "majority", nodata: int = 255) -> np.ndarray:
    """Resize an (H, W) uint8 class-index tile to (size, size).

    ``nearest`` takes the source pixel at each output pixel's centre. ``majority`` takes the
    value covering the largest area of the output pixel's footprint (exact area weights);
    ``nodata`` competes like a class, ties go to the lowest class index and ``nodata`` loses
    every tie. Every output value occurs in the output pixel's source footprint.
    """
    labels = np.asarray(index)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"label index must be a uint8 array of shape (H, W), got {labels.dtype} {labels.shape}")
    _check_size(labels.shape, size)
    if method == "nearest":
        rows = _nearest_indices(labels.shape[0], size)
        cols = _nearest_indices(labels.shape[1], size)
        return labels[np.ix_(rows, cols)]
    if method != "majority":
        raise ValueError(f"label downsampling method must be 'majority' or 'nearest', got {method!r}")
    height, width = labels.shape
    row_taps, row_weights = _taps(height, size)
    col_taps, col_weights = _taps(width, size)
    # the lowest and highest value under each footprint (rows, then columns): where they agree,
    # that value wins; the taps may reach one pixel past a footprint, which only sends more to the vote
    rows = labels[row_taps]  # (size, taps, W)
    low, high = rows.min(axis=1).T.copy(), rows.max(axis=1).T.copy()  # (W, size): columns as rows
    low = np.minimum.reduce([low[col_taps[:, k]] for k in range(col_taps.shape[1])]).T
    high = np.maximum.reduce([high[col_taps[:, k]] for k in range(col_taps.shape[1])]).T
    winner = np.ascontiguousarray(low)
    mixed_rows, mixed_cols = np.nonzero(low != high)
    if mixed_rows.size:  # the others vote with exact integer area weights
        flat = (row_taps[mixed_rows] * width)[:, :, None] + col_taps[mixed_cols][:, None, :]
        values = labels.ravel().take(flat.reshape(mixed_rows.size, -1))
        present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))  # a class absent from a footprint never wins it
        candidates = np.concatenate([present[present != nodata], present[present == nodata]])
        area_units = int(row_weights.sum(axis=1).max()) * int(col_weights.sum(axis=1).max())
        exact: type[np.floating] = np.float32 if area_units < _FLOAT32_EXACT_LIMIT else np.float64  # integers held exactly
        weights = np.multiply(row_weights[mixed_rows][:, :, None], col_weights[mixed_cols][:, None, :], dtype=exact)
        weights = weights.reshape(mixed_rows.size, -1)
        best = np.full(mixed_rows.size, -1.0, dtype=exact)
        votes = np.empty(mixed_rows.size, dtype=np.uint8)
        for candidate in candidates:  # nodata last; strictly more: the first (lowest) of tied maxima wins
            area = np.einsum("ij,ij->i", weights, (values == candidate).astype(exact))
            wins = area > best
            votes[wins] = candidate
            np.maximum(best, area, out=best)
        winner[mixed_rows, mixed_cols] = votes
    return winner


def _taps(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The source pixels under each output pixel of an axis of ``n`` resized to ``size``: (size, k)
    indices and integer overlaps (in units of ``1 / gcd(n, size)``: a source pixel is
    ``size / gcd`` units, an output pixel ``n / gcd``), rows padded with the next index (or the
    first at the end of the axis) at weight 0."""
    out = np.arange(size, dtype=np.int64)
    first, last = out * n // size, ((out + 1) * n - 1) // size
    unclipped = first[:, None] + np.arange(int((last - first).max()) + 1)[None, :]
    inside = unclipped <= last[:, None]
    index = np.minimum(unclipped, n - 1)
    overlap = np.minimum((index + 1) * size, (out[:, None] + 1) * n) - np.maximum(index * size, out[:, None] * n)
    return index, np.where(inside, overlap, 0) // math.gcd(n, size)


def downsample_mask(mask: np.ndarray, size: int, threshold: float = 0.5) -> np.ndarray:
    """Resize an (H, W) boolean mask: True where the True fraction of the footprint >= threshold."""
    flags = np.asarray(mask, dtype=bool)
    if flags.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {flags.shape}")
    _check_size(flags.shape, size)
    sums, area = _area_sums(flags, size)
    return sums.astype(np.float64) / area >= threshold
