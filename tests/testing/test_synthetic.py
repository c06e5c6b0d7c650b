"""The synthetic fixture: deterministic, self-consistent pixels, labels, POIs and STAC items."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import Point, shape

from rsbuild.testing.synthetic import (
    CROP_STATES,
    EXTRA_BANDS,
    LABEL_COLLECTION,
    NOBLUE_COLLECTION,
    REFLECTANCE,
    S2_COLLECTION,
    SCENES,
    SCL_CLOUDY,
    SCL_FROM_CODE,
    UNKNOWN_CODE,
    WORLDCOVER_PIXEL_DEG,
    FixtureInfo,
    generate,
)

BASE_URL = "http://example.test/data"
CLEAR, CLOUDY, PARTIAL, NORTHEAST = (spec.id for spec in SCENES)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _interior(truth: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is one class (away from class boundaries)."""
    return (ndimage.maximum_filter(truth, 3) == truth) & (ndimage.minimum_filter(truth, 3) == truth)


def _reflectance(dn: np.ndarray, asset: dict) -> np.ndarray:
    band = asset["raster:bands"][0]
    return dn.astype(np.float64) * band["scale"] + band["offset"]


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", seed=7, size=128, aoi_size=64)
    second = generate(tmp_path / "b", seed=7, size=128, aoi_size=64)
    digests = _digests(first.root)
    assert len(digests) >= 4 * 5 + 5
    assert digests == _digests(second.root)
    assert json.dumps(first.items(BASE_URL)) == json.dumps(second.items(BASE_URL))


def test_another_seed_gives_another_truth(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=1, size=128, aoi_size=64)
    b = generate(tmp_path / "b", seed=2, size=128, aoi_size=64)
    assert (a.truth != b.truth).mean() > 0.2


# --------------------------------------------------------------------------- truth


def test_truth_has_every_class_and_a_river_crossing_the_scene(fixture_data: FixtureInfo) -> None:
    truth = fixture_data.truth
    assert truth.shape == (fixture_data.size, fixture_data.size)
    assert set(np.unique(truth)) == {10, 20, 30, 40, 50, 60, 80, 90}
    water, _ = ndimage.label(truth == 80)
    crossing = set(np.unique(water[0])) & set(np.unique(water[-1])) - {0}
    assert crossing, "a water body must run from the north edge to the south edge"
    with rasterio.open(fixture_data.truth_path) as src:
        assert src.crs.to_string() == "EPSG:32633"
        assert tuple(src.transform)[:6] == fixture_data.grid.transform


def test_truth_window_is_a_slice_of_the_truth(fixture_data: FixtureInfo) -> None:
    window = fixture_data.truth_window(30, 40, 50, 20)
    np.testing.assert_array_equal(window, _read(fixture_data.truth_path)[0, 40:60, 30:80])
    with pytest.raises(ValueError):
        fixture_data.truth_window(fixture_data.size - 10, 0, 20, 20)


# --------------------------------------------------------------------------- imagery


def test_clear_scene_bands_follow_the_class_reflectances(fixture_data: FixtureInfo) -> None:
    item = next(i for i in fixture_data.items(BASE_URL) if i["id"] == CLEAR)
    truth = fixture_data.truth
    interior = _interior(truth)
    for index, band in enumerate(("red", "green", "blue")):
        file = Path(item["assets"][band]["href"].removeprefix(BASE_URL + "/"))
        reflectance = _reflectance(_read(fixture_data.cog_dir / file)[0], item["assets"][band])
        for code, rgb in REFLECTANCE.items():
            median = float(np.median(reflectance[(truth == code) & interior]))
            if code == 40:  # each field is in one of the crop states
                assert min(s[index] for s in CROP_STATES) - 0.02 < median < max(s[index] for s in CROP_STATES) + 0.02
            else:
                # the scene has a smooth +-6 % (1 sigma) brightness modulation
                assert median == pytest.approx(rgb[index], rel=0.15, abs=0.005), (band, code)


