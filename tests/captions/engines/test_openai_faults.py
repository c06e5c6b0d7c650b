"""The `openai` engine against a real llama.cpp server behind the fault-injecting proxy.

Each fault kind on 10 % of the requests: every caption still comes back, with the same text as
without faults (texts depend only on request seeds), and the retries are counted under ``llm``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rsbuild.captions.engines.openai import OpenAIEngine
from rsbuild.retries import RETRIES
from rsbuild.testing.faults import FAULT_KINDS, FaultProxy
from tests.captions.engines.test_openai_engine import SAMPLING, caption_requests, needs_llama

REQUESTS = 16
LLM_FAULTS = [kind for kind in FAULT_KINDS if kind != "wrong_range"]  # chat completions send no Range


@pytest.fixture(scope="module")
def llama_server() -> Iterator[Any]:
    from rsbuild.testing.llama_server import LlamaServer

    with LlamaServer() as server:
        yield server


def engine_for(base_url: str) -> OpenAIEngine:
    # one request at a time with a generous timeout: llama.cpp answers one at a time, and a request it
    # abandons on a timeout changes its cache state (and so later texts); only injected stalls time out
    return OpenAIEngine(base_url, concurrency=1, timeout_s=10.0, retries=4, backoff_s=0.05, max_backoff_s=0.5,
                        sampling=SAMPLING)


@pytest.fixture(scope="module")
def reference(llama_server: Any) -> dict[str, list[str]]:
    engine = engine_for(llama_server.base_url)
    try:
        results = engine.generate(caption_requests(REQUESTS))
    finally:
        engine.close()
    assert all(r.error is None and r.texts for r in results)
    return {r.request.key: r.texts for r in results}


@needs_llama
@pytest.mark.parametrize("kind", LLM_FAULTS)
def test_ten_percent_of_each_fault_keeps_every_caption(llama_server: Any, reference: dict[str, list[str]], kind: str):
    upstream = llama_server.base_url.removesuffix("/v1")
    RETRIES.reset()
    with FaultProxy(upstream, {kind: 0.1}, seed=5, stall_s=12.0) as proxy:
        engine = engine_for(f"{proxy.url}/v1")
        try:
            results = engine.generate(caption_requests(REQUESTS))
        finally:
            engine.close()
        counts = proxy.counts()
    assert counts["faults"].get(kind, 0) >= 1, counts
    assert {r.request.key: r.texts for r in results} == reference
    assert all(r.error is None for r in results)
    assert RETRIES.snapshot()["llm"]["retries"] == engine.counters["retries"] >= counts["faults"][kind]
