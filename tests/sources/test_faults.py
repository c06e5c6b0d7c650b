"""The fetch stage behind fault-injecting proxies (COG server and STAC API): retries that work.

Each run gets its own proxies (fresh URLs, so GDAL's caches never carry over). The reference is
the same world without faults; a faulty run must keep >= 99 % of its samples with the same PNG and
mask bytes and statistics, finish (a stall does not hang it), and record what it gave up as
transient.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rsbuild.config import Config, config_from_dict
from rsbuild.errors import InputError
from rsbuild.records import Failure, Sample
from rsbuild.retries import RETRIES
from rsbuild.run.pipeline import make_searcher
from rsbuild.sources import ranges, raster_io, stac
from rsbuild.testing.faults import FAULT_KINDS, FaultProxy, FaultyWorld
from rsbuild.testing.servers import RangeHTTPServer
from rsbuild.testing.synthetic import FixtureInfo

READ_TIMEOUT_S = 1.0  # GDAL and STAC read timeout in these tests; proxies stall for 3 s


@pytest.fixture()
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", str(int(READ_TIMEOUT_S)))
    monkeypatch.setenv("GDAL_HTTP_CONNECTTIMEOUT", "2")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    monkeypatch.setattr(stac, "SEARCH_TIMEOUT_S", (2.0, READ_TIMEOUT_S))
    monkeypatch.setattr(stac, "SEARCH_BACKOFF", stac.Backoff(attempts=5, base_s=0.05, cap_s=0.5))
    monkeypatch.setattr(raster_io, "READ_BACKOFF", raster_io.Backoff(attempts=4, base_s=0.05, cap_s=0.5))


def fetch_config(world: FaultyWorld) -> Config:
    return world.config()


def run_world(fixture: FixtureInfo, cog_server: RangeHTTPServer, folder: Path, shares: dict[str, float],
              seed: int = 0, stac_shares: dict[str, float] | None = None) -> tuple[list[Sample | Failure], dict[str, Any]]:
    """Fetch every POI of the fixture through a fresh faulty world; records and proxy counts."""
    with FaultyWorld(fixture, cog_server.url, folder, shares, stac_shares=stac_shares, seed=seed, stall_s=3.0) as world:
        records = world.fetch(world.config())
        return records, world.counts()


def by_key(records: list[Sample | Failure]) -> dict[str, Sample]:
    return {r.key: r for r in records if isinstance(r, Sample)}


@pytest.fixture(scope="module")
def reference(fixture_data: FixtureInfo, cog_server: RangeHTTPServer, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Sample]:
    records, counts = run_world(fixture_data, cog_server, tmp_path_factory.mktemp("clean"), {})
    assert counts["cog"]["faults"] == {} and counts["stac"]["faults"] == {}
    samples = by_key(records)
    assert len(samples) == 6 * 9  # six POIs inside the scene, nine tiles each ("outside" has no scene)
    return samples


def assert_same_samples(reference: dict[str, Sample], records: list[Sample | Failure]) -> None:
    samples = by_key(records)
    assert len(samples) >= 0.99 * len(reference), [r for r in records if isinstance(r, Failure)]
    for key, sample in samples.items():
        expected = reference[key]
        assert sample.image_png == expected.image_png, key
        assert sample.mask_png == expected.mask_png, key
        assert sample.stats == expected.stats and sample.metadata == expected.metadata, key


def test_gdals_own_reader_gives_the_same_samples(
    fixture_data, cog_server, reference, tmp_path, monkeypatch
):
    """The range reader (the default, ``reference``) against GDAL's /vsicurl/ (``RSBUILD_HTTP_RANGES=NO``):
    the same PNG, mask and statistics bytes for every sample (requests per chip: scripts/bench.py)."""
    monkeypatch.setenv(ranges.ENABLE, "NO")
    records, _counts = run_world(fixture_data, cog_server, tmp_path, {})
    assert len(by_key(records)) == len(reference)
    assert_same_samples(reference, records)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_ten_percent_of_each_fault_keeps_every_sample_byte_identical(
    fixture_data, cog_server, reference, tmp_path, short_timeouts, kind
):
    RETRIES.reset()
    records, counts = run_world(fixture_data, cog_server, tmp_path, {kind: 0.1}, seed=7)
    faults = counts["cog"]["faults"].get(kind, 0) + counts["stac"]["faults"].get(kind, 0)
    assert faults >= 1, counts  # the faults really happened
    assert_same_samples(reference, records)
    given_up = [r for r in records if isinstance(r, Failure) and r.reason in ("search_error", "read_error")]
    assert all(f.transient for f in given_up), given_up
    assert RETRIES.total() >= 1  # every fault was survived by a retry somewhere (ours or GDAL's)


def test_mixed_faults_on_both_servers(fixture_data, cog_server, reference, tmp_path, short_timeouts):
    shares = dict.fromkeys(FAULT_KINDS, 0.04)  # 28 % of all requests fail one way or another
    RETRIES.reset()
    records, counts = run_world(fixture_data, cog_server, tmp_path, shares, seed=3)
    assert sum(counts["cog"]["faults"].values()) >= 4 and sum(counts["stac"]["faults"].values()) >= 1, counts
    assert_same_samples(reference, records)
    snapshot = RETRIES.snapshot()
    assert {"stac", "cog"} <= set(snapshot) or {"stac", "labels"} <= set(snapshot), snapshot


def test_a_failed_first_open_of_the_shared_label_file_does_not_poison_later_opens(
    fixture_data, cog_server, reference, tmp_path, short_timeouts, monkeypatch
):
    """The first request for the label COG answers 503 past GDAL's own retries; every POI still gets its labels."""
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")  # GDAL gives up at once: the open fails

    failed_once: set[str] = set()
    original = FaultProxy.choose

    def first_label_request_fails(self: FaultProxy, method: str, path: str, byte_range: str | None, body: bytes):
        if path.endswith(fixture_data.label_4326_path.name) and not failed_once:
            failed_once.add(path)
            return "503"
        return original(self, method, path, byte_range, body)

    monkeypatch.setattr(FaultProxy, "choose", first_label_request_fails)
    RETRIES.reset()
    records, _counts = run_world(fixture_data, cog_server, tmp_path, {})
    assert failed_once
    assert_same_samples(reference, records)
    assert len(by_key(records)) == len(reference)
    assert RETRIES.snapshot()["labels"]["retries"] >= 1


