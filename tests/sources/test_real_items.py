"""Real catalog items (tests/data/items) read through the real search path.

Each item is served by ``rustac serve`` on 127.0.0.1 (one server per catalog, as the catalogs
are separate APIs). Its asset hrefs point at small COGs on a range-capable loopback server that
sit on the item's own pixel grid: a 64-pixel window of the tile (from the item's real
``proj:transform``) around its footprint's centroid, with DN that encode the tile row and column.
A POI at the window's centre is searched with the catalog's preset; the test then checks the
bands chosen, CRS, transform, scale and offset, and reads the AOI to check that every pixel is
the DN of its tile position and that reflectance = DN x scale + offset with the offset the
processing baseline calls for.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shapely.geometry import shape

from rsbuild.chips.imagery import to_reflectance
from rsbuild.config import ScenesConfig
from rsbuild.grid import aoi_grid, project
from rsbuild.records import Grid, Poi, Scene
from rsbuild.sources import raster_io
from rsbuild.sources.assets import LAYOUTS, item_as_dict
from rsbuild.sources.stac import SceneSearcher
from rsbuild.testing.servers import RangeHTTPServer, RustacServer

ITEMS = Path(__file__).resolve().parents[1] / "data" / "items"
WINDOW = 64  # pixels of the 10 m grid in each local COG
AOI = 32


@dataclass(frozen=True)
class RealItem:
    """One real item and what a correct reading of it is."""

    file: str
    server: str  # items of one catalog share a loopback API
    preset: str
    layout: str
    crs: str
    transform: tuple[float, ...]
    shape: tuple[int, int]
    offset: float  # reflectance offset of the red / green / blue bands


REAL_ITEMS = [
    RealItem("earth-search_sentinel-2-l2a_N0509_S2A_39QTA_20230628_0_L2A.json", "earth-search", "earth-search-v1",
             "earth-search-v1", "EPSG:32639", (10, 0, 199980, 0, -10, 2100000), (10980, 10980), 0.0),
    RealItem("earth-search_sentinel-2-c1-l2a_N0511_S2B_T38XNF_20250422T091553_L2A.json", "earth-search", "earth-search-c1",
             "earth-search-v1", "EPSG:32638", (10, 0, 499980, 0, -10, 8100000), (10980, 10980), -0.1),
    RealItem("pc_sentinel-2-l2a_N0212_S2B_MSIL2A_20190629T212529_R043_T06VVN.json", "planetary-computer",
             "planetary-computer", "planetary-computer", "EPSG:32606", (10, 0, 399960, 0, -10, 6800040), (10980, 10980), 0.0),
    RealItem("earth-search-v0_sentinel-s2-l2a-cogs_N0214_S2A_28QCH_20200714_0_L2A.json", "earth-search-v0", "custom",
             "earth-search-v0", "EPSG:32628", (10, 0, 300000, 0, -10, 2300040), (10980, 10980), 0.0),
    RealItem("cdse_sentinel-2-l2a_N0511_S2C_MSIL2A_20250330T100051_R122_T33UWP.json", "cdse", "cdse",
             "cdse", "EPSG:32633", (10, 0, 499980, 0, -10, 5400000), (10980, 10980), -0.1),
]  # fmt: skip


def load_item(file: str) -> dict[str, Any]:
    return json.loads((ITEMS / file).read_text())


def tile_dn(rows: np.ndarray, cols: np.ndarray, band: int) -> np.ndarray:
    """The DN written at tile (row, col) of band ``band`` (0 red, 1 green, 2 blue): position-coded."""
    return (1500 + 400 * band + (rows * 7 + cols * 3) % 1000).astype(np.uint16)


@dataclass(frozen=True)
class LocalTile:
    """Where an item's local COGs sit: the first tile row / column of the window, and its POI."""

    row0: int
    col0: int
    poi: Poi


def local_tile(item: dict[str, Any], crs: str, transform: tuple[float, ...]) -> LocalTile:
    """A window of the tile grid around the footprint's centroid (even offsets keep 20 m aligned)."""
    centroid = shape(item["geometry"]).centroid
    x, y = project("EPSG:4326", crs, centroid.x, centroid.y)
    col = int((x - transform[2]) / transform[0]) // 2 * 2 - WINDOW // 2
    row = int((y - transform[5]) / transform[4]) // 2 * 2 - WINDOW // 2
    cx = transform[2] + (col + WINDOW / 2) * transform[0]
    cy = transform[5] + (row + WINDOW / 2) * transform[4]
    lon, lat = project(crs, "EPSG:4326", cx, cy)
    return LocalTile(row, col, Poi(poi_id=item["id"][:20].replace(".", "_"), lat=lat, lon=lon))


