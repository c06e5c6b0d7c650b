#!/usr/bin/env python
"""Where the fetch stage spends its CPU: py-spy over `bench_child.py fetch` (all threads and worker processes).

    python scripts/profile_fetch.py [--pois 12] [--latency 0] [--rate 200] [--top 15]

Builds scripts/bench.py's world (the seeded 2048 px fixture behind `RangeHTTPServer`, `rustac serve`),
runs the fetch stage over its POIs in a fresh process under ``py-spy record --subprocesses`` (needs the
``bench`` extra's py-spy), and prints ONE JSON document: the top functions by self and by cumulative
CPU samples (waiting threads excluded; import frames dropped: they are paid once per process, not per chip),
each with its share of all samples and its milliseconds per chip. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench  # scripts/ is not a package

from rsbuild.testing.servers import RangeHTTPServer, RustacServer
from rsbuild.testing.synthetic import generate

IMPORT_FRAME = "_find_and_load"
SAMPLER_FRAME = "ProcessTree."  # bench_child's /proc sampler thread: the measurement, not the stage
# leaves where a thread waits (py-spy's idle detection misses waits that release the GIL in C)
WAITING = ("Condition.wait ", "_worker (concurrent/futures/thread.py", "Connection._recv ", "SyncStream.read ",
           "Event.wait ", "Thread.join ", "Lock.acquire ", "select ", "poll ", "_wait_for_tstate_lock ")
# frames every stack shares (thread and process plumbing): left out of the cumulative list
PLUMBING = ("threading.py", "concurrent/futures/", "multiprocessing/", "<string>", "bench_child.py", "retries.py")


def collapsed_counts(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """(self samples, cumulative samples, all samples) per function of py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith("process ")]
        if not frames or any(frame.startswith((IMPORT_FRAME, SAMPLER_FRAME)) for frame in frames):
            continue
        if frames[-1].startswith(WAITING):
            continue
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith(" ") and not any(part in frame for part in PLUMBING):
                cumulative[frame] += count
    return own, cumulative, total


def top(counts: Counter[str], total: int, rate: int, chips: int, limit: int) -> list[dict[str, Any]]:
    return [{"function": name, "share": round(count / total, 3), "ms_per_chip": round(1000 * count / rate / chips, 1)}
            for name, count in counts.most_common(limit)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pois", type=int, default=12)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every COG request")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--cpu-workers", type=int, default=bench.CPU_WORKERS)
    parser.add_argument("--raw", type=Path, default=None, help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="rsbuild-profile-") as tmp:
        work = Path(tmp)
        fixture = generate(work / "fixture", seed=bench.SEED, size=bench.SCENE_SIZE, aoi_size=bench.FULL_AOI["aoi_size"])
        with RangeHTTPServer(fixture.cog_dir) as cogs, RustacServer(fixture.write_stac_api_files(cogs.url, work / "stac")) as stac:
            world = bench.Bench(work, fixture, cogs, stac, bench.QUICK, bench.READ_WORKERS, args.cpu_workers)
            pois = work / "pois.csv"
            bench.write_pois(pois, args.pois, bench.FULL_AOI["aoi_size"], bench.SEED + 1)
            child_args = json.dumps({"config": world.config(pois, bench.FULL_AOI)})
            raw = work / "profile.txt"
            cogs.latency_s = args.latency
            done = subprocess.run([spy, "record", "--subprocesses", "--function", "--format", "raw", "--rate", str(args.rate),
                                   "--output", str(raw), "--", sys.executable, str(bench.CHILD), "fetch", child_args],
                                  capture_output=True, text=True, check=False, env=dict(os.environ))
            if done.returncode != 0:
                raise SystemExit(f"py-spy failed ({done.returncode}):\n{done.stderr[-3000:]}")
            result = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))
            own, cumulative, total = collapsed_counts(raw)
            if args.raw is not None:
                shutil.copy(raw, args.raw)
    chips = max(1, result["chips"])
    print(json.dumps({
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "run": result,
        "samples": total,
        "sampled_cpu_s_per_chip": round(total / args.rate / chips, 3),
        "top_self": top(own, total, args.rate, chips, args.top),
        "top_cumulative": top(cumulative, total, args.rate, chips, args.top),
    }, indent=2))


if __name__ == "__main__":
    main()
