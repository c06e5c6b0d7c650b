"""No request twice: a sqlite cache of caption texts and an engine wrapper that uses it.

A result is keyed by (model, template sha256, stats sha256, task, subject, seed, n, sampling,
messages sha256): everything that decides the texts, so identical inputs share one entry and
reruns and resumed runs send only the requests that are missing. Only complete, successful
results are stored, one transaction per batch.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult
from rsbuild.stats import stats_sha256

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

    def get(self, key: CacheKey) -> list[str] | None:
        """The stored texts for ``key``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT texts FROM captions WHERE model=? AND template_sha256=? AND stats_sha256=? "
                "AND task=? AND subject=? AND seed=? AND n=? AND sampling=? AND messages_sha256=?",
                key,
            ).fetchone()
        return None if row is None else list(json.loads(row[0]))

    def put_many(self, items: Sequence[tuple[CacheKey, Sequence[str]]]) -> None:
        """Store several results in one transaction (one commit per batch)."""
        if not items:
            return
        rows = [(*key, json.dumps(list(texts), ensure_ascii=False)) for key, texts in items]
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
        self.hits = 0
        self.misses = 0

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Cached results where present; the rest from the inner engine, in request order."""
        keys = [cache_key(self.name, request) for request in requests]
        results: list[CaptionResult | None] = []
        missing: list[int] = []
        for index, (request, key) in enumerate(zip(requests, keys)):
            texts = self.cache.get(key)
            if texts is None:
                missing.append(index)
                results.append(None)
            else:
                results.append(CaptionResult(request=request, texts=texts, annotator=self.name))
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = self.engine.generate([requests[i] for i in missing])
            if len(fresh) != len(missing):
                raise RuntimeError(f"engine {self.name!r} answered {len(fresh)} of {len(missing)} requests")
            for index, result in zip(missing, fresh):
                results[index] = result
            self.cache.put_many(
                [
                    (keys[i], result.texts)
                    for i, result in zip(missing, fresh)
                    if result.error is None and len(result.texts) >= requests[i].n
                ]
            )
        return [result for result in results if result is not None]  # every slot is filled here

    def builtin_prompt(self, task: str) -> tuple[str, str]:
        """The inner engine's (template name, sha256) for prompt-less engines."""
        return self.engine.builtin_prompt(task)

    def close(self) -> None:
        """Close the inner engine and the cache file."""
        self.engine.close()
        self.cache.close()
