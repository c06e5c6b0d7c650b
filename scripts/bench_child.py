#!/usr/bin/env python
"""Measurements that need a fresh interpreter (cold GDAL caches, own peak RSS), for scripts/bench.py.

    python scripts/bench_child.py KIND ARGS_JSON

prints one JSON object on its last stdout line. Kinds:

* ``fetch``: the fetch stage (`rsbuild.chips.fetch.Fetcher.run`) over the config's POIs: chips/s,
  tiles/s and CPU seconds per chip (this process and its worker processes). With
  ``"reads_only": true`` only its network half runs (`Fetcher.read_poi`, same pools and bounds).
* ``sequential``: a plain rasterio loop over the same AOIs (three bands + label, windowed reads,
  one file open per read, GDAL defaults): the reference a naive reader gets.
* ``threads``: the same reads as ``sequential`` in a pool of ``threads`` threads (one task per file
  and AOI, each opening its file): the best peer a user writes by hand.
* ``odc``: odc-stac (`odc.stac.load`, the ``bench`` extra) loading the three bands of each AOI from
  the STAC item, with ``pool`` threads (``"dask": true``: dask chunks computed by the threaded
  scheduler instead), plus the label raster read as in ``sequential``.
* ``build``: `rsbuild.run.pipeline.run_build` (template engine); peak RSS of this process and of its
  worker processes.

The servers (COG, STAC) run in the parent, which counts requests; nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- process tree


@dataclass(frozen=True)
class ProcessUse:
    """What /proc says about one live process: peak RSS and CPU time so far."""

    peak_rss_kib: int
    cpu_s: float


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def descendants(root: int) -> list[int]:
    """Pids of every live descendant of ``root``."""
    children, found, stack = _children_by_parent(), [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def process_use(pid: int) -> ProcessUse | None:
    """Peak RSS (VmHWM) and user + system CPU of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    peak = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return ProcessUse(peak, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)  # utime, stime


class ProcessTree:
    """Samples this process's descendants (worker processes, which this process does not reap,
    so getrusage(RUSAGE_CHILDREN) cannot see them) every ``interval_s``: last CPU time and
    peak RSS per pid. ``mark()`` starts a CPU interval; ``cpu_since_mark()`` ends it."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.latest: dict[int, ProcessUse] = {}
        self.own_rss_kib: list[tuple[float, int]] = []  # (seconds since start, VmRSS of this process)
        self._started = time.perf_counter()
        self._at_mark: dict[int, float] = {}
        self._own_at_mark = 0.0
        self.sampler_cpu_s = 0.0  # the sampler thread's own CPU (reading /proc): not the measured work's
        self._sampler_at_mark = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-tree-sampler", daemon=True)

    def sample(self) -> None:
        """Read /proc for this process's resident set and every live descendant now."""
        self.own_rss_kib.append((time.perf_counter() - self._started, _own_rss_kib()))
        for pid in descendants(os.getpid()):
            use = process_use(pid)
            if use is not None:
                with self._lock:
                    previous = self.latest.get(pid)
                    peak = max(use.peak_rss_kib, previous.peak_rss_kib if previous else 0)
                    self.latest[pid] = ProcessUse(peak, use.cpu_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.thread_time()
            self.sample()
            with self._lock:
                self.sampler_cpu_s += time.thread_time() - started

    def mark(self) -> None:
        self.sample()
        with self._lock:
            self._at_mark = {pid: use.cpu_s for pid, use in self.latest.items()}
            self._sampler_at_mark = self.sampler_cpu_s
        self._own_at_mark = _own_cpu_s()

    def cpu_since_mark(self) -> float:
        """CPU seconds of this process and its descendants since ``mark()``, without the
        sampler thread's own (a worker that exited since the last sample loses at most
        ``interval_s`` of CPU)."""
        own = _own_cpu_s()
        self.sample()
        with self._lock:
            workers = sum(use.cpu_s - self._at_mark.get(pid, 0.0) for pid, use in self.latest.items())
            sampler = self.sampler_cpu_s - self._sampler_at_mark
        return own - self._own_at_mark - sampler + workers

    def rss_timeline_mb(self, points: int = 10) -> list[list[float]]:
        """About ``points`` evenly spaced [seconds, MiB] samples of this process's resident set."""
        samples = self.own_rss_kib
        step = max(1, len(samples) // points)
        chosen = samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])
        return [[round(t, 1), round(kib / 1024, 1)] for t, kib in chosen]

    def plateau(self) -> dict[str, float]:
        """This process's peak resident set over the first and the second half of the run: when
        the second half adds < 2 %, memory had reached its plateau (caches full, queues at their bounds)."""
        samples = self.own_rss_kib
        if len(samples) < 4:
            return {}
        middle = samples[-1][0] / 2
        first = max(kib for t, kib in samples if t <= middle) / 1024
        whole = max(kib for _, kib in samples) / 1024
        return {"peak_first_half_mb": round(first, 1), "peak_mb": round(whole, 1), "second_half_growth": round(whole / first, 3)}

    def largest_peak_mb(self) -> float:
        with self._lock:
            return round(max((use.peak_rss_kib for use in self.latest.values()), default=0) / 1024, 1)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _own_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MiB. Not getrusage's ru_maxrss: Linux
    carries that over from the forking parent across exec, so a child starts at its parent's peak."""
    use = process_use(os.getpid())
    assert use is not None
    return round(use.peak_rss_kib / 1024, 1)


