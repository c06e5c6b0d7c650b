"""Catalog and land-cover presets, and Earth Engine labels wired from the config.

Scene presets run against STAC items written in each catalog's own layout (asset keys, where
scale / offset / CRS live, id style), served by ``rustac serve`` on 127.0.0.1 with hrefs on the
fixture's range-capable COG server. The config overrides only ``catalog`` (with the loopback URL),
so collection, layout, cloud property and signing must come from the preset. Planetary Computer
signing goes through a stand-in ``planetary_computer`` module that appends a SAS-like token.
Earth Engine labels are built from a config file against the loopback Earth Engine endpoint of
tests/test_earthengine.py (its helpers are imported; its ``offline`` fixture, autouse, keeps every
test here on loopback).
"""

from __future__ import annotations

import copy
import json
import sys
import tomllib
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from rsbuild.chips.fetch import Fetcher
from rsbuild.config import EXAMPLE_CONFIG, LabelsConfig, ScenesConfig, config_from_dict, load_config
from rsbuild.errors import ConfigError, MissingExtraError
from rsbuild.grid import bbox_wgs84
from rsbuild.presets import CUSTOM, EE_DATASET_SCHEMES, LABEL_PRESETS, SCENE_PRESETS
from rsbuild.records import Failure, Grid, Sample, Scene
from rsbuild.run.pipeline import make_searcher
from rsbuild.schemes import SCHEMES, get_scheme
from rsbuild.sources.assets import LAYOUTS
from rsbuild.sources.labels.factory import make_label_source
from rsbuild.sources.labels.stac import StacLabelSource
from rsbuild.sources.stac import SceneSearcher
from rsbuild.testing.servers import RangeHTTPServer, RustacServer
from rsbuild.testing.synthetic import DN_OFFSET, DN_SCALE, PIXEL_M, SCENES, FixtureInfo, SceneSpec

try:  # the loopback Earth Engine endpoint needs earthengine-api (extra "ee")
    from tests.sources.labels.test_earthengine import GRID as EE_GRID
    from tests.sources.labels.test_earthengine import SCENE as EE_SCENE
    from tests.sources.labels.test_earthengine import (  # noqa: F401  (fake_ee and offline are fixtures used here)
        FakeEarthEngine,
        _service_account_key,
        calls,
        expected_codes,
        fake_ee,
        offline,
    )
except pytest.skip.Exception:
    FakeEarthEngine = None

needs_ee = pytest.mark.skipif(FakeEarthEngine is None, reason="earthengine-api is not installed")

SAS_TOKEN = "st=2024-07-01&se=2099-01-01&sp=rl&sv=2021-06-08&sr=c&sig=FAKEsasSIGNATURE7c1e9b"
FILES = {"red": "B04", "green": "B03", "blue": "B02", "visual": "TCI", "scl": "SCL"}
BY_ID = {spec.id: spec for spec in SCENES}


def example(**changes: dict[str, Any]) -> dict[str, Any]:
    """The example config as a dict, with whole sections replaced."""
    data = tomllib.loads(EXAMPLE_CONFIG)
    data.update(changes)
    return data


# -- presets are data: each fills what the config leaves out --------------------------------


@pytest.mark.parametrize("name", [name for name in SCENE_PRESETS if name != CUSTOM])
def test_scene_preset_fills_catalog_collection_layout_cloud_and_signing(name: str) -> None:
    preset = SCENE_PRESETS[name]
    cfg = ScenesConfig(preset=name)
    assert (cfg.catalog, cfg.collection, cfg.layout, cfg.cloud_property, cfg.sign_hrefs) == (
        preset.catalog, preset.collection, preset.layout, preset.cloud_property, preset.sign_hrefs,
    )  # fmt: skip
    assert preset.layout in LAYOUTS and preset.catalog.startswith("https://")

    mirror = ScenesConfig(preset=name, catalog="http://127.0.0.1:1/stac", layout="auto", sign_hrefs="none")
    assert (mirror.catalog, mirror.layout, mirror.sign_hrefs) == ("http://127.0.0.1:1/stac", "auto", "none")
    assert (mirror.collection, mirror.cloud_property) == (preset.collection, preset.cloud_property)


