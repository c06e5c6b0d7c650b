"""The dataset folder: sNNNNN segments, DatasetWriter end to end, overlays and the card."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.card import public_url, size_category
from rsbuild.dataset.layout import FolderLayout
from rsbuild.dataset.overlays import LABEL_BACKGROUND, palette_of, render_overlay
from rsbuild.dataset.sft import Box, row_problems
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.errors import InputError
from rsbuild.records import Failure
from rsbuild.schemes import get_scheme
from tests.dataset.test_shards import make_sample

SCHEME = get_scheme("esa_worldcover")
SPLITS_OF = ("train", "validation", "test")


def _annotations(i: int) -> list[dict]:
    return [
        {"task": "area", "text": f"Tile {i}: tree cover in the west, water in the east.", "annotator": "template",
         "prompt": "template:area", "prompt_sha256": "0" * 64, "sampling": {}, "verified": True, "seed": i},
        {"task": "class", "class": "water", "text": "Water along the east edge.", "annotator": "template",
         "prompt": "template:class", "prompt_sha256": "1" * 64, "sampling": {}, "verified": True, "seed": i},
    ]


def _samples(n: int = 7, size: int = 40):
    return [
        make_sample(f"poi{i:02d}_t0000", SPLITS_OF[i % 3], size=size, seed=i, annotations=_annotations(i),
                    bbox=(i * 0.02, 0.0, i * 0.02 + 0.01, 0.01))
        for i in range(n)
    ]


def _build(out: Path, samples, **output) -> dict:
    cfg = OutputConfig(**{"folder_file_cap": 3, "shard_max_samples": 2, **output})
    config = {"scenes": {"catalog": "https://user:secret@stac.example.com/v1?token=abc", "collection": "sentinel-2-l2a"}}
    with DatasetWriter(out, cfg, SplitsConfig(), CaptionsConfig(), SCHEME, config=config) as writer:
        for sample in samples:
            writer.write(sample)
        writer.record_failure(Failure("search", "no_scene", "poi99", None, "no scene"))
    return writer.close()


def _tree(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "summary.json" and not p.name.endswith(".stats.json")
    }


def test_folder_layout_caps_leaf_folders(tmp_path: Path) -> None:
    layout = FolderLayout(tmp_path, file_cap=3)
    paths = [layout.write("images", f"k{i}.png", b"x") for i in range(10)]
    assert paths[:4] == ["images/s00000/k0.png", "images/s00000/k1.png", "images/s00000/k2.png", "images/s00001/k3.png"]
    leaves = sorted((tmp_path / "images").iterdir())
    assert [p.name for p in leaves] == ["s00000", "s00001", "s00002", "s00003"]
    assert [len(list(p.iterdir())) for p in leaves] == [3, 3, 3, 1]
    assert not any((tmp_path / folder).exists() for folder in ("overlays", "metadata", "mapbox_stills"))  # no empty folders


def test_dataset_writer_writes_every_part(tmp_path: Path) -> None:
    samples = _samples()
    summary = _build(tmp_path, samples, write_bbox_overlays=True)
    # shards per split, capped at 2 samples
    assert [p.name for p in list_shards(tmp_path)] == [
        "test-000000.tar", "train-000000.tar", "train-000001.tar", "validation-000000.tar"
    ]
    assert {s.key for p in list_shards(tmp_path) for s in read_shard(p)} == {s.key for s in samples}
    # images are the shard PNG bytes; no leaf folder above the cap
    for folder in ("images", "metadata", "overlays"):
        leaves = list((tmp_path / folder).iterdir())
        assert leaves and all(len(list(p.iterdir())) <= 3 for p in leaves)
    rows = [json.loads(line) for split in SPLITS_OF for line in (tmp_path / "data" / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) == summary["rows"] == 7 * 5  # global, grounding, 2 class grounding, water caption
    by_key = {s.key: s for s in samples}
    for row in rows:
        assert row_problems(row) == []
        image = row["messages"][0]["content"][0]["image"]
        assert (tmp_path / image).read_bytes() == by_key[row["meta"]["key"]].image_png
        overlay = Image.open(tmp_path / row["meta"]["overlay"])
        assert overlay.size == (40, 40) and overlay.mode == "RGB"
    assert summary["files"] == {"images": 7, "overlays": 35, "metadata": 7, "mapbox_stills": 0}
    # rows land in the split file of their sample
    for split in SPLITS_OF:
        keys = {json.loads(line)["meta"]["key"] for line in (tmp_path / "data" / f"{split}.jsonl").read_text().splitlines()}
        assert keys == {s.key for s in samples if s.split == split}
    # failures and summary
    assert json.loads((tmp_path / "failures.jsonl").read_text())["reason"] == "no_scene"
    assert summary["failures_by_reason"] == {"no_scene": 1}
    assert summary["tiles_by_split"] == {"train": 3, "validation": 2, "test": 2}
    assert json.loads((tmp_path / "summary.json").read_text())["tiles"] == 7
    water = next(c for c in summary["classes"] if c["name"] == "water")
    assert water["tiles"] == 7 and water["dominant_tiles"] == 0
    assert water["pixels"] == 7 * 40 * 15


def test_metadata_sidecar_has_counts_not_pixels(tmp_path: Path) -> None:
    samples = _samples(2)
    _build(tmp_path, samples)
    sidecar = json.loads((tmp_path / "metadata" / "s00000" / f"{samples[0].key}.json").read_text())
    assert sidecar["metadata"]["bbox_wgs84"] == samples[0].metadata["bbox_wgs84"]
    assert sidecar["metadata"]["scene"]["id"] == "S2A_TEST"
    assert sidecar["label"]["stats"]["classes"][0]["pixels"] == 40 * 25
    assert sidecar["label"]["mask"] == {"in_shard": True, "member": f"{samples[0].key}.mask.png", "size": [40, 40], "nodata": 255}
    assert sidecar["unit_shard"] == "shards/train-u000000-00.tar" and sidecar["image"] == "images/s00000/poi00_t0000.png"
    names = json.loads((tmp_path / "shards" / "names.json").read_text())
    assert names["train-u000000-00"] == "train-000000" and (tmp_path / "shards" / "train-000000.tar").is_file()
    assert len((tmp_path / "metadata" / "s00000" / f"{samples[0].key}.json").read_bytes()) < 4000  # no pixel payload


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    samples = _samples()
    _build(tmp_path / "a", samples, write_bbox_overlays=True)
    _build(tmp_path / "b", samples, write_bbox_overlays=True)
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert first == second
    assert any(name.endswith(".tar") for name in first) and "README.md" in first and "data/train.jsonl" in first


def test_refuses_to_mix_with_an_earlier_dataset(tmp_path: Path) -> None:
    _build(tmp_path, _samples(3))
    with pytest.raises(InputError, match="different configuration"):
        _build(tmp_path, _samples(3), shard_max_samples=5)
    summary = DatasetWriter(tmp_path, OutputConfig(), SplitsConfig(), CaptionsConfig(), SCHEME, overwrite=True).close()
    assert summary["tiles"] == 0 and list_shards(tmp_path) == []
    assert not list((tmp_path / "images").rglob("*.png"))


def test_invalid_key_is_a_recorded_failure(tmp_path: Path) -> None:
    bad = make_sample("bad.key_t0000")
    summary = _build(tmp_path, [bad, *_samples(1)])
    assert summary["tiles"] == 1 and summary["failures_by_reason"] == {"invalid_key": 1, "no_scene": 1}


def test_card_front_matter_and_sections(tmp_path: Path) -> None:
    summary = _build(tmp_path, _samples())
    text = (tmp_path / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "cc-by-4.0"
    assert {"image-to-text", "visual-question-answering"} <= set(meta["task_categories"])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["pretty_name"] == "rsbuild dataset"
    default = next(c for c in meta["configs"] if c["config_name"] == "default")
    assert default["data_files"] == [{"split": s, "path": [f"{s}.metadata.jsonl", "images/**/*.png"]} for s in SPLITS_OF]
    for needle in ("Copernicus Sentinel data 2024", "ESA WorldCover", "CC-BY-4.0", "| water |", "rsbuild 0.1.0"):
        assert needle in body
    assert "| train | 3 | 3 | 3 | 3 | 6 | 2 |" in body  # tiles, rows per task, shards
    assert "stac.example.com/v1" in body and "secret" not in body and "token" not in body
    assert "seconds" not in text and str(summary["finalize_seconds"]) not in body


def test_card_configs_load_with_huggingface_datasets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    out = tmp_path / "out"
    summary = _build(out, _samples())
    rows = load_dataset(str(out), cache_dir=str(tmp_path / "hf"))  # the README's default config
    assert {split: rows[split].num_rows for split in rows} == {
        split: sum(summary["rows_by_split"][split].values()) for split in SPLITS_OF
    }
    first = rows["train"][0]
    assert first["messages"][0]["content"][0]["image"].startswith("images/s00000/")
    assert first["meta"]["task"] == "global" and first["meta"]["class"] is None


@pytest.mark.parametrize(("count", "category"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M"), (10**10, "n>1B")])
def test_size_categories(count: int, category: str) -> None:
    assert size_category(count) == category


def test_public_url_strips_credentials() -> None:
    assert public_url("https://u:p@host.example:8443/stac?sig=1") == "https://host.example:8443/stac"
    assert public_url("/data/worldcover.tif") == "/data/worldcover.tif"


def test_overlay_draws_boxes_in_class_colours_and_keeps_labels_inside() -> None:
    chip = np.full((224, 224, 3), 128, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="PNG")
    boxes = [
        Box("water", (0.8, 0.0, 1.0, 1.0)),  # at the top-right corner: the label must move inside
        Box("tree cover", (0.1, 0.5, 0.4, 0.7)),  # room above: label sits above the box
        Box("herbaceous wetland with a very long name indeed", (0.0, 0.9, 0.2, 1.0)),
    ]
    palette = palette_of(SCHEME)
    png, placements = render_overlay(buffer.getvalue(), boxes, palette)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape == (224, 224, 3)
    water, tree = palette["water"], palette["tree cover"]
    assert tuple(image[150, 179]) == water  # left edge of the water box (x = 0.8 * 224 = 179)
    assert tuple(image[140, 22]) == tree  # left edge of the tree cover box, below its label
    for placement in placements:
        x1, y1, x2, y2 = placement.rect
        assert 0 <= x1 <= x2 < 224 and 0 <= y1 <= y2 < 224
        inside = image[y1 + 1 : y2, x1 + 1 : x2]
        assert (inside == LABEL_BACKGROUND).all(axis=-1).mean() > 0.5  # dark box behind the text
        assert (inside.max(axis=-1) > 200).any()  # light text drawn on it
    assert placements[1].rect[3] < int(0.5 * 224)  # above the tree cover box
    assert placements[2].text.endswith("…")


def test_overlay_labels_of_boxes_sharing_a_corner_do_not_cover_each_other() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((224, 224, 3), np.uint8)).save(buffer, format="PNG")
    boxes = [Box("water", (0.3, 0.3, 0.7, 0.7)), Box("cropland", (0.3, 0.3, 0.6, 0.6)), Box("grassland", (0.3, 0.3, 0.5, 0.5))]
    _, placements = render_overlay(buffer.getvalue(), boxes, palette_of(SCHEME))
    rects = [p.rect for p in placements]
    for i, a in enumerate(rects):
        for b in rects[:i]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


def test_card_names_a_stac_label_source_with_a_port_and_no_path(tmp_path: Path) -> None:
    config = {"labels": {"source": "stac", "catalog": "http://127.0.0.1:8123", "collection": "esa-worldcover", "scheme": "esa_worldcover"}}
    cfg = OutputConfig(shard_max_samples=2)
    with DatasetWriter(tmp_path, cfg, SplitsConfig(), CaptionsConfig(), SCHEME, config=config) as writer:
        for sample in _samples(2):
            writer.write(sample)
    summary = writer.close()
    body = (tmp_path / "README.md").read_text()
    assert "card_error" not in summary
    assert "`esa-worldcover` in the STAC catalog `http://127.0.0.1:8123`" in body


def test_public_url_survives_a_malformed_port() -> None:
    assert public_url("http://u:p@127.0.0.1:8123 / esa-worldcover").startswith("http://127.0.0.1/")  # no crash, no credentials


def test_a_card_that_cannot_be_rendered_does_not_lose_the_run(tmp_path: Path, monkeypatch) -> None:
    from rsbuild.dataset import card

    def broken(*args, **kwargs):
        raise ValueError("Port could not be cast to integer value as '8123 '")

    monkeypatch.setattr(card, "render_card", broken)
    with DatasetWriter(tmp_path, OutputConfig(), SplitsConfig(), CaptionsConfig(), SCHEME) as writer:
        writer.write(_samples(1)[0])
    summary = writer.close()
    assert summary["tiles"] == 1 and (tmp_path / "data" / "train.jsonl").stat().st_size > 0
    assert summary["card_error"] == "ValueError: Port could not be cast to integer value as '8123 '"
    assert "could not be written" in (tmp_path / "README.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["card_error"] == summary["card_error"]
