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
from rsbuild.errors import ConfigError, RsbuildError
from rsbuild.records import Failure, Poi, Sample
from rsbuild.retries import RETRIES, RetryMark, describe_table
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
    units_redone: int = 0  # done units whose POI rows changed since they were made
    units_retried: int = 0  # done units redone by --retry-failed (they had transient failures)
    pois_attempted: int = 0  # POI rows of the units this run did
    pois_failed: Counter[str] = field(default_factory=Counter)  # "stage/reason" of POI rows that gave no tile
    caption_failures: Counter[str] = field(default_factory=Counter)  # reason of captions not kept
    failure_examples: dict[str, str] = field(default_factory=dict)  # "stage/reason" -> one detail
    failures_transient: int = 0  # failures a retry may fix (rerun with --retry-failed)
    problem: str = ""  # why the run counts as failed (exit code 1); empty when it did its job
    finalized: bool = False
    filter_mode: str = ""
    elapsed_s: float = 0.0
    writer: dict[str, Any] = field(default_factory=dict)
    stills: dict[str, Any] = field(default_factory=dict)  # StillsStage.summary() when [stills] mapbox is on
    captions: dict[str, Any] = field(default_factory=dict)  # CaptionTelemetry.to_json() + engine counters
    retries: dict[str, Any] = field(default_factory=dict)  # network retries per edge (rsbuild.retries), set by finish_run
    retries_before: RetryMark = field(default_factory=RETRIES.mark, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("retries_before")
        for name in ("rejects_by_reason", "scenes_missing", "tiles_skipped", "pois_failed", "caption_failures"):
            data[name] = dict(sorted(data[name].items()))
        return data

    def count_failed_poi(self, stage: str, reason: str, detail: str) -> None:
        """One POI row that gave no tile, by the first failure that stopped it."""
        name = f"{stage}/{reason}"
        self.pois_failed[name] += 1
        if detail:
            self.failure_examples.setdefault(name, detail)

    def judge(self, max_failure_share: float, captions_wanted: bool) -> None:
        """Set ``problem`` when the run made nothing or lost more POI rows than allowed."""
        failed = sum(self.pois_failed.values())
        if self.pois_attempted and not self.tiles_written:
            head = "no tile was written"
        elif self.pois_attempted and failed / self.pois_attempted > max_failure_share:
            head = (f"{failed} of {self.pois_attempted} POIs gave no tile, a share above --max-failure-share "
                    f"{max_failure_share:g} (output.max_failure_share; pass a larger one to accept it)")
        elif captions_wanted and self.tiles_written and self.captions and not self.captions.get("captions_kept"):
            reasons = ", ".join(f"{r}: {n}" for r, n in self.caption_failures.most_common())
            example = self.failure_examples.get("caption")
            self.problem = (f"no caption was kept: {sum(self.caption_failures.values())} captions failed ({reasons})"
                            + (f", e.g. {example}" if example else "")
                            + ". Check captions.engine and captions.server_url (is the server up?), or the templates")
            return
        else:
            return
        self.problem = self._failure_text(head, self.pois_failed, self.pois_attempted, self.failures_transient)

    def judge_dataset(self, max_failure_share: float) -> None:
        """A resume that skipped done units and finalized: exit 1 when the finished dataset (not
        only this run's units) lost more POI rows than allowed. Counts come from finalize
        (``summary.json``: ``pois_with_tiles``, ``pois_failed``) plus the table's rejected rows."""
        if self.problem or not self.finalized or not self.units_skipped:
            return
        failed = Counter(self.writer.get("pois_failed", {}))
        failed.update({f"poi/{reason}": n for reason, n in self.rejects_by_reason.items()})
        total = int(self.writer.get("pois_with_tiles", 0)) + sum(failed.values())
        if not total or sum(failed.values()) / total <= max_failure_share:
            return
        head = (f"the finished dataset ({self.units_skipped} units from earlier runs included): {sum(failed.values())} "
                f"of {total} POIs gave no tile, a share above --max-failure-share {max_failure_share:g} "
                "(output.max_failure_share; pass a larger one to accept it)")
        self.problem = self._failure_text(head, failed, total, int(self.writer.get("pois_failed_transient", 0)))

    def _failure_text(self, head: str, pois_failed: Counter[str], total: int, transient: int) -> str:
        stages: dict[str, Counter[str]] = {}
        for name, n in pois_failed.most_common():
            stage, reason = name.split("/", 1)
            stages.setdefault(stage, Counter())[reason] += n
        groups = []
        for stage, by_reason in stages.items():
            n = sum(by_reason.values())
            what = FAILED_AT.get(stage, f"POIs failed at {stage}")
            example = self.failure_examples.get(f"{stage}/{by_reason.most_common(1)[0][0]}")
            groups.append(("all " if n == total else "") + _count(n, what) + f" ({_reasons(by_reason)}"
                          + (f"; e.g. {example}" if example else "") + ")")
        hints = dict.fromkeys(HINTS[stage] for stage in stages if stage in HINTS)
        text = f"{head}: " + "; ".join(groups) + ". " + " ".join(hints)
        if transient:
            text += (f" {transient} of the failures were transient (a server did not answer): "
                     "rerun with --retry-failed once it is back.")
        return text

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
            if c.get("rejected_by_reason"):
                table.add_row("captions rejected", str(c.get("captions_rejected", 0)), _reasons(Counter(c["rejected_by_reason"])))
        if self.captions_failed:
            table.add_row("captions not kept", str(self.captions_failed),
                          "caption slots left empty; per tile in the shards' KEY.json → caption_failures, "
                          "counts in summary.json → captions")
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
        if self.units_redone:
            table.add_row("units redone", str(self.units_redone), "their POI rows changed since they were made")
        if self.units_retried:
            table.add_row("units retried", str(self.units_retried), "--retry-failed: they had transient failures")
        transient = self.failures_transient
        if transient:
            table.add_row("transient failures", str(transient), "a server did not answer; rerun with --retry-failed")
        if not self.finalized:
            table.add_row("dataset", "incomplete", "other units remain (job array?); rerun to finish")
        if self.retries:
            retried = sum(edge["retries"] for edge in self.retries.values())
            table.add_row("network retries", str(retried), describe_table(self.retries))
        table.add_row("elapsed", f"{self.elapsed_s:.1f} s", self.out_dir)
        return table


FAILED_AT = {
    "poi": "POI rows were rejected",
    "search": "POIs failed at scene search",
    "read": "POIs failed to read",
    "tile": "POIs had every tile skipped",
}
HINTS = {
    "poi": "See rejects.jsonl for each row and check the [pois] columns.",
    "search": "Check scenes.catalog, scenes.collection and scenes.datetime, and that latitude and longitude are "
              "not swapped (pois.lat_column, pois.lon_column).",
    "read": "Check that the asset URLs in the catalog and labels.url can be read.",
    "tile": "Check that the label raster has the right CRS and covers the POIs (labels.url), "
            "and imagery.max_tile_cloud / imagery.min_tile_valid.",
}


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n != 1 else f"1 {what.replace('POIs', 'POI').replace('rows were', 'row was')}"


def _reasons(counter: Counter[str]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counter.items()))


