"""The command line end to end on the loopback fixture: fetch, build, inspect, init, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import webdataset as wds
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.dataset.shards import list_shards
from rsbuild.testing.synthetic import FixtureInfo

runner = CliRunner()


def write_config(tmp_path: Path, fixture: FixtureInfo, stac_url: str, label_url: str, pois: Path | None = None, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "pois": {"path": str(pois or fixture.pois_path)},
        "scenes": {"catalog": stac_url, "collection": "sentinel-2-l2a", "datetime": "2024-07-01/2024-07-31"},
        "imagery": {"aoi_size": 256, "tile_size": 128, "tile_stride": 128, "output_size": 64, "read_workers": 4, "cpu_workers": 0},
        "labels": {"source": "cog", "url": label_url},
        "output": {"shard_max_samples": 5, "folder_file_cap": 7},
        "captions": {"engine": "template", "tasks": ["area", "class"]},
    }
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "rsbuild.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture(scope="module")
def label_url(fixture_data: FixtureInfo, cog_server) -> str:
    return f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"


def test_fetch_writes_chip_shards_and_a_summary(tmp_path, fixture_data, stac_api_rustac, label_url):
    pois = tmp_path / "pois.csv"
    pois.write_text(fixture_data.pois_path.read_text() + "bad,91,0\n,nan,1\n")
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url, pois=pois)
    result = runner.invoke(app, ["fetch", "--config", str(config), "--out", str(tmp_path / "chips"), "--quiet"])
    assert result.exit_code == 0, result.output
    for text in ("POIs read", "POIs rejected", "scenes missing", "no_scene: 1", "tiles written", "out_of_range: 1"):
        assert text in result.output
    summary = json.loads((tmp_path / "chips" / "run_summary.json").read_text())
    n_inside = len(fixture_data.pois) - 1
    assert summary["pois_read"] == n_inside + 3 and summary["pois_rejected"] == 2
    assert summary["tiles_written"] == 4 * n_inside and summary["scenes_missing"] == {"no_scene": 1}
    rejects = [json.loads(line) for line in (tmp_path / "chips" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["bad_coordinates", "out_of_range"]
    samples = [s for shard in list_shards(tmp_path / "chips") for s in wds.WebDataset(str(shard), shardshuffle=False).decode("pil")]
    assert len(samples) == 4 * n_inside
    assert all(s["json"]["annotations"] == [] and s["png"].size == (64, 64) for s in samples)


def test_build_is_valid_readable_and_byte_identical(tmp_path, fixture_data, stac_api_rustac, label_url):
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        result = runner.invoke(app, ["build", "--config", str(config), "--out", str(out), "--quiet", "--write-bbox-overlays"])
        assert result.exit_code == 0, result.output
    tars = [sorted(p.relative_to(out) for p in (out / "shards").glob("*.tar")) for out in outs]
    assert tars[0] == tars[1] and len(tars[0]) >= 2
    for rel in tars[0]:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes()
    for split in ("train", "validation", "test"):
        assert (outs[0] / "data" / f"{split}.jsonl").read_bytes() == (outs[1] / "data" / f"{split}.jsonl").read_bytes()

    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["overlap"]["tiles"] == 4 * (len(fixture_data.pois) - 1)
    result = runner.invoke(app, ["inspect", str(outs[0]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    # every image the JSONL points at exists, no folder holds more than the cap
    for folder in ("images", "metadata", "overlays"):
        leaves = [d for d in (outs[0] / folder).glob("s*") if d.is_dir()]
        assert leaves and max(len(list(d.iterdir())) for d in leaves) <= 7
    # plain webdataset reads what was built; captions are in the json
    shards = [str(p) for p in sorted((outs[0] / "shards").glob("*.tar"))]
    pairs = list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("png", "json"))
    assert len(pairs) == 4 * (len(fixture_data.pois) - 1)
    assert all(any(a["task"] == "area" for a in doc["annotations"]) or doc.get("caption_failures") for _, doc in pairs)
    card = (outs[0] / "README.md").read_text()
    assert card.startswith("---\n") and "plots/" in card

    # a damaged dataset fails inspect with a non-zero exit
    (outs[0] / "data" / "train.jsonl").write_text('{"messages": broken\n')
    result = runner.invoke(app, ["inspect", str(outs[0])])
    assert result.exit_code == 1


def test_init_and_bad_config_give_clear_messages(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "rsbuild.toml")])
    assert result.exit_code == 0 and (tmp_path / "rsbuild.toml").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text((tmp_path / "rsbuild.toml").read_text().replace("max_cloud_cover = 20.0", "max_cloud_cover = 200"))
    result = runner.invoke(app, ["fetch", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "scenes.max_cloud_cover" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["fetch", "--config", str(tmp_path / "rsbuild.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pois.path" in result.output  # the example's pois.csv does not exist


def test_init_says_which_imagery_preset_the_example_uses(tmp_path):
    from rsbuild.config import load_config

    result = runner.invoke(app, ["init", str(tmp_path / "rsbuild.toml")])
    said = " ".join(result.output.split())
    assert result.exit_code == 0
    assert "scenes.preset = 'earth-search-c1'" in said and "sentinel-2-c1-l2a" in said and "planetary-computer, cdse" in said
    scenes = load_config(tmp_path / "rsbuild.toml").scenes
    assert (scenes.preset, scenes.collection) == ("earth-search-c1", "sentinel-2-c1-l2a")


def test_demo_shows_live_progress_without_errors(tmp_path: Path) -> None:
    """The progress display is drawn (force_terminal), so every progress row must render."""
    from rich.console import Console

    from rsbuild.demo import run_demo

    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    summary = run_demo(tmp_path / "demo", console, engine="template", show_progress=True)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert summary.finalized and summary.tiles_written > 0
    assert "POIs" in output and "captions" in output and "captions/s" in output