def test_public_catalog_urls_and_collections() -> None:
    urls = {name: (p.catalog, p.collection) for name, p in SCENE_PRESETS.items() if name != CUSTOM}
    assert urls == {
        "earth-search-v1": ("https://earth-search.aws.element84.com/v1", "sentinel-2-l2a"),
        "earth-search-c1": ("https://earth-search.aws.element84.com/v1", "sentinel-2-c1-l2a"),
        "planetary-computer": ("https://planetarycomputer.microsoft.com/api/stac/v1", "sentinel-2-l2a"),
        "cdse": ("https://stac.dataspace.copernicus.eu/v1", "sentinel-2-l2a"),
    }


def test_custom_catalog_keeps_the_old_defaults_and_needs_a_catalog() -> None:
    cfg = ScenesConfig(catalog="/data/catalog.json")
    assert (cfg.preset, cfg.collection, cfg.layout, cfg.cloud_property, cfg.sign_hrefs) == (
        "custom", "sentinel-2-l2a", "auto", "eo:cloud_cover", "none",
    )  # fmt: skip
    assert cfg.aoi_cloud_candidates == 3
    with pytest.raises(ConfigError, match=r"scenes.catalog is required .* earth-search-v1, earth-search-c1"):
        config_from_dict(example(scenes={"preset": "custom"}))
    with pytest.raises(ConfigError, match=r"scenes.preset = 'earth-search-v2' is not a known preset; choose one of"):
        config_from_dict(example(scenes={"preset": "earth-search-v2"}))


def test_aoi_cloud_candidates_zero_disables_and_negative_is_refused() -> None:
    assert ScenesConfig(preset="cdse", aoi_cloud_candidates=0).aoi_cloud_candidates == 0
    with pytest.raises(ConfigError, match=r"scenes.aoi_cloud_candidates: Input should be greater than or equal to 0"):
        config_from_dict(example(scenes={"preset": "cdse", "aoi_cloud_candidates": -1}))


def test_resolved_config_records_what_the_preset_filled(tmp_path: Path) -> None:
    (tmp_path / "rsbuild.toml").write_text(EXAMPLE_CONFIG.replace('preset = "earth-search-c1"', 'preset = "planetary-computer"', 1))
    dumped = load_config(tmp_path / "rsbuild.toml").dump()["scenes"]
    assert dumped["preset"] == "planetary-computer"
    assert dumped["catalog"] == "https://planetarycomputer.microsoft.com/api/stac/v1"
    assert (dumped["layout"], dumped["sign_hrefs"]) == ("planetary-computer", "planetary-computer")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("esa-worldcover-pc", {"source": "stac", "collection": "esa-worldcover", "asset": "map", "scheme": "esa_worldcover",
                               "sign_hrefs": "planetary-computer", "datetime": "2021-07-01"}),
        ("io-lulc-pc", {"source": "stac", "collection": "io-lulc-annual-v02", "asset": "data", "scheme": "io_lulc",
                        "sign_hrefs": "planetary-computer", "datetime": "2023-07-01"}),
        ("dynamic-world-ee", {"source": "earthengine", "ee_dataset": "dynamic_world", "scheme": "dynamic_world"}),
        ("esa-worldcover-ee", {"source": "earthengine", "ee_dataset": "esa_worldcover", "scheme": "esa_worldcover"}),
    ],
)  # fmt: skip
def test_label_presets(name: str, expected: dict[str, Any]) -> None:
    cfg = LabelsConfig(preset=name)
    assert {key: getattr(cfg, key) for key in expected} == expected
    if cfg.source == "stac":
        assert cfg.catalog == "https://planetarycomputer.microsoft.com/api/stac/v1"
        assert LabelsConfig(preset=name, datetime="2020-07-01").datetime == "2020-07-01"  # written settings win


def test_every_label_scheme_exists_and_earth_engine_datasets_agree_with_the_source() -> None:
    from rsbuild.sources.labels.earthengine import EE_DATASETS

    assert all(p.scheme in SCHEMES for p in LABEL_PRESETS.values() if p.scheme)
    assert {name: dataset.scheme for name, dataset in EE_DATASETS.items()} == EE_DATASET_SCHEMES


