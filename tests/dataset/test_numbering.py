"""Contiguous shard numbers per split: brace patterns from the card name every shard, and the names
stay the same whatever order units finish in and however often finalize runs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import webdataset as wds

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.finalize import finalize
from rsbuild.dataset.shards import list_shards
from rsbuild.dataset.units import UnitPlan, UnitWriter, rows_per_tile_bound
from rsbuild.schemes import ESA_WORLDCOVER
from tests.dataset.test_shards import make_sample

UNITS = 3
POIS_PER_UNIT = 5
SPLIT_OF = ("train", "train", "validation", "train", "test")  # by POI position in its unit


def _write_unit(out: Path, unit: int) -> None:
    plan = UnitPlan(unit_pois=POIS_PER_UNIT, tiles_per_poi=1, rows_per_tile=rows_per_tile_bound(CaptionsConfig()))
    writer = UnitWriter(out, unit, plan, OutputConfig(shard_max_samples=2), CaptionsConfig(), ESA_WORLDCOVER, dataset=False)
    for i in range(POIS_PER_UNIT):
        row = unit * POIS_PER_UNIT + i + 1
        sample = make_sample(f"p{row:03d}_t0000", split=SPLIT_OF[i], seed=row)
        sample.metadata["poi_row"] = row
        writer.write(sample)
    writer.finish()


def _final(out: Path) -> dict[str, str]:
    finalize(out, OutputConfig(shard_max_samples=2), SplitsConfig(), ESA_WORLDCOVER, dataset=False)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(out)}


def _card_pattern(out: Path, split: str) -> str:
    card = finalize(out, OutputConfig(shard_max_samples=2), SplitsConfig(), ESA_WORLDCOVER, dataset=True)
    assert card["shards"]
    text = (out / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"{split} `(shards/{split}-[^`]+\.tar)`", text)
    assert match, text
    return match.group(1)


def test_multi_unit_shards_read_in_full_through_the_cards_brace_pattern(tmp_path: Path) -> None:
    for unit in range(UNITS):
        _write_unit(tmp_path, unit)
    names = _final(tmp_path)
    # 3 train samples per unit at 2 per shard: 2 shards per unit, 6 in all, numbered without gaps
    assert sorted(n for n in names if n.startswith("train")) == [f"train-{i:06d}.tar" for i in range(6)]
    assert sorted(n for n in names if n.startswith("test")) == [f"test-{i:06d}.tar" for i in range(3)]
    pattern = _card_pattern(tmp_path, "train")
    assert pattern == "shards/train-{000000..000005}.tar"
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / pattern), shardshuffle=False)]
    assert keys == [f"p{u * POIS_PER_UNIT + i + 1:03d}_t0000" for u in range(UNITS) for i in (0, 1, 3)]
    listed = (tmp_path / "data" / "train.shards.txt").read_text().split()
    assert listed == [f"shards/train-{i:06d}.tar" for i in range(6)]
    stats = json.loads((tmp_path / "shards" / "train-000003.stats.json").read_text())
    assert stats["shard"] == "train-000003.tar" and stats["first_key"] == "p009_t0000"  # unit 1's second shard


def test_units_finished_out_of_order_and_finalized_twice_keep_the_names(tmp_path: Path) -> None:
    in_order = tmp_path / "in-order"
    for unit in range(UNITS):
        _write_unit(in_order, unit)
    reference = _final(in_order)

    job_array = tmp_path / "job-array"  # worker B finishes units 2 and 0 and finalizes; worker A does unit 1 later
    for unit in (2, 0):
        _write_unit(job_array, unit)
    partial = _final(job_array)
    assert sorted(n for n in partial if n.startswith("train")) == [f"train-{i:06d}.tar" for i in range(4)]
    _write_unit(job_array, 1)
    assert _final(job_array) == reference
    assert _final(job_array) == reference  # a rerun with every unit done finalizes again: nothing moves
    assert not list(job_array.rglob("*-u0000*"))  # no unit names left behind


def test_a_redone_unit_waits_for_a_finalize_in_progress_and_loses_no_shard(tmp_path: Path) -> None:
    """Job arrays: worker A finalizes (renames shards) while worker B redoes unit 1 (renames them
    back first). B's cleanup waits for the names lock, so no shard is moved onto another."""
    import threading

    from rsbuild.dataset.units import clean_unit, shard_names_lock

    for unit in range(UNITS):
        _write_unit(tmp_path, unit)
    final = _final(tmp_path)
    by_first_key = {json.loads((tmp_path / "shards" / n.replace(".tar", ".stats.json")).read_text())["first_key"]: digest
                    for n, digest in final.items()}
    with shard_names_lock(tmp_path):  # worker A's finalize holds the lock
        worker_b = threading.Thread(target=clean_unit, args=(tmp_path, 1))
        worker_b.start()
        worker_b.join(timeout=0.5)
        assert worker_b.is_alive()  # waiting: nothing renamed or removed under A's feet
        assert {p.name for p in list_shards(tmp_path)} == set(final) and (tmp_path / "shards" / "names.json").exists()
    worker_b.join()
    left = {json.loads(p.with_name(p.name.replace(".tar", ".stats.json")).read_text())["first_key"]:
            hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(tmp_path)}
    unit1_keys = {f"p{1 * POIS_PER_UNIT + i + 1:03d}_t0000" for i in range(POIS_PER_UNIT)}
    assert left == {k: v for k, v in by_first_key.items() if k not in unit1_keys}  # units 0 and 2 intact, unit 1 gone
    assert all("-u00000" in p.name for p in list_shards(tmp_path))  # back under unit names until the next finalize
