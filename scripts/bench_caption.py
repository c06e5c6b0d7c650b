#!/usr/bin/env python
"""Does the caption stage keep a continuous-batching server busy? ("The engine never waits for rsbuild")

Starts a simulated vLLM-like OpenAI-compatible server in a child process (this script with
``--serve``): S slots (default 256), a request holds ``n`` of them, every running sequence decodes
at R tokens/s and each answer has a fixed number of output tokens, so a sequence lasts
``out_tokens / R`` seconds once it runs; sequences beyond S wait in a FIFO queue. The server knows
the right caption for every prompt (sha256 of the last user message -> text written by
``TemplateEngine`` for that tile, checked with ``check_caption``) and answers a wrong one
(a class the tile lacks) for every choice whose seed has sha256(f"{seed}") % 10 == 0, so rsbuild's
check re-asks with the next seed: the run has dependent requests (area -> re-ask, area -> revise).

Two clients take turns against the same server on the same tiles, per configuration:

  (a) rsbuild: ``annotate(samples, [OpenAIEngine(url, model="sim")], CaptionsConfig(tasks, paraphrases))``
      at its default settings, consumed fully;
  (b) plain: the exact requests rsbuild needed in the round before (messages, n, seed, max_tokens,
      as the server recorded them; not the attempts rsbuild asked ahead and then dropped), all at once
      behind an asyncio.Semaphore(256), one AsyncOpenAI on openai's default HTTP transport (httpx), as
      rsbuild's engine (``--plain-transport`` for others).

Per run: wall seconds, requests, the useful sequences (those of the plain client's list, for both
clients), occupancy = useful sequence-seconds / (S * wall) — so rsbuild's dropped speculative
attempts count as idle, not busy (the server's own busy share is in the JSON) — and where the idle
slot-time lies (ramp before the batch first fills, middle, tail after it last was full). Summary:
rsbuild occupancy (target >= 0.95) and rsbuild / plain sequences per second (target >= 0.97),
median [min, max] over rounds, for the whole run and for the steady state (while the middle 80 %
of the sequences finish: 10th to 90th percentile of completion times). The steady state is what a real run of a million
tiles consists of: the ramp and the tail (the last chains area -> re-ask -> revise cannot start
before their parents finish, while the plain client knows every request up front) cost a fixed few
seconds per run, so the whole-run occupancy is also projected to ``--project-tiles`` tiles (steady
state for longer, ramp and tail idle as measured). Both whole-run and steady figures are printed.

Sequences last 4 s by default (80 tokens at 20 tok/s, like a GPU vLLM at batch 256): on this
2-core machine the AsyncOpenAI client costs ~5-9 ms CPU per request at 256 open connections, so
with shorter sequences even the plain client cannot refill the slots (check the plain
occupancy: it must reach >= 0.97 for the run to say anything). The defaults (2000 tiles, 3 rounds,
2 configurations, 12 runs) take about 30 minutes; ``--tiles 600 --rounds 1`` about 3.

    python scripts/bench_caption.py                      # defaults: 2000 tiles, 3 rounds
    python scripts/bench_caption.py --tiles 300 --rounds 1 --profile-check
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

DEFAULT_WRONG = "Snow and ice cover the whole tile."
HOST = "127.0.0.1"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_fault(seed: int | None) -> bool:
    """Deterministic fault injection: one seed in ten gets a wrong caption."""
    return seed is not None and int(sha(f"{seed}"), 16) % 10 == 0


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


# ==================================================================================== the server


class Simulator:
    """S slots; a sequence runs ``duration`` seconds once it has a slot; the rest wait FIFO. A request
    whose client goes away is dropped, as vLLM aborts it: its sequences leave the queue or free their slots."""

    def __init__(self, slots: int, rate: float, out_tokens: int, lookup: dict[str, list[str]]) -> None:
        self.slots, self.rate, self.out_tokens, self.lookup = slots, rate, out_tokens, lookup
        self.loop = asyncio.get_running_loop()
        self.reset()

    def reset(self) -> None:
        self.running = 0
        self.queue: deque[tuple[asyncio.Future[None], float]] = deque()
        self.handles: dict[asyncio.Future[None], asyncio.TimerHandle] = {}
        self.aborted = 0
        self.first: float | None = None
        self.last_done: float | None = None
        self.last_change = 0.0
        self.busy = 0.0  # integral of min(running, S) dt
        self.timeline: list[tuple[float, int]] = []
        self.requests = self.sequences = self.max_running = self.max_queued = 0
        self.misses = self.faults = self.truncated = 0
        self.bodies: list[dict[str, Any]] = []
        self.cpu0 = time.process_time()

    def _change(self, delta: int) -> None:
        now = self.loop.time()
        self.busy += min(self.running, self.slots) * (now - self.last_change)
        self.last_change = now
        self.running += delta
        self.max_running = max(self.max_running, self.running)
        assert self.first is not None
        self.timeline.append((round(now - self.first, 6), self.running))

    def _start(self, future: asyncio.Future[None], seconds: float) -> None:
        self.handles[future] = self.loop.call_later(seconds, self._finish, future)

    def _finish(self, future: asyncio.Future[None]) -> None:
        self.handles.pop(future, None)
        self.last_done = self.loop.time()
        if not future.done():
            future.set_result(None)
        self._free()

    def _free(self) -> None:
        if self.queue:  # the freed slot goes straight to the next waiting sequence
            self._start(*self.queue.popleft())
        else:
            self._change(-1)

    def abort(self, futures: list[asyncio.Future[None]]) -> None:
        """Drop the sequences of a request whose client went away."""
        self.aborted += 1
        waiting = set(futures)
        self.queue = deque(item for item in self.queue if item[0] not in waiting)
        for future in futures:
            handle = self.handles.pop(future, None)
            if handle is not None:
                handle.cancel()
                self._free()

    def add(self, seconds: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        if self.running < self.slots:
            self._change(+1)
            self._start(future, seconds)
        else:
            self.queue.append((future, seconds))
            self.max_queued = max(self.max_queued, len(self.queue))
        return future

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        now = self.loop.time()
        if self.first is None:
            self.first = self.last_change = now
        n = max(1, int(body.get("n") or 1))
        seed = body.get("seed")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        messages = body.get("messages") or []
        self.requests += 1
        self.sequences += n
        record = {k: body.get(k) for k in ("messages", "n", "seed", "max_tokens", "temperature", "top_p")}
        record["t_arrive"] = round(now - self.first, 6)
        self.bodies.append(record)
        tokens = min(self.out_tokens, int(max_tokens)) if max_tokens else self.out_tokens
        finish = "length" if tokens < self.out_tokens else "stop"
        self.truncated += n if finish == "length" else 0
        sequences = [self.add(tokens / self.rate) for _ in range(n)]
        try:
            await asyncio.gather(*sequences)
        except asyncio.CancelledError:
            self.abort(sequences)
            raise
        record["t_done"] = round(self.loop.time() - self.first, 6)
        entry = self.lookup.get(sha(last_user_text(messages)))
        if entry is None:
            self.misses += 1
            entry = ["I cannot tell.", DEFAULT_WRONG]
        choices = []
        for i in range(n):
            wrong = is_fault(None if seed is None else int(seed) + i)  # vLLM seeds child i with seed + i
            self.faults += wrong
            choices.append({"index": i, "message": {"role": "assistant", "content": entry[1] if wrong else entry[0]},
                            "finish_reason": finish, "logprobs": None})
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
        return {
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "sim", "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens * n,
                      "total_tokens": prompt_tokens + tokens * n},
        }

    def stats(self, with_bodies: bool) -> dict[str, Any]:
        window = (self.last_done - self.first) if self.first is not None and self.last_done is not None else 0.0
        busy = self.busy + min(self.running, self.slots) * max(0.0, (self.last_done or 0.0) - self.last_change)
        out: dict[str, Any] = {
            "slots": self.slots, "rate_tok_s": self.rate, "out_tokens": self.out_tokens,
            "seq_seconds": self.out_tokens / self.rate,
            "window_s": window, "busy_slot_s": busy,
            "occupancy": busy / (self.slots * window) if window > 0 else 0.0,
            "requests": self.requests, "sequences": self.sequences, "max_running": self.max_running,
            "max_queued": self.max_queued, "running_now": self.running, "queued_now": len(self.queue),
            "lookup_misses": self.misses, "faults": self.faults, "truncated": self.truncated, "aborted": self.aborted,
            "server_cpu_s": time.process_time() - self.cpu0,
            "timeline": self.timeline,
        }
        if with_bodies:
            out["bodies"] = self.bodies
        return out


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    lookup = json.loads(Path(args.lookup).read_text(encoding="utf-8"))
    sim = Simulator(args.slots, args.rate, args.out_tokens, lookup)

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(await sim.chat(await request.json()))

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim", "object": "model", "owned_by": "bench"}]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(sim.stats(request.query.get("bodies", "1") != "0"))

    async def reset(request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=16 * 2**20)
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/v1/models", models),
                    web.get("/stats", stats), web.post("/reset", reset)])
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)  # a closed connection aborts (vLLM)
    await runner.setup()
    await web.TCPSite(runner, HOST, args.port, backlog=4096).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# ============================================================================ benchmark helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def build_tiles(count: int) -> list[dict[str, Any]]:
    from rsbuild.testing.synthetic import seeded_tile_stats

    return [seeded_tile_stats(i) for i in range(count)]


def tile_key(i: int) -> str:
    return f"tile{i:05d}_t0000"


def build_lookup(tiles: list[dict[str, Any]]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """sha256(last user message) -> [right caption, wrong caption], for every prompt rsbuild can send.

    Tiles with the same facts render the same prompt, so one answer must pass the check for all
    of them: candidates are TemplateEngine captions of every tile in the group (several seeds).
    """
    from rsbuild.captions.base import CaptionRequest
    from rsbuild.captions.check import check_caption
    from rsbuild.captions.engines.template import TemplateEngine
    from rsbuild.captions.prompts import PromptSet
    from rsbuild.schemes import get_scheme

    engine = TemplateEngine()
    prompts = PromptSet.load(tasks=["area", "class", "revise"])
    class_names = [c.name for c in get_scheme("esa_worldcover").classes]
    groups: dict[str, list[tuple[int, str, str | None]]] = {}
    for i, stats in enumerate(tiles):
        items = [("area", None)] + [("class", str(c["name"])) for c in stats.get("classes", [])]
        for task, subject in items:
            messages, _, _ = prompts.render(task, stats, subject)
            groups.setdefault(sha(last_user_text(list(messages))), []).append((i, task, subject))

    def passes(text: str, members: list[tuple[int, str, str | None]]) -> bool:
        return all(check_caption(text, tiles[i], subject=subject if task == "class" else None).ok
                   for i, task, subject in members)

    def wrong_for(members: list[tuple[int, str, str | None]]) -> str:
        """DEFAULT_WRONG if the check fails it for every tile of the group, else another caption that fails."""
        present = {str(c["name"]) for i, _, _ in members for c in tiles[i].get("classes", [])}
        named = [s for _, t, s in members if t == "class" and s] + [str(c["name"]) for c in tiles[members[0][0]]["classes"]]
        candidates = [DEFAULT_WRONG]
        candidates += [f"{n[:1].upper()}{n[1:]} covers the whole tile." for n in class_names if n not in present]
        candidates += [f"{n[:1].upper()}{n[1:]} covers 99% of the image." for n in named]
        for text in candidates:
            if not any(check_caption(text, tiles[i], subject=s if t == "class" else None).ok for i, t, s in members):
                return text
        raise RuntimeError(f"no wrong caption fails the check for tiles {sorted({i for i, _, _ in members})}")

    lookup: dict[str, list[str]] = {}
    counts = {"prompt_keys": len(groups), "shared_keys": 0, "unresolved_keys": 0, "alt_wrong_keys": 0}
    area_text: dict[int, str] = {}
    for key, members in groups.items():
        counts["shared_keys"] += len(members) > 1
        chosen = None
        for seed in range(8):
            for i, task, subject in members:
                request = CaptionRequest(key=tile_key(i), task=task, stats=tiles[i], subject=subject, seed=seed)
                texts = engine.generate([request])[0].texts
                if texts and passes(texts[0], members):
                    chosen = texts[0]
                    break
                if len(members) == 1:
                    break
            if chosen:
                break
        if chosen is None:
            counts["unresolved_keys"] += 1
            i, task, subject = members[0]
            chosen = engine.generate([CaptionRequest(key=tile_key(i), task=task, stats=tiles[i], subject=subject)])[0].texts[0]
        wrong = wrong_for(members)
        counts["alt_wrong_keys"] += wrong != DEFAULT_WRONG
        lookup[key] = [chosen, wrong]
        for i, task, _ in members:
            if task == "area":
                area_text[i] = chosen
    # revise: the user message is the (known in advance) area caption; answer it back
    for i, text in area_text.items():
        messages, _, _ = prompts.render("revise", tiles[i], text)
        key = sha(last_user_text(list(messages)))
        if key not in lookup:
            lookup[key] = [text, wrong_for([(i, "revise", None)])]
    return lookup, counts


class Server:
    def __init__(self, lookup_path: str, slots: int, rate: float, out_tokens: int) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--port", str(self.port), "--lookup", lookup_path,
               "--slots", str(slots), "--rate", str(rate), "--out-tokens", str(out_tokens)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"simulated server did not start (exit {self.proc.poll()})")
        import httpx

        self.http = httpx.Client(base_url=self.url, timeout=60)

    def reset(self) -> None:
        self.http.post("/reset").raise_for_status()

    def stats(self, bodies: bool = True) -> dict[str, Any]:
        response = self.http.get("/stats", params={"bodies": "1" if bodies else "0"})
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ThreadCPU:
    """Samples CPU seconds of every thread of this process from /proc (threads die mid-run)."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.seen: dict[tuple[str, int], float] = {}
        self.stop_event = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._run, name="bench-cpu-monitor", daemon=True)

    def _sample(self) -> None:
        for t in threading.enumerate():
            if t.native_id is None:
                continue
            try:
                fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.seen[(t.name, t.native_id)] = (int(fields[11]) + int(fields[12])) / self.tick

    def _run(self) -> None:
        while not self.stop_event.wait(self.period):
            self._sample()

    def __enter__(self) -> ThreadCPU:
        self._sample()
        self.base = dict(self.seen)
        self.seen = {}
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()
        self._sample()

    def by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (name, tid), cpu in self.seen.items():
            if name == "bench-cpu-monitor":
                continue
            label = "main" if name == "MainThread" else name.rsplit("-", 1)[0] if name.startswith("rsbuild-openai") else name
            out[label] = out.get(label, 0.0) + cpu - self.base.get((name, tid), 0.0)
        return {k: round(v, 2) for k, v in sorted(out.items()) if v >= 0.01}