def test_clear_scene_scl_matches_the_truth(fixture_data: FixtureInfo) -> None:
    scl = _read(fixture_data.scene_path(CLEAR, "SCL"))[0]
    assert scl.shape == (fixture_data.size // 2, fixture_data.size // 2)
    np.testing.assert_array_equal(scl, SCL_FROM_CODE[fixture_data.truth[::2, ::2]])


def test_northeast_cloud_covers_the_quadrant_only(fixture_data: FixtureInfo) -> None:
    scl = _read(fixture_data.scene_path(NORTHEAST, "SCL"))[0]
    red = _read(fixture_data.scene_path(NORTHEAST, "B04"))[0]
    half, quarter = fixture_data.size // 2, fixture_data.size // 4
    assert np.isin(scl[:quarter, quarter:], SCL_CLOUDY).all()
    assert not np.isin(scl[quarter + 20 :, : quarter - 20], SCL_CLOUDY).any()
    assert (red[:half, half:] * 1e-4 - 0.1).min() > 0.4  # clouds are bright
    assert np.isin(scl, [3]).any(), "clouds cast a shadow"


def test_cloudy_scene_is_mostly_cloud(fixture_data: FixtureInfo) -> None:
    scl = _read(fixture_data.scene_path(CLOUDY, "SCL"))[0]
    red = _read(fixture_data.scene_path(CLOUDY, "B04"))[0].astype(np.float64) * 1e-4 - 0.1
    cloud = np.isin(scl, SCL_CLOUDY)
    assert 0.55 < cloud.mean() < 0.85
    assert np.median(red[::2, ::2][np.isin(scl, [8, 9])]) > 0.35
    assert np.median(red[::2, ::2][~cloud]) < 0.2


def test_partial_scene_has_data_in_the_west_half_only(fixture_data: FixtureInfo) -> None:
    half = fixture_data.size // 2
    for file in ("B04", "B03", "B02", "TCI", "SCL"):
        data = _read(fixture_data.scene_path(PARTIAL, file))
        cut = half if file != "SCL" else half // 2
        assert (data[:, :, cut:] == 0).all(), file
        assert (data[:, :, :cut] != 0).all(), file


def test_visual_asset_is_a_bright_tci_of_the_same_scene(fixture_data: FixtureInfo) -> None:
    tci = _read(fixture_data.scene_path(CLEAR, "TCI"))
    red = _read(fixture_data.scene_path(CLEAR, "B04"))[0]
    assert tci.dtype == np.uint8 and tci.shape == (3, fixture_data.size, fixture_data.size)
    assert np.corrcoef(tci[0].ravel().astype(float), red.ravel().astype(float))[0, 1] > 0.95


# --------------------------------------------------------------------------- labels


def _labels_at_scene_centres(info: FixtureInfo, path: Path) -> np.ndarray:
    """Nearest label at every scene pixel centre, projected independently with pyproj."""
    with rasterio.open(path) as src:
        labels, transform, crs = src.read(1), src.transform, src.crs.to_string()
    rows, cols = np.mgrid[0 : info.size, 0 : info.size]
    a, _, c, _, e, f = info.grid.transform
    xs, ys = c + (cols + 0.5) * a, f + (rows + 0.5) * e
    x, y = Transformer.from_crs("EPSG:32633", crs, always_xy=True).transform(xs.ravel(), ys.ravel())
    col = np.floor((np.asarray(x) - transform.c) / transform.a).astype(int)
    row = np.floor((np.asarray(y) - transform.f) / transform.e).astype(int)
    return labels[row, col].reshape(info.size, info.size)


@pytest.mark.parametrize("which", ["4326", "32634"])
def test_label_cogs_agree_with_the_truth_away_from_boundaries(fixture_data: FixtureInfo, which: str) -> None:
    path = fixture_data.label_4326_path if which == "4326" else fixture_data.label_32634_path
    sampled = _labels_at_scene_centres(fixture_data, path)
    interior = _interior(fixture_data.truth)
    matches = sampled == fixture_data.truth
    assert matches[interior].mean() >= 0.999
    assert matches.mean() >= 0.995  # boundaries included: a one-pixel shift scores ~0.977
    assert (sampled[2:-2, 2:-2] != 0).all(), "labels cover the scene (a label pixel centred outside it is nodata)"


def test_label_cogs_have_the_expected_grids(fixture_data: FixtureInfo) -> None:
    with rasterio.open(fixture_data.label_4326_path) as src:
        assert src.crs.to_epsg() == 4326 and src.nodata == 0 and src.dtypes[0] == "uint8"
        assert src.res == pytest.approx((WORLDCOVER_PIXEL_DEG, WORLDCOVER_PIXEL_DEG))
        corners = src.read(1)[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).all(), "the margin outside the scene is nodata"
    with rasterio.open(fixture_data.label_32634_path) as src:
        assert src.crs.to_epsg() == 32634 and src.res == (10.0, 10.0)


def test_unknown_codes_appear_in_labels_only_when_asked(
    fixture_data: FixtureInfo, fixture_data_unknown_codes: FixtureInfo
) -> None:
    assert UNKNOWN_CODE not in _read(fixture_data.label_4326_path)
    for path in (fixture_data_unknown_codes.label_4326_path, fixture_data_unknown_codes.label_32634_path):
        assert (_read(path) == UNKNOWN_CODE).sum() >= 25
    assert UNKNOWN_CODE not in fixture_data_unknown_codes.truth


# --------------------------------------------------------------------------- POIs


def test_pois_fit_their_aoi_and_project_to_their_pixel(fixture_data: FixtureInfo) -> None:
    with fixture_data.pois_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [p.poi_id for p in fixture_data.pois]
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    margin = fixture_data.aoi_size // 2 + 8
    sides = set()
    for row in rows:
        x, y = to_utm.transform(float(row["lon"]), float(row["lat"]))
        col, pixel_row = int((x - 700000) // 10), int((5000000 - y) // 10)
        if row["id"] == "outside":
            assert not (0 <= col < fixture_data.size and 0 <= pixel_row < fixture_data.size)
            continue
        assert (col, pixel_row) == fixture_data.poi_pixels[row["id"]]
        assert margin <= col <= fixture_data.size - margin and margin <= pixel_row <= fixture_data.size - margin
        sides.add("west" if col < fixture_data.size // 2 else "east")
    assert len(rows) == 7 and sides == {"west", "east"}


# --------------------------------------------------------------------------- STAC


def test_items_have_the_earth_search_v1_layout(fixture_data: FixtureInfo) -> None:
    items = fixture_data.items(BASE_URL)
    assert [i["id"] for i in items] == [spec.id for spec in SCENES]
    for item in items:
        props = item["properties"]
        assert item["collection"] == S2_COLLECTION
        assert props["proj:code"] == "EPSG:32633" and props["s2:processing_baseline"] == "05.10"
        assert {"datetime", "eo:cloud_cover", "platform"} <= set(props)
        assert set(item["assets"]) == {"red", "green", "blue", "visual", "scl"} | {band.key for band in EXTRA_BANDS}
        for key, asset in item["assets"].items():
            assert {"href", "type", "roles", "proj:shape", "proj:transform", "raster:bands"} <= set(asset), key
            local = fixture_data.cog_dir / asset["href"].removeprefix(BASE_URL + "/")
            with rasterio.open(local) as src:
                assert list(asset["proj:shape"]) == [src.height, src.width]
                assert asset["proj:transform"] == list(src.transform)[:6]
                assert asset["raster:bands"][0]["data_type"] == src.dtypes[0]
        for band in ("red", "green", "blue", *(extra.key for extra in EXTRA_BANDS)):
            raster = item["assets"][band]["raster:bands"][0]
            assert (raster["scale"], raster["offset"], raster["nodata"]) == (0.0001, -0.1, 0)
        read_back = pystac.Item.from_dict(item)
        assert read_back.properties["proj:code"] == "EPSG:32633"


def test_item_geometry_covers_the_data_and_only_the_data(fixture_data: FixtureInfo) -> None:
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    size = fixture_data.size
    inset = [(2, 2), (size - 2, 2), (2, size - 2), (size - 2, size - 2), (size // 2 - 2, size // 2)]
    for item in fixture_data.items(BASE_URL):
        footprint = shape(item["geometry"])
        minx, miny, maxx, maxy = footprint.bounds
        assert item["bbox"] == pytest.approx([minx, miny, maxx, maxy])
        half_only = item["id"] == PARTIAL
        for col, row in inset:
            inside = to_lonlat.transform(700000 + col * 10, 5000000 - row * 10)
            has_data = col < size // 2 or not half_only
            assert footprint.contains(Point(inside)) == has_data, (item["id"], col, row)


def test_variant_without_blue_and_label_item(fixture_data: FixtureInfo) -> None:
    noblue = fixture_data.items(BASE_URL, collection=NOBLUE_COLLECTION, drop_assets=("blue",))
    assert all(i["collection"] == NOBLUE_COLLECTION and "blue" not in i["assets"] for i in noblue)
    (label,) = fixture_data.label_items(BASE_URL)
    assert label["collection"] == LABEL_COLLECTION and label["properties"]["proj:code"] == "EPSG:4326"
    assert label["assets"]["map"]["href"] == f"{BASE_URL}/{fixture_data.label_4326_path.name}"
    assert {c["id"] for c in fixture_data.collections()} == {S2_COLLECTION, NOBLUE_COLLECTION, LABEL_COLLECTION}


def test_static_catalog_reads_back_with_pystac(fixture_data: FixtureInfo, tmp_path: Path) -> None:
    catalog_path = fixture_data.write_static_catalog(BASE_URL, tmp_path / "catalog")
    catalog = pystac.Catalog.from_file(str(catalog_path))
    items = {(item.collection_id, item.id) for item in catalog.get_items(recursive=True)}
    expected = {(c, spec.id) for c in (S2_COLLECTION, NOBLUE_COLLECTION) for spec in SCENES}
    assert items == expected | {(LABEL_COLLECTION, fixture_data.label_items(BASE_URL)[0]["id"])}
    for path in tmp_path.rglob("*.json"):
        links = json.loads(path.read_text())["links"]
        assert all("://" not in link["href"] for link in links), path


def test_item_collection_file_and_load_round_trip(fixture_data: FixtureInfo, tmp_path: Path) -> None:
    path = fixture_data.write_item_collection(BASE_URL, tmp_path / "items.json", drop_assets=("visual",))
    features = json.loads(path.read_text())["features"]
    assert [f["id"] for f in features] == [spec.id for spec in SCENES]
    assert all("visual" not in f["assets"] for f in features)
    loaded = FixtureInfo.load(fixture_data.root)
    assert loaded == fixture_data
    assert loaded.items(BASE_URL) == fixture_data.items(BASE_URL)


def test_scene_too_small_for_the_aoi_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too small for aoi_size 1024"):
        generate(tmp_path, size=1024, aoi_size=1024)
    assert not any(tmp_path.iterdir()), "nothing is written before the check"
