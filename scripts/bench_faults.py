#!/usr/bin/env python
"""Survived faults (design.md "Targets": 10 % of each fault kind keeps >= 99 % of the samples).

    python scripts/bench_faults.py                  # every fault kind at 10 %, 2 rounds
    python scripts/bench_faults.py --kinds 503,stall --share 0.2 --rounds 1

The fetch stage runs over a seeded synthetic world (1024 px scene, 512 px AOI, 16 tiles per POI)
behind `rsbuild.testing.faults.FaultProxy` on the COG server and the STAC API. For each kind, a
fault-free world and a faulty one run side by side (interleaved, fresh URLs each time, so no GDAL
cache carries over), with GDAL / STAC read timeouts of ``--timeout`` seconds and stalls twice as
long. Prints one JSON document: per kind the samples kept vs fault-free, whether every kept
sample is byte-identical, the wall-time ratio faulty / fault-free (median over rounds), the
faults injected, retries per edge and the failures recorded (transient or not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rsbuild.records import Failure, Sample
from rsbuild.retries import RETRIES, Backoff
from rsbuild.sources import raster_io, stac
from rsbuild.testing.faults import FAULT_KINDS, FaultyWorld
from rsbuild.testing.servers import RangeHTTPServer
from rsbuild.testing.synthetic import FixtureInfo, generate


def run(fixture: FixtureInfo, server: RangeHTTPServer, folder: Path, shares: dict[str, float], seed: int,
        stall_s: float) -> tuple[list[Sample | Failure], float, dict[str, Any]]:
    with FaultyWorld(fixture, server.url, folder, shares, seed=seed, stall_s=stall_s) as world:
        cfg = world.config(tile_size=128, tile_stride=128)
        started = time.perf_counter()
        records = world.fetch(cfg)
        return records, time.perf_counter() - started, world.counts()


def compare(reference: list[Sample | Failure], records: list[Sample | Failure]) -> dict[str, Any]:
    expected = {r.key: r for r in reference if isinstance(r, Sample)}
    kept = {r.key: r for r in records if isinstance(r, Sample)}
    identical = all(
        s.image_png == expected[k].image_png and s.mask_png == expected[k].mask_png and s.stats == expected[k].stats
        for k, s in kept.items()
    )
    failures = [r for r in records if isinstance(r, Failure) and r.reason in ("search_error", "read_error")]
    return {
        "samples": len(kept), "fault_free_samples": len(expected), "kept_share": round(len(kept) / len(expected), 4),
        "byte_identical": identical, "given_up": len(failures), "given_up_transient": sum(f.transient for f in failures),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(FAULT_KINDS))
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=2.0, help="GDAL and STAC read timeout, seconds")
    args = parser.parse_args()
    os.environ["GDAL_HTTP_TIMEOUT"] = str(max(1, int(args.timeout)))
    os.environ["GDAL_HTTP_RETRY_DELAY"] = "0.1"
    stac.SEARCH_TIMEOUT_S = (args.timeout, args.timeout)
    stac.SEARCH_BACKOFF = Backoff(attempts=5, base_s=0.05, cap_s=0.5)
    raster_io.READ_BACKOFF = Backoff(attempts=4, base_s=0.05, cap_s=0.5)
    results: dict[str, Any] = {"share": args.share, "timeout_s": args.timeout, "load_before": os.getloadavg(), "kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fixture = generate(Path(tmp) / "fixture", seed=0, size=1024, aoi_size=512)
        with RangeHTTPServer(fixture.cog_dir) as server:
            run(fixture, server, Path(tmp) / "warm-up", {}, 0, 2 * args.timeout)  # imports, thread pools, PROJ
            for kind in args.kinds.split(","):
                ratios, rows = [], []
                for round_ in range(args.rounds):
                    reference, clean_s, _ = run(fixture, server, Path(tmp) / f"{kind}-{round_}-clean", {}, 0, 2 * args.timeout)
                    RETRIES.reset()
                    records, faulty_s, counts = run(fixture, server, Path(tmp) / f"{kind}-{round_}-faulty",
                                                    {kind: args.share}, round_ + 1, 2 * args.timeout)
                    rows.append({**compare(reference, records), "faults": counts, "retries": RETRIES.snapshot(),
                                 "clean_s": round(clean_s, 2), "faulty_s": round(faulty_s, 2)})
                    ratios.append(faulty_s / clean_s)
                results["kinds"][kind] = {
                    "samples_kept": f"{sum(r['samples'] for r in rows)}/{sum(r['fault_free_samples'] for r in rows)}",
                    "byte_identical": all(r["byte_identical"] for r in rows),
                    "time_ratio_median": round(statistics.median(ratios), 2),
                    "faults_injected": sum(sum(c["faults"].values()) for r in rows for c in r["faults"].values()),
                    "requests": sum(c["requests"] for r in rows for c in r["faults"].values()),
                    "given_up": f"{sum(r['given_up'] for r in rows)} ({sum(r['given_up_transient'] for r in rows)} transient)",
                    "rounds": rows,
                }  # fmt: skip
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