def write_local_cogs(folder: Path, case: RealItem, where: LocalTile) -> dict[str, Path]:
    """COGs for red / green / blue (10 m), visual (10 m, 3 bands) and SCL (20 m) of the window."""
    folder.mkdir(parents=True, exist_ok=True)
    a, _, c, _, e, f = case.transform
    grid = Grid(case.crs, (a, 0.0, c + where.col0 * a, 0.0, e, f + where.row0 * e), WINDOW, WINDOW)
    rows, cols = np.mgrid[where.row0 : where.row0 + WINDOW, where.col0 : where.col0 + WINDOW]
    paths: dict[str, Path] = {}
    for index, band in enumerate(("red", "green", "blue")):
        paths[band] = folder / f"{band}.tif"
        raster_io.write_geotiff(str(paths[band]), tile_dn(rows, cols, index), grid, nodata=0)
    paths["visual"] = folder / "visual.tif"
    visual = np.stack([(tile_dn(rows, cols, i) // 16).astype(np.uint8) for i in range(3)])
    raster_io.write_geotiff(str(paths["visual"]), visual, grid, nodata=0)
    scl_grid = Grid(case.crs, (2 * a, 0.0, grid.transform[2], 0.0, 2 * e, grid.transform[5]), WINDOW // 2, WINDOW // 2)
    paths["scl"] = folder / "scl.tif"
    raster_io.write_geotiff(str(paths["scl"]), np.full((WINDOW // 2, WINDOW // 2), 4, np.uint8), scl_grid, nodata=0)
    return paths


def served_item(item: dict[str, Any], layout: str, hrefs: dict[str, str]) -> dict[str, Any]:
    """The item with the assets rsbuild reads pointed at ``hrefs`` (canonical band -> URL)."""
    served = copy.deepcopy(item)
    for band, href in hrefs.items():
        served["assets"][LAYOUTS[layout].keys[band]]["href"] = href
    return served


def write_api_files(folder: Path, items: list[dict[str, Any]]) -> list[Path]:
    """Collection and item-collection files for ``rustac serve`` (one collection per item's id)."""
    folder.mkdir(parents=True, exist_ok=True)
    collections: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        collections.setdefault(item["collection"], []).append(item)
    paths: list[Path] = []
    for name in collections:
        collection = {
            "type": "Collection", "stac_version": "1.1.0", "id": name, "description": name, "license": "proprietary",
            "links": [], "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
        }  # fmt: skip
        paths.append(folder / f"collection-{name}.json")
        paths[-1].write_text(json.dumps(collection))
    for name, members in collections.items():
        paths.append(folder / f"items-{name}.json")
        paths[-1].write_text(json.dumps({"type": "FeatureCollection", "features": members}))
    return paths


@dataclass
class Served:
    """What the module fixture set up for one real item."""

    case: RealItem
    item: dict[str, Any]
    where: LocalTile
    catalog_url: str
    hrefs: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    root = tmp_path_factory.mktemp("real_items")
    with ExitStack() as stack:
        cogs = stack.enter_context(RangeHTTPServer(root / "cogs"))
        by_server: dict[str, list[dict[str, Any]]] = {}
        prepared: dict[str, tuple[RealItem, dict[str, Any], LocalTile, dict[str, str]]] = {}
        for case in REAL_ITEMS:
            item = load_item(case.file)
            where = local_tile(item, case.crs, case.transform)
            paths = write_local_cogs(root / "cogs" / item["id"], case, where)
            hrefs = {band: f"{cogs.url}/{item['id']}/{path.name}" for band, path in paths.items()}
            by_server.setdefault(case.server, []).append(served_item(item, case.layout, hrefs))
            prepared[case.file] = (case, item, where, hrefs)
        urls = {name: stack.enter_context(RustacServer(write_api_files(root / name, items))).url for name, items in by_server.items()}
        yield {file: Served(case, item, where, urls[case.server], hrefs) for file, (case, item, where, hrefs) in prepared.items()}


def search(entry: Served, **changes: Any) -> Scene:
    """The scene the catalog's preset finds for the POI at the centre of the local window."""
    date = entry.item["properties"]["datetime"][:10]
    cfg = ScenesConfig(
        preset=entry.case.preset, catalog=entry.catalog_url, collection=entry.item["collection"], layout=entry.case.layout,
        datetime=date, max_cloud_cover=100.0, sign_hrefs="none", **changes,
    )  # fmt: skip
    found = SceneSearcher(cfg, required=("red", "green", "blue", "visual", "scl")).find(entry.where.poi, AOI * 5.0)
    assert isinstance(found, Scene), found
    return found


@pytest.mark.parametrize("case", REAL_ITEMS, ids=lambda case: case.file.split("_N")[0])
def test_real_item_resolves_bands_grid_and_radiometry(served: dict[str, Served], case: RealItem) -> None:
    entry = served[case.file]
    scene = search(entry)
    keys = LAYOUTS[case.layout].keys
    assert scene.id == entry.item["id"] and scene.collection == entry.item["collection"]
    assert {band: asset.key for band, asset in scene.assets.items()} == {band: keys[band] for band in keys}
    assert {band: asset.href for band, asset in scene.assets.items()} == entry.hrefs
    assert scene.crs == case.crs
    assert scene.transform == pytest.approx(case.transform) and scene.shape == case.shape
    for band in ("red", "green", "blue"):
        asset = scene.assets[band]
        assert (asset.scale, asset.offset, asset.nodata) == pytest.approx((1e-4, case.offset, 0.0)), band
    for band in ("visual", "scl"):
        assert (scene.assets[band].scale, scene.assets[band].offset) == (1.0, 0.0), band

    grid = aoi_grid(entry.where.poi, scene.crs, AOI, scene.transform)
    col0 = round((grid.transform[2] - case.transform[2]) / case.transform[0])
    row0 = round((grid.transform[5] - case.transform[5]) / case.transform[4])
    rows, cols = np.mgrid[row0 : row0 + AOI, col0 : col0 + AOI]
    for index, band in enumerate(("red", "green", "blue")):
        dn = raster_io.read_on_grid(scene.assets[band].href, grid)
        np.testing.assert_array_equal(dn, tile_dn(rows, cols, index))  # the item's transform puts pixels right
        reflectance, valid = to_reflectance(dn, scene.assets[band])
        assert valid.all()
        np.testing.assert_allclose(reflectance, dn * 1e-4 + case.offset, atol=1e-6)
    scl = raster_io.read_on_grid(scene.assets["scl"].href, grid)
    assert scl.shape == (AOI, AOI) and (scl == 4).all()


def with_property(item: dict[str, Any], **properties: Any) -> dict[str, Any]:
    changed = copy.deepcopy(item)
    changed["properties"].update(properties)
    return changed


def resolved_offsets(item: dict[str, Any], layout: str) -> dict[str, float]:
    from rsbuild.sources.assets import resolve_assets

    return {band: asset.offset for band, asset in resolve_assets(item_as_dict(item), layout).items()}


def test_earth_search_offset_follows_the_flag_and_the_baseline() -> None:
    """The real sentinel-2-l2a item with one property changed: what Earth Search publishes otherwise."""
    item = load_item(REAL_ITEMS[0].file)
    assert item["assets"]["red"]["raster:bands"][0]["offset"] == -0.1  # declared on every variant below
    flag_false = resolved_offsets(with_property(item, **{"earthsearch:boa_offset_applied": False}), "earth-search-v1")
    assert {band: flag_false[band] for band in ("red", "green", "blue")} == pytest.approx({"red": -0.1, "green": -0.1, "blue": -0.1})
    old = with_property(item, **{"s2:processing_baseline": "03.01", "earthsearch:boa_offset_applied": False})
    assert resolved_offsets(old, "earth-search-v1")["red"] == 0.0  # DN before 04.00 carry no BOA offset
    unflagged_old = copy.deepcopy(old)
    del unflagged_old["properties"]["earthsearch:boa_offset_applied"], unflagged_old["properties"]["s2:processing_baseline"]
    unflagged_old["properties"]["s2:product_uri"] = "S2A_MSIL2A_20210628T070631_N0301_R106_T39QTA_20210628T113955.SAFE"
    assert resolved_offsets(unflagged_old, "earth-search-v1")["red"] == 0.0  # baseline read from the product id
    assert resolved_offsets(item, "earth-search-v1")["scl"] == 0.0


def test_planetary_computer_offset_from_baseline_04_on() -> None:
    """The real 02.12 item re-labelled 05.10: Planetary Computer declares nothing, rsbuild derives -0.1."""
    item = load_item(REAL_ITEMS[2].file)
    assert "raster:bands" not in item["assets"]["B04"]
    newer = with_property(item, **{"s2:processing_baseline": "05.10"})
    assert resolved_offsets(newer, "planetary-computer")["red"] == pytest.approx(-0.1)
    assert resolved_offsets(item, "planetary-computer")["red"] == 0.0