def timeline_losses(stats: dict[str, Any]) -> dict[str, float]:
    """Idle slot-time as shares of S*T: before the batch first fills, in the middle, after it last was full."""
    slots, window, events = stats["slots"], stats["window_s"], stats["timeline"]
    if window <= 0 or not events:
        return {"ramp": 0.0, "middle": 0.0, "tail": 0.0, "tail_s": 0.0, "full_share": 0.0}
    points = [(0.0, 0)] + [(float(t), int(r)) for t, r in events] + [(window, 0)]
    first_full = next((t for t, r in points if r >= slots), window)
    last_full_end = window
    for k in range(len(points) - 1, -1, -1):
        if points[k][1] >= slots:
            last_full_end = points[k + 1][0] if k + 1 < len(points) else window
            break
    ramp = middle = tail = full = 0.0
    for (t0, r), (t1, _) in zip(points, points[1:]):
        t1 = min(t1, window)
        if t1 <= t0:
            continue
        idle = (slots - min(r, slots)) * (t1 - t0)
        full += (t1 - t0) if r >= slots else 0.0
        mid = (t0 + t1) / 2
        if mid < first_full:
            ramp += idle
        elif mid >= last_full_end:
            tail += idle
        else:
            middle += idle
    total = slots * window
    return {"ramp": ramp / total, "middle": middle / total, "tail": tail / total,
            "tail_s": window - last_full_end, "full_share": full / window}


