"""Retries with backoff at every network edge, and how many there were (for ``run_summary.json``).

Each edge (``stac``, ``cog``, ``labels``, ``llm``, ``mapbox``, ``earthengine``) retries a call
that failed on a transient error (connection error, timeout, 429, 5xx, short or wrong read) with
exponential backoff. The jitter is derived from sha256 of the call's key and attempt, so it
spreads retries without shared random state; sleeping longer or shorter never changes output
bytes. `RETRIES` counts retries and give-ups per edge and cause, process-wide and thread-safe.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

EDGES = ("stac", "cog", "labels", "gdal", "llm", "mapbox", "earthengine")  # gdal: GDAL's own retries of one range request


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all; the wait before try ``i + 1`` is ``min(base_s * 2**i, cap_s)`` x jitter."""

    attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 8.0

    def delay(self, attempt: int, key: str) -> float:
        """Seconds to wait after failed try ``attempt`` (0-based): a jitter factor in [0.5, 1.5)."""
        return min(self.base_s * 2**attempt, self.cap_s) * jitter(key, attempt)


def jitter(key: str, attempt: int) -> float:
    """A deterministic factor in [0.5, 1.5) from ``key`` and ``attempt``."""
    digest = hashlib.sha256(f"{key}\x1f{attempt}".encode()).digest()
    return 0.5 + int.from_bytes(digest[:2], "big") / 65536


@dataclass(frozen=True)
class RetryMark:
    """Counts at one moment (`RetryCounts.mark`)."""

    retries: Counter[tuple[str, str]]
    gave_up: Counter[tuple[str, str]]


class RetryCounts:
    """Retries and give-ups per edge and cause (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._retries: Counter[tuple[str, str]] = Counter()
        self._gave_up: Counter[tuple[str, str]] = Counter()

    def retried(self, edge: str, cause: str, count: int = 1) -> None:
        with self._lock:
            self._retries[(edge, cause)] += count

    def gave_up(self, edge: str, cause: str) -> None:
        with self._lock:
            self._gave_up[(edge, cause)] += 1

    def total(self, edge: str | None = None) -> int:
        """Retries of one edge (or all)."""
        with self._lock:
            return sum(n for (e, _), n in self._retries.items() if edge is None or e == edge)

    def mark(self) -> RetryMark:
        """The counts now, to report only what happens after (``snapshot(since=mark)``)."""
        with self._lock:
            return RetryMark(Counter(self._retries), Counter(self._gave_up))

    def snapshot(self, since: RetryMark | None = None) -> dict[str, dict[str, Any]]:
        """``{edge: {"retries": n, "gave_up": m, "causes": {cause: n}}}`` for edges with any event
        (since ``since`` when given)."""
        now = self.mark()
        retries, gave_up = now.retries, now.gave_up
        if since is not None:
            retries, gave_up = retries - since.retries, gave_up - since.gave_up
        out: dict[str, dict[str, Any]] = {}
        for edge in sorted({e for e, _ in retries} | {e for e, _ in gave_up}):
            causes = {c: n for (e, c), n in sorted(retries.items()) if e == edge}
            out[edge] = {
                "retries": sum(causes.values()),
                "gave_up": sum(n for (e, _), n in gave_up.items() if e == edge),
                "causes": causes,
            }
        return out

    def reset(self) -> None:
        with self._lock:
            self._retries.clear()
            self._gave_up.clear()


RETRIES = RetryCounts()


def describe_table(snapshot: dict[str, dict[str, Any]]) -> str:
    """One line for the summary table: ``stac 3 (HTTP 503 2, timeout 1); cog 1 ...``."""
    parts = []
    for edge, counts in snapshot.items():
        causes = ", ".join(f"{cause} {n}" for cause, n in counts["causes"].items())
        gave_up = f", {counts['gave_up']} given up" if counts["gave_up"] else ""
        parts.append(f"{edge} {counts['retries']}" + (f" ({causes}{gave_up})" if causes or gave_up else ""))
    return "; ".join(parts)


def retry_call(
    edge: str,
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], str | None],
    key: str,
    backoff: Backoff = Backoff(),
    before_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried again while it raises an error ``transient`` names a cause for.

    ``before_retry(exc)`` runs before each new try (e.g. to drop a cached handle). After the
    last try the error is re-raised (and counted as given up); non-transient errors pass at once.
    """
    for attempt in range(backoff.attempts):
        try:
            return call()
        except Exception as exc:
            cause = transient(exc)
            if cause is None:
                raise
            if attempt == backoff.attempts - 1:
                RETRIES.gave_up(edge, cause)
                raise
            RETRIES.retried(edge, cause)
            sleep(backoff.delay(attempt, key))
            if before_retry is not None:
                before_retry(exc)
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["EDGES", "RETRIES", "Backoff", "RetryCounts", "RetryMark", "describe_table", "jitter", "retry_call"]
