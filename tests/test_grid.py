"""AOI grids snap to the scene's pixel grid and are centred on the POI; tiles cover the AOI."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.grid import aoi_grid, bbox_wgs84, center_wgs84, project, project_points, sub_grid, tile_windows, utm_crs_for
from rsbuild.records import Poi


def test_tiles_default_layout_and_flush_edge():
    tiles = tile_windows(1024, 512, 256)
    assert [(t.col_off, t.row_off) for t in tiles[:4]] == [(0, 0), (256, 0), (512, 0), (0, 256)]
    assert len(tiles) == 9 and tiles[-1].col_off + 512 == 1024
    uneven = tile_windows(1000, 512, 256)
    assert sorted({t.col_off for t in uneven}) == [0, 256, 488]


def test_aoi_is_centred_and_snapped_to_scene_grid():
    scene_transform = (10.0, 0.0, 699960.0, 0.0, -10.0, 5000040.0)
    poi = Poi("p", 45.05, 17.65)
    grid = aoi_grid(poi, "EPSG:32633", 1024, scene_transform)
    a, _, c, _, e, f = grid.transform
    assert (a, e) == (10.0, -10.0)
    assert ((c - 699960.0) / 10).is_integer() and ((f - 5000040.0) / 10).is_integer()
    x, y = project("EPSG:4326", "EPSG:32633", poi.lon, poi.lat)
    assert abs((c + 512 * 10) - x) <= 5 and abs((f - 512 * 10) - y) <= 5
    lat, lon = center_wgs84(grid)
    assert lat == pytest.approx(45.05, abs=1e-4) and lon == pytest.approx(17.65, abs=1e-4)
    west, south, east, north = bbox_wgs84(grid)
    assert west < 17.65 < east and south < 45.05 < north


def test_sub_grid_offsets_and_utm_zone():
    grid = aoi_grid(Poi("p", 45.0, 15.0), "EPSG:32633", 64)
    tile = sub_grid(grid, tile_windows(64, 32, 32)[3])
    assert tile.transform[2] == grid.transform[2] + 320 and tile.transform[5] == grid.transform[5] - 320
    assert utm_crs_for(45.0, 17.9) == "EPSG:32633" and utm_crs_for(45.0, 18.1) == "EPSG:32634"
    assert utm_crs_for(-33.9, 18.4) == "EPSG:32734"


def test_project_points_gives_each_points_own_projection():
    """The AOI polygon's vertices go through pyproj in one call: the same coordinates, bit for
    bit, as projecting each vertex alone."""
    rng = np.random.default_rng(7)
    points = [(float(x), float(y)) for x, y in zip(rng.uniform(2e5, 8e5, 200), rng.uniform(1e6, 9e6, 200))]
    for crs in ("EPSG:32633", "EPSG:32718", "EPSG:3857"):
        assert project_points(crs, "EPSG:4326", points) == [project(crs, "EPSG:4326", x, y) for x, y in points]
