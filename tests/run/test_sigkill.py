"""SIGKILL the main process of `rsbuild build` while its worker processes run: none survives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tomli_w

from rsbuild.testing.synthetic import FixtureInfo


def group_members(pgid: int) -> set[int]:
    """Live processes of process group ``pgid`` (from /proc): the build and everything it started."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.add(int(entry.name))
    return members


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_no_process_survives_a_sigkill_of_the_build(tmp_path, fixture_data: FixtureInfo, stac_api_rustac, cog_server):
    label = fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()
    config = tmp_path / "rsbuild.toml"
    config.write_text(tomli_w.dumps({
        "pois": {"path": str(fixture_data.pois_path)},
        "scenes": {"catalog": stac_api_rustac.url, "collection": "sentinel-2-l2a", "datetime": "2024-07-01/2024-07-31"},
        "imagery": {"aoi_size": 256, "tile_size": 128, "tile_stride": 64, "output_size": 64, "read_workers": 2,
                    "cpu_workers": 2},
        "labels": {"source": "cog", "url": f"{cog_server.url}/{label}"},
        "output": {"unit_pois": 1},
        "captions": {"engine": "template", "tasks": ["area"]},
    }))  # fmt: skip
    command = [sys.executable, "-m", "rsbuild", "build", "--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]
    out = tmp_path / "out"
    # its own process group: every process the build starts (forkserver, workers, resource tracker) is in it
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if len(group_members(process.pid)) >= 5 and any((out / "images").rglob("*.png")):
                break  # main, resource tracker, forkserver, two workers; tiles made (the workers run)
            time.sleep(0.02)
        started = group_members(process.pid)
        assert process.poll() is None and len(started) >= 5, f"the build ended before its workers ran: {started}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and group_members(process.pid):
            time.sleep(0.1)
        survivors = {pid: command_line(pid)[:120] for pid in group_members(process.pid)}
        assert not survivors, f"still alive 5 s after the SIGKILL: {survivors}"
    finally:
        for pid in group_members(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.wait(10)
