"""The card's config loads with Hugging Face ``datasets``: SFT rows with an ``Image()`` column."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.records import Sample
from tests.dataset.test_layout import SPLITS_OF, _build, _samples


@pytest.fixture(autouse=True)
def _offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _tiles(out: Path) -> dict[str, Sample]:
    """KEY -> the sample read back from every shard."""
    return {sample.key: sample for shard in list_shards(out) for sample in read_shard(shard)}


def test_load_dataset_gives_each_row_its_chip_as_an_image_and_its_caption(tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "out"
    summary = _build(out, _samples())
    meta = yaml.safe_load((out / "README.md").read_text().split("---\n", 2)[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default"]

    rows = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert {split: rows[split].num_rows for split in rows} == {
        split: sum(summary["rows_by_split"][split].values()) for split in SPLITS_OF
    }
    assert isinstance(rows["train"].features["image"], datasets.Image)
    tiles = _tiles(out)
    captions = {(key, a["task"], a.get("class")): a["text"] for key, t in tiles.items() for a in t.annotations}
    seen_tasks = set()
    for split in SPLITS_OF:
        sft = [json.loads(line) for line in (out / "data" / f"{split}.jsonl").read_text().splitlines()]
        for row, original in zip(rows[split], sft, strict=True):
            key = row["meta"]["key"]
            assert row["meta"] == {k: v for k, v in original["meta"].items() if k != "detail"}
            np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), _pixels(tiles[key].image_png))
            answer = row["messages"][1]["content"][0]["text"]
            assert answer == original["messages"][1]["content"][0]["text"]
            task = row["meta"]["task"]
            seen_tasks.add(task)
            if task in ("global", "class"):
                assert answer == captions[(key, "area" if task == "global" else "class", row["meta"]["class"])]
    assert {"global", "class", "grounding"} <= seen_tasks


def test_a_dataset_of_one_image_still_loads_with_the_image_builder(tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "out"
    _build(out, _samples(1))
    rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(rows.features["image"], datasets.Image) and rows.num_rows > 0
    np.testing.assert_array_equal(np.asarray(rows[0]["image"].convert("RGB")), _pixels(next(iter(_tiles(out).values())).image_png))


def test_metadata_files_exist_only_for_splits_with_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, _samples(1))
    assert sorted(p.name for p in out.glob("*.metadata.jsonl")) == ["train.metadata.jsonl"]
    first = json.loads((out / "train.metadata.jsonl").read_text().splitlines()[0])
    assert list(first) == ["file_name", "messages", "meta"] and (out / first["file_name"]).is_file()
