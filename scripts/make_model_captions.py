#!/usr/bin/env python
"""Write real-model captions for the evidence set tests/data/captions/model_set.jsonl (unlabelled).

Tiles are the seeded synthetic scenes of ``scripts/check_agreement.py`` (real ``compute_stats``
statistics). Prompts are the project's own templates (``PromptSet``). Engines: SmolLM2-135M
through the real vLLM (CPU build, ``n`` choices per request), the same model through llama.cpp
(the embedded GGUF, ``LocalEngine``) and the template engine. Writes one JSON row per caption
with the tile's stats; labels are added afterwards by review (see tests/data/captions/README.md).

    python scripts/make_model_captions.py OUT.jsonl [--vllm-requests 100] [--n 4] [--local 110]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_agreement import make_scene

from rsbuild.captions.base import CaptionRequest
from rsbuild.captions.constraints import caption_grammar
from rsbuild.captions.engines.template import area_caption, class_caption, linear_caption
from rsbuild.captions.prompts import PromptSet, elongated_components

SCHEMES = ("esa_worldcover", "dynamic_world", "io_lulc")


def tiles(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_scene(rng, SCHEMES[i % 3]).stats for i in range(count)]


def jobs(stats_list: list[dict[str, Any]], seed: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    rng = random.Random(seed)
    out: list[tuple[str, str | None, dict[str, Any]]] = []
    for stats in stats_list:
        task = rng.choice(["area", "area", "class", "linear"])
        if task == "linear" and not elongated_components(stats):
            task = "area"
        subject = rng.choice([c["name"] for c in stats["classes"][:3]]) if task == "class" else None
        out.append((task, subject, stats))
    return out


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as response:
        return dict(json.loads(response.read()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--vllm-requests", type=int, default=100)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--local", type=int, default=110)
    parser.add_argument("--template", type=int, default=60)
    parser.add_argument("--grammar-requests", type=int, default=0,
                        help="vLLM requests decoded under caption_grammar (structured outputs), on their own tiles")
    parser.add_argument("--grammar-n", type=int, default=2)
    parser.add_argument("--local-from", type=int, default=0, help="skip the first llama.cpp jobs (resuming)")
    parser.add_argument("--seed-base", type=int, default=0,
                        help="added to every tile, task and sampling seed (new tiles for a held-out slice)")
    args = parser.parse_args()
    prompts = PromptSet.load()
    sampling = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 120}
    rows: list[dict[str, Any]] = []

    def keep(engine: str, task: str, subject: str | None, stats: dict[str, Any], text: str, seed: int) -> None:
        rows.append({"id": len(rows), "engine": engine, "task": task, "subject": subject, "seed": seed,
                     "text": text.strip(), "stats": stats})
        with args.out.open("a") as fh:
            fh.write(json.dumps(rows[-1]) + "\n")

    # template engine: instant
    for i, (task, subject, stats) in enumerate(jobs(tiles(args.template, 300 + args.seed_base), 301 + args.seed_base)[:args.template]):
        if task == "class":
            text = class_caption(stats, str(subject), i)
        else:
            text = area_caption(stats, i) if task == "area" else linear_caption(stats, i)
        if text:
            keep("template", task, subject, stats, text, i)
    # llama.cpp
    from rsbuild.captions.engines.local import LocalEngine

    engine = LocalEngine(sampling=sampling, n_threads=2) if args.local else None
    for i, (task, subject, stats) in enumerate(jobs(tiles(args.local, 200 + args.seed_base), 201 + args.seed_base)):
        if i < args.local_from or engine is None:
            continue
        messages, template, sha = prompts.render(task, stats, subject)
        request = CaptionRequest(f"l{i}", task, stats, subject, messages, template, sha, 1, 1000 + args.seed_base + i, sampling)
        result = engine.submit(request).result()
        for text in result.texts:
            keep("llama.cpp:SmolLM2-135M-Instruct.Q4_1", task, subject, stats, text, 1000 + args.seed_base + i)
    if engine is not None:
        engine.close()
    if not args.vllm_requests and not args.grammar_requests:
        return
    # vLLM
    from rsbuild.testing.vllm_server import VllmServer

    with VllmServer() as server:
        from concurrent.futures import ThreadPoolExecutor

        work = jobs(tiles(args.vllm_requests, 100 + args.seed_base), 101 + args.seed_base)

        def ask(item: tuple[int, tuple[str, str | None, dict[str, Any]]]) -> tuple[Any, ...]:
            i, (task, subject, stats) = item
            messages, _, _ = prompts.render(task, stats, subject)
            body = {"model": server.model_id, "messages": list(messages), "n": args.n, "seed": 5000 + args.seed_base + i, **sampling}
            return task, subject, stats, 5000 + args.seed_base + i, post(f"{server.base_url}/chat/completions", body)

        with ThreadPoolExecutor(16) as pool:
            for task, subject, stats, seed, response in pool.map(ask, enumerate(work[:args.vllm_requests])):
                for choice in response["choices"]:
                    keep("vllm:SmolLM2-135M-Instruct", task, subject, stats, choice["message"]["content"] or "", seed)

        # structured outputs: the same model decoding under the caption grammar (plain and varied, alternately)
        grammar_work = [("area" if task == "linear" else task, subject, stats)
                        for task, subject, stats in jobs(tiles(args.grammar_requests, 400 + args.seed_base), 401 + args.seed_base)]

        def ask_grammar(item: tuple[int, tuple[str, str | None, dict[str, Any]]]) -> tuple[Any, ...]:
            i, (task, subject, stats) = item
            messages, _, _ = prompts.render(task, stats, subject)
            grammar = caption_grammar(task, stats, subject, varied=bool(i % 2))
            if grammar is None:  # a class below the grammar's share: its area caption instead
                task, subject = "area", None
                grammar = caption_grammar(task, stats, subject, varied=bool(i % 2))
            messages, _, _ = prompts.render(task, stats, subject)
            body = {"model": server.model_id, "messages": list(messages), "n": args.grammar_n,
                    "seed": 6000 + args.seed_base + i, "structured_outputs": {"grammar": grammar}, **sampling}
            return task, subject, stats, 6000 + args.seed_base + i, bool(i % 2), post(f"{server.base_url}/chat/completions", body)

        with ThreadPoolExecutor(16) as pool:
            for task, subject, stats, seed, varied, response in pool.map(ask_grammar, enumerate(grammar_work)):
                suffix = "+varied-grammar" if varied else "+grammar"
                for choice in response["choices"]:
                    keep("vllm:SmolLM2-135M-Instruct" + suffix, task, subject, stats, choice["message"]["content"] or "", seed)
    print(len(rows), "captions")


if __name__ == "__main__":
    main()
