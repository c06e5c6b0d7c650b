"""Bounded, order-preserving concurrency helpers, and an event loop in a thread for streaming engines."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

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


class LoopThread:
    """An asyncio event loop running in a daemon thread, for engines that stream requests.

    ``submit(coro)`` schedules a coroutine on the loop from any thread and returns a
    ``concurrent.futures.Future``; ``close()`` runs ``shutdown`` (if given) on the loop, then stops it.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, R]) -> Future[R]:
        """Run ``coro`` on the loop; its result (or exception) arrives in the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self, shutdown: Coroutine[Any, Any, Any] | None = None, timeout: float = 30.0) -> None:
        """Await ``shutdown`` on the loop (bounded by ``timeout``), stop the loop, join the thread."""
        if self.loop.is_closed():
            return
        if shutdown is not None and self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.submit(shutdown).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def libc_prctl() -> Any | None:
    """libc's ``prctl`` (resolved once, so no dlopen runs between fork and exec), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); False elsewhere.

    Worker processes call it first (`rsbuild.chips.fetch`), so a SIGKILLed run leaves none behind.
    """
    prctl = libc_prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def die_with(pid: int) -> None:
    """SIGKILL this process as soon as process ``pid`` ends (a watcher thread; Linux pidfd, else polling).

    For workers of a ``forkserver`` pool: their parent is the forkserver, not the main process, so
    ``die_with_parent`` never fires when the main process is SIGKILLed; and the forkserver waits for
    every worker to close its copy of the main process's "alive" pipe before it exits itself.
    Killing the workers when the main process ends lets the forkserver and resource tracker go too.
    """

    def watch() -> None:
        try:
            handle: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            handle = -1  # already gone
        except (AttributeError, OSError):
            handle = None  # no pidfd: poll
        if handle is not None and handle >= 0:
            select.select([handle], [], [])  # readable once the process has ended
        elif handle is None:
            while pid_exists(pid):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=f"rsbuild-die-with-{pid}", daemon=True).start()


def pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
