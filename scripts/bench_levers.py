#!/usr/bin/env python
"""Caption levers side by side: which way of asking the embedded model keeps the most captions?

On the same seeded tiles (``make_scene`` of ``scripts/check_agreement.py``, real ``compute_stats``)
and the same area / class requests, each lever writes captions and the faithfulness check decides
which are kept. Levers run interleaved (request by request, the order rotating) so the machine's
load falls on all of them alike:

* ``llama_free``     - llama.cpp (the embedded GGUF, ``LocalEngine``), the shipped prompts, free decoding;
* ``llama_grammar``  - the same with the fact-binding GBNF grammar (``captions.constrained``);
* ``llama_varied_grammar`` - the same grammar with more verbs, hedges, places and a second sentence form;
* ``vllm_free``      - SmolLM2 through the real vLLM (CPU build), one choice per request;
* ``vllm_best_of_k`` - the same request with ``n=k`` (one prefill), the first passing choice kept;
* ``vllm_grammar``   - vLLM structured outputs with the same grammar (``structured_outputs.grammar``
  in the request body, through the OpenAI engine's ``extra_body``).

Per lever: requests, captions generated, passed, kept (requests with a passing caption) ÷ asked,
pass rate (passed ÷ generated), kept captions per second of the lever's own wall time, and variety
(distinct word 3-grams per kept caption, and over all kept captions ÷ their words). Prints JSON
with the machine's load average; ``--no-vllm`` leaves the vLLM levers out; ``--budget-minutes`` stops
after the round that passes it (every lever then has answered the same requests).

    python scripts/bench_levers.py [--tiles 8] [--k 4] [--seed-base 9500] [--no-vllm] [--budget-minutes M]
                                   [--json-out F]
                                   [--captions-out F.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_agreement import make_scene

from rsbuild.captions.base import CaptionEngine, CaptionRequest
from rsbuild.captions.check import check_caption
from rsbuild.captions.constraints import caption_grammar
from rsbuild.captions.prompts import PromptSet

SCHEMES = ("esa_worldcover", "dynamic_world", "io_lulc")
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 120}


@dataclass
class Lever:
    """One way of asking for a caption, and what it produced."""

    name: str
    ask: Callable[[CaptionRequest], list[str]]
    requests: int = 0
    generated: int = 0
    passed: int = 0
    kept: list[str] = field(default_factory=list)
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    written: list[dict[str, Any]] = field(default_factory=list)  # every text, for --captions-out

    def run(self, request: CaptionRequest) -> None:
        start = time.perf_counter()
        texts = [t.strip() for t in self.ask(request) if t and t.strip()]
        self.seconds += time.perf_counter() - start
        self.requests += 1
        self.generated += len(texts)
        subject = request.subject if request.task == "class" else None
        passing = [t for t in texts if check_caption(t, request.stats, subject=subject, task=request.task).ok]
        self.written += [{"lever": self.name, "task": request.task, "subject": subject, "seed": request.seed,
                          "text": t, "stats": dict(request.stats)} for t in texts]
        self.passed += len(passing)
        if passing:
            self.kept.append(passing[0])  # best-of-k: the first passing choice
        if len(self.samples) < 3:
            self.samples.append({"task": request.task, "text": texts[0] if texts else "", "kept": bool(passing)})

    def report(self) -> dict[str, Any]:
        words = [w for text in self.kept for w in text.lower().split()]
        grams = {tuple(words[i:i + 3]) for text in self.kept for words in [text.lower().split()]
                 for i in range(len(words) - 2)}
        return {"requests": self.requests, "generated": self.generated, "passed": self.passed,
                "kept": len(self.kept), "kept_share": round(len(self.kept) / self.requests, 3) if self.requests else None,
                "pass_rate": round(self.passed / self.generated, 3) if self.generated else None,
                "kept_per_s": round(len(self.kept) / self.seconds, 3) if self.seconds else None,
                "seconds": round(self.seconds, 1),
                "distinct_3grams_per_caption": round(len(grams) / len(self.kept), 2) if self.kept else None,
                "distinct_3gram_share": round(len(grams) / max(1, len(words) - 2 * len(self.kept)), 3),
                "samples": self.samples}


def requests_for(tiles: int, seed_base: int, prompts: PromptSet) -> list[CaptionRequest]:
    """An area and a class request per seeded tile (the tasks the grammar covers)."""
    rng = random.Random(seed_base)
    out = []
    for i in range(tiles):
        stats = make_scene(rng, SCHEMES[i % 3]).stats
        subject = rng.choice([c["name"] for c in stats["classes"][:2]])
        for task, subj in (("area", None), ("class", subject)):
            messages, template, sha = prompts.render(task, stats, subj)
            out.append(CaptionRequest(f"t{i}", task, stats, subj, messages, template, sha, 1,
                                      seed_base + 10 * i + (task == "class"), SAMPLING))
    return out


def engine_ask(engine: CaptionEngine, n: int = 1, grammar: bool = False) -> Callable[[CaptionRequest], list[str]]:
    """A lever's call: one request of ``n`` choices to an engine, optionally with the structured-output grammar."""

    def ask(request: CaptionRequest) -> list[str]:
        sampling = dict(request.sampling)
        if grammar:
            text = caption_grammar(request.task, request.stats, request.subject)
            if text is not None:
                sampling["structured_outputs"] = {"grammar": text}
        wanted = CaptionRequest(request.key, request.task, request.stats, request.subject, request.messages,
                                request.template, request.template_sha256, n, request.seed, sampling)
        result = engine.submit(wanted).result()
        return list(result.texts) if not result.error else []

    return ask


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed-base", type=int, default=9500)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--budget-minutes", type=float, default=0.0,
                        help="stop after the round (one request through every lever) that passes this time")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--captions-out", type=Path, help="write every caption (JSONL, with its tile's stats)")
    args = parser.parse_args()
    from rsbuild.captions.engines.local import LocalEngine

    prompts = PromptSet.load()
    requests = requests_for(args.tiles, args.seed_base, prompts)
    free = LocalEngine(sampling=SAMPLING, n_threads=2)
    constrained = LocalEngine(sampling=SAMPLING, n_threads=2, constrained=True)
    varied = LocalEngine(sampling=SAMPLING, n_threads=2, constrained=True, varied=True)
    levers = [Lever("llama_free", engine_ask(free)), Lever("llama_grammar", engine_ask(constrained)),
              Lever("llama_varied_grammar", engine_ask(varied))]
    closers: list[Callable[[], Any]] = [free.close, constrained.close, varied.close]
    if not args.no_vllm:
        from rsbuild.captions.engines.openai import OpenAIEngine
        from rsbuild.testing.vllm_server import VllmServer

        server = VllmServer()
        server.__enter__()
        # a loaded CPU box answers slowly: no client timeout retries (they would send the request twice)
        engine = OpenAIEngine(server.base_url, model=server.model_id, sampling=SAMPLING, concurrency=4,
                              timeout_s=1800.0, retries=0)
        levers += [Lever("vllm_free", engine_ask(engine)), Lever(f"vllm_best_of_{args.k}", engine_ask(engine, args.k)),
                   Lever("vllm_grammar", engine_ask(engine, grammar=True))]
        closers += [engine.close, lambda: server.__exit__(None, None, None)]
    started, rounds = time.perf_counter(), 0

    def report() -> dict[str, Any]:
        """The figures so far (written after every round, so a stopped run still leaves them)."""
        out = {"tiles": args.tiles, "requests_per_lever": rounds, "k": args.k,
               "load_average": [round(v, 2) for v in os.getloadavg()], "levers": {lv.name: lv.report() for lv in levers}}
        if args.json_out:
            args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        if args.captions_out:
            with args.captions_out.open("w", encoding="utf-8") as fh:
                for row in (row for lever in levers for row in lever.written):
                    fh.write(json.dumps(row) + "\n")
        return out

    try:
        for i, request in enumerate(requests):
            for j in range(len(levers)):
                levers[(i + j) % len(levers)].run(request)
            rounds += 1
            report()
            print(f"round {rounds}/{len(requests)} done after {time.perf_counter() - started:.0f} s", file=sys.stderr)
            if args.budget_minutes and time.perf_counter() - started > 60 * args.budget_minutes:
                break
    finally:
        for close in closers:
            close()
    final = report()
    print(json.dumps(final, indent=2))
    load = final["load_average"]
    print(f"\n{'lever':22} {'kept':>6} {'pass':>6} {'kept/s':>7} {'3grams/cap':>10}  (load {load[0]:.1f})")
    for name, entry in final["levers"].items():
        print(f"{name:22} {entry['kept_share']!s:>6} {entry['pass_rate']!s:>6} {entry['kept_per_s']!s:>7} "
              f"{entry['distinct_3grams_per_caption']!s:>10}")


if __name__ == "__main__":
    main()
