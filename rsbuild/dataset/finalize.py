"""Finalize a run: the whole-run files assembled from the done units' markers.

JSONL per split, ``failures.jsonl``, ``summary.json``, plots and the dataset card, each written
atomically; the units are never re-read sample by sample (the plots too are drawn from the counts
in the markers; only markers written before units counted them make the plots re-read the shards).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rsbuild.chips.splits import OverlapReport
from rsbuild.config import OutputConfig, SplitsConfig
from rsbuild.dataset import card, sft
from rsbuild.dataset.layout import (
    CARD_FILE,
    DATA_DIR,
    FAILURES_FILE,
    FOLDERS,
    IMAGEFOLDER_SUFFIX,
    PARTS_DIR,
    PLOTS_DIR,
    SHARD_LIST_SUFFIX,
    SHARD_NAMES_FILE,
    SHARDS_DIR,
    SUMMARY_FILE,
    TMP_SUFFIX,
    compact_json,
    pretty_json,
)
from rsbuild.dataset.plots import card_plot_section, write_plots
from rsbuild.dataset.shards import renumber_shards, write_atomic
from rsbuild.dataset.units import Tally, done_units, failures_part, marker_path, shard_names_lock
from rsbuild.records import SPLITS
from rsbuild.schemes import Scheme
from rsbuild.version import __version__


def _concat(parts: Iterable[Path], target: Path) -> None:
    tmp = target.with_name(target.name + TMP_SUFFIX)
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out)
    tmp.replace(target)


def imagefolder_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An SFT row as a row of ``OUT/{split}.metadata.jsonl``: ``file_name`` (the image, relative to
    OUT, which `datasets`' imagefolder builder turns into an ``Image()`` column) first, then the row
    without ``meta.detail`` (its fields differ between derived tasks, and the builder reads one
    schema from the first rows)."""
    meta = {k: v for k, v in row["meta"].items() if k != "detail"}
    return {"file_name": row["messages"][0]["content"][0]["image"], "messages": row["messages"], "meta": meta}


def _write_imagefolder_metadata(jsonl: Path, target: Path) -> None:
    """``target`` holds one `imagefolder_row` per line of ``jsonl``; no file for an empty split."""
    if not jsonl.stat().st_size:
        target.unlink(missing_ok=True)
        return
    tmp = target.with_name(target.name + TMP_SUFFIX)
    with open(jsonl, encoding="utf-8") as rows, open(tmp, "wb") as out:
        for line in rows:
            out.write(compact_json(imagefolder_row(json.loads(line))))
    tmp.replace(target)


def _failed_pois(failures_file: Path, pois_with_tiles: set[str]) -> tuple[dict[str, int], int]:
    """POIs that gave no tile in the whole dataset, by the first failure recorded for each
    (``"stage/reason"`` -> count), and how many of them failed transiently (``--retry-failed``
    may save them): what a resumed run's exit code is judged on."""
    first: dict[str, str] = {}
    transient: set[str] = set()
    if failures_file.exists():
        with open(failures_file, encoding="utf-8") as lines:
            for line in lines:
                doc = json.loads(line)
                poi = doc.get("poi_id")
                if poi and poi not in pois_with_tiles:
                    first.setdefault(poi, f"{doc.get('stage')}/{doc.get('reason')}")
                    if doc.get("transient"):
                        transient.add(poi)
    return dict(sorted(Counter(first.values()).items())), len(transient)


