"""`rsbuild demo --bands`: the demo world with multispectral members and the rows derived from the
stats, loaded with ``image_format="bands"`` and verified; without the flag the demo config is unchanged."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.dataset.loader import caption_dataset
from rsbuild.demo import demo_config
from rsbuild.report.inspection import inspect_dataset
from rsbuild.report.verify import verify_dataset
from rsbuild.sources.assets import SPECTRAL_BANDS
from rsbuild.testing.synthetic import FixtureInfo


def test_without_the_flag_the_demo_config_is_the_plain_one(fixture_data: FixtureInfo) -> None:
    for engine in ("template", "local"):
        plain = demo_config(fixture_data, "http://127.0.0.1:1", "http://127.0.0.1:2", engine, "model.gguf")
        assert plain == demo_config(fixture_data, "http://127.0.0.1:1", "http://127.0.0.1:2", engine, "model.gguf", bands=False)
        assert plain.output.bands == "rgb" and not {"vqa", "referring", "masks"} & set(plain.captions.tasks)
        multi = demo_config(fixture_data, "http://127.0.0.1:1", "http://127.0.0.1:2", engine, "model.gguf", bands=True)
        assert multi.output.bands == "all" and multi.captions.tasks == [*plain.captions.tasks, "vqa", "referring", "masks"]


@pytest.mark.slow
def test_demo_with_bands_writes_multispectral_members_that_load_and_verify(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--bands", "--engine", "template", "--quiet", "-o", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    dataset = tmp_path / "demo" / "dataset"
    assert "bands.tif per sample" in result.output
    report = inspect_dataset(dataset)
    assert report.ok, report.problems
    tiles = sum(report.tiles_by_split.values())
    items = list(caption_dataset(dataset, split="train", tasks=["area"], image_format="bands"))
    assert items
    for item in items:
        assert item["image"].shape == (12, 512, 512) and item["image"].dtype == np.float32
        assert item["band_names"] == list(SPECTRAL_BANDS) and np.isfinite(item["image"]).all()
    verified = verify_dataset(dataset)
    derived = verified["derived"]
    assert derived["failures"] == 0 and derived["indices"]["tiles"] == tiles
    assert {"vqa", "referring", "region_caption", "mask_grounding"} <= set(derived["by_task"])
    vqa_per_tile: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for path in (dataset / "data").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            meta = json.loads(line)["meta"]
            if meta["task"] == "vqa":
                vqa_per_tile[meta["key"]] += 1
                kinds[meta["detail"]["kind"]] += 1
    assert len(vqa_per_tile) == tiles and min(vqa_per_tile.values()) >= 10  # the "done when"
    assert len(kinds) >= 6
