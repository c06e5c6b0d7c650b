"""The fetch stage against real loopback servers: pixels, labels and statistics vs the ground truth."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from rsbuild.chips.fetch import Fetcher
from rsbuild.config import Config, config_from_dict
from rsbuild.records import Failure, Poi, Sample
from rsbuild.run.pipeline import make_searcher
from rsbuild.schemes import NODATA_INDEX, get_scheme
from rsbuild.sources import raster_io
from rsbuild.sources.labels.factory import make_label_source
from rsbuild.testing.synthetic import FixtureInfo

SCHEME = get_scheme("esa_worldcover")


def fetch_config(fixture: FixtureInfo, stac_url: str, label_url: str, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "pois": {"path": str(fixture.pois_path)},
        "scenes": {"catalog": stac_url, "collection": "sentinel-2-l2a", "datetime": "2024-07-01/2024-07-31"},
        "imagery": {"aoi_size": 256, "tile_size": 128, "tile_stride": 64, "output_size": 128, "read_workers": 4,
                    "cpu_workers": 0},
        "labels": {"source": "cog", "url": label_url},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return config_from_dict(data)


def run_fetch_stage(cfg: Config, pois: list[Poi]) -> list[Sample | Failure]:
    with Fetcher(cfg, make_searcher(cfg), make_label_source(cfg.labels)) as fetcher:
        return [record for _poi, records in fetcher.run(pois) for record in records]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def interior(truth: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood has one class (not on a class boundary)."""
    return (ndimage.maximum_filter(truth, 3) == ndimage.minimum_filter(truth, 3))


def truth_of_tile(fixture: FixtureInfo, sample: Sample) -> np.ndarray:
    a, _, c, _, e, f = sample.metadata["native_grid"]["transform"]
    g = fixture.grid.transform
    col, row = round((c - g[2]) / a), round((f - g[5]) / e)
    size = sample.metadata["native_grid"]["shape"][0]
    return fixture.truth_window(col, row, size, size)


@pytest.fixture(scope="module")
def label_urls(fixture_data: FixtureInfo, cog_server) -> dict[str, str]:
    rel = lambda p: p.relative_to(fixture_data.cog_dir).as_posix()  # noqa: E731
    return {
        "EPSG:4326": f"{cog_server.url}/{rel(fixture_data.label_4326_path)}",
        "EPSG:32634": f"{cog_server.url}/{rel(fixture_data.label_32634_path)}",
    }


@pytest.mark.parametrize("label_crs", ["EPSG:4326", "EPSG:32634"])
def test_labels_align_with_ground_truth_whatever_the_label_crs(fixture_data, stac_api_rustac, label_urls, label_crs):
    cfg = fetch_config(fixture_data, stac_api_rustac.url, label_urls[label_crs])
    pois = [p for p in fixture_data.pois if p.poi_id != "outside"][:2]
    records = run_fetch_stage(cfg, pois)
    samples = [r for r in records if isinstance(r, Sample)]
    assert len(samples) == 2 * 9, [r for r in records if isinstance(r, Failure)]
    index_of_code = {c.code: i for i, c in enumerate(SCHEME.classes)}
    for sample in samples:
        mask = decode(sample.mask_png)
        truth = truth_of_tile(fixture_data, sample)
        truth_index = np.vectorize(index_of_code.get)(truth)
        core = interior(truth)
        agreement = (mask[core] == truth_index[core]).mean()
        assert agreement >= 0.99, f"{sample.key}: {agreement:.4f} of non-boundary pixels agree ({label_crs})"


def test_chip_pixels_stats_and_metadata(fixture_data, stac_api_rustac, label_urls):
    cfg = fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"], imagery__output_size=64)
    poi = next(p for p in fixture_data.pois if p.poi_id.startswith("east"))
    samples = [r for r in run_fetch_stage(cfg, [poi]) if isinstance(r, Sample)]
    assert [s.key for s in samples] == [f"{poi.poi_id}_t{i:04d}" for i in range(9)]
    water = SCHEME.index_of("water")
    for sample in samples:
        rgb, mask = decode(sample.image_png), decode(sample.mask_png)
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and mask.shape == (64, 64)
        # class shares in stats are the shares of the written mask's valid pixels
        valid = mask != NODATA_INDEX
        for cls in sample.stats["classes"]:
            share = (mask[valid] == cls["index"]).mean()
            assert cls["share"] == pytest.approx(share, abs=1e-3)
        # water is dark in a Sentinel-2 true-colour chip: darker than the tile's land on average
        if (mask == water).sum() > 50 and (valid & (mask != water)).sum() > 50:
            assert rgb[mask == water].mean() < rgb[valid & (mask != water)].mean()
        meta = sample.metadata
        assert meta["scene"]["id"] == "S2A_33TXL_20240710_0_L2A"  # clear, covers the east half
        assert meta["grid"]["crs"] == "EPSG:32633" and meta["grid"]["shape"] == [64, 64]
        assert meta["grid"]["transform"][0] == pytest.approx(20.0)  # 128 native px of 10 m → 64 px
        west, south, east, north = meta["bbox_wgs84"]
        assert west < east and south < north
    # neighbouring tiles share one stretch (computed over the whole AOI)
    assert len({str(s.metadata["rgb"]["stretch"]) for s in samples}) == 1