def test_earth_engine_scheme_follows_the_dataset() -> None:
    assert (LabelsConfig(source="earthengine").ee_dataset, LabelsConfig(source="earthengine").scheme) == ("dynamic_world", "dynamic_world")
    assert LabelsConfig(source="earthengine", ee_dataset="esa_worldcover").scheme == "esa_worldcover"
    assert LabelsConfig(source="earthengine", scheme="esa_worldcover").ee_dataset == "esa_worldcover"
    assert LabelsConfig(preset="dynamic-world-ee", ee_dataset="esa_worldcover").scheme == "esa_worldcover"  # written wins
    labels = {"preset": "dynamic-world-ee", "scheme": "esa_worldcover"}
    with pytest.raises(ConfigError, match=r"labels.scheme = 'esa_worldcover' does not match labels.ee_dataset = 'dynamic_world'"):
        config_from_dict(example(labels=labels))
    with pytest.raises(ConfigError, match=r"labels.scheme = 'io_lulc' has no Earth Engine dataset"):
        config_from_dict(example(labels={"source": "earthengine", "scheme": "io_lulc"}))
    with pytest.raises(ConfigError, match=r"labels.ee_dataset: Input should be 'dynamic_world' or 'esa_worldcover'"):
        config_from_dict(example(labels={"source": "earthengine", "ee_dataset": "GOOGLE/DYNAMICWORLD/V1"}))


def test_earth_engine_key_file_resolves_against_the_config_folder(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rsbuild.toml").write_text(
        '[pois]\npath = "pois.csv"\n[scenes]\npreset = "earth-search-v1"\n'
        '[labels]\npreset = "dynamic-world-ee"\nee_credentials = "keys/ee.json"\n'
    )
    assert load_config(conf / "rsbuild.toml").labels.ee_credentials == conf / "keys" / "ee.json"


# -- scene presets against items in each catalog's own layout ------------------------------


def _sensing(spec: SceneSpec) -> str:
    return datetime.fromisoformat(spec.datetime).strftime("%Y%m%dT%H%M%S")


def earth_search_v1_id(spec: SceneSpec) -> str:
    return spec.id  # the fixture's ids are Earth Search v1 ids: S2A_33TXL_20240710_0_L2A


def earth_search_c1_id(spec: SceneSpec) -> str:
    return f"{spec.id[:3]}_T33TXL_{_sensing(spec)}_L2A"


def cdse_id(spec: SceneSpec) -> str:
    """ESA's product name (baseline N0510), which CDSE uses as item id."""
    return f"{spec.id[:3]}_MSIL2A_{_sensing(spec)}_N0510_R022_T33TXL_20240801T101512"


def planetary_computer_id(spec: SceneSpec) -> str:
    """Planetary Computer drops the baseline from the product name."""
    return cdse_id(spec).replace("_N0510", "")


def _renamed(item: dict[str, Any], item_id: str, keys: dict[str, str], collection: str) -> dict[str, Any]:
    out = copy.deepcopy(item)
    out.update(id=item_id, collection=collection)
    out["assets"] = {keys[band]: asset for band, asset in out["assets"].items() if band in keys}  # RGB + SCL (the spectral keys: tests/chips/test_bands.py)
    return out


def earth_search_v1_item(item: dict[str, Any]) -> dict[str, Any]:
    """The fixture writes Earth Search v1 items already: common-name keys, raster:bands."""
    return copy.deepcopy(item)


def earth_search_c1_item(item: dict[str, Any]) -> dict[str, Any]:
    """Earth Search Collection 1: the same keys and raster:bands, its own collection and ids."""
    return _renamed(item, earth_search_c1_id(BY_ID[item["id"]]), {band: band for band in FILES}, "sentinel-2-c1-l2a")


def planetary_computer_item(item: dict[str, Any]) -> dict[str, Any]:
    """Planetary Computer: B0x / visual / SCL keys, s2: properties, proj:epsg, no scale/offset."""
    spec = BY_ID[item["id"]]
    keys = {"red": "B04", "green": "B03", "blue": "B02", "visual": "visual", "scl": "SCL"}
    out = _renamed(item, planetary_computer_id(spec), keys, "sentinel-2-l2a")
    props = out["properties"]
    for name in ("proj:code", "mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square", "grid:code"):
        props.pop(name, None)
    props.update({"proj:epsg": 32633, "s2:mgrs_tile": "33TXL", "s2:processing_baseline": "05.10",
                  "s2:product_uri": f"{cdse_id(spec)}.SAFE"})  # fmt: skip
    for asset in out["assets"].values():
        asset.pop("raster:bands", None)
    out["stac_extensions"] = [
        "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
        "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
    ]
    return out