def _check_label_raster(path: str) -> None:
    """A local label raster opens and has a CRS (only local files: a URL is read per POI, with retries)."""
    from rsbuild.errors import SampleError
    from rsbuild.sources.raster_io import raster_info

    try:
        info = raster_info(path)
    except SampleError as exc:
        raise ConfigError(f"labels.url = {path!r} is not a readable raster ({exc}); point labels.url at a "
                          "GeoTIFF / COG of land-cover codes") from None
    if not info.grid.crs:
        raise ConfigError(f"labels.url = {path!r} has no CRS, so its pixels cannot be placed on the chips; assign "
                          "the right one (e.g. gdal_edit.py -a_srs EPSG:4326 FILE) or use another file")


class NothingProduced(RsbuildError):
    """The run went through but made nothing (or too little): exit code 1, not 2."""

    exit_code = 1


def check_local_inputs(cfg: Config) -> None:
    """Local files the run reads (label raster, catalog) exist, before any work starts."""
    for field_name, value in (("scenes.catalog", cfg.scenes.catalog),
                              ("labels.url", cfg.labels.url if cfg.labels.source == "cog" else None),
                              ("labels.catalog", cfg.labels.catalog if cfg.labels.source == "stac" else None)):
        if value and "://" not in value and not Path(value).exists():
            raise ConfigError(f"{field_name} = {value!r}: the file does not exist; fix the path (relative paths "
                              "start at the config file's folder) or give a URL")
    if cfg.labels.source == "cog" and cfg.labels.url and "://" not in cfg.labels.url:
        _check_label_raster(cfg.labels.url)
    prompts = cfg.captions.prompts_dir
    if prompts is not None and not prompts.is_dir():
        raise ConfigError(f"prompts folder {prompts} does not exist (captions.prompts_dir / --prompts); "
                          "pass an existing folder of templates")


