"""Asset layouts: every catalog's item resolves to the right hrefs and radiometric rules.

The item dicts below copy the shape of real items (keys, where scale/offset/nodata/CRS
live) from Earth Search v1 and v0, Planetary Computer and Copernicus Data Space.
"""

from __future__ import annotations

import copy

import pystac
import pytest

from rsbuild.sources.assets import detect_layout, resolve_assets, scene_from_item, sign_scene

FOOTPRINT = {"type": "Polygon", "coordinates": [[[15.0, 45.0], [16.3, 45.0], [16.3, 46.0], [15.0, 46.0], [15.0, 45.0]]]}
TRANSFORM_10M = [10.0, 0.0, 499980.0, 0.0, -10.0, 5100000.0]


def _raster_v1(scale: float | None = None, offset: float | None = None, nodata: float = 0) -> dict:
    band: dict = {"nodata": nodata, "data_type": "uint16"}
    if scale is not None:
        band.update(scale=scale, offset=offset)
    return {"raster:bands": [band]}


def earth_search_v1(baseline: str = "05.10") -> dict:
    """As Earth Search v1 publishes: common-name keys, raster:bands, proj:epsg (raw API dict)."""
    host = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/33/T/XL/2024/7/S2A_33TXL_20240710_0_L2A"
    new = baseline >= "04.00"
    reflectance = _raster_v1(0.0001, -0.1 if new else 0.0)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "S2A_33TXL_20240710_0_L2A",
        "collection": "sentinel-2-l2a",
        "bbox": [15.0, 45.0, 16.3, 46.0],
        "geometry": FOOTPRINT,
        "properties": {
            "datetime": "2024-07-10T10:00:00Z",
            "eo:cloud_cover": 4.0,
            "proj:epsg": 32633,
            "s2:processing_baseline": baseline,
        },
        "assets": {
            "red": {"href": f"{host}/B04.tif", "proj:shape": [10980, 10980], "proj:transform": TRANSFORM_10M, **reflectance},
            "green": {"href": f"{host}/B03.tif", **reflectance},
            "blue": {"href": f"{host}/B02.tif", **reflectance},
            "visual": {"href": f"{host}/TCI.tif", **_raster_v1()},
            "scl": {"href": f"{host}/SCL.tif", **_raster_v1()},
            "nir": {"href": f"{host}/B08.tif", **reflectance},
        },
        "links": [],
    }


def earth_search_v0(offset_applied: bool) -> dict:
    """As Earth Search v0 (sentinel-s2-l2a-cogs) published: B0x keys, sentinel: properties, no raster ext."""
    host = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/33/T/XL/2022/7/S2A_33TXL_20220710_0_L2A"
    return {
        "type": "Feature",
        "id": "S2A_33TXL_20220710_0_L2A",
        "collection": "sentinel-s2-l2a-cogs",
        "bbox": [15.0, 45.0, 16.3, 46.0],
        "geometry": FOOTPRINT,
        "properties": {
            "datetime": "2022-07-10T10:00:00Z",
            "eo:cloud_cover": 7.5,
            "proj:epsg": 32633,
            "sentinel:utm_zone": 33,
            "sentinel:processing_baseline": "04.00",
            "sentinel:boa_offset_applied": offset_applied,
        },
        "assets": {
            name: {"href": f"{host}/{name}.tif", "proj:transform": TRANSFORM_10M}
            for name in ("B04", "B03", "B02", "SCL")
        }
        | {"visual": {"href": f"{host}/TCI.tif"}},
        "links": [],
    }


