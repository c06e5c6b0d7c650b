"""Wires the stages for `fetch` and `build`: POIs → fetch → (captions) → writer.

The CLI builds a `Config` and calls `run_fetch` or `run_build`; nothing here reads CLI state.
Progress is shown with rich; the run ends with a `RunSummary` (also written as JSON).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rsbuild.config import Config
from rsbuild.fetch import Fetcher
from rsbuild.labels import make_label_source
from rsbuild.pois import PoiReader, write_rejects
from rsbuild.types import Failure, Poi, Sample


class SampleSink(Protocol):
    """Where samples go (rsbuild.shards / DatasetWriter)."""

    def write(self, sample: Sample) -> None: ...

    def record_failure(self, failure: Failure) -> None: ...

    def close(self) -> dict[str, Any]: ...

    def abort(self) -> None: ...


@dataclass
class RunSummary:
    """Counts of one run, shown as a table and written as ``run_summary.json``."""

    out_dir: str
    pois_read: int = 0
    pois_rejected: int = 0
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    scenes_found: int = 0
    scenes_missing: Counter[str] = field(default_factory=Counter)
    tiles_written: int = 0
    tiles_skipped: Counter[str] = field(default_factory=Counter)
    captions_failed: int = 0
    filter_mode: str = ""
    elapsed_s: float = 0.0
    writer: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for name in ("rejects_by_reason", "scenes_missing", "tiles_skipped"):
            data[name] = dict(sorted(data[name].items()))
        return data

    def table(self) -> Table:
        """A rich table of the run."""
        table = Table(title="rsbuild summary", show_header=True, header_style="bold")
        table.add_column("what")
        table.add_column("count", justify="right")
        table.add_column("details")
        table.add_row("POIs read", str(self.pois_read), "")
        table.add_row("POIs rejected", str(self.pois_rejected), _reasons(self.rejects_by_reason))
        table.add_row("scenes found", str(self.scenes_found), f"cloud filter: {self.filter_mode}" if self.filter_mode else "")
        table.add_row("scenes missing", str(sum(self.scenes_missing.values())), _reasons(self.scenes_missing))
        table.add_row("tiles written", str(self.tiles_written), "")
        table.add_row("tiles skipped", str(sum(self.tiles_skipped.values())), _reasons(self.tiles_skipped))
        if self.captions_failed:
            table.add_row("captions failed check", str(self.captions_failed), "see caption_failures in KEY.json")
        table.add_row("elapsed", f"{self.elapsed_s:.1f} s", self.out_dir)
        return table


def _reasons(counter: Counter[str]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counter.items()))


def _count_rows(reader: PoiReader) -> int | None:
    """Rows in the POI table (cheap first pass) for the progress bar."""
    path = reader.cfg.path
    if reader.format == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if reader.format == "csv" else lines


def make_searcher(cfg: Config) -> Any:
    """The scene searcher for the configured catalog (opens it once)."""
    from rsbuild.stac import SceneSearcher

    required = ("visual",) if cfg.imagery.rgb_source == "visual" else ("red", "green", "blue")
    return SceneSearcher(cfg.scenes, required=required)


class _Tracker:
    """Counts records as they stream by and forwards failures to the sink."""

    def __init__(self, summary: RunSummary, sink: SampleSink, progress: Progress | None, task: Any) -> None:
        self.summary, self.sink, self.progress, self.task = summary, sink, progress, task

    def samples(self, grouped: Iterator[tuple[Poi, list[Sample | Failure]]]) -> Iterator[Sample]:
        for _poi, records in grouped:
            failures = [r for r in records if isinstance(r, Failure)]
            if len(records) == 1 and failures and failures[0].stage in ("search", "read"):
                self.summary.scenes_missing[failures[0].reason] += 1
            else:
                self.summary.scenes_found += 1
            for record in records:
                if isinstance(record, Failure):
                    if record.stage == "tile":
                        self.summary.tiles_skipped[record.reason] += 1
                    self.sink.record_failure(record)
                else:
                    yield record
            if self.progress is not None:
                self.progress.advance(self.task)


def _run(
    cfg: Config,
    out_dir: Path,
    sink: SampleSink,
    console: Console,
    caption_stage: Any = None,
    show_progress: bool = True,
) -> RunSummary:
    started = time.perf_counter()
    summary = RunSummary(out_dir=str(out_dir))
    reader = PoiReader(cfg.pois)
    total = _count_rows(reader)
    searcher = make_searcher(cfg)
    summary.filter_mode = getattr(searcher, "filter_mode", "")
    label_source = make_label_source(cfg.labels)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    with progress, Fetcher(cfg, searcher, label_source) as fetcher:
        task = progress.add_task("POIs", total=total)
        tracker = _Tracker(summary, sink, progress, task)
        samples: Iterable[Sample] = tracker.samples(fetcher.run(reader))
        if caption_stage is not None:
            samples = caption_stage(samples)
        try:
            for sample in samples:
                summary.captions_failed += len(sample.failures)
                sink.write(sample)
                summary.tiles_written += 1
        except BaseException:
            sink.abort()
            raise
        summary.writer = sink.close()
    summary.pois_read = reader.rows_read
    summary.pois_rejected = len(reader.rejects)
    summary.rejects_by_reason = Counter(r.reason for r in reader.rejects)
    write_rejects(reader.rejects, out_dir / "rejects.jsonl")
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    (out_dir / "run_summary.json").write_text(json.dumps(summary.to_json(), indent=2, sort_keys=True) + "\n")
    (out_dir / "config.resolved.json").write_text(json.dumps(cfg.dump(), indent=2, sort_keys=True) + "\n")
    return summary


def run_fetch(
    cfg: Config, out_dir: Path, console: Console | None = None, show_progress: bool = True, overwrite: bool = False
) -> RunSummary:
    """The fetch half: chip shards (image, mask, stats; no captions) under ``out_dir``."""
    from rsbuild.shards import ChipShardWriter

    out_dir.mkdir(parents=True, exist_ok=True)
    sink = ChipShardWriter(out_dir, cfg.output, overwrite=overwrite)
    return _run(cfg, out_dir, sink, console or Console(), show_progress=show_progress)


def run_build(
    cfg: Config,
    out_dir: Path,
    console: Console | None = None,
    show_progress: bool = True,
    engines: list[Any] | None = None,
    overwrite: bool = False,
) -> RunSummary:
    """The whole job: fetch → caption → shards, JSONL, folders and card under ``out_dir``."""
    from rsbuild.captions.annotate import annotate
    from rsbuild.captions.engines import make_engines
    from rsbuild.captions.prompts import PromptSet
    from rsbuild.schemes import get_scheme
    from rsbuild.layout import DatasetWriter

    out_dir.mkdir(parents=True, exist_ok=True)
    engines = engines if engines is not None else make_engines(cfg.captions, out_dir / "cache")
    prompts = PromptSet.load(cfg.captions.prompts_dir) if any(e.needs_prompts for e in engines) else None

    def caption_stage(samples: Iterable[Sample]) -> Iterator[Sample]:
        return annotate(samples, engines, cfg.captions, prompts=prompts)

    scheme = get_scheme(cfg.labels.scheme)
    sink = DatasetWriter(out_dir, cfg.output, cfg.splits, cfg.captions, scheme, config=cfg.dump(), overwrite=overwrite)
    try:
        return _run(cfg, out_dir, sink, console or Console(), caption_stage, show_progress)
    finally:
        for engine in engines:
            engine.close()
