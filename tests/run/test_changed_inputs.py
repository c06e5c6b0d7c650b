"""Resume notices changed inputs, and `--retry-failed` redoes units that lost POIs to a server
that was down — all on the loopback fixture, nothing faked.

Edited POI rows: the units they fall in are redone (their old files removed), the rest skipped,
and the dataset ends byte-identical to a fresh build from the edited table. A changed config
stops the run with a message (every unit would change; the user decides with --overwrite).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.testing.servers import RangeHTTPServer
from rsbuild.testing.synthetic import FixtureInfo

runner = CliRunner()
SKIP = {"summary.json", "run_summary.json"}  # elapsed times


def write_config(path: Path, pois: Path, catalog: str, label_url: str) -> Path:
    data: dict[str, Any] = {
        "pois": {"path": str(pois)},
        "scenes": {"catalog": catalog, "collection": "sentinel-2-l2a", "datetime": "2024-07-01/2024-07-31",
                   "aoi_cloud_candidates": 0},
        "imagery": {"aoi_size": 256, "tile_size": 128, "tile_stride": 128, "output_size": 64, "read_workers": 2,
                    "cpu_workers": 0},
        "labels": {"source": "cog", "url": label_url},
        "output": {"shard_max_samples": 3, "unit_pois": 2},
        "captions": {"engine": "template", "tasks": ["area", "class"]},
    }
    path.write_text(tomli_w.dumps(data))
    return path


def tree(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in SKIP and not p.name.endswith(".stats.json")}


def markers(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "units").glob("[0-9]" * 6 + ".json"))}


def build(config: Path, out: Path, *extra: str) -> tuple[int, str, dict[str, Any]]:
    result = runner.invoke(app, ["build", "--config", str(config), "--out", str(out), "--quiet", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, " ".join(result.output.split()), json.loads((out / "run_summary.json").read_text())


@pytest.fixture
def label_url(fixture_data: FixtureInfo, cog_server: RangeHTTPServer) -> str:
    return f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"


def test_edited_poi_table_redoes_exactly_the_changed_units(tmp_path, fixture_data, stac_api_rustac, label_url):
    lines = fixture_data.pois_path.read_text().splitlines()
    pois = tmp_path / "pois.csv"
    pois.write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path / "rsbuild.toml", pois, stac_api_rustac.url, label_url)
    out = tmp_path / "out"
    assert build(config, out)[0] == 0
    before = markers(out)
    assert len(before) == 4  # 7 rows, 2 per unit

    # rename the POI of row 3 (unit 1): its old files must go, units 0, 2 and 3 stay as they are
    old_id = lines[3].split(",")[0]
    lines[3] = lines[3].replace(old_id, "renamed", 1)
    pois.write_text("\n".join(lines) + "\n")
    code, output, summary = build(config, out)
    assert code == 0, output
    assert summary["units_redone"] == 1 and summary["units_skipped"] == 3
    assert "units redone" in output
    after = markers(out)
    assert [name for name in before if before[name] != after[name]] == ["000001.json"]
    assert not [p for p in out.rglob(f"{old_id}_*") if p.is_file()]
    fresh = tmp_path / "fresh"
    assert build(config, fresh)[0] == 0
    assert tree(out) == tree(fresh)

    # a shorter table: the unit past its end disappears, the last one is redone
    pois.write_text("\n".join(lines[:6]) + "\n")  # header + 5 rows: units 0, 1, 2 (row 5 only)
    code, output, summary = build(config, out)
    assert code == 0, output
    assert summary["units_redone"] == 1 and sorted(markers(out)) == ["000000.json", "000001.json", "000002.json"]
    fresh2 = tmp_path / "fresh2"
    assert build(config, fresh2)[0] == 0
    assert tree(out) == tree(fresh2)

    # a changed config stops before touching anything
    snapshot = tree(out)
    config.write_text(config.read_text().replace("output_size = 64", "output_size = 32"))
    code, output, _ = build(config, out)
    assert code == 2 and "different configuration" in output and "--overwrite" in output
    assert tree(out) == snapshot


def rsbuild(*args: str) -> subprocess.CompletedProcess[str]:
    """A fresh process per run, as users run it (GDAL keeps failed opens for a process's life)."""
    return subprocess.run([sys.executable, "-m", "rsbuild", *args], capture_output=True, text=True, timeout=600)


def scene_of_last_poi(fixture: FixtureInfo, tmp: Path, catalog: str, label_url: str) -> str:
    """The scene the last POI with tiles is read from (a quick fetch on the healthy servers)."""
    config = write_config(tmp / "probe.toml", fixture.pois_path, catalog, label_url)
    result = runner.invoke(app, ["fetch", "--config", str(config), "--out", str(tmp / "probe"), "--quiet"])
    assert result.exit_code == 0, result.output
    samples = [s for shard in list_shards(tmp / "probe") for s in read_shard(shard)]
    last = max(samples, key=lambda s: s.metadata["poi_row"])
    return str(last.metadata["scene"]["id"])


def test_retry_failed_redoes_units_that_met_a_server_down(tmp_path, fixture_data, cog_server, label_url):
    static = fixture_data.write_static_catalog(cog_server.url, tmp_path / "healthy")
    scene = scene_of_last_poi(fixture_data, tmp_path, str(static), label_url)
    flaky = RangeHTTPServer(fixture_data.cog_dir).start()  # the scene's own server: up, then down, then up
    port = int(flaky.url.rsplit(":", 1)[1])
    catalog = fixture_data.write_static_catalog(cog_server.url, tmp_path / "catalog")
    items = [p for p in catalog.parent.rglob("*.json") if scene in p.read_text()]
    for item in items:
        item.write_text(item.read_text().replace(f"{cog_server.url}/", f"{flaky.url}/"))
    config = write_config(tmp_path / "rsbuild.toml", fixture_data.pois_path, str(catalog), label_url)
    reference, out = tmp_path / "reference", tmp_path / "out"
    try:
        first = rsbuild("build", "--config", str(config), "--out", str(reference), "--quiet")
        assert first.returncode == 0, first.stderr
    finally:
        flaky.stop()

    down = rsbuild("build", "--config", str(config), "--out", str(out), "--quiet")  # the scene's server is down
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    transient = [f for f in failures if f["transient"]]
    assert transient and all(f["stage"] == "read" for f in transient)
    assert any("could not connect" in f["detail"].lower() for f in transient)
    assert json.loads((out / "run_summary.json").read_text())["failures_transient"] == len(transient)
    if down.returncode:  # more POIs lost than output.max_failure_share allows: the message says what to do
        assert down.returncode == 1 and "rerun with --retry-failed" in " ".join(down.stderr.split())
    rows = {line.split(",")[0]: row for row, line in enumerate(fixture_data.pois_path.read_text().splitlines())}
    lost_units = {f"{(rows[f['poi_id']] - 1) // 2:06d}.json" for f in transient}
    good = {name: mtime for name, mtime in markers(out).items() if name not in lost_units}
    assert good, "every unit met the down server: the test needs some good ones"
    assert tree(out) != tree(reference)

    flaky = RangeHTTPServer(fixture_data.cog_dir, port=port).start()
    try:
        resumed = rsbuild("build", "--config", str(config), "--out", str(out), "--quiet")  # plain rerun: resume only
        assert resumed.returncode == down.returncode and tree(out) != tree(reference)  # nothing to do; the dataset is judged
        if resumed.returncode:
            assert "the finished dataset" in resumed.stderr and "rerun with --retry-failed" in " ".join(resumed.stderr.split())
        assert markers(out) == {**good, **{n: m for n, m in markers(out).items() if n in lost_units}}
        retried = rsbuild("build", "--config", str(config), "--out", str(out), "--quiet", "--retry-failed")
    finally:
        flaky.stop()
    assert retried.returncode == 0, retried.stderr
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["units_retried"] == len(lost_units) and summary["units_skipped"] == len(good)
    assert {name: markers(out)[name] for name in good} == good  # finished units were not redone
    assert tree(out) == tree(reference)
    assert not any(json.loads(line)["transient"] for line in (out / "failures.jsonl").read_text().splitlines())
