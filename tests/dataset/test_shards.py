"""Shard writing and reading: webdataset and Hugging Face readers, reproducibility, caps, atomicity
(of the unit writer too: an exception or a kill leaves only complete tars and no marker).

Also home of `make_sample`, the small-array sample factory the writer-side tests share.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.finalize import finalize
from rsbuild.dataset.shards import (
    SHARD_MTIME,
    ShardSinks,
    finished_tar_size,
    list_shards,
    read_local_shard,
    read_shard,
    read_shard_stats,
    sample_members,
)
from rsbuild.dataset.units import UnitPlan, UnitWriter, done_units, failures_part, rows_per_tile_bound
from rsbuild.records import Failure, Sample
from rsbuild.schemes import ESA_WORLDCOVER

CLASS_CODES = {"tree cover": 10, "grassland": 30, "cropland": 40, "built-up": 50, "water": 80}


def encode_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def stripes_stats(class_map: np.ndarray, names: list[str]) -> dict:
    """Stats (ARCHITECTURE.md schema, the parts the writer reads) of a map of vertical stripes."""
    height, width = class_map.shape
    valid = class_map != 255
    classes, components = [], []
    for index, name in enumerate(names):
        ys, xs = np.nonzero(class_map == index)
        if not len(xs):
            continue
        pixels = len(xs)
        bbox_px = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        bbox = [round(bbox_px[0] / width, 4), round(bbox_px[1] / height, 4), round(bbox_px[2] / width, 4), round(bbox_px[3] / height, 4)]
        share = pixels / int(valid.sum())
        classes.append({"name": name, "code": CLASS_CODES[name], "index": index, "pixels": pixels, "share": round(share, 4), "bbox": bbox})
        components.append({"class": name, "pixels": pixels, "share": round(share, 4), "bbox_px": bbox_px, "bbox": bbox})
    classes.sort(key=lambda c: -c["pixels"])
    components.sort(key=lambda c: -c["pixels"])
    return {
        "version": 1,
        "scheme": "esa_worldcover",
        "size": [height, width],
        "pixels": height * width,
        "valid_pixels": int(valid.sum()),
        "valid_share": round(float(valid.mean()), 4),
        "cloud_share": 0.0,
        "dominant_class": classes[0]["name"] if classes else None,
        "num_classes": len(classes),
        "classes": classes,
        "components": components,
    }


def make_sample(
    key: str,
    split: str = "train",
    size: int = 32,
    stripes: tuple[tuple[str, float], ...] = (("tree cover", 0.625), ("water", 0.375)),
    annotations: list[dict] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    seed: int = 0,
) -> Sample:
    """A tile of vertical class stripes (left to right), a seeded RGB image and matching stats."""
    names = [name for name, _ in stripes]
    class_map = np.empty((size, size), np.uint8)
    start = 0
    for index, (_name, fraction) in enumerate(stripes):
        stop = size if index == len(stripes) - 1 else start + round(fraction * size)
        class_map[:, start:stop] = index
        start = stop
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    poi_id = key.rsplit("_t", 1)[0]
    west = bbox[0] if bbox else 0.0
    metadata = {
        "poi_id": poi_id,
        "tile_id": key,
        "lat": 0.0,
        "lon": west,
        "bbox_wgs84": list(bbox) if bbox else [west, 0.0, west + 0.01, 0.01],
        "scene": {"id": "S2A_TEST", "datetime": "2024-07-01T10:00:00Z", "cloud_cover": 1.5},
        "label": {"source": "worldcover.tif", "scheme": "esa_worldcover", "version": "v200"},
        "split": split,
        "rsbuild_version": "test",
    }
    return Sample(
        key=key,
        split=split,
        image_png=encode_png(rgb),
        mask_png=encode_png(class_map),
        metadata=metadata,
        stats=stripes_stats(class_map, names),
        annotations=list(annotations or []),
    )


def _write(shards_dir: Path, samples: list[Sample], **output) -> list:
    sinks = ShardSinks(shards_dir, OutputConfig(**output))
    for sample in samples:
        sinks.write(sample)
    return sinks.close()


def _decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.fixture()
def samples() -> list[Sample]:
    caption = {"task": "area", "text": "Tree cover with water on the right.", "annotator": "template", "verified": True}
    return [make_sample(f"poi{i:03d}_t{i % 2:04d}", seed=i, annotations=[caption]) for i in range(7)]


def test_webdataset_reads_pixels_json_and_masks(tmp_path: Path, samples: list[Sample]) -> None:
    stats = _write(tmp_path / "shards", samples, shard_max_samples=3)
    assert [s.name for s in stats] == ["train-000000", "train-000001", "train-000002"]
    assert [s.samples for s in stats] == [3, 3, 1]
    urls = [str(p) for p in list_shards(tmp_path)]
    dataset = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("png", "json")
    seen = list(dataset)
    assert len(seen) == len(samples)
    for (image, doc), sample in zip(seen, samples):
        assert image.mode == "RGB"
        assert np.array_equal(np.asarray(image), _decoded(sample.image_png))
        assert doc == sample.json_payload()
    # decode("pil") turns every image into RGB; the mask keeps its class indices when read as bytes
    raw = wds.WebDataset(urls, shardshuffle=False).to_tuple("__key__", "mask.png")
    for (key, mask_bytes), sample in zip(raw, samples):
        assert key == sample.key and "." not in key
        mask = Image.open(io.BytesIO(mask_bytes))
        assert mask.mode == "L"
        assert np.array_equal(np.asarray(mask), _decoded(sample.mask_png))
        assert set(np.unique(np.asarray(mask))) == {0, 1}


def test_huggingface_datasets_loads_shards_offline(tmp_path: Path, samples: list[Sample], monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    _write(tmp_path / "shards", samples, shard_max_samples=4)
    files = [str(p) for p in list_shards(tmp_path)]
    dataset = load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "hf"))
    assert dataset.num_rows == len(samples)
    assert set(dataset.column_names) >= {"__key__", "png", "json", "mask.png"}
    for row, sample in zip(dataset, samples):
        assert row["__key__"] == sample.key
        assert np.array_equal(np.asarray(row["png"]), _decoded(sample.image_png))
        assert np.array_equal(np.asarray(row["mask.png"]), _decoded(sample.mask_png))
        assert row["json"]["stats"]["classes"][0]["pixels"] == sample.stats["classes"][0]["pixels"]
        assert row["json"]["annotations"][0]["text"] == sample.annotations[0]["text"]


def test_huggingface_datasets_reads_varying_json_with_json_feature(tmp_path: Path, monkeypatch) -> None:
    """Real shards vary (class captions on some tiles, caption failures on others): the card's
    recipe declares ``json`` as ``Json()`` instead of letting datasets infer it from 5 samples."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import Features, Json, Value, load_dataset
    from datasets import Image as ImageFeature

    area = {"task": "area", "text": "Trees.", "annotator": "template", "verified": True, "sampling": {}}
    samples = [make_sample(f"p{i}_t0000", seed=i, annotations=[area]) for i in range(6)]
    late = make_sample("p9_t0000", annotations=[area, {"task": "class", "class": "water", "text": "Water.", "verified": None}])
    late.failures = [{"task": "class", "reason": "check_failed"}]
    _write(tmp_path / "shards", [*samples, late])
    features = Features({"__key__": Value("string"), "__url__": Value("string"), "json": Json(),
                         "png": ImageFeature(), "mask.png": ImageFeature()})
    files = [str(p) for p in list_shards(tmp_path)]
    dataset = load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "hf"), features=features)
    last = dataset[6]
    assert last["json"]["annotations"][1]["class"] == "water"
    assert last["json"]["caption_failures"] == late.failures
    assert last["mask.png"].mode == "L" and np.array_equal(np.asarray(last["mask.png"]), _decoded(late.mask_png))


