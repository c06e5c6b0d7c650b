"""No request twice: a sqlite cache of caption texts and an engine wrapper that uses it.

A result is keyed by (model, template sha256, stats sha256, task, subject, seed, n, sampling,
messages sha256): everything that decides the texts, so identical inputs share one entry and
reruns and resumed runs send only the requests that are missing. Only complete, successful
results are stored (one transaction per batch, or per streamed result).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult
from rsbuild.chips.stats import stats_sha256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    model TEXT NOT NULL,
    template_sha256 TEXT NOT NULL,
    stats_sha256 TEXT NOT NULL,
    task TEXT NOT NULL,
    subject TEXT NOT NULL,
    seed INTEGER NOT NULL,
    n INTEGER NOT NULL,
    sampling TEXT NOT NULL,
    messages_sha256 TEXT NOT NULL,
    texts TEXT NOT NULL,
    PRIMARY KEY (model, template_sha256, stats_sha256, task, subject, seed, n, sampling, messages_sha256)
)
"""

CacheKey = tuple[str, str, str, str, str, int, int, str, str]


def cache_key(model: str, request: CaptionRequest) -> CacheKey:
    """The cache key of one request answered by ``model``."""
    sampling = json.dumps(dict(request.sampling), sort_keys=True, separators=(",", ":"))
    messages = json.dumps([dict(m) for m in request.messages], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (
        model,
        request.template_sha256,
        stats_sha256(dict(request.stats)),
        request.task,
        request.subject or "",
        int(request.seed),
        int(request.n),
        sampling,
        hashlib.sha256(messages.encode("utf-8")).hexdigest(),
    )


class CaptionCache:
    """Caption texts in one sqlite file; safe to share between runs and processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get(self, key: CacheKey) -> tuple[list[str], list[str]] | None:
        """The stored (texts, finish reasons) for ``key``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT texts FROM captions WHERE model=? AND template_sha256=? AND stats_sha256=? "
                "AND task=? AND subject=? AND seed=? AND n=? AND sampling=? AND messages_sha256=?",
                key,
            ).fetchone()
        if row is None:
            return None
        stored = json.loads(row[0])
        if isinstance(stored, list):  # written before finish reasons were kept
            return [str(t) for t in stored], []
        return list(stored["texts"]), list(stored["finish_reasons"])

    def put_many(self, items: Sequence[tuple[CacheKey, Sequence[str], Sequence[str]]]) -> None:
        """Store several (key, texts, finish reasons) in one transaction."""
        if not items:
            return
        rows = [(*key, json.dumps({"texts": list(texts), "finish_reasons": list(reasons)}, ensure_ascii=False))
                for key, texts, reasons in items]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM captions").fetchone()[0])

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()


class CachedEngine(CaptionEngine):
    """Wraps an engine: answers from the cache, sends only missing requests, stores successes."""

    def __init__(self, engine: CaptionEngine, cache: CaptionCache) -> None:
        self.engine = engine
        self.cache = cache
        self.name = engine.name
        self.needs_prompts = engine.needs_prompts
        self.max_in_flight = engine.max_in_flight
        self.batches_requests = engine.batches_requests
        self.hits = 0
        self.misses = 0

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        """A done future for a cached request; otherwise the inner engine's, stored when it succeeds."""
        key = cache_key(self.name, request)
        stored = self.cache.get(key)
        if stored is not None:
            self.hits += 1
            future: Future[CaptionResult] = Future()
            texts, reasons = stored
            future.set_result(CaptionResult(request=request, texts=texts, annotator=self.name, finish_reasons=reasons,
                                            cached=True))
            return future
        self.misses += 1
        outer: Future[CaptionResult] = Future()
        inner = self.engine.submit(request)
        outer.add_done_callback(lambda done: inner.cancel() if done.cancelled() else None)
        inner.add_done_callback(lambda inner: self._store(key, inner, outer))
        return outer

    def idle_sequences(self) -> int | None:
        """The inner engine's (a cached answer takes no slot)."""
        return self.engine.idle_sequences()

    def _store(self, key: CacheKey, inner: Future[CaptionResult], outer: Future[CaptionResult]) -> None:
        """Store a complete result, then hand it on (so whoever waits sees it cached)."""
        if inner.cancelled() or not outer.set_running_or_notify_cancel():
            outer.cancel()
            return
        exc = inner.exception()
        if exc is not None:
            outer.set_exception(exc)
            return
        result = inner.result()
        try:
            if result.error is None and len(result.texts) >= result.request.n:
                self.cache.put_many([(key, result.texts, result.finish_reasons)])
        finally:
            outer.set_result(result)

    def builtin_prompt(self, task: str) -> tuple[str, str]:
        """The inner engine's (template name, sha256) for prompt-less engines."""
        return self.engine.builtin_prompt(task)

    def telemetry(self) -> dict[str, object]:
        """The inner engine's counters plus cache hits and misses."""
        return {**self.engine.telemetry(), "cache_hits": self.hits, "cache_misses": self.misses}

    def close(self) -> None:
        """Close the inner engine and the cache file."""
        self.engine.close()
        self.cache.close()