def cdse_item(item: dict[str, Any]) -> dict[str, Any]:
    """Copernicus Data Space (STAC 1.1): B0x_10m keys, asset-level raster:scale/offset, nodata,
    proj:code on the assets only, processing:version."""
    keys = {"red": "B04_10m", "green": "B03_10m", "blue": "B02_10m", "visual": "TCI_10m", "scl": "SCL_20m"}
    out = _renamed(item, cdse_id(BY_ID[item["id"]]), keys, "sentinel-2-l2a")
    props = out["properties"]
    for name in ("proj:code", "s2:processing_baseline", "s2:product_type", "s2:nodata_pixel_percentage"):
        props.pop(name, None)
    props.update({"processing:version": "05.10", "product:type": "S2MSI2A", "processing:level": "L2"})
    for key, asset in out["assets"].items():
        asset.pop("raster:bands", None)
        asset.pop("eo:bands", None)
        asset.update({"proj:code": "EPSG:32633", "nodata": 0, "bands": [{"name": key.split("_")[0]}]})
        if key in ("B04_10m", "B03_10m", "B02_10m"):
            asset.update({"raster:scale": DN_SCALE, "raster:offset": DN_OFFSET})
    return out


@dataclass(frozen=True)
class CatalogCase:
    preset: str
    server: str  # which loopback API serves its items
    convert: Callable[[dict[str, Any]], dict[str, Any]]  # fixture (Earth Search v1) item -> the catalog's item
    item_id: Callable[[SceneSpec], str]  # the catalog's id of a fixture acquisition
    keys: dict[str, str]  # canonical band -> the catalog's asset key


CASES = [
    CatalogCase("earth-search-v1", "earth-search", earth_search_v1_item, earth_search_v1_id, {b: b for b in FILES}),
    CatalogCase("earth-search-c1", "earth-search", earth_search_c1_item, earth_search_c1_id, {b: b for b in FILES}),
    CatalogCase("planetary-computer", "planetary-computer", planetary_computer_item, planetary_computer_id,
                {"red": "B04", "green": "B03", "blue": "B02", "visual": "visual", "scl": "SCL"}),
    CatalogCase("cdse", "cdse", cdse_item, cdse_id,
                {"red": "B04_10m", "green": "B03_10m", "blue": "B02_10m", "visual": "TCI_10m", "scl": "SCL_20m"}),
]  # fmt: skip


def write_api_files(folder: Path, items_by_collection: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """Collection and item-collection files for ``rustac serve``, in load order."""
    folder.mkdir(parents=True, exist_ok=True)
    collections, item_files = [], []
    for collection_id, items in items_by_collection.items():
        collection = {
            "type": "Collection", "stac_version": "1.1.0", "id": collection_id, "description": collection_id,
            "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
        }  # fmt: skip
        collections.append(folder / f"collection-{collection_id}.json")
        collections[-1].write_text(json.dumps(collection))
        item_files.append(folder / f"items-{collection_id}.json")
        item_files[-1].write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return collections + item_files


@pytest.fixture(scope="module")
def catalog_servers(
    fixture_data: FixtureInfo, cog_server: RangeHTTPServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, RustacServer]]:
    """One loopback STAC API per public catalog, holding the fixture scenes in its layout."""
    items = fixture_data.items(cog_server.url)
    by_server: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for case in CASES:
        converted = [case.convert(item) for item in items]
        by_server.setdefault(case.server, {})[converted[0]["collection"]] = converted
    root = tmp_path_factory.mktemp("catalogs")
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(RustacServer(write_api_files(root / name, collections)))
            for name, collections in by_server.items()
        }


