"""`inspect_dataset`: counts of a good dataset, and a problem for every kind of damage."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.shards import list_shards
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.records import Failure
from rsbuild.report.inspection import inspect_dataset, render_report
from tests.dataset.test_layout import SCHEME, _samples


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset") / "out"
    cfg = OutputConfig(folder_file_cap=4, shard_max_samples=2, write_bbox_overlays=True)
    with DatasetWriter(out, cfg, SplitsConfig(), CaptionsConfig(), SCHEME) as writer:
        for sample in _samples(7):
            writer.write(sample)
        writer.record_failure(Failure("tile", "cloudy", "poi50", "poi50_t0001", "cloud share 0.8"))
        writer.record_failure(Failure("tile", "cloudy", "poi51", "poi51_t0000", "cloud share 0.9"))
    return out


@pytest.fixture()
def copy(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(built, target)
    return target


def test_valid_dataset_counts(built: Path) -> None:
    report = inspect_dataset(built)
    assert report.ok, report.problems
    data = report.to_json()
    assert data["tiles_by_split"] == {"train": 3, "validation": 2, "test": 2}
    assert data["rows_by_split"]["train"] == {"global": 3, "grounding": 3, "class": 3, "class_grounding": 6}
    assert data["annotations_by_task"] == {"area": 7, "class": 7}
    assert data["failures_by_reason"] == {"cloudy": 2}
    assert [s["name"] for s in data["shards"]] == [p.name for p in list_shards(built)]
    assert sum(s["samples"] for s in data["shards"]) == 7
    water = next(c for c in data["classes"] if c["name"] == "water")
    assert water == {"name": "water", "tiles": 7, "dominant_tiles": 0, "rows": 14}
    assert json.loads(json.dumps(data)) == data


def test_render_report(built: Path, copy: Path) -> None:
    console = Console(record=True, width=120)
    render_report(inspect_dataset(built), console)
    assert "valid" in console.export_text()
    (copy / "data" / "test.jsonl").write_text("not json\n")
    console = Console(record=True, width=120)
    render_report(inspect_dataset(copy), console)
    text = console.export_text()
    assert "problem" in text and "data/test.jsonl line 1" in text


def _first_image(out: Path) -> Path:
    row = json.loads((out / "data" / "train.jsonl").read_text().splitlines()[0])
    return out / row["messages"][0]["content"][0]["image"]


def _truncate_shard(out: Path) -> None:
    shard = list_shards(out)[1]
    shard.write_bytes(shard.read_bytes()[:1800])  # cut inside the first sample's image member


def _truncate_at_member_boundary(out: Path) -> None:
    shard = next(p for p in list_shards(out) if p.name == "train-000000.tar")
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 // 512 * 512])


def _duplicate_key(out: Path) -> None:
    shards = list_shards(out)
    target = shards[-1]
    shutil.copy(shards[0], target)  # same samples (and keys) twice; the sidecar still matches the count


def _bad_jsonl(out: Path) -> None:
    with (out / "data" / "validation.jsonl").open("a") as handle:
        handle.write('{"messages": [}\n')


def _row_breaks_schema(out: Path) -> None:
    path = out / "data" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["messages"][0]["role"] = "system"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing image": (lambda out: _first_image(out).unlink(), "does not exist"),
    "truncated shard": (_truncate_shard, "unreadable"),
    "shard cut at a member boundary": (_truncate_at_member_boundary, "stats sidecar says"),
    "missing sidecar": (lambda out: (out / "shards" / "test-000000.stats.json").unlink(), "no stats sidecar"),
    "duplicate keys": (_duplicate_key, "appears earlier"),
    "bad jsonl": (_bad_jsonl, "not JSON"),
    "row schema": (_row_breaks_schema, "messages[0]"),
    "missing jsonl": (lambda out: (out / "data" / "train.jsonl").unlink(), "train.jsonl is missing"),
    "leftover temp shard": (lambda out: (out / "shards" / "train-000002.tar.tmp").write_bytes(b"\0" * 512), "temporary file"),
    "damaged png": (lambda out: _first_image(out).write_bytes(b"\x89PNG\r\n\x1a\n"), "does not decode"),
    "no summary": (lambda out: (out / "summary.json").unlink(), "summary.json is missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_dataset_fails(copy: Path, damage: str) -> None:
    break_it, message = DAMAGE[damage]
    assert inspect_dataset(copy).ok
    break_it(copy)
    report = inspect_dataset(copy)
    assert not report.ok
    assert report.problem_count == len(report.problems) >= 1
    assert any(message in problem for problem in report.problems), report.problems


def test_row_pointing_at_a_key_in_no_shard(copy: Path) -> None:
    for shard in list_shards(copy):
        if shard.name.startswith("test-"):
            shard.unlink()
            shard.with_name(shard.name.replace(".tar", ".stats.json")).unlink()
    report = inspect_dataset(copy)
    assert any("is in no shard" in p for p in report.problems)
