"""Wires the stages for `fetch` and `build`: POIs → fetch → (captions) → writer.

The CLI builds a `Config` and calls `run_fetch` or `run_build`; nothing here reads CLI state.
Progress is shown with rich; the run ends with a `RunSummary` (also written as JSON).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rsbuild.captions.base import CaptionEngine
from rsbuild.captions.engines.factory import make_engines
from rsbuild.captions.prompts import PromptSet
from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.chips.fetch import Fetcher
from rsbuild.chips.stills import StillsStage, tiles_class_summary
from rsbuild.config import Config
from rsbuild.dataset.layout import CONFIG_FILE, REJECTS_FILE, RUN_SUMMARY_FILE, pretty_json
from rsbuild.dataset.shards import write_atomic
from rsbuild.errors import ConfigError
from rsbuild.records import Failure, Poi, Sample
from rsbuild.schemes import Scheme
from rsbuild.sources.labels.factory import make_label_source
from rsbuild.sources.pois import PoiReader, write_rejects

if TYPE_CHECKING:
    from rsbuild.dataset.units import UnitPlan, UnitRouter, UnitWriter


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
    units_done: int = 0
    units_skipped: int = 0
    finalized: bool = False
    filter_mode: str = ""
    elapsed_s: float = 0.0
    writer: dict[str, Any] = field(default_factory=dict)
    stills: dict[str, Any] = field(default_factory=dict)  # StillsStage.summary() when [stills] mapbox is on
    captions: dict[str, Any] = field(default_factory=dict)  # CaptionTelemetry.to_json() + engine counters

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
        if self.captions:
            c = self.captions
            rate = c.get("pass_rate")
            table.add_row("captions kept", str(c.get("captions_kept", 0)),
                          f"of {c.get('captions_generated', 0)} generated" + (f", pass rate {rate:.0%}" if rate is not None else ""))
            details = [f"{c.get('captions_per_s', 0):.2f} captions/s", f"{c.get('output_tokens_per_s', 0):.0f} output tokens/s",
                       f"mean {c.get('mean_in_flight', 0):.0f} requests in flight"]
            if c.get("prefix_cache_hit_rate") is not None:
                details.append(f"prefix cache {c['prefix_cache_hit_rate']:.0%} of prompt tokens")
            table.add_row("caption requests", str(c.get("requests", 0)), ", ".join(details))
        if self.captions_failed:
            table.add_row("captions not kept", str(self.captions_failed),
                          "tiles' caption slots left empty; reasons in failures.jsonl and KEY.json caption_failures")
        if self.stills:
            failed = _reasons(Counter(self.stills.get("failures_by_reason", {})))
            table.add_row("Mapbox stills", str(self.stills.get("written", 0)), self.stills.get("disabled_reason") or failed)
        overlap = self.writer.get("overlap") if self.writer else None
        if overlap is not None:
            pairs = overlap.get("overlapping_pairs", 0)
            table.add_row("split overlap", str(pairs), "tile pairs of different splits whose footprints overlap"
                          + ("; to split by geographic cell set splits.by = \"cell\" in the config (build: --split-by cell)" if pairs else ""))
        if self.units_skipped:
            table.add_row("units already done", str(self.units_skipped), "resumed: skipped")
        if not self.finalized:
            table.add_row("dataset", "incomplete", "other units remain (job array?); rerun to finish")
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
    from rsbuild.sources.stac import SceneSearcher

    required = ("visual",) if cfg.imagery.rgb_source == "visual" else ("red", "green", "blue")
    return SceneSearcher(cfg.scenes, required=required)


@dataclass(frozen=True)
class WorkerSlice:
    """Which units this process runs: unit ``u`` belongs to worker ``u % count`` (job arrays)."""

    count: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"--shard-index must be in [0, --num-shards) (got {self.index} of {self.count})")

    def owns(self, unit: int) -> bool:
        return unit % self.count == self.index


EVERY_UNIT = WorkerSlice()  # one worker owns every unit (no job array)


class _Tracker:
    """Counts records as they stream by, sends failures straight to their unit and submits the
    still of each POI with a scene (when stills are on)."""

    def __init__(self, summary: RunSummary, router: UnitRouter, plan: UnitPlan, progress: Progress, task: Any,
                 stills: StillsStage | None = None) -> None:
        self.summary, self.router, self.plan, self.progress, self.task = summary, router, plan, progress, task
        self.stills = stills

    def samples(self, grouped: Iterator[tuple[Poi, list[Sample | Failure]]]) -> Iterator[Sample]:
        for poi, records in grouped:
            failures = [r for r in records if isinstance(r, Failure)]
            if len(records) == 1 and failures and failures[0].stage in ("search", "read"):
                self.summary.scenes_missing[failures[0].reason] += 1
            else:
                self.summary.scenes_found += 1
            tiles = [r for r in records if isinstance(r, Sample)]
            with self.router.lock:  # the caption stage runs this in its reader thread
                if self.stills is not None and tiles:
                    self.stills.submit(poi, self.plan.unit_of_row(poi.row), tiles[0].split, tiles_class_summary(tiles))
                for record in records:
                    if isinstance(record, Failure):
                        if record.stage == "tile":
                            self.summary.tiles_skipped[record.reason] += 1
                        self.router.record_failure(record, self.plan.unit_of_row(poi.row))
            yield from tiles
            self.progress.advance(self.task)


def _deliver_stills(stills: StillsStage, writers: dict[int, UnitWriter], before_unit: float) -> None:
    """Hand arrived stills to their open units; units below ``before_unit`` are about to finish,
    so their stills are waited for (and those writers forgotten)."""
    for job, outcome in stills.take(before_unit, writers.__contains__):
        writers[job.unit].write_still(job.poi, job.split, outcome, job.context)
    for unit in [u for u in writers if u < before_unit]:
        del writers[unit]


def progress_display(console: Console, show: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rates]}", markup=False),  # every task of this display sets ``rates``
        console=console,
        disable=not show,
    )


def caption_rates(telemetry: CaptionTelemetry) -> str:
    """One live line: captions/s, output tokens/s, requests in flight, pass rate, prefix-cache hits."""
    t = telemetry
    parts = [f"{t.captions_kept / t.elapsed:.2f} captions/s", f"{t.completion_tokens / t.elapsed:.0f} tok/s",
             f"{t.in_flight} in flight"]
    if t.pass_rate is not None:
        parts.append(f"pass {t.pass_rate:.0%}")
    if t.prefix_cache_hit_rate is not None:
        parts.append(f"prefix cache {t.prefix_cache_hit_rate:.0%}")
    return " · ".join(parts)


class CaptionStage:
    """The caption stage of a run: engines, prompts and telemetry; call it on a sample iterator."""

    def __init__(self, cfg: Config, engines: list[CaptionEngine], prompts: PromptSet | None) -> None:
        self.cfg, self.engines, self.prompts = cfg.captions, engines, prompts
        self.telemetry = CaptionTelemetry()

    def __call__(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        return annotate(samples, self.engines, self.cfg, prompts=self.prompts,
                        window=self.cfg.max_samples_in_flight, telemetry=self.telemetry)

    def summary(self) -> dict[str, Any]:
        """Telemetry plus each engine's own counters, for ``run_summary.json``."""
        return {**self.telemetry.to_json(), "engines": {e.name: e.telemetry() for e in self.engines}}

    def track(self, progress: Progress) -> Callable[[], None]:
        """A progress row for captions; call the returned function to refresh it."""
        task = progress.add_task("captions", total=None, rates="")

        def refresh() -> None:
            progress.update(task, completed=self.telemetry.captions_kept, rates=caption_rates(self.telemetry))

        return refresh