def make_searcher(cfg: Config) -> Any:
    """The scene searcher for the configured catalog (opens it once)."""
    from rsbuild.sources import raster_io, stac
    from rsbuild.sources.object_store import configure_gdal
    from rsbuild.sources.stac import SceneSearcher

    configure_gdal(cfg.scenes.s3)  # endpoint and keys of s3:// hrefs (CDSE), before any read
    raster_io.set_http_timeouts(cfg.imagery.http_connect_timeout_s, cfg.imagery.http_timeout_s)
    stac.set_timeouts(cfg.scenes.connect_timeout_s, cfg.scenes.read_timeout_s)
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
            self.summary.failures_transient += sum(f.transient for f in failures)
            if not tiles:
                first = failures[0] if failures else Failure("tile", "no_tiles", poi.poi_id)
                self.summary.count_failed_poi(first.stage, first.reason, first.detail)
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
    retry_failed: bool = False,
) -> RunSummary:
    """Fetch (and caption) every unfinished unit this worker owns, then finalize when all are done.

    ``units`` restricts the run to those units (the Ray executor's fetch tasks). Done units whose
    POI rows changed are redone; with ``retry_failed`` so are done units with transient failures."""
    from rsbuild.dataset.units import (
        UnitRouter,
        UnitWriter,
        changed_units,
        forget_unit,
        plan_for,
        prepare_run,
        run_fingerprint,
        unit_inputs_sha256,
        units_with_transient_failures,
    )
    from rsbuild.schemes import get_scheme

    started = time.perf_counter()
    summary = RunSummary(out_dir=str(out_dir))
    reader = PoiReader(cfg.pois)
    check_local_inputs(cfg)
    plan = plan_for(cfg)
    table = reader.scan(plan.unit_pois)
    rows = table.rows
    if rows == 0:
        raise NothingProduced(f"POI file {cfg.pois.path} has no rows (only a header, or nothing); "
                              "add points to it or set pois.path to another table")
    done = prepare_run(out_dir, cfg.dump(), overwrite=overwrite)
    all_units = range(plan.rows_in_units(rows))
    wanted = set(all_units) if units is None else set(units)
    fingerprint = run_fingerprint(cfg.dump())
    inputs = {u: unit_inputs_sha256(fingerprint, digest) for u, digest in enumerate(table.unit_sha256)}
    mine = {u for u in done if workers.owns(u) and (units is None or u in wanted or u not in all_units)}
    changed = changed_units(out_dir, mine, inputs)
    retry = units_with_transient_failures(out_dir, mine - changed) if retry_failed else set()
    for unit in sorted(changed | retry):  # the POI table changed under them, or they lost POIs to a flaky server
        forget_unit(out_dir, unit)
        done.discard(unit)
        summary.units_redone += unit in changed and unit in all_units
    summary.units_retried = len(retry)
    todo = [u for u in all_units if u in wanted and workers.owns(u) and u not in done]
    summary.units_skipped = sum(1 for u in all_units if workers.owns(u) and u in done)
    scheme = get_scheme(cfg.labels.scheme)

    stills: StillsStage | None = None
    writers: dict[int, UnitWriter] = {}  # open units, where stills go

    def open_unit(unit: int) -> UnitWriter:
        writer = UnitWriter(out_dir, unit, plan, cfg.output, cfg.captions, scheme, dataset=dataset,
                            inputs_sha256=inputs[unit])
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
    summary.pois_attempted = sum(min(rows, (u + 1) * plan.unit_pois) - u * plan.unit_pois for u in todo)
    for reject in reader.rejects:
        if plan.unit_of_row(reject.row) in todo_set:
            summary.count_failed_poi("poi", reject.reason, f"row {reject.row}: {reject.detail}")
    summary.rejects_by_reason = Counter(r.reason for r in reader.rejects)
    write_rejects(reader.rejects, out_dir / REJECTS_FILE)
    from rsbuild.dataset.units import done_units

    finalize_now = finalize_run and set(all_units) <= done_units(out_dir)
    summary.judge(cfg.output.max_failure_share, captions_wanted=caption_stage is not None)
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
            for failure in sample.failures:
                summary.caption_failures[str(failure.get("reason", "unknown"))] += 1
                summary.failures_transient += bool(failure.get("transient"))
                if failure.get("detail"):
                    summary.failure_examples.setdefault("caption", str(failure.get("detail")))
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
        summary.judge_dataset(cfg.output.max_failure_share)
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    summary.retries = RETRIES.snapshot(since=summary.retries_before)
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
    retry_failed: bool = False,
) -> RunSummary:
    """The fetch half: chip shards (image, mask, stats; no captions) under ``out_dir``."""
    return _run(cfg, out_dir, console or Console(), dataset=False, show_progress=show_progress, overwrite=overwrite,
                workers=workers, units=units, finalize_run=finalize_run, retry_failed=retry_failed)


