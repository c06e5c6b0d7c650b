"""Multispectral samples (``output.bands = "all"``) against the synthetic world's known reflectance,
spectral indices against hand computations, asset keys and offsets of every catalog's real items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rsbuild.chips.bands import read_bands, vegetation_density
from rsbuild.records import Failure, Sample
from rsbuild.schemes import get_scheme
from rsbuild.sources.assets import SPECTRAL_BANDS, resolve_spectral, scene_from_item
from rsbuild.testing.synthetic import CROP, EXTRA_BANDS, REFLECTANCE, SPECTRA, FixtureInfo
from tests.chips.test_fetch import fetch_config, run_fetch_stage, truth_of_tile

SCHEME = get_scheme("esa_worldcover")
CLEAR_DAY = "2024-07-10/2024-07-10"  # only the cloud-free full-swath scene
ITEMS = Path(__file__).parents[1] / "data" / "items"


@pytest.fixture(scope="module")
def samples(fixture_data: FixtureInfo, stac_api_rustac) -> list[Sample]:
    """Tiles of two POIs with every band, labels read from the truth itself (so classes are exact)."""
    cfg = fetch_config(fixture_data, stac_api_rustac.url, str(fixture_data.truth_path), output__bands="all",
                       scenes__datetime=CLEAR_DAY)
    records = run_fetch_stage(cfg, [fixture_data.pois[0], fixture_data.pois[4]])
    assert not [r for r in records if isinstance(r, Failure)]
    return [r for r in records if isinstance(r, Sample)]


def tile_origin(fixture: FixtureInfo, sample: Sample) -> tuple[int, int]:
    a, _, c, _, e, f = sample.metadata["native_grid"]["transform"]
    g = fixture.grid.transform
    return round((f - g[5]) / e), round((c - g[2]) / a)


def test_bands_member_is_a_georeferenced_float32_reflectance_tiff(samples, fixture_data, tmp_path) -> None:
    sample = samples[0]
    path = tmp_path / "tile.tif"
    path.write_bytes(sample.bands_tif)
    with rasterio.open(path) as src:  # what torchgeo / TerraTorch-style loaders do with the file
        assert src.count == 12 and src.dtypes == ("float32",) * 12
        assert list(src.descriptions) == list(SPECTRAL_BANDS)
        assert src.crs.to_string() == "EPSG:32633"
        assert list(src.transform)[:6] == sample.metadata["native_grid"]["transform"]
        assert (src.height, src.width) == tuple(sample.metadata["native_grid"]["shape"])
        assert src.tags()["UNIT"] == "reflectance"
    meta = sample.metadata["bands"]
    assert meta["bands"] == list(SPECTRAL_BANDS) and meta["resampling"] == "nearest"
    assert meta["native_resolution_m"] == [60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 20, 20]
    assert meta["offset"] == [-0.1] * 12 and meta["scale"] == [0.0001] * 12  # baseline 05.10, offset not removed


def test_every_band_is_the_truth_reflectance_with_scale_and_offset_applied(samples, fixture_data) -> None:
    truth = fixture_data.truth
    for sample in samples:
        array, names = read_bands(sample.bands_tif)
        row, col = tile_origin(fixture_data, sample)
        size = array.shape[1]
        rows, cols = np.mgrid[row : row + size, col : col + size]
        for index, band in enumerate(EXTRA_BANDS):
            step = band.resolution // 10
            # nearest neighbour on the 10 m grid: each pixel shows its coarse pixel, made from the top-left 10 m pixel
            source = truth[(rows // step) * step, (cols // step) * step]
            expected = np.array([SPECTRA.get(int(code), (0.0,) * 9)[index] for code in range(256)], dtype=np.float32)[source]
            values = array[names.index(band.file)]
            known = source != CROP  # crop fields take one of three states
            assert known.sum() > size * size // 4
            np.testing.assert_allclose(values[known], expected[known], atol=0.5e-4 + 1e-6)  # DN rounding only
        # the 10 m RGB bands: the truth's colour per class, within the world's smooth brightness noise (6 % s.d.)
        for index, band in enumerate(("B04", "B03", "B02")):
            for code, colour in REFLECTANCE.items():
                pixels = array[names.index(band)][truth_of_tile(fixture_data, sample) == code]
                if code != CROP and pixels.size > 50:
                    assert abs(float(np.median(pixels)) - colour[index]) < 0.15 * colour[index] + 0.005, (band, code)


def test_raw_dn_of_the_served_cogs_give_the_stored_reflectance(samples, fixture_data) -> None:
    sample = samples[0]
    array, names = read_bands(sample.bands_tif)
    row, col = tile_origin(fixture_data, sample)
    size = array.shape[1]
    for file in ("B04", "B08", "B11"):
        path = fixture_data.scene_path(sample.metadata["scene"]["id"], file)
        with rasterio.open(path) as src:
            dn = src.read(1).astype(np.float32)
        step = round(fixture_data.size / dn.shape[0])
        rows, cols = np.mgrid[row : row + size, col : col + size]
        expected = dn[rows // step, cols // step] * np.float32(0.0001) + np.float32(-0.1)
        np.testing.assert_array_equal(array[names.index(file)], expected)


def test_indices_per_tile_and_class_are_the_hand_computed_means(samples, fixture_data) -> None:
    for sample in samples:
        array, names = read_bands(sample.bands_tif)
        b = {name: array[names.index(name)].astype(np.float64) for name in ("B03", "B04", "B08", "B12")}
        hand = {"ndvi": (b["B08"] - b["B04"]) / (b["B08"] + b["B04"]),
                "ndwi": (b["B03"] - b["B08"]) / (b["B03"] + b["B08"]),
                "nbr": (b["B08"] - b["B12"]) / (b["B08"] + b["B12"])}
        truth = truth_of_tile(fixture_data, sample)
        stats = sample.stats
        assert stats["indices"]["pixels"] == truth.size  # cloud-free, full swath: every pixel counts
        for name, values in hand.items():
            assert stats["indices"][name] == pytest.approx(values.mean(), abs=0.5e-4 + 1e-9)
        for entry in stats["classes"]:
            pixels = truth == entry["code"]
            assert entry["indices"]["pixels"] == int(pixels.sum())
            for name, values in hand.items():
                assert entry["indices"][name] == pytest.approx(values[pixels].mean(), abs=0.5e-4 + 1e-9)


def test_indices_tell_classes_apart_as_the_spectra_say(samples) -> None:
    by_class: dict[str, list[dict]] = {}
    for sample in samples:
        for entry in sample.stats["classes"]:
            if entry["indices"]["pixels"] > 200:
                by_class.setdefault(entry["name"], []).append(entry["indices"])
    tree = SPECTRA[10][4], REFLECTANCE[10][0]  # B08, B04
    for indices in by_class["tree cover"]:
        assert indices["ndvi"] == pytest.approx((tree[0] - tree[1]) / (tree[0] + tree[1]), abs=0.03)
        assert vegetation_density(indices["ndvi"]) == "dense"
    for indices in by_class.get("water", []):
        assert indices["ndwi"] > 0.3 and vegetation_density(indices["ndvi"]) == "sparse"


def test_without_the_option_no_member_no_indices(fixture_data, stac_api_rustac) -> None:
    cfg = fetch_config(fixture_data, stac_api_rustac.url, str(fixture_data.truth_path), scenes__datetime=CLEAR_DAY)
    sample = next(r for r in run_fetch_stage(cfg, [fixture_data.pois[0]]) if isinstance(r, Sample))
    assert sample.bands_tif is None and "bands" not in sample.metadata
    assert "indices" not in sample.stats and all("indices" not in c for c in sample.stats["classes"])


def test_a_scene_without_every_band_is_a_read_failure(fixture_data, stac_api_rustac) -> None:
    cfg = fetch_config(fixture_data, stac_api_rustac.url, str(fixture_data.truth_path), output__bands="all",
                       scenes__collection="sentinel-2-l2a-noblue", scenes__datetime=CLEAR_DAY, imagery__rgb_source="visual")
    records = run_fetch_stage(cfg, [fixture_data.pois[0]])
    assert [(r.stage, r.reason) for r in records if isinstance(r, Failure)] == [("read", "read_error")]
    assert "B02" in records[0].detail and 'output.bands = "all"' in records[0].detail


@pytest.mark.parametrize(
    ("file", "keys", "offset"),
    [
        ("earth-search_sentinel-2-l2a_N0509", ("coastal", "red", "nir", "nir08", "swir22"), 0.0),  # flag: offset removed
        ("earth-search_sentinel-2-c1-l2a_N0511", ("coastal", "red", "nir", "nir08", "swir22"), -0.1),
        ("pc_sentinel-2-l2a_N0212", ("B01", "B04", "B08", "B8A", "B12"), 0.0),  # baseline < 04.00
        ("earth-search-v0_sentinel-s2-l2a-cogs_N0214", ("B01", "B04", "B08", "B8A", "B12"), 0.0),
    ],
)
def test_every_catalog_layout_resolves_all_twelve_bands(file: str, keys: tuple[str, ...], offset: float) -> None:
    item = json.loads(next(ITEMS.glob(f"{file}*.json")).read_text(encoding="utf-8"))
    assets = resolve_spectral(item)
    assert list(assets) == list(SPECTRAL_BANDS)
    assert tuple(assets[band].key for band in ("B01", "B04", "B08", "B8A", "B12")) == keys
    assert [asset.scale for asset in assets.values()] == pytest.approx([0.0001] * 12)
    assert [asset.offset for asset in assets.values()] == pytest.approx([offset] * 12)
    assert scene_from_item(item).spectral == assets


def test_cdse_keys_name_the_resolution_and_take_the_declared_offset() -> None:
    item = json.loads(next(ITEMS.glob("cdse_*.json")).read_text(encoding="utf-8"))
    red = item["assets"]["B04_10m"]
    for key in ("B05_20m", "B08_10m", "B09_60m"):  # the trimmed item lacks them
        item["assets"][key] = {**red, "href": red["href"].replace("B04_10m", key)}
    assets = resolve_spectral(item)
    assert [assets[band].key for band in ("B04", "B05", "B08", "B09")] == ["B04_10m", "B05_20m", "B08_10m", "B09_60m"]
    assert [asset.offset for asset in assets.values()] == pytest.approx([-0.1] * len(assets))


def test_prompt_templates_see_the_indices(samples, tmp_path) -> None:
    from rsbuild.captions.prompts import PromptSet, default_prompts_dir

    (tmp_path / "system.j2").write_text((default_prompts_dir() / "system.j2").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "area.j2").write_text(
        "Describe the image.\n{% if indices %}Mean NDVI {{ indices.ndvi }}, NDWI {{ indices.ndwi }}.\n{% endif %}"
        "{% for c in stats.classes %}- {{ c.name }}{% if c.indices is defined %}: NDVI {{ c.indices.ndvi }}{% endif %}\n"
        "{% endfor %}", encoding="utf-8")
    prompts = PromptSet.load(tmp_path, ["area"])  # validated on the example stats, which have no indices
    stats = samples[0].stats
    messages, _, _ = prompts.render("area", stats)
    text = messages[-1]["content"]
    assert f"Mean NDVI {stats['indices']['ndvi']}, NDWI {stats['indices']['ndwi']}." in text
    first = stats["classes"][0]
    assert f"- {first['name']}: NDVI {first['indices']['ndvi']}" in text


def test_each_file_is_read_once_the_rgb_bands_serve_both(fixture_data, stac_api_rustac, monkeypatch) -> None:
    from rsbuild.sources import raster_io

    read = raster_io.read_on_grid
    hrefs: list[str] = []

    def recording(href: str, *args, **kwargs):
        hrefs.append(href.rsplit("/", 1)[-1])
        return read(href, *args, **kwargs)

    monkeypatch.setattr(raster_io, "read_on_grid", recording)
    cfg = fetch_config(fixture_data, stac_api_rustac.url, str(fixture_data.truth_path), output__bands="all",
                       scenes__datetime=CLEAR_DAY)
    records = run_fetch_stage(cfg, [fixture_data.pois[0]])
    assert all(isinstance(r, Sample) for r in records)
    files = [f"{band.file}.tif" for band in EXTRA_BANDS] + ["B04.tif", "B03.tif", "B02.tif", "SCL.tif", "truth.tif"]
    assert sorted(hrefs) == sorted(files)  # 12 bands, SCL and labels: one read each