def test_identical_inputs_give_byte_identical_shards(tmp_path: Path, samples: list[Sample]) -> None:
    first = _write(tmp_path / "a", samples, shard_max_samples=4)
    second = _write(tmp_path / "b", samples, shard_max_samples=4)
    names = [s.name for s in first]
    assert names == [s.name for s in second]
    for name in names:
        assert (tmp_path / "a" / f"{name}.tar").read_bytes() == (tmp_path / "b" / f"{name}.tar").read_bytes()
        sidecar_a = json.loads((tmp_path / "a" / f"{name}.stats.json").read_text())
        sidecar_b = json.loads((tmp_path / "b" / f"{name}.stats.json").read_text())
        sidecar_a.pop("seconds"), sidecar_b.pop("seconds")
        assert sidecar_a == sidecar_b


def test_members_have_fixed_metadata_and_dotless_keys(tmp_path: Path, samples: list[Sample]) -> None:
    _write(tmp_path / "shards", samples[:2])
    with tarfile.open(list_shards(tmp_path)[0]) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == [
        f"{samples[0].key}.json", f"{samples[0].key}.mask.png", f"{samples[0].key}.png",
        f"{samples[1].key}.json", f"{samples[1].key}.mask.png", f"{samples[1].key}.png",
    ]
    assert {m.mtime for m in members} == {SHARD_MTIME}
    assert {(m.uname, m.gname, m.uid, m.gid, m.mode) for m in members} == {("rsbuild", "rsbuild", 0, 0, 0o444)}
    with tarfile.open(list_shards(tmp_path)[0]) as archive:
        assert json.loads(archive.extractfile(members[0].name).read()) == samples[0].json_payload()


