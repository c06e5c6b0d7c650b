"""Bounded, order-preserving concurrency helpers."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], executor: Executor, max_in_flight: int) -> Iterator[R]:
    """Like ``executor.map`` but lazy: at most ``max_in_flight`` items are pending at once.

    Results come back in input order, so output is deterministic whatever the timing.
    """
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    try:
        for item in iterator:
            pending.append(executor.submit(fn, item))
            if len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
