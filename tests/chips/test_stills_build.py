"""Mapbox context stills in `rsbuild build`, end to end against a loopback Static Images endpoint.

The endpoint is `FakeMapbox` from test_mapbox (token check, 401 for other tokens, queued errors
whose JSON message echoes the request URL, token and all). For the satellite style it answers
JPEG here, as the real API does for raster styles. Each build runs the whole CLI on the loopback
fixture (STAC API + COG server) with ``MAPBOX_ACCESS_TOKEN`` set through monkeypatch.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from rsbuild.chips.stills import tiles_class_summary
from rsbuild.cli import app
from rsbuild.config import CaptionsConfig, OutputConfig, config_from_dict
from rsbuild.dataset.card import render_card
from rsbuild.dataset.sft import row_problems
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.dataset.units import UnitPlan, UnitWriter, rows_per_tile_bound
from rsbuild.records import SPLITS, Failure, Poi, Sample
from rsbuild.testing.synthetic import FixtureInfo
from tests.dataset.test_layout import SCHEME, _samples
from tests.sources.test_mapbox import TOKEN, FakeMapbox
from tests.test_cli import write_config

runner = CliRunner()
STILL_PATH = re.compile(r"^/styles/v1/mapbox/satellite-v9/static/(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?),15\.5,0/96x96@2x$")
SECRET_FORMS = (TOKEN, "loopback-secret-token_42")


def _as_jpeg(png: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def mapbox() -> Iterator[FakeMapbox]:
    """FakeMapbox answering JPEG instead of PNG (a raster style such as satellite-v9), after
    ``RequestHandlerClass.delay_s`` seconds."""
    server = FakeMapbox()

    class JpegHandler(server.server.RequestHandlerClass):  # type: ignore[name-defined, misc]
        delay_s = 0.0

        def do_GET(self) -> None:
            time.sleep(self.delay_s)
            super().do_GET()

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            if content_type == "image/png":
                body, content_type = _as_jpeg(body), "image/jpeg"
            super()._send(status, body, content_type)

    server.server.RequestHandlerClass = JpegHandler
    yield server
    server.close()


@pytest.fixture(scope="module")
def label_url(fixture_data: FixtureInfo, cog_server: Any) -> str:
    return f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"


def build(tmp_path: Path, fixture: FixtureInfo, stac_url: str, label_url: str, base_url: str) -> tuple[Path, Any]:
    """`rsbuild build` with stills on: 2 POIs per unit, 2 files per leaf folder."""
    config = write_config(
        tmp_path, fixture, stac_url, label_url,
        output={"folder_file_cap": 2, "unit_pois": 2},
        stills={"mapbox": True, "base_url": base_url, "zoom": 15.5, "size": 96, "retina": True},
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", "--config", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out, result


def tiles_by_poi(out: Path) -> dict[str, list[Sample]]:
    tiles: dict[str, list[Sample]] = {}
    for shard in list_shards(out):
        for sample in read_shard(shard):
            tiles.setdefault(sample.metadata["poi_id"], []).append(sample)
    return tiles


def jsonl_rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {split: [json.loads(line) for line in (out / "data" / f"{split}.jsonl").read_text().splitlines()] for split in SPLITS}


def still_files(out: Path) -> list[Path]:
    return sorted(p for p in (out / "mapbox_stills").rglob("*") if p.is_file())


def assert_secret_nowhere(out: Path, *texts: str, secrets: tuple[str, ...] = SECRET_FORMS) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(secret.encode() in content for secret in secrets), path
    for text in texts:
        assert not any(secret in text for secret in secrets)


def failures(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def test_build_writes_one_still_per_poi_with_a_scene_and_never_the_token(
    tmp_path: Path, fixture_data: FixtureInfo, stac_api_rustac: Any, label_url: str, mapbox: FakeMapbox,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MAPBOX_ACCESS_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    mapbox.queued = [404]  # the first POI's still fails; the error body echoes the URL with the token
    out, result = build(tmp_path, fixture_data, stac_api_rustac.url, label_url, mapbox.url)

    tiles = tiles_by_poi(out)
    row_of = {poi.poi_id: number for number, poi in enumerate(fixture_data.pois, start=1)}
    with_scene = sorted(tiles, key=row_of.__getitem__)
    assert len(with_scene) == len(fixture_data.pois) - 1  # the POI outside the scene has no tile

    # one request per POI with a scene, in the documented URL shape, token only as the query
    assert len(mapbox.requests) == len(with_scene)
    requested = set()
    for path, query in mapbox.requests:
        match = STILL_PATH.match(path)
        assert match, path
        assert query == {"access_token": [TOKEN]}
        lon, lat = float(match.group(1)), float(match.group(2))
        poi = next(p for p in fixture_data.pois if abs(p.lon - lon) < 1e-6 and abs(p.lat - lat) < 1e-6)
        requested.add(poi.poi_id)
    assert requested == set(with_scene)

    # the first POI's still failed (recorded in the failures); every other one is a JPEG in its slot folder
    failed, stilled = with_scene[0], with_scene[1:]
    still_failures = [f for f in failures(out) if f["stage"] == "still"]
    assert [(f["reason"], f["poi_id"]) for f in still_failures] == [("http_404", failed)]
    assert "HTTP 404" in still_failures[0]["detail"] and "/static/" in still_failures[0]["detail"]
    expected = [out / "mapbox_stills" / f"s{(row_of[poi] - 1) // 2:05d}" / f"{poi}.jpg" for poi in stilled]
    assert still_files(out) == sorted(expected)
    for path in expected:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (192, 192)  # 96 px @2x

    # one still_overview row per still, in the POI's split, naming the POI's largest class
    rows = jsonl_rows(out)
    still_rows = {row["meta"]["key"]: (split, row) for split in SPLITS for row in rows[split] if row["meta"]["task"] == "still_overview"}
    assert sorted(still_rows) == sorted(stilled)
    for poi, (split, row) in still_rows.items():
        assert row_problems(row) == []
        assert split == tiles[poi][0].split
        image = row["messages"][0]["content"][0]["image"]
        assert (out / image) in expected and image.endswith(f"/{poi}.jpg")
        pixels: Counter[str] = Counter()
        for sample in tiles[poi]:
            pixels.update({c["name"]: c["pixels"] for c in sample.stats["classes"]})
        answer = row["messages"][1]["content"][0]["text"]
        assert poi in answer and f"tiles around it: {pixels.most_common(1)[0][0]} (" in answer

    report = json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).output)
    assert report["ok"] is True, report["problems"]
    assert sum(report["rows_by_split"][s]["still_overview"] for s in SPLITS) == len(stilled)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"]["mapbox_stills"] == len(stilled)
    assert sum(summary["rows_by_split"][s]["still_overview"] for s in SPLITS) == len(stilled)
    run = json.loads((out / "run_summary.json").read_text())
    assert run["stills"]["written"] == len(stilled) and run["stills"]["failures_by_reason"] == {"http_404": 1}
    assert run["stills"]["disabled_reason"] is None

    card = (out / "README.md").read_text()
    assert "Mapbox Static Images API" in card and "`mapbox/satellite-v9`, zoom 15.5" in card and "© Mapbox" in card
    assert "HTTP Request" in caplog.text  # httpx logged every request URL...
    assert_secret_nowhere(out, result.output, caplog.text)  # ...but the token is in no file and no log line


def _unit_files(out: Path, stills_first: bool) -> dict[str, bytes]:
    """One unit's JSONL parts and failures after writing tiles and stills in one of two orders."""
    samples = _samples(3)
    pois = [Poi(s.metadata["poi_id"], 0.0, s.metadata["lon"], row) for row, s in enumerate(samples, start=1)]
    for sample, poi in zip(samples, pois):
        sample.metadata["poi_row"] = poi.row
    outcomes = [
        (pois[0], Failure("still", "http_404", pois[0].poi_id, detail="not found")),
        (pois[1], _as_jpeg(samples[1].image_png)),
        (pois[2], samples[2].image_png),
    ]
    plan = UnitPlan(unit_pois=10, tiles_per_poi=1, rows_per_tile=rows_per_tile_bound(CaptionsConfig()))
    writer = UnitWriter(out, 0, plan, OutputConfig(folder_file_cap=2), CaptionsConfig(), SCHEME)
    if stills_first:  # stills arriving before the tiles, last POI first
        for poi, outcome in reversed(outcomes):
            writer.write_still(poi, samples[poi.row - 1].split, outcome, f"Context of {poi.poi_id}.")
    for sample in samples:
        writer.write(sample)
    writer.record_failure(Failure("tile", "cloudy", "poi09", "poi09_t0000"))
    if not stills_first:
        for poi, outcome in outcomes:
            writer.write_still(poi, samples[poi.row - 1].split, outcome, f"Context of {poi.poi_id}.")
    writer.finish()
    files = [p for p in out.rglob("*") if p.is_file() and (p.suffix == ".jsonl" or "mapbox_stills" in p.parts)]
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def test_unit_files_do_not_depend_on_when_stills_arrive(tmp_path: Path) -> None:
    early, late = _unit_files(tmp_path / "early", True), _unit_files(tmp_path / "late", False)
    assert early == late
    assert sorted(name for name in early if name.startswith("mapbox_stills/")) == [
        "mapbox_stills/s00000/poi01.jpg", "mapbox_stills/s00001/poi02.png"]  # slots from the POI rows 2 and 3
    rows = [json.loads(line) for name, data in early.items() if name.startswith("data/") for line in data.splitlines()]
    still_rows = [row for row in rows if row["meta"]["task"] == "still_overview"]
    assert sorted(row["meta"]["key"] for row in still_rows) == ["poi01", "poi02"] and all(row_problems(r) == [] for r in still_rows)
    failures = [json.loads(line)["reason"] for line in early["units/000000.failures.jsonl"].splitlines()]
    assert failures == ["cloudy", "http_404"]