def planetary_computer(baseline: str | None, product_uri: str = "") -> dict:
    """As Planetary Computer publishes: B0x / visual / SCL keys, s2: properties, no scale/offset."""
    prefix = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/XL/2024/07/10/X.SAFE/GRANULE/L2A/IMG_DATA"
    properties = {"datetime": "2024-07-10T10:00:00.024000Z", "eo:cloud_cover": 0.31, "proj:epsg": 32633, "s2:mgrs_tile": "33TXL"}
    if baseline is not None:
        properties["s2:processing_baseline"] = baseline
    if product_uri:
        properties["s2:product_uri"] = product_uri
    assets = {
        band: {"href": f"{prefix}/R10m/T33TXL_{band}_10m.tif", "gsd": 10, "proj:transform": TRANSFORM_10M, "roles": ["data"]}
        for band in ("B02", "B03", "B04", "B08")
    }
    assets["visual"] = {"href": f"{prefix}/R10m/T33TXL_TCI_10m.tif", "roles": ["data"]}
    assets["SCL"] = {"href": f"{prefix}/R20m/T33TXL_SCL_20m.tif", "roles": ["data"]}
    return {
        "type": "Feature",
        "id": "S2A_MSIL2A_20240710T095031_R079_T33TXL_20240710T154155",
        "collection": "sentinel-2-l2a",
        "bbox": [15.0, 45.0, 16.3, 46.0],
        "geometry": FOOTPRINT,
        "properties": properties,
        "assets": assets,
        "links": [],
    }


def cdse() -> dict:
    """As Copernicus Data Space publishes (STAC 1.1): *_10m keys, asset-level raster:scale/offset,
    nodata and proj:code on the assets only."""
    prefix = "s3://eodata/Sentinel-2/MSI/L2A/2024/07/10/S2A_MSIL2A_20240710T095031_N0510_R079_T33TXL.SAFE/GRANULE/L2A/IMG_DATA"

    def band(name: str, res: int, scaled: bool) -> dict:
        asset = {
            "href": f"{prefix}/R{res}m/T33TXL_{name}.jp2",
            "proj:code": "EPSG:32633",
            "proj:shape": [109800 // res, 109800 // res],
            "proj:transform": [res, 0, 499980, 0, -res, 5100000],
            "nodata": 0,
            "bands": [{"name": name.split("_")[0], "eo:common_name": "red"}],
        }
        if scaled:
            asset.update({"raster:scale": 0.0001, "raster:offset": -0.1})
        return asset

    assets = {key: band(key, 10, True) for key in ("B02_10m", "B03_10m", "B04_10m", "B02_20m")}
    assets["TCI_10m"] = band("TCI_10m", 10, False)
    assets["SCL_20m"] = band("SCL_20m", 20, False)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "S2A_MSIL2A_20240710T095031_N0510_R079_T33TXL_20240710T154155",
        "collection": "sentinel-2-l2a",
        "bbox": [15.0, 45.0, 16.3, 46.0],
        "geometry": FOOTPRINT,
        "properties": {"datetime": "2024-07-10T09:50:31.024Z", "eo:cloud_cover": 12.0, "processing:version": "05.10"},
        "assets": assets,
        "links": [],
    }


# -- layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "layout"),
    [
        (earth_search_v1(), "earth-search-v1"),
        (earth_search_v0(True), "earth-search-v0"),
        (planetary_computer("05.10"), "planetary-computer"),
        (cdse(), "cdse"),
    ],
)
def test_auto_detects_the_layout_from_keys_and_properties(item: dict, layout: str) -> None:
    detected = detect_layout(item)
    assert detected is not None and detected.name == layout


def test_earth_search_v1_honours_raster_bands() -> None:
    assets = resolve_assets(earth_search_v1("05.10"))
    assert set(assets) == {"red", "green", "blue", "visual", "scl"}
    assert assets["red"].key == "red" and assets["red"].href.endswith("/B04.tif")
    assert assets["blue"].href.endswith("/B02.tif")
    assert (assets["red"].scale, assets["red"].offset, assets["red"].nodata) == (0.0001, -0.1, 0.0)
    assert (assets["scl"].scale, assets["scl"].offset, assets["scl"].nodata) == (1.0, 0.0, 0.0)


def test_earth_search_v1_old_baseline_keeps_declared_zero_offset() -> None:
    red = resolve_assets(earth_search_v1("02.14"))["red"]
    assert (red.scale, red.offset) == (0.0001, 0.0)