def _run(
    cfg: Config,
    out_dir: Path,
    console: Console,
    *,
    dataset: bool,
    caption_stage: CaptionStage | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
    workers: WorkerSlice = EVERY_UNIT,
    units: list[int] | None = None,
    finalize_run: bool = True,
) -> RunSummary:
    """Fetch (and caption) every unfinished unit this worker owns, then finalize when all are done.

    ``units`` restricts the run to those units (the Ray executor's fetch tasks)."""
    from rsbuild.dataset.units import UnitRouter, UnitWriter, plan_for, prepare_run
    from rsbuild.schemes import get_scheme

    started = time.perf_counter()
    summary = RunSummary(out_dir=str(out_dir))
    reader = PoiReader(cfg.pois)
    rows = _count_rows(reader) or 0
    plan = plan_for(cfg)
    done = prepare_run(out_dir, cfg.dump(), overwrite=overwrite)
    all_units = range(plan.rows_in_units(rows))
    wanted = set(all_units) if units is None else set(units)
    todo = [u for u in all_units if u in wanted and workers.owns(u) and u not in done]
    summary.units_skipped = sum(1 for u in all_units if workers.owns(u) and u in done)
    scheme = get_scheme(cfg.labels.scheme)

    stills: StillsStage | None = None
    writers: dict[int, UnitWriter] = {}  # open units, where stills go

    def open_unit(unit: int) -> UnitWriter:
        writer = UnitWriter(out_dir, unit, plan, cfg.output, cfg.captions, scheme, dataset=dataset)
        if stills is not None:
            writers[unit] = writer
        return writer

    todo_set = set(todo)
    pois = (poi for poi in reader if plan.unit_of_row(poi.row) in todo_set)
    router = UnitRouter(open_unit, plan, todo)
    progress = progress_display(console, show_progress)
    with progress:
        task = progress.add_task("POIs", total=sum(min(rows, (u + 1) * plan.unit_pois) - u * plan.unit_pois for u in todo),
                                 rates="")
        if todo:
            searcher = make_searcher(cfg)
            summary.filter_mode = getattr(searcher, "filter_mode", "")
            with Fetcher(cfg, searcher, make_label_source(cfg.labels)) as fetcher:
                stills = StillsStage.from_config(cfg.stills) if dataset else None
                tracker = _Tracker(summary, router, plan, progress, task, stills)

                def deliver(sample: Sample | None) -> None:
                    if stills is not None:
                        _deliver_stills(stills, writers, math.inf if sample is None else plan.unit_of(sample))

                try:
                    write_samples(tracker.samples(fetcher.run(pois)), router, summary, caption_stage=caption_stage,
                                  progress=progress, before_write=deliver)
                finally:
                    if stills is not None:
                        stills.close()
                        summary.stills = stills.summary()
        else:
            for _ in reader:  # still count rows and rejects
                pass
    summary.pois_read = reader.rows_read
    summary.pois_rejected = len(reader.rejects)
    summary.rejects_by_reason = Counter(r.reason for r in reader.rejects)
    write_rejects(reader.rejects, out_dir / REJECTS_FILE)
    from rsbuild.dataset.units import done_units

    finalize_now = finalize_run and set(all_units) <= done_units(out_dir)
    return finish_run(summary, router, cfg, out_dir, scheme, started, finalize_now=finalize_now, dataset=dataset)