@pytest.fixture
def fake_planetary_computer(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in for the ``planetary-computer`` package: ``sign(href)`` appends a SAS token."""
    module = types.ModuleType("planetary_computer")
    module.sign = lambda href: f"{href}?{SAS_TOKEN}"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "planetary_computer", module)
    return module


def full_scenes_by_cloud(max_cloud: float) -> list[SceneSpec]:
    """Fixture scenes covering the whole AOI of an east POI under the cloud limit, least cloudy first."""
    return sorted((s for s in SCENES if not s.west_half_only and s.cloud_cover <= max_cloud), key=lambda s: s.cloud_cover)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.preset)
def test_scene_preset_resolves_its_catalogs_items(
    case: CatalogCase,
    fixture_data: FixtureInfo,
    cog_server: RangeHTTPServer,
    catalog_servers: dict[str, RustacServer],
    fake_planetary_computer: types.ModuleType,
) -> None:
    preset = SCENE_PRESETS[case.preset]
    cfg = ScenesConfig(preset=case.preset, catalog=catalog_servers[case.server].url, datetime="2024-07-01/2024-07-31")
    assert (cfg.collection, cfg.layout, cfg.cloud_property) == (preset.collection, preset.layout, preset.cloud_property)
    searcher = SceneSearcher(cfg)
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    aoi_half_m = fixture_data.aoi_size * PIXEL_M / 2
    expected = [case.item_id(spec) for spec in full_scenes_by_cloud(20.0)]

    ranked = searcher.rank(poi, aoi_half_m, 3)
    assert [scene.id for scene in ranked] == expected  # 65 % is over the limit, the 1 % scene misses the AOI
    scene = searcher.find(poi, aoi_half_m)
    assert isinstance(scene, Scene) and scene.id == expected[0] and scene.collection == preset.collection
    assert scene.cloud_cover == full_scenes_by_cloud(20.0)[0].cloud_cover
    assert scene.crs == "EPSG:32633" and scene.transform == fixture_data.grid.transform

    signature = f"?{SAS_TOKEN}" if preset.sign_hrefs == "planetary-computer" else ""
    best = full_scenes_by_cloud(20.0)[0]
    for band, file in FILES.items():
        asset = scene.assets[band]
        assert asset.key == case.keys[band]
        assert asset.href == fixture_data.href(cog_server.url, fixture_data.scene_path(best.id, file)) + signature
    for band in ("red", "green", "blue"):
        assert (scene.assets[band].scale, scene.assets[band].offset) == pytest.approx((DN_SCALE, DN_OFFSET))
        assert scene.assets[band].nodata == 0.0
    assert (scene.assets["scl"].scale, scene.assets["scl"].offset) == (1.0, 0.0)


def test_written_collection_and_layout_override_the_preset(
    fixture_data: FixtureInfo, catalog_servers: dict[str, RustacServer]
) -> None:
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    url = catalog_servers["earth-search"].url
    c1 = SceneSearcher(ScenesConfig(preset="earth-search-v1", catalog=url, collection="sentinel-2-c1-l2a", datetime="2024-07"))
    found = c1.find(poi, 1000.0)
    assert isinstance(found, Scene) and found.collection == "sentinel-2-c1-l2a" and found.id.startswith("S2A_T33TXL_")
    wrong_layout = SceneSearcher(ScenesConfig(preset="earth-search-v1", catalog=url, layout="cdse", datetime="2024-07"))
    failure = wrong_layout.find(poi, 1000.0)
    assert isinstance(failure, Failure) and failure.reason == "missing_asset"  # B04_10m is not an Earth Search key


def test_planetary_computer_hrefs_are_signed_but_the_token_stays_out_of_the_samples(
    fixture_data: FixtureInfo,
    cog_server: RangeHTTPServer,
    catalog_servers: dict[str, RustacServer],
    fake_planetary_computer: types.ModuleType,
) -> None:
    cfg = config_from_dict({
        "pois": {"path": str(fixture_data.pois_path)},
        "scenes": {"preset": "planetary-computer", "catalog": catalog_servers["planetary-computer"].url,
                   "datetime": "2024-07-01/2024-07-31"},
        "imagery": {"aoi_size": 256, "tile_size": 128, "tile_stride": 64, "output_size": 64, "read_workers": 4,
                    "cpu_workers": 0},
        "labels": {"url": fixture_data.href(cog_server.url, fixture_data.label_4326_path)},
    })  # fmt: skip
    poi = {p.poi_id: p for p in fixture_data.pois}["east2"]
    first_request = len(cog_server.request_log)
    with Fetcher(cfg, make_searcher(cfg), make_label_source(cfg.labels)) as fetcher:
        records = [record for _poi, batch in fetcher.run([poi]) for record in batch]

    samples = [r for r in records if isinstance(r, Sample)]
    assert len(samples) == 9, [r for r in records if isinstance(r, Failure)]
    assert samples[0].metadata["scene"]["id"] == planetary_computer_id(full_scenes_by_cloud(20.0)[0])
    for sample in samples:
        assert SAS_TOKEN not in json.dumps(sample.json_payload()) and "sig=" not in json.dumps(sample.json_payload())
    band_reads = [r.path for r in cog_server.request_log[first_request:] if "/B04.tif" in r.path]
    assert band_reads and all(path.endswith(f"?{SAS_TOKEN}") for path in band_reads)  # read through signed hrefs


# -- land-cover presets on Planetary Computer ---------------------------------------------


def interior(truth: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood has one class (not on a class boundary)."""
    return ndimage.maximum_filter(truth, 3) == ndimage.minimum_filter(truth, 3)


def annual_item(item: dict[str, Any], item_id: str, year: int, collection: str, asset: str, href: str) -> dict[str, Any]:
    """A copy of a label item for one year, as Planetary Computer publishes annual maps."""
    out = copy.deepcopy(item)
    out.update(id=item_id, collection=collection)
    out["properties"].update(start_datetime=f"{year}-01-01T00:00:00Z", end_datetime=f"{year + 1}-01-01T00:00:00Z")
    out["assets"] = {asset: {**item["assets"]["map"], "href": href}}
    return out


@pytest.fixture(scope="module")
def label_api(
    fixture_data: FixtureInfo, cog_server: RangeHTTPServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RustacServer]:
    """esa-worldcover (a 2020 v100 decoy listed first, then the fixture's 2021 v200 map) and
    io-lulc-annual-v02 (2022 and 2023 maps), in Planetary Computer's layout."""
    (worldcover,) = fixture_data.label_items(cog_server.url)
    missing = f"{cog_server.url}/no-such-map.tif"  # reading the decoy would fail
    decoy = annual_item(worldcover, "ESA_WorldCover_10m_2020_v100_N45E015", 2020, "esa-worldcover", "map", missing)
    decoy["properties"]["end_datetime"] = "2020-12-31T23:59:59Z"
    lulc = [
        annual_item(worldcover, f"33T-{year}", year, "io-lulc-annual-v02", "data", f"{cog_server.url}/io-lulc-{year}.tif")
        for year in (2022, 2023)
    ]
    files = write_api_files(tmp_path_factory.mktemp("labels"), {"esa-worldcover": [decoy, worldcover], "io-lulc-annual-v02": lulc})
    with RustacServer(files) as server:
        yield server


def test_worldcover_on_planetary_computer_reads_the_2021_map_through_signed_hrefs(
    fixture_data: FixtureInfo, cog_server: RangeHTTPServer, label_api: RustacServer, fake_planetary_computer: types.ModuleType
) -> None:
    cfg = LabelsConfig(preset="esa-worldcover-pc", catalog=label_api.url)
    source = make_label_source(cfg)
    assert isinstance(source, StacLabelSource) and source.scheme.name == "esa_worldcover" and source.name == "esa-worldcover"

    col, row, size = 300, 120, 64
    a, b, c, d, e, f = fixture_data.grid.transform
    grid = Grid(fixture_data.grid.crs, (a, b, c + col * a, d, e, f + row * e), size, size)
    map_href = fixture_data.href(cog_server.url, fixture_data.label_4326_path)
    assert source.finder.asset_hrefs(bbox_wgs84(grid), "map") == [f"{map_href}?{SAS_TOKEN}"]  # not the 2020 decoy

    first_request = len(cog_server.request_log)
    codes = source.read(grid)
    truth = fixture_data.truth_window(col, row, size, size)
    core = interior(truth)
    assert (codes[core] == truth[core]).mean() >= 0.99
    reads = [r.path for r in cog_server.request_log[first_request:]]
    assert reads and all(path.endswith(f"?{SAS_TOKEN}") for path in reads)


def test_io_lulc_on_planetary_computer_takes_one_year_of_data_assets(
    fixture_data: FixtureInfo, cog_server: RangeHTTPServer, label_api: RustacServer, fake_planetary_computer: types.ModuleType
) -> None:
    source = make_label_source(LabelsConfig(preset="io-lulc-pc", catalog=label_api.url))
    assert source.scheme.name == "io_lulc" and source.name == "io-lulc-annual-v02"
    grid = fixture_data.grid
    hrefs = source.finder.asset_hrefs(bbox_wgs84(grid), "data")
    assert hrefs == [f"{cog_server.url}/io-lulc-2023.tif?{SAS_TOKEN}"]  # 2022 ends where 2023 starts: still excluded
    other_year = make_label_source(LabelsConfig(preset="io-lulc-pc", catalog=label_api.url, datetime="2022-07-01"))
    assert other_year.finder.asset_hrefs(bbox_wgs84(grid), "data") == [f"{cog_server.url}/io-lulc-2022.tif?{SAS_TOKEN}"]


def test_signed_label_preset_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "planetary_computer", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"rsbuild\[pc\]") as err:  # before any search: nothing listens on :9
        make_label_source(LabelsConfig(preset="esa-worldcover-pc", catalog="http://127.0.0.1:9"))
    assert "labels.sign_hrefs" in str(err.value)