def count_units(cfg: Config) -> int:
    """How many units of work the POI table makes."""
    from rsbuild.dataset.units import plan_for

    plan = plan_for(cfg)
    return plan.rows_in_units(PoiReader(cfg.pois).scan(plan.unit_pois).rows)


def make_caption_stage(cfg: Config, out_dir: Path, engines: list[CaptionEngine] | None = None) -> CaptionStage:
    """The caption stage for a run (engines from the config unless given; the caller closes them)."""
    engines = engines if engines is not None else make_engines(cfg.captions, out_dir / "cache")
    needs_prompts = any(e.needs_prompts for e in engines)
    prompts = PromptSet.load(cfg.captions.prompts_dir, tasks=cfg.captions.caption_tasks) if needs_prompts else None
    return CaptionStage(cfg, engines, prompts)


def run_build(
    cfg: Config,
    out_dir: Path,
    console: Console | None = None,
    show_progress: bool = True,
    engines: list[Any] | None = None,
    overwrite: bool = False,
    workers: WorkerSlice = EVERY_UNIT,
    retry_failed: bool = False,
) -> RunSummary:
    """The whole job: fetch → caption → shards, JSONL, folders and card under ``out_dir``.

    Rerunning the same command resumes: finished units are skipped, unfinished ones redone.
    """
    from rsbuild.dataset.units import check_output_folder

    check_output_folder(out_dir)
    owned = engines is None
    caption_stage = make_caption_stage(cfg, out_dir, engines)
    try:
        return _run(cfg, out_dir, console or Console(), dataset=True, caption_stage=caption_stage,
                    show_progress=show_progress, overwrite=overwrite, workers=workers, retry_failed=retry_failed)
    finally:
        for engine in caption_stage.engines if owned else ():
            engine.close()