# --------------------------------------------------------------------------- measurements


def measure_fetch(args: dict[str, Any]) -> dict[str, Any]:
    """Run the fetch stage (or only its reads) over every POI of the config."""
    import numpy as np

    from rsbuild.chips.fetch import AoiRead, Fetcher, encode_png
    from rsbuild.concurrency import ordered_map
    from rsbuild.config import config_from_dict
    from rsbuild.records import Failure, Sample
    from rsbuild.run.pipeline import make_searcher
    from rsbuild.sources.labels.factory import make_label_source
    from rsbuild.sources.pois import PoiReader

    cfg = config_from_dict(args["config"])
    reads_only = bool(args.get("reads_only"))
    pois = list(PoiReader(cfg.pois))
    searcher = make_searcher(cfg)  # opens the STAC API (not the COG server)
    chips = tiles = 0
    failures: dict[str, int] = {}
    with ProcessTree() as tree, Fetcher(cfg, searcher, make_label_source(cfg.labels)) as fetcher:
        if fetcher.cpu_pool is not None and not reads_only:  # start the workers before the clock runs
            blank = np.zeros((8, 8), dtype=np.uint8)
            for future in [fetcher.cpu_pool.submit(encode_png, blank, 1) for _ in range(cfg.imagery.cpu_workers)]:
                future.result()
        tree.mark()
        started = time.perf_counter()
        if reads_only:
            for read in ordered_map(fetcher.read_poi, pois, fetcher.poi_pool, fetcher.pois_in_flight):
                chips += isinstance(read, AoiRead)
        else:
            for _poi, records in fetcher.run(pois):
                samples = [r for r in records if isinstance(r, Sample)]
                chips += bool(samples)
                tiles += len(samples)
                for record in records:
                    if isinstance(record, Failure):
                        failures[record.reason] = failures.get(record.reason, 0) + 1
        seconds = time.perf_counter() - started
        cpu_s = tree.cpu_since_mark()
    return {
        "mode": "reads" if reads_only else "stage",
        "pois": len(pois),
        "chips": chips,
        "tiles": tiles,
        "tile_failures": failures,
        "seconds": round(seconds, 3),
        "chips_per_s": round(chips / seconds, 3),
        "tiles_per_s": round(tiles / seconds, 3),
        "cpu_s_per_chip": round(cpu_s / max(1, chips), 3),
        "cpu_cores_busy": round(cpu_s / seconds, 2),
        "sampler_cpu_s": round(tree.sampler_cpu_s, 3),
    }


def _peer_reads(args: dict[str, Any]) -> list[Any]:
    """One closure per (AOI, file) of the plain rasterio reader: open, windowed read, close;
    each returns the pixels it read."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    from rsbuild.grid import aoi_grid, grid_bounds
    from rsbuild.records import Poi

    def band(href: str, bounds: tuple[float, float, float, float]) -> int:
        with rasterio.open(href) as src:
            return int(src.read(1, window=from_bounds(*bounds, transform=src.transform)).size)

    def label(href: str, crs: str, bounds: tuple[float, float, float, float]) -> int:
        with rasterio.open(href) as src:
            label_bounds = transform_bounds(crs, src.crs, *bounds, densify_pts=8)
            return int(src.read(1, window=from_bounds(*label_bounds, transform=src.transform)).size)

    jobs: list[Any] = []
    for raw in args["pois"]:
        poi = Poi(raw["poi_id"], raw["lat"], raw["lon"])
        grid = aoi_grid(poi, args["crs"], args["aoi_size"], tuple(args["transform"]))
        bounds = grid_bounds(grid)
        jobs.extend((lambda h=href, b=bounds: band(h, b)) for href in args["band_hrefs"])
        jobs.append(lambda b=bounds, c=grid.crs: label(args["label_href"], c, b))
    return jobs


def measure_sequential(args: dict[str, Any]) -> dict[str, Any]:
    """Plain rasterio, one AOI after the other: open each of the three bands and the label
    raster, read the AOI's window, close. GDAL defaults (rsbuild's raster_io is not imported)."""
    jobs = _peer_reads(args)
    started = time.perf_counter()
    pixels = sum(job() for job in jobs)
    return _peer_result(args, pixels, time.perf_counter() - started, _own_cpu_s())


def measure_threads(args: dict[str, Any]) -> dict[str, Any]:
    """The sequential reader's reads in a thread pool (``threads``), results in order."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = _peer_reads(args)
    with ThreadPoolExecutor(int(args.get("threads", 8))) as pool:
        cpu_before = _own_cpu_s()
        started = time.perf_counter()
        pixels = sum(pool.map(lambda job: job(), jobs))
        seconds = time.perf_counter() - started
    return _peer_result(args, pixels, seconds, _own_cpu_s() - cpu_before)