def test_rejected_token_costs_one_request_and_one_message(
    tmp_path: Path, fixture_data: FixtureInfo, stac_api_rustac: Any, label_url: str, mapbox: FakeMapbox,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "pk.revoked-token-never-to-be-written"
    monkeypatch.setenv("MAPBOX_ACCESS_TOKEN", wrong)
    caplog.set_level(logging.DEBUG)
    mapbox.server.RequestHandlerClass.delay_s = 1.0  # a slow answer: later POIs arrive before the 401 does
    out, result = build(tmp_path, fixture_data, stac_api_rustac.url, label_url, mapbox.url)

    assert len(mapbox.requests) == 1
    assert sum(len(samples) for samples in tiles_by_poi(out).values()) == 4 * (len(fixture_data.pois) - 1)
    assert still_files(out) == []
    assert not any(row["meta"]["task"] == "still_overview" for rows in jsonl_rows(out).values() for row in rows)
    assert [f["reason"] for f in failures(out) if f["stage"] == "still"] == ["token_rejected"]
    messages = [r.getMessage() for r in caplog.records if r.name == "rsbuild.sources.mapbox"]
    assert len(messages) == 1 and "HTTP 401" in messages[0] and "MAPBOX_ACCESS_TOKEN" in messages[0]
    run = json.loads((out / "run_summary.json").read_text())
    assert run["stills"]["disabled_reason"] == messages[0] and run["stills"]["written"] == 0
    assert "Mapbox stills" in result.output  # the summary table shows why there are none
    assert json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).output)["ok"] is True
    assert_secret_nowhere(out, result.output, caplog.text, secrets=(wrong,))