def _renumber(out_dir: Path, shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Contiguous shard names per split (unit order, then part order) and ``data/{split}.shards.txt``."""
    shards = sorted(shards, key=lambda s: (SPLITS.index(s["split"]), s["unit"]))  # stable: parts keep their order
    unit_names = [(s["split"], s["name"].removesuffix(".tar")) for s in shards]
    names = renumber_shards(out_dir / SHARDS_DIR, unit_names, out_dir / SHARDS_DIR / SHARD_NAMES_FILE)
    shards = [{**s, "name": names[s["name"].removesuffix(".tar")] + ".tar"} for s in shards]
    (out_dir / DATA_DIR).mkdir(exist_ok=True)
    for split in SPLITS:
        listed = "".join(f"{SHARDS_DIR}/{s['name']}\n" for s in shards if s["split"] == split)
        target = out_dir / DATA_DIR / f"{split}{SHARD_LIST_SUFFIX}"
        if listed:
            write_atomic(target, listed.encode("utf-8"))
        else:
            target.unlink(missing_ok=True)
    return shards


def _card_text(summary: dict[str, Any], output_cfg: OutputConfig, scheme: Scheme | None,
               config: Mapping[str, Any] | None) -> str:
    """The card, or a short card saying why it could not be written: every tile is fetched by now,
    so a card problem must not lose the run (the error goes to ``summary.json`` too)."""
    try:
        return card.render_card(summary, output_cfg, scheme, config)
    except Exception as exc:  # reported in the card and the summary, never fatal here
        summary["card_error"] = f"{type(exc).__name__}: {exc}"
        return (
            f"# {output_cfg.pretty_name}\n\nThe dataset card could not be written ({summary['card_error']}); "
            "the data is complete: see `summary.json`. Rerun the same command to retry the card.\n"
        )


def finalize(
    out_dir: Path,
    output_cfg: OutputConfig,
    splits_cfg: SplitsConfig,
    scheme: Scheme | None,
    config: Mapping[str, Any] | None = None,
    *,
    dataset: bool = True,
) -> dict[str, Any]:
    """Assemble the whole-run files from the done units: JSONL, failures, summary, card, plots."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    tally, overlap, shards, pois_with_tiles = Tally(), OverlapReport(), [], set()
    with shard_names_lock(out_dir):  # a concurrent worker redoing a unit renames shards back meanwhile
        units = sorted(done_units(out_dir))
        for unit in units:
            marker = json.loads(marker_path(out_dir, unit).read_text(encoding="utf-8"))
            tally.merge(marker["tally"])
            shards += [{"name": s["shard"], "split": s["split"], "samples": s["samples"], "bytes": s["bytes"], "unit": unit}
                       for s in marker["shards"]]
            for key, split, bbox in marker["footprints"]:
                overlap.add(key, bbox, split)
                pois_with_tiles.add(key.rsplit("_t", 1)[0])
        shards = _renumber(out_dir, shards)
    _concat((failures_part(out_dir, u) for u in units if failures_part(out_dir, u).exists()), out_dir / FAILURES_FILE)
    c = tally.counters
    failed_pois, failed_transient = _failed_pois(out_dir / FAILURES_FILE, pois_with_tiles)
    summary: dict[str, Any] = {
        "rsbuild_version": __version__,
        "scheme": scheme.name if scheme else None,
        "units": units,
        "tiles": sum(c["tiles_by_split"].values()),
        "tiles_by_split": {s: c["tiles_by_split"][s] for s in SPLITS},
        "shards": shards,
        "failures": sum(c["failures_by_reason"].values()),
        "failures_by_reason": dict(sorted(c["failures_by_reason"].items())),
        "failures_by_stage": dict(sorted(c["failures_by_stage"].items())),
        "pois_with_tiles": len(pois_with_tiles),
        "pois_failed": failed_pois,
        "pois_failed_transient": failed_transient,
        "caption_failures_by_reason": dict(sorted(c["caption_failures_by_reason"].items())),
        "captions": tally.captions.to_json(),
        "annotations_by_task": dict(sorted(c["annotations"].items())),
        "annotators": dict(sorted(c["annotators"].items())),
        "classes": tally.classes(),
        "overlap": overlap.to_json(),
        "splits": splits_cfg.model_dump(mode="json"),
        "scene_years": sorted(tally.scene_years),
    }
    if dataset:
        (out_dir / DATA_DIR).mkdir(exist_ok=True)
        for split in SPLITS:
            parts = (out_dir / DATA_DIR / PARTS_DIR / f"{split}-{u:06d}.jsonl" for u in units)
            _concat((p for p in parts if p.exists()), out_dir / DATA_DIR / f"{split}.jsonl")
            _write_imagefolder_metadata(out_dir / DATA_DIR / f"{split}.jsonl", out_dir / f"{split}{IMAGEFOLDER_SUFFIX}")
        summary["rows"] = sum(sum(r.values()) for r in tally.rows.values())
        tasks = sft.reported_tasks(tally.rows.values())
        summary["rows_by_split"] = {split: {t: tally.rows[split][t] for t in tasks} for split in SPLITS}
        if tally.derived:
            summary["derived"] = tally.derived.to_json()
        summary["files"] = {folder: sum(1 for p in (out_dir / folder).rglob("*") if p.is_file()) for folder in FOLDERS}
        card_text = _card_text(summary, output_cfg, scheme, config)
        if output_cfg.write_plots and summary["tiles"]:
            # the units counted what the plots show; markers written without those counts: read the shards
            derived = summary.get("derived") and {**summary["derived"], "rows_by_task": sft.derived_row_counts(summary["rows_by_split"])}
            plot_files = write_plots(tally.plots.counts() if tally.plots_complete else out_dir, out_dir / PLOTS_DIR, derived)
            card_text = card_text.rstrip("\n") + "\n\n" + card_plot_section(plot_files, out_dir) + "\n"
        write_atomic(out_dir / CARD_FILE, card_text.encode("utf-8"))
    summary["finalize_seconds"] = round(time.perf_counter() - started, 3)
    write_atomic(out_dir / SUMMARY_FILE, pretty_json(summary))
    return summary
