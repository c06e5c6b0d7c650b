"""Copernicus Data Space end to end: the real CDSE item, its ``s3://eodata/...`` hrefs unchanged,
read from a loopback S3 server that checks every request's signature (moto's server mode).

The local COGs (the item's pixel grid, position-coded DN, as in test_real_items) are uploaded to
bucket ``eodata`` under the keys of the item's hrefs. The ``cdse`` preset fills CDSE's endpoint;
the test points ``scenes.s3.endpoint`` at the loopback server, as a user would a mirror.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rsbuild.chips.imagery import to_reflectance
from rsbuild.config import S3Config, ScenesConfig
from rsbuild.errors import ConfigError
from rsbuild.grid import aoi_grid
from rsbuild.presets import CDSE_S3_ENDPOINT
from rsbuild.records import Scene
from rsbuild.sources import raster_io
from rsbuild.sources.assets import LAYOUTS
from rsbuild.sources.object_store import configure_gdal, gdal_config
from rsbuild.sources.raster_io import RasterReadError
from rsbuild.sources.stac import SceneSearcher
from rsbuild.testing.servers import MotoS3Server, RustacServer
from tests.sources.test_real_items import AOI, REAL_ITEMS, load_item, local_tile, tile_dn, write_api_files, write_local_cogs

CDSE = next(case for case in REAL_ITEMS if case.preset == "cdse")
BUCKET = "eodata"


@pytest.fixture
def clean_environment() -> Iterator[None]:
    """``configure_gdal`` sets process-wide variables: put the environment back after each test."""
    saved = dict(os.environ)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def cdse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cdse")
    item = load_item(CDSE.file)
    where = local_tile(item, CDSE.crs, CDSE.transform)
    paths = write_local_cogs(root / "cogs", CDSE, where)
    with ExitStack() as stack:
        s3 = stack.enter_context(MotoS3Server())
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        for band, path in paths.items():
            href = item["assets"][LAYOUTS["cdse"].keys[band]]["href"]
            assert href.startswith(f"s3://{BUCKET}/")
            client.upload_file(str(path), BUCKET, href[len(f"s3://{BUCKET}/") :])
        for name in ("anonymous", "wrong-secret", "right-secret"):
            client.upload_file(str(paths["red"]), BUCKET, f"checks/{name}.tif")
        stac = stack.enter_context(RustacServer(write_api_files(root / "api", [item])))
        yield {"item": item, "where": where, "s3": s3, "stac": stac.url}


def keys_in_environment(s3: MotoS3Server, secret: str | None = None) -> None:
    os.environ["AWS_ACCESS_KEY_ID"] = s3.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = secret or s3.secret_key


def test_cdse_item_read_from_s3_with_keys_from_the_environment(cdse: dict[str, Any], clean_environment: None) -> None:
    s3: MotoS3Server = cdse["s3"]
    keys_in_environment(s3)
    cfg = ScenesConfig(preset="cdse", catalog=cdse["stac"], datetime="2025-03-30", max_cloud_cover=100.0,
                       s3={"endpoint": s3.url})  # fmt: skip
    assert cfg.s3 is not None and cfg.s3.virtual_hosting is False  # the preset's path-style addressing is kept
    options = configure_gdal(cfg.s3)
    assert options == {"AWS_S3_ENDPOINT": s3.url.removeprefix("http://"), "AWS_HTTPS": "NO",
                       "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_NO_SIGN_REQUEST": "NO"}  # fmt: skip
    assert s3.secret_key not in repr(cfg) and s3.secret_key not in str(cfg.model_dump())

    scene = SceneSearcher(cfg, required=("red", "green", "blue", "visual", "scl")).find(cdse["where"].poi, AOI * 5.0)
    assert isinstance(scene, Scene) and scene.id == cdse["item"]["id"]
    assert scene.assets["red"].href == cdse["item"]["assets"]["B04_10m"]["href"]  # s3://eodata/...jp2, unchanged
    assert scene.crs == "EPSG:32633"
    grid = aoi_grid(cdse["where"].poi, scene.crs, AOI, scene.transform)
    col0 = round((grid.transform[2] - CDSE.transform[2]) / 10)
    row0 = round((grid.transform[5] - CDSE.transform[5]) / -10)
    rows, cols = np.mgrid[row0 : row0 + AOI, col0 : col0 + AOI]
    for index, band in enumerate(("red", "green", "blue")):
        dn = raster_io.read_on_grid(scene.assets[band].href, grid)
        np.testing.assert_array_equal(dn, tile_dn(rows, cols, index))
        reflectance, _ = to_reflectance(dn, scene.assets[band])
        np.testing.assert_allclose(reflectance, dn * 1e-4 - 0.1, atol=1e-6)  # CDSE 05.11: raster:offset -0.1
    assert (raster_io.read_on_grid(scene.assets["scl"].href, grid) == 4).all()


def test_unsigned_or_wrongly_signed_reads_are_refused_without_leaking_the_secret(
    cdse: dict[str, Any], clean_environment: None
) -> None:
    s3: MotoS3Server = cdse["s3"]
    grid = aoi_grid(cdse["where"].poi, CDSE.crs, AOI, CDSE.transform)
    configure_gdal(S3Config(endpoint=s3.url, anonymous=True))
    with pytest.raises(RasterReadError) as refused:
        raster_io.read_on_grid(f"s3://{BUCKET}/checks/anonymous.tif", grid)
    assert "checks/anonymous.tif" in str(refused.value)
    wrong = "not-the-secret-0123456789abcdef"
    keys_in_environment(s3, secret=wrong)
    configure_gdal(S3Config(endpoint=s3.url))
    with pytest.raises(RasterReadError) as refused:
        raster_io.read_on_grid(f"s3://{BUCKET}/checks/wrong-secret.tif", grid)
    assert wrong not in str(refused.value) and s3.secret_key not in str(refused.value)
    keys_in_environment(s3)
    assert raster_io.read_on_grid(f"s3://{BUCKET}/checks/right-secret.tif", grid).shape == (AOI, AOI)


def test_keys_from_a_shared_credentials_file(cdse: dict[str, Any], clean_environment: None, tmp_path: Path) -> None:
    s3: MotoS3Server = cdse["s3"]
    keys = tmp_path / "cdse-keys"
    keys.write_text(f"[cdse]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n")
    options = configure_gdal(S3Config(endpoint=s3.url, credentials_file=str(keys), profile="cdse"))
    assert options["AWS_SHARED_CREDENTIALS_FILE"] == str(keys) and options["AWS_PROFILE"] == "cdse"
    assert s3.secret_key not in str(options)
    grid = aoi_grid(cdse["where"].poi, CDSE.crs, AOI, CDSE.transform)
    href = cdse["item"]["assets"]["B03_10m"]["href"]
    assert raster_io.read_on_grid(href, grid).shape == (AOI, AOI)


def test_missing_keys_and_bad_endpoint_stop_with_a_message_naming_the_fix(clean_environment: None, tmp_path: Path) -> None:
    cdse_cfg = ScenesConfig(preset="cdse")
    assert cdse_cfg.s3 is not None and cdse_cfg.s3.endpoint == CDSE_S3_ENDPOINT
    with pytest.raises(ConfigError, match=r"scenes.s3: .* needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        gdal_config(cdse_cfg.s3, environ={})
    with pytest.raises(ConfigError, match=r"scenes.s3.credentials_file = .* does not exist"):
        gdal_config(S3Config(credentials_file=str(tmp_path / "missing")), environ={})
    with pytest.raises(ConfigError, match=r"scenes.s3.endpoint = 'ftp://x' is not an endpoint URL"):
        gdal_config(S3Config(endpoint="ftp://x", anonymous=True), environ={})
    merged = ScenesConfig(preset="cdse", s3={"credentials_file": "~/.cdse"})
    assert merged.s3 is not None and (merged.s3.endpoint, merged.s3.credentials_file) == (CDSE_S3_ENDPOINT, "~/.cdse")
    assert gdal_config(S3Config(anonymous=True), environ={})["AWS_NO_SIGN_REQUEST"] == "YES"


def test_rsbuild_fetch_on_cdse_reads_scenes_and_labels_from_s3(
    cdse: dict[str, Any], clean_environment: None, tmp_path: Path
) -> None:
    """The whole fetch half from a config: the cdse preset, keys in the environment, s3:// labels too."""
    import tomli_w
    import webdataset as wds
    from typer.testing import CliRunner

    from rsbuild.cli import app
    from rsbuild.dataset.shards import list_shards
    from rsbuild.records import Grid

    s3: MotoS3Server = cdse["s3"]
    where = cdse["where"]
    a, _, c, _, e, f = CDSE.transform
    window = Grid(CDSE.crs, (a, 0.0, c + where.col0 * a, 0.0, e, f + where.row0 * e), 64, 64)
    labels = np.where(np.arange(64)[np.newaxis, :] < 32, 10, 80).repeat(64, axis=0).astype(np.uint8)  # tree | water
    raster_io.write_geotiff(str(tmp_path / "labels.tif"), labels, window, nodata=0)
    s3.client().upload_file(str(tmp_path / "labels.tif"), BUCKET, "labels/worldcover.tif")
    (tmp_path / "pois.csv").write_text(f"id,lat,lon\ncdse1,{where.poi.lat},{where.poi.lon}\n")
    config = {
        "pois": {"path": str(tmp_path / "pois.csv")},
        "scenes": {"preset": "cdse", "catalog": cdse["stac"], "datetime": "2025-03-30", "max_cloud_cover": 100.0,
                   "s3": {"endpoint": s3.url}},
        "imagery": {"aoi_size": 32, "tile_size": 32, "tile_stride": 32, "output_size": 32, "cpu_workers": 0,
                    "max_tile_cloud": 1.0},
        "labels": {"source": "cog", "url": f"s3://{BUCKET}/labels/worldcover.tif"},
    }  # fmt: skip
    (tmp_path / "rsbuild.toml").write_text(tomli_w.dumps(config))
    keys_in_environment(s3)
    result = CliRunner().invoke(app, ["fetch", "--config", str(tmp_path / "rsbuild.toml"), "--out", str(tmp_path / "chips"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert s3.secret_key not in result.output
    for path in (tmp_path / "chips").rglob("*"):
        assert not path.is_file() or s3.secret_key.encode() not in path.read_bytes(), path
    samples = [s for shard in list_shards(tmp_path / "chips") for s in wds.WebDataset(str(shard), shardshuffle=False).decode()]
    assert len(samples) == 1
    doc = samples[0]["json"]
    assert doc["metadata"]["scene"]["id"] == cdse["item"]["id"]
    grid = doc["metadata"]["grid"]
    col0 = round((grid["transform"][2] - c) / a)
    row0 = round((grid["transform"][5] - f) / e)
    rows, cols = np.mgrid[row0 : row0 + 32, col0 : col0 + 32]
    for index, limits in enumerate(doc["metadata"]["rgb"]["stretch"]):  # recorded in reflectance, offset applied once
        expected = np.percentile(tile_dn(rows, cols, index) * 1e-4 - 0.1, [2.0, 98.0])
        assert limits == pytest.approx(expected, abs=1e-5)
    shares = {entry["name"]: entry["share"] for entry in doc["stats"]["classes"]}
    assert shares == pytest.approx({"tree cover": 0.5, "water": 0.5}, abs=0.05)
