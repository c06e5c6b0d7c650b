"""The `openai` engine against a real llama.cpp server behind the fault-injecting proxy.

Each fault kind on 10 % of the requests: every caption still comes back, and the retries are
counted under ``llm``. A retry is the very same request (same body: messages, seed, sampling), so
every request the server answered only once has the same text as without faults. A ``truncate``d
answer was generated upstream before the proxy cut it, and llama-cpp-python then answers the
retry from the prompt it has just evaluated (it reuses the longest common prefix of its previous
prompt): the last prompt token is evaluated on its own, which may change the float rounding and
so a sampled token. For those requests the test asserts the identical resend, not the same text.
"""

from __future__ import annotations

import json
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
        resent = all(proxy.times_seen(request_id) >= 2 for _, request_id, _ in proxy.faulted)
        faulted = [json.loads(body) for _, _, body in proxy.faulted]
    assert counts["faults"].get(kind, 0) >= 1, counts
    assert all(r.error is None and r.texts for r in results)
    assert resent  # each faulted request came again byte for byte (same messages, seed, sampling)
    answered_twice = {r.request.key for r in results if kind == "truncate" and any(
        body["messages"] == list(r.request.messages) for body in faulted)}
    assert {r.request.key: r.texts for r in results if r.request.key not in answered_twice} == {
        key: texts for key, texts in reference.items() if key not in answered_twice}
    assert len(answered_twice) < REQUESTS // 2  # most requests still compared with the reference
    assert RETRIES.snapshot()["llm"]["retries"] == engine.counters["retries"] >= counts["faults"][kind]