def test_earth_search_v0_resolves_band_keys_and_honours_offset_flag() -> None:
    applied = resolve_assets(earth_search_v0(offset_applied=True))
    assert applied["red"].key == "B04" and applied["red"].href.endswith("/B04.tif")
    assert applied["green"].key == "B03" and applied["blue"].key == "B02"
    assert applied["scl"].key == "SCL" and applied["visual"].href.endswith("/TCI.tif")
    assert (applied["red"].scale, applied["red"].offset) == (0.0001, 0.0)  # Element 84 removed the offset
    raw = resolve_assets(earth_search_v0(offset_applied=False))["red"]
    assert (raw.scale, raw.offset) == (0.0001, -0.1)


@pytest.mark.parametrize(
    ("baseline", "product_uri", "offset"),
    [
        ("05.10", "", -0.1),  # BOA_ADD_OFFSET = -1000 from baseline 04.00 on
        ("04.00", "", -0.1),
        ("02.12", "", 0.0),
        (None, "S2A_MSIL2A_20240710T095031_N0510_R079_T33TXL_20240710T154155.SAFE", -0.1),
        (None, "S2B_MSIL2A_20190629T212529_N0212_R043_T06VVN_20201006T080531.SAFE", 0.0),
        (None, "", 0.0),  # baseline unknown: no offset assumed
    ],
)
def test_planetary_computer_derives_offset_from_processing_baseline(baseline, product_uri, offset) -> None:
    assets = resolve_assets(planetary_computer(baseline, product_uri))
    assert assets["red"].key == "B04" and "T33TXL_B04_10m.tif" in assets["red"].href
    assert assets["visual"].key == "visual" and "TCI_10m" in assets["visual"].href
    assert assets["scl"].key == "SCL" and "SCL_20m" in assets["scl"].href
    for band in ("red", "green", "blue"):
        assert assets[band].scale == pytest.approx(0.0001)
        assert assets[band].offset == pytest.approx(offset)
        assert assets[band].nodata == 0.0
    assert (assets["visual"].scale, assets["visual"].offset) == (1.0, 0.0)


def test_cdse_reads_asset_level_raster_fields_and_ten_metre_keys() -> None:
    assets = resolve_assets(cdse())
    assert {band: asset.key for band, asset in assets.items()} == {
        "red": "B04_10m",
        "green": "B03_10m",
        "blue": "B02_10m",
        "visual": "TCI_10m",
        "scl": "SCL_20m",
    }
    assert assets["red"].href.startswith("s3://eodata/") and assets["red"].href.endswith("T33TXL_B04_10m.jp2")
    assert (assets["red"].scale, assets["red"].offset, assets["red"].nodata) == (0.0001, -0.1, 0.0)
    assert (assets["visual"].scale, assets["visual"].offset) == (1.0, 0.0)


@pytest.mark.parametrize(("version", "offset"), [("05.11", -0.1), ("02.14", 0.0)])
def test_cdse_item_without_raster_fields_derives_them_from_processing_version(version: str, offset: float) -> None:
    item = cdse()  # CDSE may leave raster:scale / raster:offset to the collection's item_assets
    for asset in item["assets"].values():
        asset.pop("raster:scale", None)
        asset.pop("raster:offset", None)
    item["properties"]["processing:version"] = version
    assets = resolve_assets(item)
    assert (assets["red"].scale, assets["red"].offset) == (pytest.approx(0.0001), pytest.approx(offset))
    assert (assets["scl"].scale, assets["scl"].offset) == (1.0, 0.0)


def test_item_level_raster_fields_are_a_fallback() -> None:
    item = earth_search_v1()
    for asset in item["assets"].values():
        asset.pop("raster:bands")
    item["properties"].update({"raster:scale": 0.5, "raster:offset": 3.0, "nodata": 65535})
    red = resolve_assets(item)["red"]
    assert (red.scale, red.offset, red.nodata) == (0.5, 3.0, 65535.0)