def busy_between(stats: dict[str, Any], start: float, end: float) -> float:
    """Slot-seconds busy between two times of the run (integral of min(running, S))."""
    slots, events = stats["slots"], stats["timeline"]
    points = [(0.0, 0)] + [(float(t), int(r)) for t, r in events] + [(stats["window_s"], 0)]
    busy = 0.0
    for (t0, r), (t1, _) in zip(points, points[1:]):
        lo, hi = max(t0, start), min(t1, end)
        if hi > lo:
            busy += min(r, slots) * (hi - lo)
    return busy


def steady_state(stats: dict[str, Any], records: list[dict[str, Any]], tiles: int, target_tiles: int) -> dict[str, float]:
    """Occupancy while the middle 80 % of the sequences finish (from the 10th to the 90th percentile of
    completion times), and the whole-run occupancy projected to ``target_tiles``: that steady state for
    proportionally longer, the edges (ramp and tail) as measured."""
    done = sorted(float(r["t_done"]) for r in records if "t_done" in r for _ in range(max(1, int(r.get("n") or 1))))
    slots, window = stats["slots"], stats["window_s"]
    if len(done) < 10 or window <= 0:
        return {"steady": 0.0, "projected": 0.0, "steady_s": 0.0}
    t10, t90 = done[len(done) // 10], done[(9 * len(done)) // 10]
    if t90 <= t10:
        return {"steady": 0.0, "projected": 0.0, "steady_s": 0.0}
    steady = busy_between(stats, t10, t90) / (slots * (t90 - t10))
    edges_busy = busy_between(stats, 0.0, t10) + busy_between(stats, t90, window)
    edges_s = window - (t90 - t10)
    long_steady_s = (t90 - t10) * target_tiles / tiles
    projected = (edges_busy + steady * slots * long_steady_s) / (slots * (edges_s + long_steady_s))
    return {"steady": steady, "projected": projected, "steady_s": t90 - t10}


# ===================================================================================== clients


def make_samples(tiles: list[dict[str, Any]]) -> list[Any]:
    from rsbuild.records import Sample

    return [Sample(tile_key(i), "train", b"", None, {}, stats) for i, stats in enumerate(tiles)]


def run_rsbuild(url: str, tiles: list[dict[str, Any]], tasks: list[str], paraphrases: int,
                speculate: bool = True) -> dict[str, Any]:
    from rsbuild.captions.engines.openai import OpenAIEngine
    from rsbuild.captions.prompts import PromptSet
    from rsbuild.captions.scheduler import CaptionTelemetry, annotate
    from rsbuild.config import CaptionsConfig

    cfg = CaptionsConfig(tasks=tasks, paraphrases=paraphrases, speculative_reasks=speculate)
    prompts = PromptSet.load(tasks=tasks)
    sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
    engine = OpenAIEngine(f"{url}/v1", model="sim", sampling=sampling)
    samples = make_samples(tiles)
    discarded: list[int] = []

    class Recording(CaptionTelemetry):
        def discard(self, request: Any) -> None:  # attempts asked ahead that rsbuild did not need
            super().discard(request)
            discarded.append(request.seed)

    telemetry = Recording()
    with ThreadCPU() as cpu:
        cpu0, t0 = time.process_time(), time.perf_counter()
        out = list(annotate(samples, [engine], cfg, prompts=prompts, telemetry=telemetry))
        wall = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    engine.close()
    by_task: dict[str, int] = {}
    for sample in out:
        for ann in sample.annotations:
            by_task[ann["task"]] = by_task.get(ann["task"], 0) + 1
    return {"wall_s": wall, "client_cpu_s": cpu_s, "threads_cpu_s": cpu.by_name(), "samples": len(out),
            "annotations": by_task, "failures": sum(len(s.failures) for s in out),
            "telemetry": telemetry.to_json(), "engine": engine.telemetry(), "discarded_seeds": discarded}


async def _plain(url: str, bodies: list[dict[str, Any]], concurrency: int, transport: str) -> dict[str, Any]:
    import openai

    transport, _, mode = transport.partition("+")
    raw = mode == "raw"
    http = openai.DefaultAioHttpClient(timeout=120.0) if transport == "aiohttp" else None  # needs openai[aiohttp]
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-no-key", timeout=120.0, max_retries=0, http_client=http)
    semaphore = asyncio.Semaphore(concurrency)
    texts = 0

    async def one(body: dict[str, Any]) -> None:
        nonlocal texts
        extra = {k: body[k] for k in ("max_tokens", "temperature", "top_p") if body.get(k) is not None}
        async with semaphore:
            if raw:  # the request path rsbuild's engine takes: the body as JSON, parsed here
                payload = {"model": "sim", "messages": body["messages"], "n": body["n"] or 1, "seed": body["seed"], **extra}
                texts += len(json.loads(await client.post("/chat/completions", body=payload, cast_to=bytes))["choices"])
                return
            response = await client.chat.completions.create(model="sim", messages=body["messages"], n=body["n"] or 1,
                                                            seed=body["seed"], **extra)
        texts += len(response.choices)

    await asyncio.gather(*(one(b) for b in bodies))
    await client.close()
    return {"texts": texts}


def run_plain(url: str, bodies: list[dict[str, Any]], concurrency: int, transport: str) -> dict[str, Any]:
    with ThreadCPU() as cpu:
        cpu0, t0 = time.process_time(), time.perf_counter()
        out = asyncio.run(_plain(url, bodies, concurrency, transport))
        wall = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    return {"wall_s": wall, "client_cpu_s": cpu_s, "threads_cpu_s": cpu.by_name(), **out}


def profile_check(url: str, tiles: list[dict[str, Any]], tasks: list[str], paraphrases: int) -> dict[str, Any]:
    """One extra rsbuild run with the check timed (``check_text``, wrapped in this process only; not counted above)."""
    import rsbuild.captions.scheduler as scheduler

    original = scheduler.check_text
    times: list[float] = []

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            times.append(time.perf_counter() - t)

    scheduler.check_text = timed
    try:
        run = run_rsbuild(url, tiles, tasks, paraphrases)
    finally:
        scheduler.check_text = original
    total = sum(times)
    times.sort()
    return {"wall_s": round(run["wall_s"], 2), "client_cpu_s": round(run["client_cpu_s"], 2),
            "threads_cpu_s": run["threads_cpu_s"], "check_calls": len(times), "check_total_s": round(total, 2),
            "check_ms_mean": round(1000 * total / max(1, len(times)), 3),
            "check_ms_p50": round(1000 * times[len(times) // 2], 3) if times else None,
            "check_ms_p99": round(1000 * times[int(len(times) * 0.99)], 3) if times else None,
            "check_share_of_wall": round(total / run["wall_s"], 3)}


# ======================================================================================== main


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def fmt_spread(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=2000, help="tiles (samples) per run")
    parser.add_argument("--rounds", type=int, default=3, help="rsbuild/plain pairs per configuration")
    parser.add_argument("--slots", type=int, default=256, help="server slots S (sequences decoded at once)")
    parser.add_argument("--rate", type=float, default=20.0, help="decode rate R per sequence, tokens/s")
    parser.add_argument("--out-tokens", type=int, default=80,
                        help="output tokens per answer (default 80 / 20 tok/s = 4 s per sequence: shorter ones make "
                             "the AsyncOpenAI client, ~5-9 ms CPU per request here, the limit even for the plain client)")
    parser.add_argument("--concurrency", type=int, default=256, help="plain client's semaphore (rsbuild's default is 256)")
    parser.add_argument("--plain-transport", choices=("httpx", "aiohttp", "httpx+raw", "aiohttp+raw"), default="httpx",
                        help="HTTP transport of the plain AsyncOpenAI client (openai's default httpx, as rsbuild's engine); "
                             "+raw: post the body and parse the JSON reply as rsbuild's engine does, not chat.completions.create")
    parser.add_argument("--project-tiles", type=int, default=1_000_000,
                        help="tiles of the run the whole-run occupancy is projected to (steady state, same ramp and tail)")
    parser.add_argument("--configs", default="area,class,revise:2;area,class:0",
                        help="';'-separated TASKS:PARAPHRASES configurations")
    parser.add_argument("--in-turn", action="store_true",
                        help="also run rsbuild with captions.speculative_reasks = false (client 'in-turn'), interleaved")
    parser.add_argument("--profile-check", action="store_true", help="one extra rsbuild run per config timing check_caption")
    parser.add_argument("--json-out", default=None, help="also write the full results (with timelines) here")
    # server mode (internal)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lookup", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        asyncio.run(serve(args))
        return

    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} (cpus: {os.cpu_count()})", flush=True)
    t0 = time.perf_counter()
    tiles = build_tiles(args.tiles)
    lookup, lookup_counts = build_lookup(tiles)
    print(f"prepared {len(tiles)} tiles and {len(lookup)} answers in {time.perf_counter() - t0:.1f}s: {lookup_counts}", flush=True)
    fd, lookup_path = tempfile.mkstemp(prefix="bench_caption_lookup_", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(lookup, f)

    configs = []
    for item in args.configs.split(";"):
        tasks, _, para = item.partition(":")
        configs.append((tasks.split(","), int(para or 0)))

    seq_s = args.out_tokens / args.rate
    print(f"server: S={args.slots} slots, R={args.rate:g} tok/s per sequence, {args.out_tokens} output tokens "
          f"-> {seq_s:.2f}s per sequence, ideal {args.slots / seq_s:.0f} sequences/s", flush=True)
    server = Server(lookup_path, args.slots, args.rate, args.out_tokens)
    rows: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    bodies: list[dict[str, Any]] = []
    timelines: dict[tuple[str, int, str], Any] = {}
    header = (f"{'config':<24} {'rnd':>3} {'client':<8} {'wall_s':>7} {'reqs':>6} {'seqs':>6} {'seq/s':>7} {'occup':>6} "
              f"{'steady':>6} {'ramp':>6} {'middle':>6} {'tail':>6} {'tail_s':>6} {'maxrun':>6} {'cli_cpu':>7} {'srv_cpu':>7} {'load1':>5}")
    lines = [header, "-" * len(header)]
    print(header, flush=True)
    try:
        for tasks, paraphrases in configs:
            name = f"{'+'.join(tasks)} p={paraphrases}"
            for rnd in range(1, args.rounds + 1):
                for client in ("rsbuild", "in-turn", "plain") if args.in_turn else ("rsbuild", "plain"):
                    server.reset()
                    if client != "plain":
                        run = run_rsbuild(server.url, tiles, tasks, paraphrases, speculate=client == "rsbuild")
                    else:
                        run = run_plain(server.url, bodies, args.concurrency, args.plain_transport)  # rsbuild's requests
                    stats = server.stats(bodies=True)
                    received = stats.pop("bodies")
                    unneeded = set(run.pop("discarded_seeds", []))
                    if client == "rsbuild":  # the plain client replays what rsbuild needed (not its discarded attempts)
                        bodies = [b for b in received if b.get("seed") not in unneeded]
                    useful = sum(int(b.get("n") or 1) for b in bodies)
                    losses = {**timeline_losses(stats), **steady_state(stats, received, args.tiles, args.project_tiles)}
                    timelines[(name, rnd, client)] = {"timeline": stats.pop("timeline"),
                                                      "requests": [{k: b.get(k) for k in ("n", "seed", "t_arrive", "t_done")}
                                                                   for b in received]}
                    row = {"config": name, "round": rnd, "client": client, **run, "server": stats, "losses": losses,
                           "useful_sequences": useful, "seq_per_s": useful / run["wall_s"],
                           "useful_occupancy": useful * seq_s / (args.slots * run["wall_s"]), "load1": os.getloadavg()[0]}
                    rows.append(row)
                    line = (f"{name:<24} {rnd:>3} {client:<8} {run['wall_s']:>7.2f} {stats['requests']:>6} "
                            f"{useful:>6} {row['seq_per_s']:>7.1f} {row['useful_occupancy']:>6.3f} {losses['steady']:>6.3f} "
                            f"{losses['ramp']:>6.3f} {losses['middle']:>6.3f} {losses['tail']:>6.3f} {losses['tail_s']:>6.2f} "
                            f"{stats['max_running']:>6} {run['client_cpu_s']:>7.1f} {stats['server_cpu_s']:>7.1f} {row['load1']:>5.2f}")
                    lines.append(line)
                    print(line, flush=True)
            if args.profile_check:
                profiles[name] = profile_check(server.url, tiles, tasks, paraphrases)
    finally:
        server.stop()
        os.unlink(lookup_path)

    summary: dict[str, Any] = {}
    for tasks, paraphrases in configs:
        name = f"{'+'.join(tasks)} p={paraphrases}"
        mine = [r for r in rows if r["config"] == name and r["client"] == "rsbuild"]
        plain = [r for r in rows if r["config"] == name and r["client"] == "plain"]
        ratios = [a["seq_per_s"] / b["seq_per_s"] for a, b in zip(mine, plain)]
        in_turn = [r for r in rows if r["config"] == name and r["client"] == "in-turn"]
        summary[name] = {
            "rsbuild_occupancy": spread([r["useful_occupancy"] for r in mine]),
            "plain_occupancy": spread([r["useful_occupancy"] for r in plain]),
            "rsbuild_server_busy": spread([r["server"]["occupancy"] for r in mine]),
            "rsbuild_speculative": mine[-1]["telemetry"].get("speculative_requests"),
            "rsbuild_speculative_discarded": mine[-1]["telemetry"].get("speculative_discarded"),
            "throughput_ratio": spread(ratios),
            "rsbuild_steady_occupancy": spread([r["losses"]["steady"] for r in mine]),
            "plain_steady_occupancy": spread([r["losses"]["steady"] for r in plain]),
            "steady_ratio": spread([a["losses"]["steady"] / b["losses"]["steady"] for a, b in zip(mine, plain)
                                    if b["losses"]["steady"] > 0]),
            "rsbuild_projected_occupancy": spread([r["losses"]["projected"] for r in mine]),
            "plain_projected_occupancy": spread([r["losses"]["projected"] for r in plain]),
            "rsbuild_seq_per_s": spread([r["seq_per_s"] for r in mine]),
            "plain_seq_per_s": spread([r["seq_per_s"] for r in plain]),
            "rsbuild_idle_shares": {part: spread([r["losses"][part] for r in mine]) for part in ("ramp", "middle", "tail")},
            "plain_idle_shares": {part: spread([r["losses"][part] for r in plain]) for part in ("ramp", "middle", "tail")},
            "rsbuild_tail_s": spread([r["losses"]["tail_s"] for r in mine]),
            "plain_tail_s": spread([r["losses"]["tail_s"] for r in plain]),
            "rsbuild_client_cpu_s": spread([r["client_cpu_s"] for r in mine]),
            "plain_client_cpu_s": spread([r["client_cpu_s"] for r in plain]),
            "rsbuild_threads_cpu_s": mine[-1]["threads_cpu_s"],
            "plain_threads_cpu_s": plain[-1]["threads_cpu_s"],
            "annotations": mine[-1]["annotations"], "caption_failures": mine[-1]["failures"],
            "in_turn_occupancy": spread([r["useful_occupancy"] for r in in_turn]) if in_turn else None,
            "in_turn_ratio": spread([a["seq_per_s"] / b["seq_per_s"] for a, b in zip(in_turn, plain)]) if in_turn else None,
            "in_turn_tail_s": spread([r["losses"]["tail_s"] for r in in_turn]) if in_turn else None,
            "faults_injected": mine[-1]["server"]["faults"], "lookup_misses": mine[-1]["server"]["lookup_misses"],
        }
    load_end = os.getloadavg()
    lines.append("")
    lines.append(f"{'summary (median [min, max])':<28} {'rsbuild occupancy':>24} {'plain occupancy':>24} {'rsbuild/plain seq/s':>24}")
    for name, s in summary.items():
        ok_occ = "ok" if s["rsbuild_occupancy"]["median"] >= 0.95 else "BELOW 0.95"
        ok_ratio = "ok" if s["throughput_ratio"]["median"] >= 0.97 else "BELOW 0.97"
        lines.append(f"{name:<28} {fmt_spread(s['rsbuild_occupancy']):>24} {fmt_spread(s['plain_occupancy']):>24} "
                     f"{fmt_spread(s['throughput_ratio']):>24}   occupancy {ok_occ}, ratio {ok_ratio}")
        lines.append(f"{'':<28} steady state (10th..90th percentile of completions): rsbuild {fmt_spread(s['rsbuild_steady_occupancy'])}, "
                     f"plain {fmt_spread(s['plain_steady_occupancy'])}, ratio {fmt_spread(s['steady_ratio'])}; "
                     f"whole run projected to {args.project_tiles} tiles: rsbuild "
                     f"{fmt_spread(s['rsbuild_projected_occupancy'])}, plain {fmt_spread(s['plain_projected_occupancy'])}")
        ri, pi = s["rsbuild_idle_shares"], s["plain_idle_shares"]
        lines.append(f"{'':<28} idle slot-time share (median) ramp/middle/tail: rsbuild {ri['ramp']['median']:.3f}/"
                     f"{ri['middle']['median']:.3f}/{ri['tail']['median']:.3f} (tail {s['rsbuild_tail_s']['median']:.1f}s), "
                     f"plain {pi['ramp']['median']:.3f}/{pi['middle']['median']:.3f}/{pi['tail']['median']:.3f} "
                     f"(tail {s['plain_tail_s']['median']:.1f}s); client CPU s rsbuild {s['rsbuild_client_cpu_s']['median']:.1f}, "
                     f"plain {s['plain_client_cpu_s']['median']:.1f}")
        if s["in_turn_ratio"] is not None:
            lines.append(f"{'':<28} without speculative re-asks (in-turn): occupancy {fmt_spread(s['in_turn_occupancy'])}, "
                         f"÷ plain {fmt_spread(s['in_turn_ratio'])}, tail {s['in_turn_tail_s']['median']:.1f}s; "
                         f"rsbuild asked {s['rsbuild_speculative']} ahead, dropped {s['rsbuild_speculative_discarded']}")
        if s["plain_occupancy"]["min"] < 0.97:
            lines.append(f"{'':<28} WARNING: the plain client stays below 0.97 occupancy: the simulation itself limits; "
                         "lower --rate or raise --out-tokens")
    for name, p in profiles.items():
        lines.append(f"check_caption profile, {name}: {p}")
    lines.append(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; "
                 f"at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    print("\n".join(lines[len(rows) + 2:]), flush=True)
    result = {
        "bench": "caption_occupancy", "tiles": args.tiles, "rounds": args.rounds, "slots": args.slots,
        "rate_tok_s": args.rate, "out_tokens": args.out_tokens, "seq_seconds": seq_s, "lookup": lookup_counts,
        "load_start": load_start, "load_end": load_end, "summary": summary, "check_profile": profiles,
        "runs": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k not in ("telemetry",)}
                 for r in rows],
    }
    if args.json_out:
        full = {**result, "runs_full": rows, "timelines": [{"config": k[0], "round": k[1], "client": k[2], **v}
                                                           for k, v in timelines.items()]}
        Path(args.json_out).write_text(json.dumps(full, default=str))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