def write_samples(samples: Iterable[Sample], router: UnitRouter, summary: RunSummary, *,
                  caption_stage: CaptionStage | None = None, progress: Progress | None = None,
                  before_write: Callable[[Sample | None], None] | None = None) -> None:
    """Caption (when a stage is given) and write a sample stream into its units; abort them on error.

    ``before_write(sample)`` runs under the router's lock before each write, and once with
    None at the end (the pipeline hands arrived Mapbox stills to their units there).
    """
    refresh = caption_stage.track(progress) if caption_stage is not None and progress is not None else None
    stream = caption_stage(samples) if caption_stage is not None else samples
    try:
        for sample in stream:
            summary.captions_failed += len(sample.failures)
            with router.lock:
                if before_write is not None:
                    before_write(sample)
                router.write(sample)
            summary.tiles_written += 1
            if refresh is not None:
                refresh()
        if before_write is not None:
            with router.lock:
                before_write(None)
        router.close()
    except BaseException:
        router.abort()
        raise
    finally:
        if caption_stage is not None:
            summary.captions = caption_stage.summary()


def finish_run(summary: RunSummary, router: UnitRouter, cfg: Config, out_dir: Path, scheme: Scheme, started: float,
               *, finalize_now: bool, dataset: bool = True) -> RunSummary:
    """The end of every run: resolved config, finalize (when all units are done), ``run_summary.json``."""
    from rsbuild.dataset.finalize import finalize

    summary.units_done = len(router.finished)
    write_atomic(out_dir / CONFIG_FILE, pretty_json(cfg.dump()))
    if finalize_now:
        summary.writer = finalize(out_dir, cfg.output, cfg.splits, scheme, cfg.dump(), dataset=dataset)
        summary.finalized = True
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    write_atomic(out_dir / RUN_SUMMARY_FILE, pretty_json(summary.to_json()))
    return summary


def run_fetch(
    cfg: Config,
    out_dir: Path,
    console: Console | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
    workers: WorkerSlice = EVERY_UNIT,
    units: list[int] | None = None,
    finalize_run: bool = True,
) -> RunSummary:
    """The fetch half: chip shards (image, mask, stats; no captions) under ``out_dir``."""
    return _run(cfg, out_dir, console or Console(), dataset=False, show_progress=show_progress, overwrite=overwrite,
                workers=workers, units=units, finalize_run=finalize_run)


def count_units(cfg: Config) -> int:
    """How many units of work the POI table makes."""
    from rsbuild.dataset.units import plan_for

    return plan_for(cfg).rows_in_units(_count_rows(PoiReader(cfg.pois)) or 0)


def make_caption_stage(cfg: Config, out_dir: Path, engines: list[CaptionEngine] | None = None) -> CaptionStage:
    """The caption stage for a run (engines from the config unless given; the caller closes them)."""
    engines = engines if engines is not None else make_engines(cfg.captions, out_dir / "cache")
    needs_prompts = any(e.needs_prompts for e in engines)
    prompts = PromptSet.load(cfg.captions.prompts_dir, tasks=cfg.captions.tasks) if needs_prompts else None
    return CaptionStage(cfg, engines, prompts)


def run_build(
    cfg: Config,
    out_dir: Path,
    console: Console | None = None,
    show_progress: bool = True,
    engines: list[Any] | None = None,
    overwrite: bool = False,
    workers: WorkerSlice = EVERY_UNIT,
) -> RunSummary:
    """The whole job: fetch → caption → shards, JSONL, folders and card under ``out_dir``.

    Rerunning the same command resumes: finished units are skipped, unfinished ones redone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    owned = engines is None
    caption_stage = make_caption_stage(cfg, out_dir, engines)
    try:
        return _run(cfg, out_dir, console or Console(), dataset=True, caption_stage=caption_stage,
                    show_progress=show_progress, overwrite=overwrite, workers=workers)
    finally:
        for engine in caption_stage.engines if owned else ():
            engine.close()
