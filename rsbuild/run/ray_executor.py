"""`--executor ray`: the same stages on a Ray cluster (Ray is imported only here).

Fetch runs as Ray tasks, one per unit of work (retried on failure), writing chip units into
``OUT/chips``; captioning runs in actors that hold a streaming engine (one per GPU when the
cluster has GPUs). Actors pull work: whenever an actor is free it gets every fetched unit
waiting (up to ``UNITS_PER_PULL``), captioned as one stream, so its engine stays full across unit
boundaries and a fast actor takes more units than a slow one. Actors restart on failure
(``max_restarts``); a unit is done when its marker is written, so a lost actor costs only its
unfinished units, which go back to the queue. Units are the same as a local run's, so the layout
and the samples are the same, and a rerun resumes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from rsbuild.config import Config, config_from_dict
from rsbuild.dataset.finalize import finalize
from rsbuild.dataset.units import done_units, prepare_run
from rsbuild.errors import require
from rsbuild.run.pipeline import RunSummary, count_units, run_fetch
from rsbuild.schemes import get_scheme

CHIPS_DIR = "chips"
UNITS_PER_PULL = 4
ACTOR_NAME = "rsbuild-caption"  # actors are named rsbuild-caption-0, -1, ... (ray.get_actor)
ACTOR_RESTARTS = 3
TASK_RETRIES = 3


def _fetch_unit(config: dict[str, Any], chips_dir: str, unit: int) -> int:
    """Ray task: fetch one unit into the chip folder."""
    from rich.console import Console

    cfg = config_from_dict(config)
    run_fetch(cfg, Path(chips_dir), Console(quiet=True), show_progress=False, units=[unit], finalize_run=False)
    return unit


class _CaptionWorker:
    """Ray actor: holds the caption engine(s) and captions chip units into the dataset."""

    def __init__(self, config: dict[str, Any], chips_dir: str, out_dir: str) -> None:
        from rsbuild.captions.engines.factory import make_engines

        self.cfg = config_from_dict(config)
        self.chips_dir, self.out_dir = chips_dir, out_dir
        self.engines = make_engines(self.cfg.captions, Path(out_dir) / "cache")

    def caption_units(self, units: list[int]) -> list[int]:
        """Caption these chip units as one stream (done units are skipped); the units given."""
        from rich.console import Console

        from rsbuild.run.recaption import run_recaption

        run_recaption(self.chips_dir, self.out_dir, {}, Console(quiet=True), show_progress=False,
                      engines=self.engines, units=units, finalize_run=False)
        return units

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def run_build_ray(
    cfg: Config,
    out_dir: Path,
    console: Console | None = None,
    *,
    address: str | None = None,
    caption_actors: int | None = None,
    overwrite: bool = False,
) -> RunSummary:
    """Build on Ray: fetch tasks → caption actors → finalize in the driver."""
    ray = require("ray", "ray", "--executor ray")
    console = console or Console()
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    chips_dir = out_dir / CHIPS_DIR
    config = cfg.dump()
    done_chips = prepare_run(chips_dir, config, overwrite=overwrite)
    done = prepare_run(out_dir, config, overwrite=overwrite)
    units = [u for u in range(count_units(cfg)) if u not in done]

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors_wanted = caption_actors or max(1, gpus)
    # actors mostly wait on their engine; a fraction of a CPU keeps fetch tasks schedulable
    resources = {"num_gpus": 1} if gpus and cfg.captions.engine in ("vllm", "local") else {"num_cpus": 0.25}
    fetch_task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_fetch_unit)
    worker_class = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=0, **resources)(_CaptionWorker)
    actors = [worker_class.options(name=f"{ACTOR_NAME}-{i}").remote(config, str(chips_dir), str(out_dir))
              for i in range(actors_wanted)]
    console.print(f"ray: {len(units)} units to do, {actors_wanted} caption actor(s), {gpus} GPU(s)")

    fetching = {fetch_task.remote(config, str(chips_dir), u): u for u in units if u not in done_chips}
    ready = [u for u in units if u in done_chips]  # fetched, waiting for an actor
    busy: dict[Any, tuple[Any, list[int]]] = {}  # caption task -> (actor, its units)
    free = list(actors)
    lost_tasks = 0
    while fetching or ready or busy:
        while free and ready:  # free actors pull what is waiting
            actor, take = free.pop(0), sorted(ready)[:UNITS_PER_PULL]
            ready = [u for u in ready if u not in take]
            busy[actor.caption_units.remote(take)] = (actor, take)
        finished, _ = ray.wait([*fetching, *busy], num_returns=1)
        ref = finished[0]
        if ref in fetching:
            ready.append(ray.get(ref))
            fetching.pop(ref)
            continue
        actor, taken = busy.pop(ref)
        free.append(actor)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as exc:  # the actor died (it restarts) or its task failed
            lost_tasks += 1
            if lost_tasks > ACTOR_RESTARTS * len(actors):
                raise RuntimeError(f"caption actors failed {lost_tasks} times; last error: {exc}") from None
            finished_units = done_units(out_dir)
            ready += [u for u in taken if u not in finished_units]
    ray.get([actor.close.remote() for actor in actors])

    summary = RunSummary(out_dir=str(out_dir))
    summary.units_done = len(units)
    summary.captions = {"ray_caption_task_failures": lost_tasks}
    summary.units_skipped = len(done)
    if set(range(count_units(cfg))) <= done_units(out_dir):
        scheme = get_scheme(cfg.labels.scheme)
        finalize(chips_dir, cfg.output, cfg.splits, scheme, config, dataset=False)
        summary.writer = finalize(out_dir, cfg.output, cfg.splits, scheme, config)
        summary.finalized = True
        summary.tiles_written = summary.writer["tiles"]
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary
