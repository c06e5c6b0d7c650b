"""Rows derived from the stats (tasks vqa, referring, masks) through the writer, loaders and `verify`.

A tampered answer, phrase or mask makes `rsbuild verify` exit 1 and name the row kind; rows load
with HF ``datasets`` (JSONL), shard masks with webdataset and `load_hf`; the fetch stage computes
the masks from the label pixels it writes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image
from pycocotools import mask as coco
from scipy import ndimage
from typer.testing import CliRunner

from rsbuild.chips.masks import component_masks
from rsbuild.chips.stats import compute_stats
from rsbuild.cli import app
from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.loader import load_hf
from rsbuild.dataset.sft import derived_rows, row_problems
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.records import Poi, Sample
from rsbuild.report.inspection import inspect_dataset
from rsbuild.schemes import NODATA_INDEX, get_scheme
from tests.chips import test_fetch
from tests.chips.test_fetch import decode, fetch_config, run_fetch_stage
from tests.dataset.test_shards import make_sample

SCHEME = get_scheme("esa_worldcover")
label_urls = test_fetch.label_urls  # the fixture: COG URLs of the label rasters
TASKS = ["area", "vqa", "referring", "masks"]
DERIVED = {"vqa", "referring", "region_caption", "mask_grounding"}


def world_tile(key: str, seed: int, size: int = 64) -> Sample:
    """A seeded tile of blocks with real stats, its mask PNG and its component masks."""
    rng = np.random.default_rng(seed)
    labels = np.full((size, size), SCHEME.index_of("cropland"), np.uint8)
    labels[:, 10 + seed % 20:14 + seed % 20] = SCHEME.index_of("water")
    for _ in range(4):
        y, x = rng.integers(0, size - 10, 2)
        labels[y:y + 12, x:x + 10] = SCHEME.index_of(str(rng.choice(["tree cover", "built-up area"])))
    sample = make_sample(key, size=size)
    sample.stats = compute_stats(labels, SCHEME)
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, format="PNG")
    sample.mask_png = buffer.getvalue()
    sample.masks = component_masks(labels, sample.stats, SCHEME)
    return sample


def build(out: Path, tiles: int = 4) -> Path:
    captions = CaptionsConfig(tasks=TASKS)
    with DatasetWriter(out, OutputConfig(write_plots=False), SplitsConfig(fractions=(1.0, 0.0, 0.0)), captions, SCHEME) as w:
        for i in range(tiles):
            w.write(world_tile(f"p{i}_t0000", i))
    return out


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]


def verify(out: Path) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["verify", str(out), "--json"])
    return result.exit_code, json.loads(result.output)


def test_derived_rows_pass_verify_and_inspect(tmp_path):
    out = build(tmp_path / "ds")
    written = rows(out)
    tasks = {r["meta"]["task"] for r in written}
    assert tasks >= DERIVED
    per_tile = [sum(1 for r in written if r["meta"]["key"] == f"p{i}_t0000" and r["meta"]["task"] == "vqa") for i in range(4)]
    assert min(per_tile) >= 10
    code, report = verify(out)
    assert code == 0, report
    derived = report["derived"]
    assert derived["failures"] == 0 and derived["rows"] == sum(1 for r in written if r["meta"]["task"] in DERIVED)
    assert derived["vqa_answers"]["presence"]["yes"] == derived["vqa_answers"]["presence"]["no"]
    inspected = inspect_dataset(out)
    assert inspected.ok, inspected.problems
    assert inspected.rows_by_split["train"]["vqa"] == sum(per_tile)
    answers = inspected.to_json()["vqa_answers"]
    assert answers["presence"]["yes"] == answers["presence"]["no"] == derived["vqa_answers"]["presence"]["no"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["derived"]["vqa_answers"] == derived["vqa_answers"]
    assert summary["derived"]["referring_ambiguous_components"] == derived["referring_ambiguous_components"]
    card = (out / "README.md").read_text()
    presence = derived["vqa_answers"]["presence"]
    assert "## Rows derived from the statistics" in card
    assert f"| presence | {presence['yes'] + presence['no']} | " in card


def test_a_tampered_answer_fails_verify(tmp_path):
    out = build(tmp_path / "ds")
    written = rows(out)
    vqa = next(i for i, r in enumerate(written) if r["meta"]["task"] == "vqa" and r["meta"]["detail"]["kind"] == "presence")
    answer = written[vqa]["messages"][1]["content"][0]
    answer["text"] = "no" if answer["text"] == "yes" else "yes"
    mask = next(r for r in written if r["meta"]["task"] == "mask_grounding")
    rle = json.loads(mask["messages"][1]["content"][0]["text"])
    rle["counts"] = coco.encode(np.asfortranarray(np.ones(rle["size"], np.uint8)))["counts"].decode()  # the whole tile
    mask["messages"][1]["content"][0]["text"] = json.dumps(rle)
    (out / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in written))
    result = CliRunner().invoke(app, ["verify", str(out)])
    assert result.exit_code == 1
    code, report = verify(out)
    assert code == 1 and report["derived"]["failures"] == 2
    assert report["derived"]["by_task"]["vqa"]["failed"] == report["derived"]["by_task"]["mask_grounding"]["failed"] == 1
    reasons = " ".join(r["reason"] for r in report["derived"]["top_reasons"])
    assert "vqa presence" in reasons and "mask_grounding" in reasons


def test_rows_and_masks_load_with_datasets_and_webdataset(tmp_path):
    import datasets

    out = build(tmp_path / "ds")
    table = datasets.load_dataset("json", data_files=str(out / "data" / "train.jsonl"), split="train")
    assert table.num_rows == len(rows(out))
    kinds = [m["detail"]["kind"] for m in table["meta"] if m["task"] == "vqa"]
    assert "presence" in kinds
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        doc = json.loads(sample["json"])
        labels = np.asarray(Image.open(io.BytesIO(sample["mask.png"])))
        for record, comp in zip(doc["masks"], doc["stats"]["components"], strict=True):
            pixels = coco.decode({"size": record["rle"]["size"], "counts": record["rle"]["counts"].encode()})
            assert (labels[pixels.astype(bool)] == SCHEME.index_of(comp["class"])).all()
            assert int(pixels.sum()) == comp["pixels"]
    hf = load_hf(out, "train")
    assert all(len(row["json"]["masks"]) == len(row["json"]["stats"]["components"]) for row in hf)


def test_row_schema_of_derived_rows(tmp_path):
    row = next(r for r in rows(build(tmp_path / "ds", tiles=1)) if r["meta"]["task"] == "mask_grounding")
    assert row_problems(row) == []
    row["messages"][1]["content"][0]["text"] = '{"size": [64], "counts": 3}'
    assert row_problems(row) == ['mask answer must be {"size": [height, width], "counts": STRING} (COCO RLE)']
    row["meta"]["detail"] = {"component": "first"}
    assert "meta.detail of a mask_grounding row" in row_problems(row)[0]
    del row["meta"]["detail"]
    assert "detail on" in row_problems(row)[0]


def test_no_derived_rows_unless_asked(tmp_path):
    sample = world_tile("q_t0000", 1)
    assert derived_rows(sample, ["area", "class"]) == []
    out = tmp_path / "ds"
    with DatasetWriter(out, OutputConfig(write_plots=False), SplitsConfig(), CaptionsConfig(), SCHEME) as w:
        sample.masks = []
        w.write(sample)
    assert "derived" not in verify(out)[1]
    assert "derived" not in json.loads((out / "summary.json").read_text())
    assert "Rows derived" not in (out / "README.md").read_text()


def test_fetch_stage_masks_are_the_written_label_components(fixture_data, stac_api_rustac, label_urls):
    cfg = fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"], imagery__output_size=64,
                       captions__tasks=TASKS)
    poi: Poi = next(p for p in fixture_data.pois if p.poi_id.startswith("east"))
    samples = [r for r in run_fetch_stage(cfg, [poi]) if isinstance(r, Sample)]
    assert samples and all(len(s.masks) == len(s.stats["components"]) for s in samples)
    for sample in samples:
        labels = decode(sample.mask_png)
        for record, comp in zip(sample.masks, sample.stats["components"], strict=True):
            pixels = coco.decode({"size": record["rle"]["size"], "counts": record["rle"]["counts"].encode()}).astype(bool)
            groups, _ = ndimage.label(labels == SCHEME.index_of(comp["class"]), structure=np.ones((3, 3)))
            ids = np.unique(groups[pixels])
            assert ids.size == 1 and ids[0] > 0 and np.array_equal(pixels, groups == ids[0])
            assert not (labels[pixels] == NODATA_INDEX).any()
    plain = fetch_config(fixture_data, stac_api_rustac.url, label_urls["EPSG:4326"], imagery__output_size=64)
    assert all(s.masks == [] for s in run_fetch_stage(plain, [poi]) if isinstance(s, Sample))


def test_same_inputs_same_bytes(tmp_path):
    first, second = build(tmp_path / "a", tiles=2), build(tmp_path / "b", tiles=2)
    summaries = [json.loads((out / "summary.json").read_text()) for out in (first, second)]
    assert summaries[0]["derived"] == summaries[1]["derived"]  # (summary.json also times the finalize step)
    for rel in ("data/train.jsonl", "README.md", *(p.relative_to(first).as_posix() for p in (first / "shards").glob("*.tar"))):
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
