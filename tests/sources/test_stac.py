"""Scene search: filter modes, scene choice, failure reasons, static catalogs.

Unit tests run against hand-written Earth Search v1 style items, served either as a static
catalog written with pystac or by a small STAC API on 127.0.0.1 (``ItemApi`` below) whose
conformance classes each test chooses and which records every search body it receives.
Integration tests run the synthetic fixture behind ``rustac serve`` (no filter extension:
client-side cloud filtering), stac-fastapi-static (CQL2 filter) and a static catalog.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pystac
import pytest
from pyproj import Transformer
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import Polygon

from rsbuild.config import ScenesConfig
from rsbuild.errors import ConfigError, InputError, MissingExtraError
from rsbuild.records import Failure, Poi, Scene
from rsbuild.sources.stac import (
    ItemFinder,
    SceneSearcher,
    SearchError,
    aoi_polygon,
    parse_interval,
)
from rsbuild.testing.processes import send_json
from rsbuild.testing.servers import RangeHTTPServer, RustacServer, StacFastapiStaticServer
from rsbuild.testing.synthetic import (
    DN_OFFSET,
    DN_SCALE,
    LABEL_COLLECTION,
    NOBLUE_COLLECTION,
    PIXEL_M,
    SCENES,
    FixtureInfo,
    SceneSpec,
)

CRS = "EPSG:32633"
TILE = (500000.0, 5090200.0, 609800.0, 5200000.0)  # x0, y0, x1, y1 of a Sentinel-2 tile in CRS
WEST_EDGE_X = 554900.0  # the partial scene covers x0..WEST_EDGE_X only
HALF_M = 2000.0
COG_HOST = "http://127.0.0.1:9/cogs"  # never fetched by scene search

CONF_CORE = "https://api.stacspec.org/v1.0.0/core"
CONF_SEARCH = "https://api.stacspec.org/v1.0.0/item-search"
CONF_FILTER = "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter"
CONF_QUERY = "https://api.stacspec.org/v1.0.0/item-search#query"
CONF_SORT = "https://api.stacspec.org/v1.0.0/item-search#sort"

_to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def utm_poi(poi_id: str, x: float, y: float) -> Poi:
    lon, lat = _to_wgs84.transform(x, y)
    return Poi(poi_id, lat, lon)


EAST = utm_poi("east", 580000.0, 5150000.0)  # outside the partial scene
WEST = utm_poi("west", 520000.0, 5150000.0)  # well inside the partial scene
STRADDLE = utm_poi("straddle", WEST_EDGE_X - 900.0, 5150000.0)  # AOI crosses the partial scene's edge
RIM = utm_poi("rim", TILE[2] - 800.0, 5150000.0)  # AOI crosses every scene's east edge
FAR = Poi("far", -33.9, 151.2)


def footprint(x0: float, y0: float, x1: float, y1: float, per_edge: int = 10) -> dict[str, Any]:
    """Densified WGS84 polygon of a rectangle in CRS, as real Sentinel-2 footprints are."""
    ring = []
    for i in range(per_edge):
        t = i / per_edge
        ring.append((x0 + (x1 - x0) * t, y0))
    for i in range(per_edge):
        t = i / per_edge
        ring.append((x1, y0 + (y1 - y0) * t))
    for i in range(per_edge):
        t = i / per_edge
        ring.append((x1 - (x1 - x0) * t, y1))
    for i in range(per_edge):
        t = i / per_edge
        ring.append((x0, y1 - (y1 - y0) * t))
    lonlat = [list(_to_wgs84.transform(x, y)) for x, y in ring]
    return {"type": "Polygon", "coordinates": [lonlat + [lonlat[0]]]}


def scene_item(
    item_id: str,
    cloud: float,
    date: str,
    *,
    west_half: bool = False,
    collection: str = "sentinel-2-l2a",
    drop: tuple[str, ...] = (),
    proj_code: str = CRS,
) -> dict[str, Any]:
    """An Earth Search v1 style item over TILE (or its west half)."""
    x1 = WEST_EDGE_X if west_half else TILE[2]
    geometry = footprint(TILE[0], TILE[1], x1, TILE[3])
    lons = [p[0] for p in geometry["coordinates"][0]]
    lats = [p[1] for p in geometry["coordinates"][0]]
    raster = {"raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]}
    assets = {
        key: {"href": f"{COG_HOST}/{item_id}/{key}.tif", "type": "image/tiff; application=geotiff", **raster}
        for key in ("red", "green", "blue", "visual", "scl")
        if key not in drop
    }
    if "red" in assets:
        assets["red"]["proj:transform"] = [10.0, 0.0, TILE[0], 0.0, -10.0, TILE[3]]
        assets["red"]["proj:shape"] = [10980, 10980]
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": collection,
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "geometry": geometry,
        "properties": {"datetime": f"{date}T10:00:00Z", "eo:cloud_cover": cloud, "proj:code": proj_code},
        "assets": assets,
        "links": [],
    }


CLEAR = scene_item("S2A_CLEAR_20240710", 4.0, "2024-07-10")
CLOUDY = scene_item("S2B_CLOUDY_20240715", 65.0, "2024-07-15")
PARTIAL = scene_item("S2A_PARTIAL_20240720", 1.0, "2024-07-20", west_half=True)
HAZY = scene_item("S2B_HAZY_20240712", 12.0, "2024-07-12")
NOBLUE = scene_item("S2A_NOBLUE_20240710", 4.0, "2024-07-10", collection="noblue", drop=("blue",))
TIE_EARLY = scene_item("S2A_TIE_20240705", 4.0, "2024-07-05", collection="ties")
TIE_LATE = scene_item("S2B_TIE_20240725", 4.0, "2024-07-25", collection="ties")
ALL_ITEMS = [CLEAR, CLOUDY, PARTIAL, HAZY, NOBLUE, TIE_EARLY, TIE_LATE]


def scenes_config(catalog: str, **overrides: Any) -> ScenesConfig:
    settings: dict[str, Any] = {"catalog": catalog, "datetime": "2024-07-01/2024-07-31", "max_cloud_cover": 20.0}
    settings.update(overrides)
    return ScenesConfig(**settings)


# -- a static catalog written with pystac -------------------------------------------------


@pytest.fixture(scope="module")
def handwritten_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    catalog = pystac.Catalog("test-catalog", "hand-written scenes")
    collections: dict[str, pystac.Collection] = {}
    for raw in ALL_ITEMS:
        item = pystac.Item.from_dict(json.loads(json.dumps(raw)))
        if raw["id"] == CLEAR["id"]:
            item.assets["scl"].href = "./SCL.tif"  # relative to the item's own JSON
        collection_id = raw["collection"]
        if collection_id not in collections:
            extent = pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]]))
            collections[collection_id] = pystac.Collection(collection_id, collection_id, extent)
            catalog.add_child(collections[collection_id])
        collections[collection_id].add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def test_static_catalog_picks_least_cloudy_covering_scene(handwritten_catalog: Path) -> None:
    searcher = SceneSearcher(scenes_config(str(handwritten_catalog)))
    assert searcher.filter_mode == "client"
    scene = searcher.find(EAST, HALF_M)
    assert isinstance(scene, Scene)
    assert scene.id == CLEAR["id"]  # PARTIAL (1 %) misses the AOI, CLOUDY (65 %) is over the limit
    assert scene.crs == CRS and scene.cloud_cover == 4.0
    assert scene.assets["red"].href == f"{COG_HOST}/{CLEAR['id']}/red.tif"
    assert scene.assets["scl"].href == str(handwritten_catalog.parent / "sentinel-2-l2a" / CLEAR["id"] / "SCL.tif")


def test_partial_footprint_is_chosen_inside_and_refused_outside(handwritten_catalog: Path) -> None:
    searcher = SceneSearcher(scenes_config(str(handwritten_catalog)))
    inside = searcher.find(WEST, HALF_M)
    assert isinstance(inside, Scene) and inside.id == PARTIAL["id"] and inside.cloud_cover == 1.0
    straddling = searcher.find(STRADDLE, HALF_M)
    assert isinstance(straddling, Scene) and straddling.id == CLEAR["id"]
    assert [s.id for s in searcher.candidates(WEST, HALF_M, limit=5)] == [PARTIAL["id"], CLEAR["id"], HAZY["id"]]
    assert [s.id for s in searcher.candidates(STRADDLE, HALF_M, limit=1)] == [CLEAR["id"]]


def test_far_poi_has_no_scene(handwritten_catalog: Path) -> None:
    result = SceneSearcher(scenes_config(str(handwritten_catalog))).find(FAR, HALF_M)
    assert isinstance(result, Failure)
    assert (result.stage, result.reason, result.poi_id) == ("search", "no_scene", "far")


def test_scenes_touching_but_not_holding_the_aoi(handwritten_catalog: Path) -> None:
    searcher = SceneSearcher(scenes_config(str(handwritten_catalog)))
    result = searcher.find(RIM, HALF_M)
    assert isinstance(result, Failure) and result.reason == "aoi_not_covered"
    assert CLEAR["id"] in result.detail
    assert isinstance(searcher.find(RIM, 500.0), Scene)  # a smaller AOI fits inside the tile
    assert searcher.candidates(RIM, HALF_M, limit=3) == []


def test_missing_asset_names_the_band_and_the_scene(handwritten_catalog: Path) -> None:
    cfg = scenes_config(str(handwritten_catalog), collection="noblue")
    result = SceneSearcher(cfg).find(EAST, HALF_M)
    assert isinstance(result, Failure) and result.reason == "missing_asset"
    assert "blue" in result.detail and NOBLUE["id"] in result.detail
    visual_only = SceneSearcher(cfg, required=("visual",)).find(EAST, HALF_M)
    assert isinstance(visual_only, Scene) and visual_only.id == NOBLUE["id"]


def test_cloud_ties_go_to_the_scene_nearest_the_target_date(handwritten_catalog: Path) -> None:
    def chosen(**overrides: Any) -> str:
        scene = SceneSearcher(scenes_config(str(handwritten_catalog), collection="ties", **overrides)).find(EAST, HALF_M)
        assert isinstance(scene, Scene)
        return scene.id

    assert chosen(target_date="2024-07-24") == TIE_LATE["id"]
    assert chosen(target_date="2024-07-06") == TIE_EARLY["id"]
    assert chosen(datetime="2024-07-01/2024-07-21") == TIE_EARLY["id"]  # middle: July 11
    assert chosen(datetime="2024-07-01/2024-08-31") == TIE_LATE["id"]  # middle: July 31


def test_datetime_interval_and_cloud_limit_filter_static_items(handwritten_catalog: Path) -> None:
    only_cloudy_day = SceneSearcher(scenes_config(str(handwritten_catalog), datetime="2024-07-15")).find(EAST, HALF_M)
    assert isinstance(only_cloudy_day, Failure) and only_cloudy_day.reason == "no_scene"
    lenient = SceneSearcher(scenes_config(str(handwritten_catalog), datetime="2024-07-15", max_cloud_cover=70.0))
    scene = lenient.find(EAST, HALF_M)
    assert isinstance(scene, Scene) and scene.id == CLOUDY["id"]


def test_static_catalog_cannot_be_forced_to_server_filtering(handwritten_catalog: Path) -> None:
    with pytest.raises(ConfigError, match="scenes.filter_mode"):
        SceneSearcher(scenes_config(str(handwritten_catalog), filter_mode="filter"))


def test_catalog_that_cannot_be_opened_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="scenes.catalog"):
        SceneSearcher(scenes_config(str(tmp_path / "missing" / "catalog.json")))
    with ItemApi([CLEAR], [CONF_CORE, CONF_SEARCH]) as api:
        closed_url = api.url
    with pytest.raises(InputError, match="scenes.catalog"):
        SceneSearcher(scenes_config(closed_url))


def test_signer_rewrites_hrefs_of_returned_scenes(handwritten_catalog: Path) -> None:
    searcher = SceneSearcher(scenes_config(str(handwritten_catalog)), signer=lambda href: href + "?token=t")
    scene = searcher.find(EAST, HALF_M)
    assert isinstance(scene, Scene)
    assert scene.assets and all(asset.href.endswith("?token=t") for asset in scene.assets.values())
    assert all(a.href.endswith("?token=t") for s in searcher.candidates(WEST, HALF_M, 3) for a in s.assets.values())


@pytest.mark.parametrize("served_by", ["static", "api"])
def test_find_from_many_threads_gives_the_sequential_answers(handwritten_catalog: Path, served_by: str) -> None:
    pois = [EAST, WEST, STRADDLE, RIM, FAR] * 8
    with ItemApi(ALL_ITEMS, [CONF_CORE, CONF_SEARCH]) as api:
        searcher = SceneSearcher(scenes_config(api.url if served_by == "api" else str(handwritten_catalog)))

        def answer(poi: Poi) -> str:
            result = searcher.find(poi, HALF_M)
            return result.id if isinstance(result, Scene) else result.reason

        expected = [answer(poi) for poi in pois]
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(answer, pois)) == expected
    assert expected[:5] == [CLEAR["id"], PARTIAL["id"], CLEAR["id"], "aoi_not_covered", "no_scene"]


# -- AOI geometry -------------------------------------------------------------------------


def test_aoi_is_a_square_in_the_scene_crs() -> None:
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    polygon = aoi_polygon(EAST, 1500.0, CRS)
    xs, ys = to_utm.transform(*polygon.exterior.xy)
    square = Polygon(zip(xs, ys))
    assert max(xs) - min(xs) == pytest.approx(3000.0, abs=0.01)
    assert max(ys) - min(ys) == pytest.approx(3000.0, abs=0.01)
    assert square.area == pytest.approx(3000.0 * 3000.0, rel=1e-6)  # square, not just its bounds
    cx, cy = to_utm.transform(EAST.lon, EAST.lat)
    assert (min(xs) + max(xs)) / 2 == pytest.approx(cx, abs=0.01)
    assert (min(ys) + max(ys)) / 2 == pytest.approx(cy, abs=0.01)


def test_coverage_is_judged_on_the_aoi_in_the_candidates_own_crs(tmp_path: Path) -> None:
    # A footprint just 40 m larger than the AOI square in EPSG:32633 holds that square;
    # the same footprint declared in a far UTM zone holds a rotated square that sticks out.
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    cx, cy = to_utm.transform(EAST.lon, EAST.lat)
    tight = HALF_M + 20.0
    items = []
    for item_id, code in (("same_crs", CRS), ("far_zone", "EPSG:32630")):
        item = scene_item(item_id, 1.0 if item_id == "far_zone" else 2.0, "2024-07-10", proj_code=code)
        item["geometry"] = footprint(cx - tight, cy - tight, cx + tight, cy + tight, per_edge=40)
        lons = [p[0] for p in item["geometry"]["coordinates"][0]]
        lats = [p[1] for p in item["geometry"]["coordinates"][0]]
        item["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
        items.append(item)
    with ItemApi(items, [CONF_CORE, CONF_SEARCH]) as api:
        scene = SceneSearcher(scenes_config(api.url)).find(EAST, HALF_M)
    assert isinstance(scene, Scene) and scene.id == "same_crs"  # far_zone is less cloudy but its AOI sticks out


# -- a STAC API on loopback ---------------------------------------------------------------


@dataclass
class ItemApi:
    """A minimal STAC API on 127.0.0.1 with chosen conformance classes.

    POST /search honours collections, bbox, datetime, limit and paging, plus the ``query``
    (``lte``) and CQL2 ``filter`` (``<=``) forms of a cloud limit and ``sortby`` on one item
    property. Records every search body.
    """

    items: list[dict[str, Any]]
    conforms_to: list[str]
    fail_searches: bool = False
    max_page_size: int = 100
    bodies: list[dict[str, Any]] = field(default_factory=list)
    returned_ids: list[list[str]] = field(default_factory=list)

    def __enter__(self) -> Self:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                root = f"http://127.0.0.1:{self.server.server_address[1]}"
                self._json(200, {
                    "type": "Catalog", "id": "api", "description": "test API", "stac_version": "1.0.0",
                    "conformsTo": api.conforms_to,
                    "links": [
                        {"rel": "self", "href": f"{root}/", "type": "application/json"},
                        {"rel": "root", "href": f"{root}/", "type": "application/json"},
                        {"rel": "search", "href": f"{root}/search", "method": "POST", "type": "application/geo+json"},
                    ],
                })  # fmt: skip

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.bodies.append(body)
                if api.fail_searches:
                    self._json(500, {"code": "InternalError", "description": "database unavailable"})
                    return
                matches = api.sorted([item for item in api.items if api.matches(item, body)], body.get("sortby"))
                start = int(body.get("token", 0))
                limit = min(int(body.get("limit", 10)), api.max_page_size)
                page = matches[start : start + limit]
                api.returned_ids.append([item["id"] for item in page])
                links = []
                if start + limit < len(matches):
                    root = f"http://127.0.0.1:{self.server.server_address[1]}"
                    links.append({"rel": "next", "href": f"{root}/search", "method": "POST", "body": {**body, "token": start + limit}})
                self._json(200, {"type": "FeatureCollection", "features": page, "links": links})

            def _json(self, status: int, doc: dict[str, Any]) -> None:
                send_json(self, status, doc)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def sorted(items: list[dict[str, Any]], sortby: list[dict[str, str]] | None) -> list[dict[str, Any]]:
        if not sortby:
            return items
        ((key, direction),) = [(s["field"].removeprefix("properties."), s["direction"]) for s in sortby]
        return sorted(items, key=lambda item: item["properties"][key], reverse=direction == "desc")

    @staticmethod
    def matches(item: dict[str, Any], body: dict[str, Any]) -> bool:
        if "collections" in body and item["collection"] not in body["collections"]:
            return False
        if "bbox" in body:
            a, b = item["bbox"], body["bbox"]
            if not (a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]):
                return False
        if "datetime" in body:
            start, end = body["datetime"].split("/")
            if not start <= item["properties"]["datetime"] <= end:
                return False
        for prop, ops in body.get("query", {}).items():
            if "lte" in ops and not item["properties"][prop] <= ops["lte"]:
                return False
        if "filter" in body:
            prop, limit = body["filter"]["args"][0]["property"], body["filter"]["args"][1]
            assert body["filter"]["op"] == "<=" and body["filter-lang"] == "cql2-json"
            if not item["properties"][prop] <= limit:
                return False
        return True


@pytest.fixture
def scene_api() -> Iterator[ItemApi]:
    with ItemApi([CLEAR, CLOUDY, PARTIAL, HAZY, NOBLUE], [CONF_CORE, CONF_SEARCH]) as api:
        yield api


@pytest.mark.parametrize(
    ("conformance", "mode"),
    [
        ([CONF_FILTER, CONF_QUERY], "filter"),
        ([CONF_QUERY], "query"),
        ([], "client"),
    ],
)
def test_cloud_limit_goes_to_the_server_in_the_best_supported_form(scene_api: ItemApi, conformance, mode) -> None:
    scene_api.conforms_to += conformance
    searcher = SceneSearcher(scenes_config(scene_api.url, max_cloud_cover=20.0))
    assert searcher.filter_mode == mode
    scene = searcher.find(EAST, HALF_M)
    assert isinstance(scene, Scene) and scene.id == CLEAR["id"]
    (body,) = scene_api.bodies
    assert ("filter" in body, "query" in body) == (mode == "filter", mode == "query")
    if mode == "filter":
        assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20.0]}
        assert body["filter-lang"] == "cql2-json"
    if mode == "query":
        assert body["query"] == {"eo:cloud_cover": {"lte": 20.0}}
    server_sent_cloudy = CLOUDY["id"] in scene_api.returned_ids[0]
    assert server_sent_cloudy == (mode == "client")  # filtered on the client only in client mode


def test_search_body_is_a_post_with_aoi_bbox_interval_collection_and_limit(scene_api: ItemApi) -> None:
    SceneSearcher(scenes_config(scene_api.url, max_items=7)).find(EAST, HALF_M)
    (body,) = scene_api.bodies
    assert body["collections"] == ["sentinel-2-l2a"]
    assert body["limit"] == 7
    west, south, east, north = body["bbox"]
    assert west < EAST.lon < east and south < EAST.lat < north
    aoi = aoi_polygon(EAST, HALF_M, None).bounds
    assert body["bbox"] == pytest.approx(list(aoi))
    start, end = parse_interval("2024-07-01/2024-07-31")
    assert body["datetime"].split("/") == [start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")]


def test_forcing_a_mode_the_api_lacks_is_a_config_error(scene_api: ItemApi) -> None:
    for mode in ("filter", "query"):
        with pytest.raises(ConfigError, match="scenes.filter_mode"):
            SceneSearcher(scenes_config(scene_api.url, filter_mode=mode))
    scene_api.conforms_to.append(CONF_FILTER)
    forced = SceneSearcher(scenes_config(scene_api.url, filter_mode="client"))
    assert forced.filter_mode == "client"
    forced.find(EAST, HALF_M)
    assert "filter" not in scene_api.bodies[-1]


def test_pages_are_followed_up_to_max_items(scene_api: ItemApi) -> None:
    scene_api.items = [scene_item(f"S2A_P{i:02d}", 10.0 + i, "2024-07-10") for i in range(7)]
    scene_api.max_page_size = 2
    searcher = SceneSearcher(scenes_config(scene_api.url, max_items=5, max_cloud_cover=100.0))
    scene_api.items[6]["properties"]["eo:cloud_cover"] = 0.0  # the best scene is beyond max_items
    best = searcher.candidates(EAST, HALF_M, limit=10)
    assert [s.id for s in best] == [f"S2A_P{i:02d}" for i in range(5)]
    assert [len(ids) for ids in scene_api.returned_ids] == [2, 2, 2]  # three pages, cut at 5 items


def test_a_sorting_api_hands_over_the_least_cloudy_items_first(scene_api: ItemApi) -> None:
    scene_api.items = [scene_item(f"S2A_P{i:02d}", 10.0 + i, "2024-07-10") for i in range(7)]
    scene_api.items[6]["properties"]["eo:cloud_cover"] = 0.0  # the best scene comes last in server order
    scene_api.max_page_size = 2
    scene_api.conforms_to.append(CONF_SORT)
    searcher = SceneSearcher(scenes_config(scene_api.url, max_items=5, max_cloud_cover=100.0))
    best = searcher.rank(EAST, HALF_M, 3)
    assert [s.id for s in best] == ["S2A_P06", "S2A_P00", "S2A_P01"]
    assert scene_api.bodies[0]["sortby"] == [{"field": "properties.eo:cloud_cover", "direction": "asc"}]


def test_rank_gives_the_best_few_or_the_reason_for_none(handwritten_catalog: Path) -> None:
    searcher = SceneSearcher(scenes_config(str(handwritten_catalog)))
    assert [s.id for s in searcher.rank(WEST, HALF_M, 2)] == [PARTIAL["id"], CLEAR["id"]]
    assert [s.id for s in searcher.rank(WEST, HALF_M, 0)] == [PARTIAL["id"]]  # 0 = just the best (no AOI-cloud choice)
    assert searcher.candidates(WEST, HALF_M, 0) == []
    far = searcher.rank(FAR, HALF_M, 3)
    assert isinstance(far, Failure) and far.reason == "no_scene"
    assert searcher.candidates(FAR, HALF_M, 3) == []


def test_server_error_on_one_search_is_a_failure_not_an_exception(scene_api: ItemApi) -> None:
    searcher = SceneSearcher(scenes_config(scene_api.url))
    scene_api.fail_searches = True
    result = searcher.find(EAST, HALF_M)
    assert isinstance(result, Failure) and result.reason == "search_error" and result.poi_id == "east"
    assert "500" in result.detail or "database unavailable" in result.detail
    scene_api.fail_searches = False
    assert isinstance(searcher.find(EAST, HALF_M), Scene)


def test_api_missing_asset_and_no_scene_reasons(scene_api: ItemApi) -> None:
    noblue = SceneSearcher(scenes_config(scene_api.url, collection="noblue")).find(WEST, HALF_M)
    assert isinstance(noblue, Failure) and noblue.reason == "missing_asset" and "blue" in noblue.detail
    far = SceneSearcher(scenes_config(scene_api.url)).find(FAR, HALF_M)
    assert isinstance(far, Failure) and far.reason == "no_scene"


# -- integration: the synthetic fixture behind rustac, stac-fastapi-static and a static catalog


@pytest.fixture
def search_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(method, body, ids the server answered) of every /search request pystac-client sends."""
    log: list[tuple[str, dict[str, Any], list[str]]] = []
    original = StacApiIO.request

    def recording(self: StacApiIO, href: str, method: str | None = None, headers=None, parameters=None) -> str:
        text = original(self, href, method=method, headers=headers, parameters=parameters)
        if href.rstrip("/").endswith("/search"):
            ids = [feature["id"] for feature in json.loads(text).get("features", [])]
            log.append((method or "GET", copy.deepcopy(parameters or {}), ids))
        return text

    monkeypatch.setattr(StacApiIO, "request", recording)
    return log