def test_defaults_when_nothing_is_declared() -> None:
    item = earth_search_v1()
    for asset in item["assets"].values():
        asset.pop("raster:bands")
    red = resolve_assets(item)["red"]
    assert (red.scale, red.offset, red.nodata) == (1.0, 0.0, 0.0)


def test_missing_asset_is_absent_and_forced_wrong_layout_resolves_nothing() -> None:
    item = earth_search_v1()
    del item["assets"]["blue"]
    assert "blue" not in resolve_assets(item) and "red" in resolve_assets(item)
    assert resolve_assets(item, layout="cdse") == {}
    assert resolve_assets({"id": "x", "assets": {"B8A": {"href": "a.tif"}}, "properties": {}}) == {}


def test_forced_layout_overrides_detection() -> None:
    # B0x keys with s2: properties would auto-detect as PC; forcing v0 changes the offset rule.
    item = planetary_computer("05.10")
    item["properties"]["sentinel:boa_offset_applied"] = True
    assert resolve_assets(item, layout="planetary-computer")["red"].offset == pytest.approx(-0.1)
    assert resolve_assets(item, layout="earth-search-v0")["red"].offset == 0.0


def test_unknown_layout_name_is_refused() -> None:
    with pytest.raises(ValueError, match="earth-search-v1"):
        resolve_assets(earth_search_v1(), layout="earth-search-v2")


# -- scenes -------------------------------------------------------------------------------


def test_scene_from_raw_earth_search_dict_reads_proj_epsg_and_red_grid() -> None:
    scene = scene_from_item(earth_search_v1())
    assert scene.id == "S2A_33TXL_20240710_0_L2A" and scene.collection == "sentinel-2-l2a"
    assert scene.crs == "EPSG:32633"
    assert scene.transform == tuple(TRANSFORM_10M) and scene.shape == (10980, 10980)
    assert scene.bbox == (15.0, 45.0, 16.3, 46.0)
    assert scene.datetime == "2024-07-10T10:00:00Z" and scene.cloud_cover == 4.0


def test_scene_from_pystac_item_reads_migrated_proj_code() -> None:
    raw = earth_search_v1()
    raw["stac_extensions"] = ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"]
    item = pystac.Item.from_dict(copy.deepcopy(raw))
    assert "proj:epsg" not in item.properties  # pystac migrated it to projection v2
    scene = scene_from_item(item)
    assert scene.crs == "EPSG:32633"
    assert scene.assets["red"].href == raw["assets"]["red"]["href"]


def test_scene_crs_falls_back_to_the_red_asset_for_cdse() -> None:
    scene = scene_from_item(cdse())
    assert scene.crs == "EPSG:32633"
    assert scene.transform == (10.0, 0.0, 499980.0, 0.0, -10.0, 5100000.0) and scene.shape == (10980, 10980)
    assert scene.cloud_cover == 12.0


def test_scene_from_pystac_item_makes_relative_hrefs_absolute(tmp_path) -> None:
    raw = earth_search_v1()
    raw["assets"]["red"]["href"] = "./B04.tif"
    item = pystac.Item.from_dict(raw)
    item.set_self_href(str(tmp_path / "scene" / "item.json"))
    assert scene_from_item(item).assets["red"].href == str(tmp_path / "scene" / "B04.tif")


def test_scene_without_bbox_takes_geometry_bounds_and_custom_cloud_property() -> None:
    item = earth_search_v1()
    del item["bbox"]
    item["properties"]["s2:cloud"] = 33.0
    scene = scene_from_item(item, cloud_property="s2:cloud")
    assert scene.bbox == (15.0, 45.0, 16.3, 46.0)
    assert scene.cloud_cover == 33.0


def test_signer_rewrites_every_href() -> None:
    scene = scene_from_item(planetary_computer("05.10"), signer=lambda href: href + "?sig=abc")
    assert scene.assets and all(asset.href.endswith("?sig=abc") for asset in scene.assets.values())
    unsigned = scene_from_item(planetary_computer("05.10"))
    assert sign_scene(unsigned, lambda href: href.upper()).assets["red"].href == unsigned.assets["red"].href.upper()
