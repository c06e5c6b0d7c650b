#!/usr/bin/env python
"""What ``output.bands = "all"`` costs the fetch stage, measured side by side in one run.

    python scripts/bench_bands.py               # 3 interleaved rounds per setting
    python scripts/bench_bands.py --rounds 1    # smoke run

The synthetic world (seed 0, 2048 px scene, POIs fit a 1024 px AOI) is served on 127.0.0.1
(`RangeHTTPServer` + `rustac serve`); each round fetches the same POIs with ``bands = "rgb"``
and ``bands = "all"`` alternately (same process, GDAL caches warm after the first round), tiles
512 / stride 256 -> 224. Prints one JSON document: chips/s per setting, their ratio, COG requests
and bytes written per chip (PNG + mask + KEY.bands.tif), and the machine's load.
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

from rsbuild.chips.fetch import Fetcher
from rsbuild.config import config_from_dict
from rsbuild.records import Sample
from rsbuild.run.pipeline import make_searcher
from rsbuild.sources.labels.factory import make_label_source
from rsbuild.testing.servers import RangeHTTPServer, RustacServer
from rsbuild.testing.synthetic import S2_COLLECTION, generate


def fetch_once(data: dict[str, Any], bands: str, pois: list, cogs: RangeHTTPServer) -> dict[str, float]:
    cfg = config_from_dict({**data, "output": {"bands": bands}})
    before = cogs.requests
    started = time.perf_counter()
    with Fetcher(cfg, make_searcher(cfg), make_label_source(cfg.labels)) as fetcher:
        samples = [r for _, records in fetcher.run(pois) for r in records if isinstance(r, Sample)]
    seconds = time.perf_counter() - started
    size = sum(len(s.image_png) + len(s.mask_png or b"") + len(s.bands_tif or b"") for s in samples)
    return {"chips": len(samples), "seconds": seconds, "requests": cogs.requests - before, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pois", type=int, default=2, help="in-scene POIs fetched per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rsbuild-bench-bands-") as folder:
        world = generate(Path(folder) / "world", seed=0, size=2048, aoi_size=1024)
        pois = [p for p in world.pois if p.poi_id != "outside"][: args.pois]
        with RangeHTTPServer(world.cog_dir) as cogs:
            files = world.write_stac_api_files(cogs.url, Path(folder) / "stac")
            with RustacServer(files) as stac:
                data = {
                    "pois": {"path": str(world.pois_path)},
                    "scenes": {"catalog": stac.url, "collection": S2_COLLECTION, "datetime": "2024-07-10/2024-07-10"},
                    "imagery": {"aoi_size": 1024, "tile_size": 512, "tile_stride": 256, "output_size": 224,
                                "cpu_workers": 2, "read_workers": 8},
                    "labels": {"source": "cog", "url": f"{cogs.url}/{world.label_4326_path.relative_to(world.cog_dir).as_posix()}"},
                }
                runs: dict[str, list[dict[str, float]]] = {"rgb": [], "all": []}
                for _ in range(args.rounds):
                    for bands in ("rgb", "all"):
                        runs[bands].append(fetch_once(data, bands, pois, cogs))
    result: dict[str, Any] = {"load_average": list(os.getloadavg()), "rounds": args.rounds, "pois": len(pois)}
    for bands, rounds in runs.items():
        chips = rounds[0]["chips"]
        result[bands] = {
            "chips_per_s": round(chips / statistics.median(r["seconds"] for r in rounds), 3),
            "requests_per_chip": round(rounds[-1]["requests"] / chips, 2),
            "kib_per_chip": round(rounds[-1]["bytes"] / chips / 1024, 1),
            "seconds": [round(r["seconds"], 2) for r in rounds],
        }
    result["all_over_rgb_chips_per_s"] = round(result["all"]["chips_per_s"] / result["rgb"]["chips_per_s"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