def fixture_config(catalog: str, **overrides: Any) -> ScenesConfig:
    return scenes_config(catalog, datetime="2024-07-01/2024-07-31", max_cloud_cover=20.0, **overrides)


def best_full_scene(max_cloud: float) -> str:
    """The least cloudy fixture scene with a full footprint under the cloud limit."""
    return min((s for s in SCENES if not s.west_half_only and s.cloud_cover <= max_cloud), key=lambda s: s.cloud_cover).id


def partial_scene() -> SceneSpec:
    (spec,) = [s for s in SCENES if s.west_half_only]
    return spec


def poi_and_halves(data: FixtureInfo) -> tuple[Poi, float, float]:
    """A west POI with an AOI half-size inside the partial scene and one crossing its east edge."""
    west = {p.poi_id: p for p in data.pois}["west3"]
    col, _ = data.poi_pixels["west3"]
    edge = data.size // 2  # the partial scene covers the west half
    inside_half_m = (min(col, edge - col) - 2) * PIXEL_M
    crossing_half_m = (edge - col + 2) * PIXEL_M
    return west, inside_half_m, crossing_half_m


CATALOG_FIXTURES = {"rustac": "client", "fastapi": "filter", "static": "client"}


@pytest.fixture(params=sorted(CATALOG_FIXTURES))
def fixture_catalog(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(catalog URL or path, expected filter mode) for each way the fixture is served."""
    name = request.param
    if name == "static":
        return str(request.getfixturevalue("static_catalog")), CATALOG_FIXTURES[name]
    server = request.getfixturevalue({"rustac": "stac_api_rustac", "fastapi": "stac_api_fastapi"}[name])
    return server.url, CATALOG_FIXTURES[name]


def test_fixture_scene_choice_on_every_catalog(fixture_data: FixtureInfo, fixture_catalog: tuple[str, str]) -> None:
    catalog, mode = fixture_catalog
    searcher = SceneSearcher(fixture_config(catalog))
    assert searcher.filter_mode == mode
    aoi_half_m = fixture_data.aoi_size * PIXEL_M / 2
    by_id = {p.poi_id: p for p in fixture_data.pois}
    for poi_id in ("east1", "east2", "east3"):
        scene = searcher.find(by_id[poi_id], aoi_half_m)
        assert isinstance(scene, Scene) and scene.id == best_full_scene(20.0)
        assert scene.crs == fixture_data.grid.crs and scene.transform == fixture_data.grid.transform
        assert scene.assets["red"].href.startswith("http://127.0.0.1:")
        assert (scene.assets["red"].scale, scene.assets["red"].offset) == (DN_SCALE, DN_OFFSET)
    west, inside_half_m, crossing_half_m = poi_and_halves(fixture_data)
    inside = searcher.find(west, inside_half_m)
    assert isinstance(inside, Scene) and inside.id == partial_scene().id
    crossing = searcher.find(west, crossing_half_m)
    assert isinstance(crossing, Scene) and crossing.id == best_full_scene(20.0)
    outside = searcher.find(by_id["outside"], aoi_half_m)
    assert isinstance(outside, Failure) and outside.reason == "no_scene"


def test_fixture_noblue_collection_reports_missing_blue(fixture_data: FixtureInfo, fixture_catalog: tuple[str, str]) -> None:
    catalog, _ = fixture_catalog
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    result = SceneSearcher(fixture_config(catalog, collection=NOBLUE_COLLECTION)).find(poi, 1000.0)
    assert isinstance(result, Failure) and result.reason == "missing_asset"
    assert "blue" in result.detail and best_full_scene(20.0) in result.detail


def test_rustac_gets_plain_posts_and_cloud_is_dropped_on_the_client(
    fixture_data: FixtureInfo, stac_api_rustac: RustacServer, search_log: list
) -> None:
    searcher = SceneSearcher(fixture_config(stac_api_rustac.url))
    assert searcher.filter_mode == "client"
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    scene = searcher.find(poi, 1000.0)
    assert isinstance(scene, Scene) and scene.id == best_full_scene(20.0)
    ((method, body, returned),) = search_log
    assert method == "POST" and "filter" not in body and "query" not in body
    cloudy = max(SCENES, key=lambda s: s.cloud_cover).id
    assert cloudy in returned  # the server sent it; the client dropped it


def test_stac_fastapi_static_filters_cloud_with_cql2(
    fixture_data: FixtureInfo, stac_api_fastapi: StacFastapiStaticServer, search_log: list
) -> None:
    searcher = SceneSearcher(fixture_config(stac_api_fastapi.url))
    assert searcher.filter_mode == "filter"
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    scene = searcher.find(poi, 1000.0)
    assert isinstance(scene, Scene) and scene.id == best_full_scene(20.0)
    ((method, body, returned),) = search_log
    assert method == "POST"
    assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20.0]}
    assert body["filter-lang"] == "cql2-json"
    assert sorted(returned) == sorted(s.id for s in SCENES if s.cloud_cover <= 20.0)  # filtered by the server


def test_search_error_when_the_api_goes_away(fixture_data: FixtureInfo, stac_api_files: list[Path]) -> None:
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    with RustacServer(stac_api_files) as server:
        searcher = SceneSearcher(fixture_config(server.url))
        assert isinstance(searcher.find(poi, 1000.0), Scene)
    result = searcher.find(poi, 1000.0)
    assert isinstance(result, Failure) and (result.stage, result.reason) == ("search", "search_error")


def test_static_catalog_served_over_http_is_read_as_static(fixture_data: FixtureInfo, static_catalog: Path) -> None:
    with RangeHTTPServer(static_catalog.parent) as server:
        searcher = SceneSearcher(fixture_config(f"{server.url}/{static_catalog.name}"))
    assert searcher.filter_mode == "client"  # items were indexed once; the server is gone now
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    scene = searcher.find(poi, 1000.0)
    assert isinstance(scene, Scene) and scene.id == best_full_scene(20.0)


def test_planetary_computer_signing_needs_its_extra(handwritten_catalog: Path) -> None:
    try:
        import planetary_computer  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("planetary-computer is installed: signing is available")
    with pytest.raises(MissingExtraError, match=r"rsbuild\[pc\]"):
        SceneSearcher(scenes_config(str(handwritten_catalog), sign_hrefs="planetary-computer"))


# -- ItemFinder (label items) -------------------------------------------------------------


def test_item_finder_lists_label_hrefs_on_every_catalog(
    fixture_data: FixtureInfo, cog_server: RangeHTTPServer, fixture_catalog: tuple[str, str]
) -> None:
    catalog, _ = fixture_catalog
    finder = ItemFinder(catalog, LABEL_COLLECTION)
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    west, south, east, north = aoi_polygon(poi, 1000.0, None).bounds
    assert finder.asset_hrefs((west, south, east, north), "map") == [fixture_data.href(cog_server.url, fixture_data.label_4326_path)]
    assert finder.asset_hrefs((west, south, east, north), "no-such-asset") == []
    assert finder.asset_hrefs((100.0, -40.0, 100.1, -39.9), "map") == []  # far away


def test_item_finder_raises_search_error_when_the_api_fails() -> None:
    with ItemApi([CLEAR], [CONF_CORE, CONF_SEARCH]) as api:
        finder = ItemFinder(api.url, "sentinel-2-l2a")
        assert finder.asset_hrefs(aoi_polygon(EAST, HALF_M, None).bounds, "red") == [CLEAR["assets"]["red"]["href"]]
        assert "datetime" not in api.bodies[-1]  # label items are not limited to the scene interval
        api.fail_searches = True
        with pytest.raises(SearchError, match="sentinel-2-l2a"):
            finder.asset_hrefs(aoi_polygon(EAST, HALF_M, None).bounds, "red")


def test_item_finder_names_its_config_field_when_the_catalog_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"labels\.catalog"):
        ItemFinder(str(tmp_path / "nowhere.json"), "esa-worldcover")