def test_poi_without_scene_and_scene_without_asset_are_recorded(fixture_data, stac_api_rustac, label_urls):
    cfg = fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"])
    inside = next(p for p in fixture_data.pois if p.poi_id != "outside")
    outside = next(p for p in fixture_data.pois if p.poi_id == "outside")
    records = run_fetch_stage(cfg, [outside, inside])
    assert isinstance(records[0], Failure) and records[0].reason == "no_scene" and records[0].poi_id == "outside"
    assert sum(isinstance(r, Sample) for r in records[1:]) == 9  # the run carried on

    noblue = fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"], scenes__collection="sentinel-2-l2a-noblue")
    (failure,) = run_fetch_stage(noblue, [inside])
    assert failure.reason == "missing_asset" and "blue" in failure.detail


def test_tiles_without_labels_or_under_clouds_are_skipped_with_reasons(fixture_data, stac_api_rustac, cog_server, label_urls):
    # a label raster that covers only the western half of the scene
    codes = fixture_data.truth.copy()
    codes[:, codes.shape[1] // 2 :] = 0
    partial = fixture_data.cog_dir / "partial_labels_test.tif"
    raster_io.write_geotiff(str(partial), codes, fixture_data.grid, nodata=0)
    cfg = fetch_config(fixture_data, stac_api_rustac.url, f"{cog_server.url}/{partial.name}", imagery__min_tile_valid=0.2)
    east = next(p for p in fixture_data.pois if p.poi_id.startswith("east"))
    records = run_fetch_stage(cfg, [east])
    assert len(records) == 9
    edge = fixture_data.size // 2
    for record in records:
        key = record.key
        tile = int(key.rsplit("_t", 1)[1])
        window_col = cfg.imagery.tile_stride * (tile % 3)
        first_col = fixture_data.poi_pixels[east.poi_id][0] - 128 + window_col
        labelled = max(0, min(128, edge - first_col)) / 128
        if labelled == 0:
            assert isinstance(record, Failure) and record.reason == "all_nodata", key
        elif labelled < 0.2:
            assert isinstance(record, Failure) and record.reason == "low_valid", key
        else:
            assert isinstance(record, Sample), key
            assert record.stats["valid_share"] == pytest.approx(labelled, abs=0.02)

    # the 2024-07-12 scene has one big cloud over the north-east quadrant
    cloudy = fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"],
                          scenes__datetime="2024-07-12/2024-07-12", scenes__max_cloud_cover=50)
    records = run_fetch_stage(cloudy, [p for p in fixture_data.pois if p.poi_id != "outside"])
    skipped = [r for r in records if isinstance(r, Failure)]
    assert any(r.reason == "cloudy" for r in skipped), [r.reason for r in skipped]
    kept = [r for r in records if isinstance(r, Sample)]
    assert kept and all(s.stats["cloud_share"] <= 0.5 for s in kept)
    assert all(s.metadata["scene"]["id"] == "S2B_33TXL_20240712_0_L2A" for s in kept)