# -- Earth Engine labels built from the config ----------------------------------------------


def _ee_config(tmp_path: Path, fake: Any, labels: str) -> Path:
    path = tmp_path / "rsbuild.toml"
    path.write_text(
        f'[pois]\npath = "pois.csv"\n[scenes]\npreset = "earth-search-v1"\n'
        f'[labels]\nee_url = "{fake.url}"\nee_credentials = "key.json"\n{labels}\n'
    )
    return path


@needs_ee
def test_dynamic_world_from_a_config_file(fake_ee: Any, tmp_path: Path) -> None:
    from rsbuild.sources.labels.earthengine import EarthEngineLabelSource

    _service_account_key(tmp_path, f"{fake_ee.url}/token")  # tmp_path / "key.json", named relative in the config
    cfg = load_config(_ee_config(tmp_path, fake_ee, 'preset = "dynamic-world-ee"\nee_window_days = 10\nee_max_in_flight = 2'))
    assert (cfg.labels.source, cfg.labels.ee_dataset, cfg.labels.scheme) == ("earthengine", "dynamic_world", "dynamic_world")
    assert cfg.labels.ee_credentials == tmp_path / "key.json"

    source = make_label_source(cfg.labels)
    assert isinstance(source, EarthEngineLabelSource) and source.project == "sa-project-42"
    codes = source.read(EE_GRID, EE_SCENE)
    np.testing.assert_array_equal(codes, expected_codes(EE_GRID, [c.code for c in get_scheme("dynamic_world").classes], source.fill_code))
    (request,) = fake_ee.compute_requests()
    assert request["headers"]["authorization"] == f"Bearer {fake_ee.issued_token}"
    (window,) = calls(json.loads(request["body"])["expression"], "DateRange")
    assert (window["start"]["constantValue"], window["end"]["constantValue"]) == ("2024-07-05", "2024-07-26")

    fake_ee.compute_delay_s, fake_ee.hold_until_in_flight = 0.1, 2  # the peak does not depend on the load
    grids = [Grid(EE_GRID.crs, (10.0, 0.0, 412_340.0 + 40 * i, 0.0, -10.0, 5_300_020.0), 16, 16) for i in range(5)]
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda grid: source.read(grid, EE_SCENE), grids))
    assert fake_ee.peak_in_flight == 2  # labels.ee_max_in_flight


@needs_ee
def test_worldcover_on_earth_engine_from_a_config_file(fake_ee: Any, tmp_path: Path) -> None:
    _service_account_key(tmp_path, f"{fake_ee.url}/token")
    cfg = load_config(_ee_config(tmp_path, fake_ee, 'source = "earthengine"\nscheme = "esa_worldcover"'))
    source = make_label_source(cfg.labels)
    assert (cfg.labels.ee_dataset, source.name) == ("esa_worldcover", "ESA/WorldCover/v200")
    codes = source.read(EE_GRID, None)
    np.testing.assert_array_equal(codes, expected_codes(EE_GRID, [c.code for c in get_scheme("esa_worldcover").classes], 0))


@needs_ee
def test_earth_engine_without_credentials_stops_before_any_work(fake_ee: Any) -> None:
    with pytest.raises(ConfigError) as err:
        make_label_source(LabelsConfig(preset="dynamic-world-ee", ee_url=fake_ee.url))
    for hint in ("labels.ee_credentials", "GOOGLE_APPLICATION_CREDENTIALS", "EE_PROJECT"):
        assert hint in str(err.value)
    assert not fake_ee.compute_requests()
