#!/usr/bin/env python
"""Free decoding, best of n, or the caption grammar: which keeps the most checked captions per second on vLLM?

The real vLLM (CPU build, ``VllmServer``, SmolLM2-135M-Instruct) serves every lever; each lever is the
caption stage itself (``annotate`` with the ``openai`` engine and the default ``max_check_attempts`` re-asks)
on the same seeded tiles (``make_scene`` of ``scripts/check_agreement.py``, real ``compute_stats``), tasks
area and class:

* ``free``        - free decoding, ``best_of`` 1 (the engines' default);
* ``best_of_K``   - free decoding, ``best_of`` K (K candidates in one request, the first that passes kept);
* ``grammar``     - ``captions.constrained``: vLLM structured outputs with the GBNF caption grammar;
* ``varied``      - the grammar in its varied form (``captions.varied``).

Levers run interleaved, a round of tiles at a time with the order rotating, so the machine's load falls
on all alike. Per lever: caption slots asked, kept share (kept / slots), requests, candidates generated,
pass rate, kept captions per second of the lever's own wall time, output tokens per second, and the
load average around each lever's rounds. Prints JSON and a table.

    python scripts/bench_structured.py [--tiles 24] [--round 4] [--k 4] [--seed-base 21000] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_agreement import make_scene

from rsbuild.captions.engines.openai import OpenAIEngine
from rsbuild.captions.prompts import PromptSet
from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.config import CaptionsConfig
from rsbuild.records import Sample

SCHEMES = ("esa_worldcover", "dynamic_world", "io_lulc")
TASKS = ["area", "class"]


@dataclass
class Lever:
    """One caption-stage setting and what it produced over its rounds."""

    name: str
    settings: dict[str, Any]
    slots: int = 0
    kept: int = 0
    requests: int = 0
    generated: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    loads: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    def run(self, tiles: list[Sample], base_url: str, model: str) -> None:
        cfg = CaptionsConfig(engine="openai", server_url=base_url, tasks=TASKS, **self.settings)  # type: ignore[arg-type]
        engine = OpenAIEngine(base_url, model=model, sampling=cfg.sampling(), concurrency=64, timeout_s=1800.0,
                              retries=0, constrained=cfg.constrained, varied=cfg.varied)
        telemetry = CaptionTelemetry()
        self.loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        try:
            out = list(annotate(tiles, engine, cfg, prompts=PromptSet.load(tasks=TASKS), telemetry=telemetry))
        finally:
            engine.close()
        self.seconds += time.perf_counter() - start
        kept = [a["text"] for s in out for a in s.annotations if a["task"] in TASKS]
        self.kept += len(kept)
        self.slots += len(kept) + sum(1 for s in out for f in s.failures if f.get("task") in TASKS)
        self.requests += telemetry.requests
        self.generated += telemetry.captions_generated
        self.completion_tokens += telemetry.completion_tokens
        self.samples += kept[: max(0, 3 - len(self.samples))]

    def report(self) -> dict[str, Any]:
        return {"settings": self.settings, "slots": self.slots, "kept": self.kept,
                "kept_share": round(self.kept / self.slots, 3) if self.slots else None,
                "requests": self.requests, "generated": self.generated,
                "pass_rate": round(self.kept / self.generated, 3) if self.generated else None,
                "seconds": round(self.seconds, 1),
                "kept_per_s": round(self.kept / self.seconds, 3) if self.seconds else None,
                "output_tokens_per_s": round(self.completion_tokens / self.seconds, 1) if self.seconds else None,
                "load_at_rounds": [round(v, 1) for v in self.loads], "samples": self.samples}


def seeded_tiles(count: int, seed_base: int) -> list[Sample]:
    rng = random.Random(seed_base)
    return [Sample(f"s{seed_base}-{i}_t0000", "train", b"", None, {}, make_scene(rng, SCHEMES[i % 3]).stats)
            for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=24)
    parser.add_argument("--round", type=int, default=4, help="tiles per lever per round")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed-base", type=int, default=21000)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    from rsbuild.testing.vllm_server import VllmServer

    levers = [Lever("free", {}), Lever(f"best_of_{args.k}", {"best_of": args.k}),
              Lever("grammar", {"constrained": True}), Lever("varied", {"constrained": True, "varied": True})]
    tiles = seeded_tiles(args.tiles, args.seed_base)
    rounds = 0

    def report() -> dict[str, Any]:
        """The figures so far (written after every round, so a stopped run still leaves them)."""
        out = {"tiles_per_lever": rounds * args.round, "k": args.k, "load_average": [round(v, 2) for v in os.getloadavg()],
               "levers": {lv.name: lv.report() for lv in levers}}
        if args.json_out:
            args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        return out

    with VllmServer() as server:
        for r, first in enumerate(range(0, len(tiles), args.round)):
            chunk = tiles[first:first + args.round]
            for j in range(len(levers)):
                levers[(r + j) % len(levers)].run(chunk, server.base_url, server.model_id)
            rounds += 1
            report()
            print(f"round {rounds} done", file=sys.stderr)
    out = report()
    print(json.dumps(out, indent=2))
    columns = ("slots", "kept_share", "pass_rate", "kept_per_s", "output_tokens_per_s", "seconds", "load_at_rounds")
    print("\nlever        " + "  ".join(columns))
    for name, entry in out["levers"].items():
        print(f"{name:12} " + "  ".join(f"{entry[c]!s:>{len(c)}}" for c in columns))


if __name__ == "__main__":
    main()
