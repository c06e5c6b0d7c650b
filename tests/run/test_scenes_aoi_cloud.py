"""`rsbuild scenes --aoi-cloud`: the AOI cloud share from the SCL window only, checked against the
synthetic world's cloud truth, and no imagery or label COG requested."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.grid import aoi_grid
from rsbuild.testing.servers import RangeHTTPServer, RustacServer
from rsbuild.testing.synthetic import SCENES, _cloud_opacity, _cloud_shadow
from tests.test_cli import write_config

NORTHEAST = next(spec for spec in SCENES if spec.clouds == "northeast")


def _truth_shares(fixture_data) -> dict[str, float]:
    """Per POI: the cloudy share of its AOI (the fetch's grid rule) in the north-east scene, from the
    generator's cloud pattern (cloud, cirrus or shadow at 10 m, seen through the 20 m SCL)."""
    size, aoi, scene = fixture_data.size, fixture_data.aoi_size, fixture_data.grid
    opacity = _cloud_opacity(np.random.default_rng(0), NORTHEAST, size)
    cloudy = (opacity >= 0.1) | _cloud_shadow(opacity)
    at_20m = cloudy[::2, ::2].repeat(2, axis=0).repeat(2, axis=1)
    shares = {}
    for poi in fixture_data.pois:
        if poi.poi_id in fixture_data.poi_pixels:
            grid = aoi_grid(poi, scene.crs, aoi, scene.transform)
            col = round((grid.transform[2] - scene.transform[2]) / scene.transform[0])
            row = round((grid.transform[5] - scene.transform[5]) / scene.transform[4])
            shares[poi.poi_id] = float(at_20m[row : row + aoi, col : col + aoi].mean())
    return shares


def test_aoi_cloud_counts_the_scl_share_and_reads_no_imagery(tmp_path: Path, fixture_data) -> None:
    truth = _truth_shares(fixture_data)
    assert truth["east1"] > 0.9 and min(truth.values()) < 0.1  # shares differ from AOI to AOI
    # a server of its own: new URLs, so no raster cached by earlier tests hides a request
    with RangeHTTPServer(fixture_data.cog_dir) as cogs:
        items = [item for item in fixture_data.items(cogs.url) if item["id"] == NORTHEAST.id]
        collection = next(c for c in fixture_data.collections() if c["id"] == "sentinel-2-l2a")
        (tmp_path / "collection.json").write_text(json.dumps(collection))
        (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        label_url = f"{cogs.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
        with RustacServer([tmp_path / "collection.json", tmp_path / "items.json"]) as stac:
            config = write_config(tmp_path, fixture_data, stac.url, label_url)
            result = CliRunner().invoke(app, ["scenes", "-c", str(config), "--aoi-cloud"], env={"COLUMNS": "250"})
        paths = {record.path for record in cogs.request_log}
    assert result.exit_code == 0, result.output
    assert paths and all(path.endswith("/SCL.tif") for path in paths), paths  # no band, visual or label bytes
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 6}
    for poi, share in truth.items():
        cells = [cell.strip() for cell in lines[poi].split("│")]
        assert cells[3] == NORTHEAST.id and cells[6] == f"{100 * share:.1f} %", (poi, share, lines[poi])
    assert "outside" in lines and "no_scene" in lines["outside"]


def test_aoi_cloud_picks_the_clearest_candidate_like_the_fetch(tmp_path: Path, fixture_data, cog_server) -> None:
    """The north-east scene claims less scene cloud than the clear one, but east1's AOI is under its cloud."""
    keep = {"S2A_33TXL_20240710_0_L2A", NORTHEAST.id}
    items = [item for item in fixture_data.items(cog_server.url) if item["id"] in keep]
    for item in items:
        if item["id"] == NORTHEAST.id:
            item["properties"]["eo:cloud_cover"] = 2.0
    collection = next(c for c in fixture_data.collections() if c["id"] == "sentinel-2-l2a")
    (tmp_path / "collection.json").write_text(json.dumps(collection))
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    pois = tmp_path / "pois.csv"
    pois.write_text("\n".join(line for line in fixture_data.pois_path.read_text().splitlines() if line.startswith(("poi_id", "id", "east1"))) + "\n")
    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    with RustacServer([tmp_path / "collection.json", tmp_path / "items.json"]) as stac:
        config = write_config(tmp_path, fixture_data, stac.url, label_url, pois=pois)
        plain = CliRunner().invoke(app, ["scenes", "-c", str(config)], env={"COLUMNS": "250"})
        clouds = CliRunner().invoke(app, ["scenes", "-c", str(config), "--aoi-cloud"], env={"COLUMNS": "250"})
    assert plain.exit_code == 0 and clouds.exit_code == 0, (plain.output, clouds.output)
    assert NORTHEAST.id in plain.output and "not read" in plain.output
    assert "S2A_33TXL_20240710_0_L2A" in clouds.output and "0.0 %" in clouds.output and NORTHEAST.id not in clouds.output
