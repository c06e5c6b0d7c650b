"""The caption half on its own: `rsbuild caption` (chip shards → dataset) and `rsbuild recaption`
(dataset → dataset with new prompts). Both read shards, add or replace annotations, and write a
dataset with the same units, copying image and mask bytes unchanged (never re-encoded; from a local
source, as the tar blocks they were read from).

Sources and targets may be local folders or fsspec URLs (s3://, gs://, http(s)://, memory://).
A remote target is written in a local staging folder and uploaded when the run is complete.
Only requests whose template changed (or that never succeeded) reach the engine; the caption
cache makes resumed runs send nothing twice.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from rich.console import Console

from rsbuild.config import Config, config_from_dict
from rsbuild.dataset.layout import CONFIG_FILE, SHARDS_DIR, UNITS_DIR
from rsbuild.dataset.remote import is_fsspec_url
from rsbuild.dataset.shards import read_local_shard, read_shard_stream, unit_of_shard_name
from rsbuild.dataset.units import SHARDS_PER_UNIT, UnitRouter, UnitWriter, failures_part, plan_for, prepare_run
from rsbuild.errors import InputError
from rsbuild.records import Sample
from rsbuild.run.pipeline import (
    EVERY_UNIT,
    RunSummary,
    WorkerSlice,
    finish_run,
    make_caption_stage,
    progress_display,
    write_samples,
)
from rsbuild.schemes import get_scheme


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def source_config(source: str) -> Config:
    """The resolved config the source was built with (``config.resolved.json``)."""
    try:
        with fsspec.open(_join(source, CONFIG_FILE), "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{source} has no {CONFIG_FILE}; pass a folder written by `rsbuild fetch` or `rsbuild build`") from None
    return config_from_dict(data, source=_join(source, CONFIG_FILE))


def source_units(source: str) -> dict[int, list[str]]:
    """Units of a source dataset with their shard names, from its ``summary.json`` (works over
    plain HTTP); units without shards (only failures) are included."""
    try:
        with fsspec.open(_join(source, "summary.json"), "r", encoding="utf-8") as handle:
            summary = json.load(handle)
        named = [(s["name"], s.get("unit")) for s in summary["shards"]]
        units = list(summary.get("units", []))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        raise InputError(f"{_join(source, 'summary.json')} is damaged (not a JSON summary); rerun the same "
                         "`rsbuild build` (or fetch) on that folder to write it again") from None
    except (FileNotFoundError, KeyError):  # not finalized yet (e.g. chips being fetched): list
        fs, path = fsspec.core.url_to_fs(source)
        named = [(Path(p).name, None) for p in fs.glob(f"{path}/{SHARDS_DIR}/*.tar")]
        units = [int(Path(p).name[:6]) for p in fs.glob(f"{path}/{UNITS_DIR}/" + "[0-9]" * 6 + ".json")]
    by_unit: dict[int, list[str]] = {unit: [] for unit in units}
    for name, unit in sorted(named, key=lambda item: item[0]):
        by_unit.setdefault(shard_unit(name) if unit is None else int(unit), []).append(name)
    return dict(sorted(by_unit.items()))


def shard_unit(name: str) -> int:
    """The unit a shard belongs to, from its name: a unit's own name (``{split}-u{unit:06d}-{part:02d}.tar``)
    or the ``{split}-{unit*100+part:06d}.tar`` of datasets finalized before shards were renumbered."""
    unit = unit_of_shard_name(name)
    return unit if unit is not None else int(name.removesuffix(".tar").rsplit("-", 1)[1]) // SHARDS_PER_UNIT


def _unit_samples(source: str, names: list[str]) -> Iterator[Sample]:
    """A unit's samples; from a local folder with their member blocks, so unchanged image, mask
    and band members are copied to the new shards verbatim (never decoded or re-serialised)."""
    for name in names:
        if not is_fsspec_url(source):
            yield from read_local_shard(Path(source.removeprefix("file://")) / SHARDS_DIR / name)
            continue
        with fsspec.open(_join(source, SHARDS_DIR, name), "rb") as handle:
            yield from read_shard_stream(handle, name)


def _source_failures(source: str, unit: int) -> list[dict[str, Any]]:
    """Failures the source recorded for this unit (no scene, cloudy tiles, …) carry over."""
    try:
        with fsspec.open(_join(source, UNITS_DIR, failures_part(Path("."), unit).name), "r", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def run_recaption(
    source: str,
    out: str,
    overrides: dict[str, Any],
    console: Console | None = None,
    *,
    show_progress: bool = True,
    overwrite: bool = False,
    engines: list[Any] | None = None,
    workers: WorkerSlice = EVERY_UNIT,
    units: list[int] | None = None,
    finalize_run: bool = True,
) -> RunSummary:
    """Caption (or re-caption) every unit of ``source`` into ``out`` with the source's config
    updated by ``overrides`` (``captions`` settings: engine, tasks, prompts_dir, …).

    ``units`` restricts the run to those units (the Ray executor's caption actors); engines
    passed in stay open (their owner closes them)."""
    console = console or Console()
    started = time.perf_counter()
    base = source_config(source)
    data = base.dump()
    data["captions"].update({k: v for k, v in overrides.items() if v is not None})
    cfg = config_from_dict(data, source=f"{source} config with command-line options")
    staging = Path(tempfile.mkdtemp(prefix="rsbuild-out-")) if is_fsspec_url(out) else Path(out)
    summary = RunSummary(out_dir=str(out))
    plan = plan_for(cfg)
    done = prepare_run(staging, cfg.dump(), overwrite=overwrite)
    by_unit = source_units(source)
    wanted = set(by_unit) if units is None else set(units)
    todo = [u for u in sorted(by_unit) if u in wanted and workers.owns(u) and u not in done]
    summary.units_skipped = len([u for u in by_unit if workers.owns(u) and u in done])
    scheme = get_scheme(cfg.labels.scheme)

    def open_unit(unit: int) -> UnitWriter:
        writer = UnitWriter(staging, unit, plan, cfg.output, cfg.captions, scheme)
        for record in _source_failures(source, unit):
            writer.record_failure_json(record)
        return writer

    owned = engines is None
    caption_stage = make_caption_stage(cfg, staging, engines)
    router = UnitRouter(open_unit, plan, todo)
    try:
        with progress_display(console, show_progress) as progress:
            task = progress.add_task("samples", total=None, rates="")

            def advance(sample: Sample | None) -> None:
                if sample is not None:
                    progress.advance(task)

            samples = (s for unit in todo for s in _unit_samples(source, by_unit[unit]))
            write_samples(samples, router, summary, caption_stage=caption_stage, progress=progress, before_write=advance)
    finally:
        for engine in caption_stage.engines if owned else ():
            engine.close()
    finish_run(summary, router, cfg, staging, scheme, started, finalize_now=finalize_run)
    if is_fsspec_url(out):
        fs, path = fsspec.core.url_to_fs(out)
        fs.put(str(staging) + "/", path, recursive=True)
        shutil.rmtree(staging, ignore_errors=True)
    return summary


__all__ = ["run_recaption", "shard_unit", "source_config", "source_units"]