@pytest.mark.parametrize("key", ["poi.1_t0000", "poi 1_t0000", "poi/1_t0000", "x" * 95])
def test_keys_that_webdataset_would_split_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        _write(tmp_path / "shards", [make_sample(key)])
    assert list_shards(tmp_path) == []


def test_masks_can_be_left_out(tmp_path: Path, samples: list[Sample]) -> None:
    _write(tmp_path / "shards", samples[:2], write_masks=False)
    with tarfile.open(list_shards(tmp_path)[0]) as archive:
        assert not [m.name for m in archive.getmembers() if m.name.endswith(".mask.png")]
    assert all(s.mask_png is None for s in read_shard(list_shards(tmp_path)[0]))


def test_byte_cap_splits_shards_and_predicts_their_size(tmp_path: Path) -> None:
    samples = [make_sample(f"p{i}_t0000", size=48, seed=i) for i in range(9)]
    cap = 40 * 1024
    stats = _write(tmp_path / "shards", samples, shard_max_bytes=cap, shard_max_samples=1000)
    assert len(stats) > 1
    assert sum(s.samples for s in stats) == len(samples)
    for shard in stats:
        path = tmp_path / "shards" / f"{shard.name}.tar"
        assert path.stat().st_size <= cap
        assert path.stat().st_size == shard.bytes
    members = sum(512 + -(-len(m) // 512) * 512 for s in samples[: stats[0].samples]
                  for m in (s.image_png, s.mask_png, json.dumps(s.json_payload(), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()))
    assert finished_tar_size(members) == stats[0].bytes


def test_read_shard_round_trips_samples_and_splits_are_separate(tmp_path: Path) -> None:
    originals = [make_sample("a_t0000", "train"), make_sample("b_t0000", "test", seed=1), make_sample("c_t0001", "train", seed=2)]
    originals[1].failures = [{"task": "class", "reason": "check_failed", "detail": "wrong share"}]
    stats = _write(tmp_path / "shards", originals)
    assert [(s.name, s.samples) for s in stats] == [("train-000000", 2), ("test-000000", 1)]
    back = {s.key: s for path in list_shards(tmp_path) for s in read_shard(path)}
    for sample in originals:
        assert back[sample.key] == sample
    sidecar = read_shard_stats(tmp_path / "shards" / "test-000000.tar")
    assert sidecar["samples"] == 1 and sidecar["failures_by_reason"] == {"check_failed": 1}
    train = read_shard_stats(tmp_path / "shards" / "train-000000.tar")
    tree = sum(c["pixels"] for s in (originals[0], originals[2]) for c in s.stats["classes"] if c["name"] == "tree cover")
    assert train["class_pixels"]["tree cover"] == tree and train["class_tiles"] == {"tree cover": 2, "water": 2}
    assert train["first_key"] == "a_t0000" and train["last_key"] == "c_t0001"


def chip_unit_writer(out_dir: Path, dataset: bool = False, **output) -> UnitWriter:
    """The writer of unit 0; ``dataset=False`` is the fetch half's (shards and failures only)."""
    plan = UnitPlan(unit_pois=1000, tiles_per_poi=2, rows_per_tile=rows_per_tile_bound(CaptionsConfig()))
    return UnitWriter(Path(out_dir), 0, plan, OutputConfig(**output), CaptionsConfig(), ESA_WORLDCOVER, dataset=dataset)


@pytest.mark.parametrize("dataset", [False, True], ids=["chips", "dataset"])
def test_exception_mid_shard_leaves_no_partial_tar(tmp_path: Path, samples: list[Sample], dataset: bool) -> None:
    writer = chip_unit_writer(tmp_path, dataset, shard_max_samples=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        try:
            for i, sample in enumerate(samples):
                writer.write(sample)
                if i == 4:
                    raise RuntimeError("interrupted")
        except BaseException:
            writer.abort()  # what UnitRouter.abort does for every open unit
            raise
    shards = list_shards(tmp_path)
    assert [p.name for p in shards] == ["train-u000000-00.tar"]  # the complete one only (named by its unit until finalize)
    assert [s.key for s in read_shard(shards[0])] == [s.key for s in samples[:3]]
    assert read_shard_stats(shards[0])["samples"] == 3
    assert not list(tmp_path.rglob("*.tmp"))
    left = [p.name for p in (tmp_path / "units").iterdir()]
    assert left in ([], ["lock"]) and done_units(tmp_path) == set()  # no failures part, no marker (the names lock may stay)


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from tests.dataset.test_shards import chip_unit_writer, make_sample
writer = chip_unit_writer({out!r}, shard_max_samples=4)
for i in range(6):
    writer.write(make_sample(f"k{{i}}_t0000", size=64, seed=i))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_writer_leaves_only_complete_tars_and_the_unit_is_redone(tmp_path: Path) -> None:
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parents[2]), out=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    temp = list((tmp_path / "shards").glob("*.tar.tmp"))
    assert [p.name for p in temp] == ["train-u000000-01.tar.tmp"] and temp[0].stat().st_size > 0
    shards = list_shards(tmp_path)
    assert [p.name for p in shards] == ["train-u000000-00.tar"]
    assert len(list(read_shard(shards[0]))) == 4 == read_shard_stats(shards[0])["samples"]
    assert done_units(tmp_path) == set() and not failures_part(tmp_path, 0).exists()  # the unit is not done

    writer = chip_unit_writer(tmp_path, shard_max_samples=4)  # a rerun drops what the dead attempt left ...
    assert list_shards(tmp_path) == [] and not list((tmp_path / "shards").iterdir())
    for i in range(6):
        writer.write(make_sample(f"k{i}_t0000", size=64, seed=i))
    writer.finish()  # ... and redoes the unit
    assert done_units(tmp_path) == {0} and not list(tmp_path.rglob("*.tmp"))
    assert [read_shard_stats(p)["samples"] for p in list_shards(tmp_path)] == [4, 2]


def test_unit_writer_records_failures(tmp_path: Path, samples: list[Sample]) -> None:
    writer = chip_unit_writer(tmp_path)
    writer.write(samples[0])
    writer.write(make_sample("bad.key_t0000"))  # its key cannot name tar members: recorded, not written
    writer.record_failure(Failure("search", "no_scene", "p9", None, "no scene under 20 % cloud"))
    writer.record_failure(Failure("tile", "cloudy", "p8", "p8_t0001", "cloud share 0.7"))
    marker = writer.finish()
    reasons = ["invalid_key", "no_scene", "cloudy"]
    assert [json.loads(line)["reason"] for line in failures_part(tmp_path, 0).read_text().splitlines()] == reasons
    assert marker["tally"]["failures_by_reason"] == {"cloudy": 1, "invalid_key": 1, "no_scene": 1}

    summary = finalize(tmp_path, OutputConfig(), SplitsConfig(), ESA_WORLDCOVER, dataset=False)
    assert [json.loads(line)["reason"] for line in (tmp_path / "failures.jsonl").read_text().splitlines()] == reasons
    assert summary["failures"] == 3 and summary["failures_by_reason"] == {"cloudy": 1, "invalid_key": 1, "no_scene": 1}
    assert summary["failures_by_stage"] == {"search": 1, "tile": 1, "write": 1}
    assert summary["tiles_by_split"]["train"] == 1 and summary["shards"] == [
        {"name": "train-000000.tar", "split": "train", "samples": 1, "bytes": list_shards(tmp_path)[0].stat().st_size, "unit": 0}
    ]


def test_a_unit_with_a_transient_caption_failure_is_one_retry_failed_redoes(tmp_path: Path, samples: list[Sample]) -> None:
    from rsbuild.dataset.units import units_with_transient_failures

    lost = {"stage": "caption", "key": samples[0].key, "task": "area", "annotator": "m", "seed": 1, "attempts": 1,
            "reason": "engine_error", "detail": "HTTP 503 after 4 tries", "text": None, "check_reasons": [], "transient": True}
    for unit, failures in ((0, [lost]), (1, [{**lost, "transient": False}])):
        plan = UnitPlan(unit_pois=1000, tiles_per_poi=2, rows_per_tile=rows_per_tile_bound(CaptionsConfig()))
        writer = UnitWriter(tmp_path, unit, plan, OutputConfig(), CaptionsConfig(), ESA_WORLDCOVER, dataset=False)
        writer.write(Sample(**{**samples[0].__dict__, "failures": failures}))
        writer.finish()
    assert units_with_transient_failures(tmp_path, [0, 1]) == {0}


def test_shards_are_the_bytes_webdatasets_tar_writer_writes(tmp_path: Path, samples: list[Sample]) -> None:
    """rsbuild writes tars itself (so it can copy members verbatim); byte for byte what webdataset's
    TarWriter wrote with the same settings, band members included."""
    samples = [*samples[:3], replace(samples[3], bands_tif=b"II*\x00" + bytes(1000))]
    ours = _write(tmp_path / "ours", samples)
    reference = tmp_path / "reference.tar"
    with open(reference, "wb") as handle, wds.TarWriter(handle, user="rsbuild", group="rsbuild", mode=0o444,
                                                          encoder=False, mtime=946684800) as writer:
        for sample in samples:
            writer.write({"__key__": sample.key, **sample_members(sample)})
    assert (tmp_path / "ours" / f"{ours[0].name}.tar").read_bytes() == reference.read_bytes()


def test_a_local_shard_keeps_its_member_blocks_and_they_are_written_again_verbatim(
    tmp_path: Path, samples: list[Sample]
) -> None:
    source = tmp_path / "source" / f"{_write(tmp_path / 'source', samples)[0].name}.tar"
    local = list(read_local_shard(source))
    assert local == list(read_shard(source))
    assert all(set(s.source_blocks) == {"png", "mask.png"} for s in local)
    recaptioned = [replace(s, annotations=[{"task": "area", "text": "New words.", "annotator": "template"}]) for s in local]
    plain = [replace(s, source_blocks={}) for s in recaptioned]
    copied, built = _write(tmp_path / "copied", recaptioned), _write(tmp_path / "built", plain)
    assert (tmp_path / "copied" / f"{copied[0].name}.tar").read_bytes() == (tmp_path / "built" / f"{built[0].name}.tar").read_bytes()
    # a member changed after reading is written from its new bytes, never from the stale blocks
    changed = [replace(recaptioned[0], image_png=samples[1].image_png), *recaptioned[1:]]
    written = _write(tmp_path / "changed", changed)
    assert next(read_shard(tmp_path / "changed" / f"{written[0].name}.tar")).image_png == samples[1].image_png