def measure_odc(args: dict[str, Any]) -> dict[str, Any]:
    """odc-stac loading each AOI's three bands from the scene's STAC item (``pool`` threads, or
    dask chunks on the threaded scheduler), the label as in ``sequential``, one AOI at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import odc.stac
    import pystac

    from rsbuild.grid import aoi_grid, grid_bounds
    from rsbuild.records import Poi

    item = pystac.Item.from_dict(args["item"])
    threads = int(args.get("threads", 8))
    use_dask = bool(args.get("dask"))
    label_jobs = _peer_reads({**args, "band_hrefs": []})
    started = time.perf_counter()
    pixels = 0
    with ThreadPoolExecutor(1) as labels:
        for raw, label_job in zip(args["pois"], label_jobs):
            label = labels.submit(label_job)
            grid = aoi_grid(Poi(raw["poi_id"], raw["lat"], raw["lon"]), args["crs"], args["aoi_size"], tuple(args["transform"]))
            left, bottom, right, top = grid_bounds(grid)
            options: dict[str, Any] = {"chunks": {"x": 512, "y": 512}} if use_dask else {"pool": threads}
            data = odc.stac.load([item], bands=["red", "green", "blue"], crs=grid.crs, resolution=10,
                                 x=(left, right), y=(bottom, top), **options)
            if use_dask:
                import dask

                with dask.config.set(scheduler="threads", num_workers=threads):
                    data = data.compute()
            pixels += sum(int(data[name].size) for name in ("red", "green", "blue")) + label.result()
    return _peer_result(args, pixels, time.perf_counter() - started, _own_cpu_s())


def _peer_result(args: dict[str, Any], pixels: int, seconds: float, cpu_s: float) -> dict[str, Any]:
    chips = len(args["pois"])
    return {"chips": chips, "pixels_read": pixels, "seconds": round(seconds, 3), "chips_per_s": round(chips / seconds, 3),
            "cpu_s_per_chip": round(cpu_s / chips, 3)}


def measure_build(args: dict[str, Any]) -> dict[str, Any]:
    """`run_build` with the template engine; peak RSS of the main process and of its workers."""
    from rich.console import Console

    from rsbuild.config import config_from_dict
    from rsbuild.run.pipeline import run_build

    cfg = config_from_dict(args["config"])
    after_imports = _peak_rss_mb()
    started = time.perf_counter()
    with ProcessTree(interval_s=0.25) as tree:
        summary = run_build(cfg, Path(args["out"]), Console(quiet=True), show_progress=False)
    seconds = time.perf_counter() - started
    return {
        "pois": summary.pois_read,
        "samples": summary.tiles_written,
        "tiles_skipped": dict(summary.tiles_skipped),
        "seconds": round(seconds, 3),
        "peak_rss_mb_after_imports": after_imports,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_mb_largest_worker": tree.largest_peak_mb(),
        "processes_seen": len(tree.latest),
        "finalize_seconds": summary.writer.get("finalize_seconds"),
        "rss_timeline_mb": tree.rss_timeline_mb(),
        "rss_plateau": tree.plateau(),
    }


MEASUREMENTS = {"fetch": measure_fetch, "sequential": measure_sequential, "threads": measure_threads, "odc": measure_odc,
                "build": measure_build}


def main(argv: list[str]) -> None:
    kind, args = argv[0], json.loads(argv[1])
    print(json.dumps(MEASUREMENTS[kind](args), sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