def test_missing_token_warns_once_and_builds_without_stills(
    tmp_path: Path, fixture_data: FixtureInfo, stac_api_rustac: Any, label_url: str, mapbox: FakeMapbox,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("MAPBOX_ACCESS_TOKEN", raising=False)
    caplog.set_level(logging.WARNING)
    out, _ = build(tmp_path, fixture_data, stac_api_rustac.url, label_url, mapbox.url)

    assert mapbox.requests == [] and still_files(out) == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "rsbuild.sources.mapbox"]
    assert warnings == ["MAPBOX_ACCESS_TOKEN is not set; no Mapbox stills will be fetched"]
    run = json.loads((out / "run_summary.json").read_text())
    assert run["stills"]["disabled_reason"] == warnings[0] and run["tiles_written"] > 0
    assert not [f for f in failures(out) if f["stage"] == "still"]  # off is not a failure per POI


def _still_row(image: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Describe this."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "An overhead view."}]},
        ],
        "meta": {"key": "west1", "task": "still_overview", "class": None, "annotator": None, "overlay": None},
    }


def test_row_schema_takes_jpeg_only_for_still_rows() -> None:
    assert row_problems(_still_row("mapbox_stills/s00000/west1.jpg")) == []
    assert row_problems(_still_row("mapbox_stills/s00000/west1.png")) == []
    assert row_problems(_still_row("mapbox_stills/s00000/west1.gif"))
    tile_row = _still_row("images/s00000/west1_t0000.jpg")
    tile_row["meta"]["task"] = "global"
    assert any(".png" in problem for problem in row_problems(tile_row))
    with_class = _still_row("mapbox_stills/s00000/west1.jpg")
    with_class["meta"]["class"] = "water"
    assert row_problems(with_class)


def test_class_summary_weighs_the_tiles_by_pixels() -> None:
    def tile(valid: int, classes: dict[str, int]) -> Sample:
        stats = {"valid_pixels": valid, "classes": [{"name": name, "pixels": n} for name, n in classes.items()]}
        return Sample("p_t0000", "train", b"", None, {}, stats)

    tiles = [tile(100, {"water": 80, "grassland": 20}), tile(300, {"tree cover": 285, "water": 12, "bare": 3})]
    text = tiles_class_summary(tiles)
    assert text == "Land cover in the Sentinel-2 tiles around it: tree cover (71%), water (23%) and grassland (5%)."
    assert tiles_class_summary([tile(0, {})]) == ""


def test_card_names_the_earth_engine_dataset_and_the_stills_source() -> None:
    config = config_from_dict({
        "pois": {"path": "pois.csv"},
        "scenes": {"catalog": "https://example.invalid/stac"},
        "labels": {"source": "earthengine", "ee_window_days": 20},
        "stills": {"mapbox": True, "style": "mapbox/streets-v12", "zoom": 14},
    }).dump()
    summary = {"rows_by_split": {"train": {"global": 2, "still_overview": 1}}, "tiles": 2}
    card = render_card(summary, OutputConfig(), None, config)
    labels = next(line for line in card.splitlines() if line.startswith("- Labels:"))
    assert "GOOGLE/DYNAMICWORLD/V1" in labels and "+- 20 days" in labels and "None" not in labels
    assert "`mapbox/streets-v12`, zoom 14, 512x512 px" in card and "(1 written)" in card
    assert "still_overview rows" in card  # the counts table has a column for them