def test_worker_processes_give_identical_samples(fixture_data, stac_api_rustac, label_urls):
    pois = [p for p in fixture_data.pois if p.poi_id != "outside"][:3] + [fixture_data.pois[-1]]
    inline = run_fetch_stage(fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"]), pois)
    forked = run_fetch_stage(
        fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"], imagery__cpu_workers=2), pois
    )
    assert [type(r) for r in inline] == [type(r) for r in forked]
    for a, b in zip(inline, forked):
        if isinstance(a, Sample):
            assert (a.key, a.image_png, a.mask_png, a.stats, a.metadata) == (b.key, b.image_png, b.mask_png, b.stats, b.metadata)
        else:
            assert a == b


def test_scene_is_chosen_by_the_clouds_over_the_aoi(fixture_data, cog_server, label_urls, tmp_path):
    """The north-east-cloud scene claims less scene-level cloud (2 %) than the clear one (4 %), but
    its cloud sits on east1's AOI: reading the SCL of the best candidates picks the clear scene."""
    from rsbuild.testing.servers import RustacServer

    keep = {"S2A_33TXL_20240710_0_L2A", "S2B_33TXL_20240712_0_L2A"}
    items = [item for item in fixture_data.items(cog_server.url) if item["id"] in keep]
    for item in items:
        if item["id"] == "S2B_33TXL_20240712_0_L2A":
            item["properties"]["eo:cloud_cover"] = 2.0
    collection = next(c for c in fixture_data.collections() if c["id"] == "sentinel-2-l2a")
    (tmp_path / "collection.json").write_text(json.dumps(collection))
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    east1 = next(p for p in fixture_data.pois if p.poi_id == "east1")
    with RustacServer([tmp_path / "collection.json", tmp_path / "items.json"]) as stac:
        by_aoi = run_fetch_stage(fetch_config(fixture_data, stac.url, label_urls["EPSG:4326"]), [east1])
        by_scene = run_fetch_stage(
            fetch_config(fixture_data, stac.url, label_urls["EPSG:4326"], scenes__aoi_cloud_candidates=0), [east1]
        )
    chosen = {r.metadata["scene"]["id"] for r in by_aoi if isinstance(r, Sample)}
    assert chosen == {"S2A_33TXL_20240710_0_L2A"} and len(by_aoi) == 9
    assert all(r.metadata["scene"]["aoi_cloud_share"] == 0.0 for r in by_aoi)
    kept = [r for r in by_scene if isinstance(r, Sample)]
    assert all(r.metadata["scene"]["id"] == "S2B_33TXL_20240712_0_L2A" for r in kept)
    assert all(r.metadata["scene"]["aoi_cloud_share"] > 0.5 for r in kept)
    assert sum(isinstance(r, Failure) and r.reason == "cloudy" for r in by_scene) >= 4


def test_unknown_label_codes_become_nodata_and_are_counted(fixture_data, fixture_data_unknown_codes, stac_api_rustac):
    # the same truth (same seed) with a few squares of code 254 in the label raster (a local path here)
    cfg = fetch_config(fixture_data, stac_api_rustac.url, str(fixture_data_unknown_codes.label_4326_path))
    clean = fetch_config(fixture_data, stac_api_rustac.url, str(fixture_data.label_4326_path))
    pois = [p for p in fixture_data.pois if p.poi_id != "outside"]
    dirty = {r.key: r for r in run_fetch_stage(cfg, pois) if isinstance(r, Sample)}
    reference = {r.key: r for r in run_fetch_stage(clean, pois) if isinstance(r, Sample)}
    touched = [k for k, s in dirty.items() if s.stats["unknown_code_pixels"] > 0]
    assert touched, "the sprinkled unknown codes fall inside some AOI"
    for key in touched:
        mask, ref = decode(dirty[key].mask_png), decode(reference[key].mask_png)
        changed = mask != ref
        assert changed.any() and (mask[changed] == NODATA_INDEX).all()  # unknown → nodata, never a class
        assert dirty[key].stats["valid_pixels"] == reference[key].stats["valid_pixels"] - int(changed.sum())
    for key in set(dirty) - set(touched):
        assert dirty[key].mask_png == reference[key].mask_png


def test_the_scl_read_for_the_scene_choice_is_the_mask_no_second_read(fixture_data, cog_server, stac_api_rustac, label_urls,
                                                                       monkeypatch):
    """With AOI-cloud candidates, each candidate's SCL is read once per POI, and the chosen one
    becomes the cloud mask (its share in the metadata is the share that chose it)."""
    reads: list[str] = []
    real_read = raster_io.read_on_grid

    def counted(href: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(href)
        return real_read(href, *args, **kwargs)

    monkeypatch.setattr(raster_io, "read_on_grid", counted)
    east1 = next(p for p in fixture_data.pois if p.poi_id == "east1")
    records = run_fetch_stage(fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"]), [east1])
    scl_reads = [href for href in reads if href.endswith("/SCL.tif")]
    assert len(scl_reads) >= 2, "several candidate scenes have an SCL"
    assert len(scl_reads) == len(set(scl_reads)), f"an SCL was read twice: {scl_reads}"
    samples = [r for r in records if isinstance(r, Sample)]
    assert samples and all(s.metadata["scene"]["aoi_cloud_share"] == 0.0 for s in samples)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_aoi_cloud_share_counts_cloud_classes_among_observed_pixels(dtype: type) -> None:
    """The share that picks the clearest candidate scene: cloud, shadow and cirrus pixels over the
    SCL's observed (non-zero) pixels, 1.0 when the AOI is not observed at all."""
    from types import SimpleNamespace

    cloud_classes = [0, 3, 8, 9, 10]  # 0 (no data) never counts as cloud
    judge = SimpleNamespace(cfg=SimpleNamespace(imagery=SimpleNamespace(cloud_classes=cloud_classes)))
    rng = np.random.default_rng(3)
    scl = rng.integers(0, 12, size=(96, 80)).astype(dtype)
    scl[:30] = 0
    observed = scl[scl != 0]
    expected = np.isin(observed, [3, 8, 9, 10]).sum() / observed.size
    assert Fetcher._aoi_cloud_share(judge, scl) == expected
    assert Fetcher._aoi_cloud_share(judge, np.zeros((8, 8), dtype=dtype)) == 1.0