def test_a_server_that_stays_down_gives_transient_failures_not_a_hang(
    fixture_data, cog_server, tmp_path, short_timeouts, monkeypatch
):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    RETRIES.reset()
    records, _counts = run_world(fixture_data, cog_server, tmp_path, {"stall": 0.5, "503": 0.5}, stac_shares={})
    failures = [r for r in records if isinstance(r, Failure)]
    assert not by_key(records)
    gave_up = [f for f in failures if f.reason in ("search_error", "read_error")]
    assert gave_up and all(f.transient for f in gave_up)
    assert all(f.to_json()["transient"] is True for f in gave_up)
    assert Failure.from_json(gave_up[0].to_json()) == gave_up[0]
    assert any(edge["gave_up"] for edge in RETRIES.snapshot().values())


def test_permanent_errors_are_not_transient(fixture_data, cog_server, tmp_path, short_timeouts):
    """A 404 label file is given up at once and not marked transient (a rerun would not help)."""
    with FaultyWorld(fixture_data, cog_server.url, tmp_path, {}) as world:
        cfg = fetch_config(world)
        missing = config_from_dict({**cfg.dump(), "labels": {"source": "cog", "url": f"{world.cog.url}/nope.tif"}})
        records = world.fetch(missing)
    failures = [r for r in records if isinstance(r, Failure) and r.reason == "read_error"]
    assert len(failures) == 6 and not any(f.transient for f in failures)
    assert all("404" in f.detail for f in failures)


def test_a_stac_api_down_at_start_stops_the_run_with_a_message(fixture_data, cog_server, tmp_path, short_timeouts):
    with FaultyWorld(fixture_data, cog_server.url, tmp_path, {}, stac_shares={"503": 1.0}) as world:
        cfg = fetch_config(world)
        with pytest.raises(InputError) as info:
            make_searcher(cfg)
    message = str(info.value)
    assert "scenes.catalog" in message and world.stac_url in message and "STAC API" in message
    assert info.value.__cause__ is None


def test_a_build_behind_faults_reports_retries_and_transient_failures(
    fixture_data, cog_server, tmp_path, short_timeouts
):
    """The whole build (template captions): retries per edge in run_summary.json and the table;
    what was given up is in failures.jsonl with ``transient: true``."""
    from rich.console import Console

    from rsbuild.run.pipeline import run_build

    shares = dict.fromkeys(FAULT_KINDS, 0.03)
    with FaultyWorld(fixture_data, cog_server.url, tmp_path / "stac", shares, seed=11, stall_s=3.0) as world:
        data = fetch_config(world).dump()
        data["captions"] = {"engine": "template", "tasks": ["area"]}
        cfg = config_from_dict(data)
        console = Console(record=True, width=200)
        summary = run_build(cfg, tmp_path / "out", console=console, show_progress=False)
    written = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert written["retries"] == summary.retries and summary.retries
    assert sum(edge["retries"] for edge in written["retries"].values()) >= 1
    assert "retries_before" not in written
    console.print(summary.table())
    assert "network retries" in console.export_text()
    assert summary.tiles_written >= 0.99 * 6 * 9
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert all("transient" in f for f in failures)
    assert [f["reason"] for f in failures if f["transient"]] == [f["reason"] for f in failures
                                                                if f["reason"] in ("search_error", "read_error")]
