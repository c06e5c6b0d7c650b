"""The chip grid: an AOI snapped to the scene's native UTM grid, and the tiles cut from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyproj import Transformer

from rsbuild.records import Grid, Poi

NATIVE_RESOLUTION_M = 10.0


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def project(crs_from: str, crs_to: str, x: float, y: float) -> tuple[float, float]:
    """Transform one point (x/lon first)."""
    return _transformer(crs_from, crs_to).transform(x, y)


def project_points(crs_from: str, crs_to: str, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Transform many points (x/lon first) in one call: the values `project` gives each."""
    xs, ys = zip(*points)
    out_x, out_y = _transformer(crs_from, crs_to).transform(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    return list(zip(out_x.tolist(), out_y.tolist()))


def utm_crs_for(lat: float, lon: float) -> str:
    """The WGS84 UTM zone CRS containing a point."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


@dataclass(frozen=True)
class TileWindow:
    """A native tile inside the AOI (pixel offsets relative to the AOI's top-left)."""

    index: int
    col_off: int
    row_off: int
    size: int


def aoi_grid(
    poi: Poi,
    crs: str,
    size: int,
    scene_transform: tuple[float, ...] | None = None,
    resolution: float = NATIVE_RESOLUTION_M,
) -> Grid:
    """A ``size`` x ``size`` grid centred on the POI, snapped to the scene's pixel grid.

    With the scene's 10 m transform the AOI shares its pixel edges, so band reads need no
    resampling. Without it, edges snap to multiples of the resolution (as Sentinel-2 tiles do).
    """
    x, y = project("EPSG:4326", crs, poi.lon, poi.lat)
    if scene_transform is not None:
        res_x, origin_x = scene_transform[0], scene_transform[2]
        res_y, origin_y = scene_transform[4], scene_transform[5]
    else:
        res_x, origin_x, res_y, origin_y = resolution, 0.0, -resolution, 0.0
    col = (x - origin_x) / res_x
    row = (y - origin_y) / res_y
    col0 = round(col - size / 2)
    row0 = round(row - size / 2)
    transform = (res_x, 0.0, origin_x + col0 * res_x, 0.0, res_y, origin_y + row0 * res_y)
    return Grid(crs=crs, transform=transform, width=size, height=size)


def tile_windows(aoi_size: int, tile_size: int, stride: int) -> list[TileWindow]:
    """Row-major tiles covering the AOI; a last row/column is added flush with the edge."""
    starts = list(range(0, aoi_size - tile_size + 1, stride))
    if starts[-1] != aoi_size - tile_size:
        starts.append(aoi_size - tile_size)
    windows: list[TileWindow] = []
    for row_off in starts:
        for col_off in starts:
            windows.append(TileWindow(len(windows), col_off, row_off, tile_size))
    return windows


def sub_grid(grid: Grid, window: TileWindow) -> Grid:
    """The grid of one tile."""
    a, b, c, d, e, f = grid.transform
    return Grid(
        crs=grid.crs,
        transform=(a, b, c + window.col_off * a, d, e, f + window.row_off * e),
        width=window.size,
        height=window.size,
    )


def grid_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in the grid's CRS."""
    a, _, c, _, e, f = grid.transform
    xs = (c, c + a * grid.width)
    ys = (f, f + e * grid.height)
    return min(xs), min(ys), max(xs), max(ys)


def bbox_wgs84(grid: Grid, densify: int = 8) -> tuple[float, float, float, float]:
    """The grid's footprint as a WGS84 (west, south, east, north) box, edges densified."""
    left, bottom, right, top = grid_bounds(grid)
    transformer = _transformer(grid.crs, "EPSG:4326")
    west, south, east, north = transformer.transform_bounds(left, bottom, right, top, densify_pts=densify)
    return round(west, 7), round(south, 7), round(east, 7), round(north, 7)


def center_wgs84(grid: Grid) -> tuple[float, float]:
    """(lat, lon) of the grid's centre."""
    left, bottom, right, top = grid_bounds(grid)
    lon, lat = project(grid.crs, "EPSG:4326", (left + right) / 2, (bottom + top) / 2)
    return round(lat, 7), round(lon, 7)
