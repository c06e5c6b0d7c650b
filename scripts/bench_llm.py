#!/usr/bin/env python
"""Benchmark the `openai` caption engine against a plain OpenAI client on the same server.

Starts the loopback llama.cpp server with SmolLM2-135M-Instruct (or uses --base-url), renders
the same caption requests from the shipped prompts for seeded synthetic tiles, and sends them
once through a plain ``openai.AsyncOpenAI`` loop (no rsbuild code) and once through
``OpenAIEngine``, at the same concurrency, seeds and sampling. Prints JSON: captions/s and
completion tokens/s of both, their ratio (target >= 0.95), prompt tokens per caption and the
share of prompt tokens that is a prefix common to all prompts of a task (target >= 0.70).

    python scripts/bench_llm.py --requests 12 --concurrency 4 --max-tokens 48
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import openai

from rsbuild.captions.base import CaptionRequest, request_seed
from rsbuild.captions.engines.openai import OpenAIEngine
from rsbuild.captions.prompts import PromptSet, common_prefix_share
from rsbuild.testing.llama_server import LlamaServer
from rsbuild.testing.synthetic import seeded_tile_stats


def build_requests(count: int, tasks: list[str], sampling: dict[str, Any]) -> list[CaptionRequest]:
    """``count`` requests per task, for tiles 0..count-1."""
    prompts = PromptSet.load()
    requests = []
    for task in tasks:
        for i in range(count):
            stats = seeded_tile_stats(i)
            subjects = {"class": stats["classes"][-1]["name"], "revise": f"{stats['dominant_class']} covers most of the image."}
            subject = subjects.get(task)
            messages, template, sha = prompts.render(task, stats, subject)
            key = f"bench{i}_t0000"
            requests.append(
                CaptionRequest(
                    key=key, task=task, stats=stats, subject=subject, messages=messages, template=template,
                    template_sha256=sha, seed=request_seed(key, task, subject, 0), sampling=sampling,
                )  # fmt: skip
            )
    return requests


async def plain_client(base_url: str, model: str, requests: list[CaptionRequest], concurrency: int) -> dict[str, Any]:
    """The same requests through a bare AsyncOpenAI loop with a semaphore."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-no-key", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)
    usage = {"prompt_tokens": 0, "completion_tokens": 0}

    async def one(request: CaptionRequest) -> None:
        async with semaphore:
            response = await client.chat.completions.create(
                model=model, messages=list(request.messages), n=1, seed=request.seed, **request.sampling
            )
        usage["prompt_tokens"] += response.usage.prompt_tokens
        usage["completion_tokens"] += response.usage.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    seconds = time.perf_counter() - start
    await client.close()
    return {"seconds": seconds, **usage}


def rsbuild_engine(base_url: str, model: str, requests: list[CaptionRequest], concurrency: int) -> dict[str, Any]:
    engine = OpenAIEngine(base_url, model=model, concurrency=concurrency)
    start = time.perf_counter()
    results = engine.generate(requests)
    seconds = time.perf_counter() - start
    failed = sum(1 for r in results if r.error)
    return {"seconds": seconds, "failed": failed, **{k: engine.counters[k] for k in ("prompt_tokens", "completion_tokens")}}


def rates(run: dict[str, Any], captions: int) -> dict[str, Any]:
    return {
        **run,
        "captions_per_s": round(captions / run["seconds"], 3),
        "completion_tokens_per_s": round(run["completion_tokens"] / run["seconds"], 1),
        "seconds": round(run["seconds"], 2),
    }


def prefix_report(requests: list[CaptionRequest]) -> dict[str, Any]:
    """Prompt tokens per caption and common-prefix share per task, in the model's own tokens."""
    from rsbuild.captions.engines.local import chat_prompt_tokens

    report = {}
    for task in sorted({r.task for r in requests}):
        tokens = chat_prompt_tokens([r.messages for r in requests if r.task == task])
        report[task] = {
            "prompt_tokens_per_caption": round(sum(map(len, tokens)) / len(tokens), 1),
            "common_prefix_share": round(common_prefix_share(tokens), 3),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=12, help="requests per task")
    parser.add_argument("--tasks", default="area", help="comma-separated tasks (area,linear,class,revise)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating; the best run counts")
    parser.add_argument("--base-url", default=None, help="use a running server instead of starting llama.cpp")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    sampling = {"temperature": 0.7, "top_p": 0.95, "max_tokens": args.max_tokens}
    requests = build_requests(args.requests, args.tasks.split(","), sampling)
    server = None if args.base_url else LlamaServer().start()
    try:
        base_url = args.base_url or server.base_url
        model = args.model or (server.model_id if server else OpenAIEngine(base_url).name)
        asyncio.run(plain_client(base_url, model, requests[:1], 1))  # warm-up: load caches
        plain_runs, our_runs = [], []
        for repeat in range(args.repeats):  # alternate who goes first; keep each side's best run
            sides = [
                lambda: plain_runs.append(asyncio.run(plain_client(base_url, model, requests, args.concurrency))),
                lambda: our_runs.append(rsbuild_engine(base_url, model, requests, args.concurrency)),
            ]
            for side in sides if repeat % 2 == 0 else sides[::-1]:
                side()
        plain = rates(min(plain_runs, key=lambda r: r["seconds"]), len(requests))
        ours = rates(min(our_runs, key=lambda r: r["seconds"]), len(requests))
    finally:
        if server:
            server.stop()
    print(json.dumps({
        "server": "llama.cpp (llama-cpp-python)" if server else base_url,
        "model": model,
        "captions": len(requests),
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "sampling": sampling,
        "plain_client": plain,
        "rsbuild_openai_engine": ours,
        "ratio_captions_per_s": round(ours["captions_per_s"] / plain["captions_per_s"], 3),
        "all_runs_seconds": {"plain_client": [round(r["seconds"], 2) for r in plain_runs],
                             "rsbuild_openai_engine": [round(r["seconds"], 2) for r in our_runs]},
        "prompts": prefix_report(requests),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
