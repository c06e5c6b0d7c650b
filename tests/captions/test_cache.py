"""The caption cache: reruns send only missing requests; only complete successes are stored."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, request_seed
from rsbuild.captions.cache import CachedEngine, CaptionCache
from rsbuild.captions.prompts import EXAMPLE_STATS


class RecordingEngine(CaptionEngine):
    """Writes ``'<key> #i seed'`` texts and records every request it is sent; can fail some."""

    needs_prompts = True

    def __init__(self, name: str = "model-a", fail_keys: frozenset[str] = frozenset(), short_keys: frozenset[str] = frozenset()):
        self.name = name
        self.sent: list[CaptionRequest] = []
        self.fail_keys = fail_keys
        self.short_keys = short_keys
        self.closed = False

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        self.sent += requests
        results = []
        for r in requests:
            if r.key in self.fail_keys:
                results.append(CaptionResult(request=r, texts=[], annotator=self.name, error="boom"))
            else:
                n = r.n - 1 if r.key in self.short_keys else r.n
                results.append(CaptionResult(request=r, texts=[f"{r.key} #{i} {r.seed}" for i in range(n)], annotator=self.name))
        return results

    def close(self) -> None:
        self.closed = True


def make_request(key: str, n: int = 2) -> CaptionRequest:
    """A request as the caption stage builds it (same stats for every key, seed from the key)."""
    return CaptionRequest(
        key=key, task="area", stats=EXAMPLE_STATS, messages=({"role": "user", "content": "Facts: ..."},),
        template="area.j2", template_sha256="a" * 64, n=n, seed=request_seed(key, "area", None, 0),
        sampling={"temperature": 0.7},
    )  # fmt: skip


def test_second_run_sends_nothing_and_returns_the_same_texts(tmp_path: Path) -> None:
    requests = [make_request(f"k{i}") for i in range(5)]
    inner = RecordingEngine()
    engine = CachedEngine(inner, CaptionCache(tmp_path / "c.sqlite"))
    first = engine.generate(requests)
    assert len(inner.sent) == 5
    second = engine.generate(requests)
    assert len(inner.sent) == 5  # nothing sent again
    assert [r.texts for r in second] == [r.texts for r in first]
    assert [r.request.key for r in second] == [f"k{i}" for i in range(5)]
    assert all(r.annotator == "model-a" and r.error is None for r in second)
    assert (engine.hits, engine.misses) == (5, 5)


def test_resumed_run_sends_only_missing_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    first = CachedEngine(RecordingEngine(), CaptionCache(path))
    first.generate([make_request("k0"), make_request("k2")])
    first.close()  # the run stops; a new process opens the same file
    inner = RecordingEngine()
    resumed = CachedEngine(inner, CaptionCache(path))
    results = resumed.generate([make_request(f"k{i}") for i in range(4)])
    assert [r.key for r in inner.sent] == ["k1", "k3"]
    assert [r.texts[0] for r in results] == [f"k{i} #0 {make_request(f'k{i}').seed}" for i in range(4)]


def test_key_parts_each_cause_a_miss(tmp_path: Path) -> None:
    cache_path = tmp_path / "c.sqlite"
    inner = RecordingEngine()
    engine = CachedEngine(inner, CaptionCache(cache_path))
    base = make_request("k")
    other_stats = copy.deepcopy(EXAMPLE_STATS)
    other_stats["classes"][0]["share"] = 0.5
    variants = [
        base,
        replace(base, seed=2),
        replace(base, n=3),
        replace(base, template_sha256="b" * 64),
        replace(base, stats=other_stats),
        replace(base, task="class", subject="water"),
        replace(base, sampling={"temperature": 0.2}),
        replace(base, messages=({"role": "user", "content": "Facts: other"},)),
    ]
    engine.generate(variants)
    engine.generate(variants)
    assert len(inner.sent) == len(variants)
    # the same request answered by another model is not a hit
    other = RecordingEngine(name="model-b")
    CachedEngine(other, CaptionCache(cache_path)).generate([base])
    assert len(other.sent) == 1


def test_failures_and_short_results_are_not_stored(tmp_path: Path) -> None:
    cache = CaptionCache(tmp_path / "c.sqlite")
    inner = RecordingEngine(fail_keys=frozenset({"bad"}), short_keys=frozenset({"short"}))
    engine = CachedEngine(inner, cache)
    requests = [make_request("ok"), make_request("bad"), make_request("short")]
    results = engine.generate(requests)
    assert results[1].error == "boom" and len(results[2].texts) == 1
    assert len(cache) == 1
    engine.generate(requests)
    assert [r.key for r in inner.sent] == ["ok", "bad", "short", "bad", "short"]


def test_close_closes_inner_engine(tmp_path: Path) -> None:
    inner = RecordingEngine()
    with CachedEngine(inner, CaptionCache(tmp_path / "c.sqlite")) as engine:
        assert engine.name == "model-a" and engine.needs_prompts
    assert inner.closed


def test_make_engines_leaves_the_template_engine_uncached(tmp_path: Path) -> None:
    from rsbuild.captions.engines.factory import make_engines
    from rsbuild.captions.engines.template import TemplateEngine
    from rsbuild.config import CaptionsConfig

    (engine,) = make_engines(CaptionsConfig(engine="template"), tmp_path)
    assert isinstance(engine, TemplateEngine)
    assert not (tmp_path / "captions.sqlite").exists()


def test_cancelling_a_request_cancels_it_in_the_engine_and_stores_nothing(tmp_path: Path) -> None:
    """The caption stage cancels attempts it asked ahead and no longer needs: the cancel reaches the
    inner engine (a server then drops the request), and a later answer is neither stored nor handed on."""
    class Pending(RecordingEngine):
        def __init__(self) -> None:
            super().__init__()
            self.futures: list[Future[CaptionResult]] = []

        def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
            self.sent.append(request)
            self.futures.append(Future())
            return self.futures[-1]

    inner = Pending()
    cache = CaptionCache(tmp_path / "c.sqlite")
    engine = CachedEngine(inner, cache)
    kept, dropped = engine.submit(make_request("k0")), engine.submit(make_request("k1"))
    assert dropped.cancel() and inner.futures[1].cancelled()
    for future in inner.futures:
        if not future.cancelled():
            (result,) = RecordingEngine().generate([inner.sent[inner.futures.index(future)]])
            future.set_result(result)
    assert kept.result().texts == [f"k0 #{i} {make_request('k0').seed}" for i in range(2)]
    for key in ("k0", "k1"):
        engine.submit(make_request(key))
    assert len(inner.sent) == 3 and inner.sent[-1].key == "k1"  # k0 came from the cache, k1 was asked again
