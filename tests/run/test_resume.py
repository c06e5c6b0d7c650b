"""Kill `rsbuild build` with SIGKILL at several points, run it again: the result is byte-identical
to an uninterrupted run (template engine), with no unit written twice."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from rsbuild.testing.synthetic import FixtureInfo


def config_file(tmp_path: Path, fixture: FixtureInfo, stac_url: str, label_url: str) -> Path:
    data = {
        "pois": {"path": str(fixture.pois_path)},
        "scenes": {"catalog": stac_url, "collection": "sentinel-2-l2a", "datetime": "2024-07-01/2024-07-31"},
        "imagery": {"aoi_size": 256, "tile_size": 128, "tile_stride": 64, "output_size": 64, "read_workers": 2, "cpu_workers": 0},
        "labels": {"source": "cog", "url": label_url},
        "output": {"shard_max_samples": 4, "unit_pois": 1, "folder_file_cap": 10, "write_bbox_overlays": True},
        "captions": {"engine": "template", "tasks": ["area", "class", "revise"], "paraphrases": 2},
    }
    path = tmp_path / "rsbuild.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def build_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rsbuild", "build", "--config", str(config), "--out", str(out), "--quiet"]


def tree(out: Path) -> dict[str, str]:
    """Every output file but timings, logs and the run's own bookkeeping of elapsed time."""
    skip = {"summary.json", "run_summary.json"}
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip and not p.name.endswith(".stats.json")
    }


def markers(out: Path) -> int:
    return len(list((out / "units").glob("[0-9]" * 6 + ".json"))) if (out / "units").is_dir() else 0


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "while the first unit is open": lambda out: any((out / "images").rglob("*.png")) and markers(out) == 0,
    "mid-shard": lambda out: any((out / "shards").glob("*.tar.tmp")) and markers(out) >= 1,
    "after some units": lambda out: markers(out) >= 3,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, fixture_data, stac_api_rustac, cog_server):
    tmp = tmp_path_factory.mktemp("resume")
    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    config = config_file(tmp, fixture_data, stac_api_rustac.url, label_url)
    reference = tmp / "reference"
    subprocess.run(build_command(config, reference), check=True, capture_output=True, timeout=600)
    return config, reference, cog_server


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_build_resumes_to_identical_output(setup, tmp_path, point):
    config, reference, cog_server = setup
    out = tmp_path / "out"
    cog_server.latency_s = 0.02  # slow reads so each kill point is reached before the run ends
    try:
        process = subprocess.Popen(build_command(config, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not KILL_POINTS[point](out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert process.poll() is None, f"the run ended before the kill point {point!r}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        cog_server.latency_s = 0.0
    assert process.returncode == -signal.SIGKILL
    units_before = markers(out)
    assert units_before < markers(reference)  # the kill left work to do
    assert not (out / "README.md").exists()
    finished = {p: p.stat().st_mtime_ns for p in (out / "units").glob("[0-9]" * 6 + ".json")}

    rerun = subprocess.run(build_command(config, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert tree(out) == tree(reference)
    assert not list(out.rglob("*.tmp"))
    # units finished before the kill were skipped, not redone
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())
