"""Byte ranges of remote rasters over HTTP(S), for GDAL to decode from memory (opt-in:
``RSBUILD_HTTP_RANGES=YES``; see `ENABLE` for why it is not the default yet).

GDAL's own /vsicurl/ reader costs a size probe and a header request per file per thread that
opens it, and one request per row of blocks of a window (it merges only consecutive blocks; its
multi-range reads ignore what plain reads cached). Here instead:

- a file's first bytes (its header: IFDs and block offsets of a COG) are fetched once per process,
  with the file size from ``Content-Range``, and shared by every thread and handle (bounded LRU;
  concurrent first opens of one URL wait for one request);
- before a read, the caller plans the byte ranges of the blocks it needs (`RangeFile.plan`);
  ranges closer than `MERGE_GAP_BYTES` are merged, so a COG's AOI is one request per band;
  a planned range is fetched when GDAL first touches it (blocks GDAL still has cached cost nothing);
- anything GDAL reads outside header and plan is fetched on demand, so pixels never depend on the plan.

Faults: 408, 429 and 5xx answers, timeouts, dropped connections, short bodies and wrong
``Content-Range`` are `RangeError`s with a ``cause``; each request is retried
``GDAL_HTTP_MAX_RETRY`` times (counted under the caller's edge) before the error goes up, where
`rsbuild.sources.raster_io` retries the whole read. Timeouts come from ``GDAL_HTTP_CONNECTTIMEOUT``
and ``GDAL_HTTP_TIMEOUT``, read at each request.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from rsbuild.retries import RETRIES, Backoff

# Merge two block ranges when the bytes between them cost less than another round trip
# (2 MiB at ~100 MB/s is ~20 ms, under a typical 30-100 ms object-store latency).
MERGE_GAP_BYTES = 2 << 20
ON_DEMAND_MIN_BYTES = 16384  # an unplanned read fetches at least this much (GDAL reads IFDs in small pieces)
HEADER_CACHE_FILES = 256
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class RangeError(Exception):
    """A range request failed; ``cause`` names a transient fault ("" for a permanent one)."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class Header:
    """The first bytes of a remote file and its total size."""

    size: int
    data: bytes


# HTTP settings users give GDAL (auth, headers, proxies): with any of them set, http(s) files go
# through GDAL's /vsicurl/ as before, so those settings keep working.
GDAL_HTTP_SETTINGS = ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_USERPWD", "GDAL_HTTP_AUTH",
                      "GDAL_HTTP_BEARER", "GDAL_HTTP_COOKIE", "GDAL_HTTP_PROXY", "GDAL_HTTPS_PROXY", "GDAL_HTTP_NETRC_FILE")
# YES: read http(s) through this module (shared headers, planned ranges). Off by default: GDAL decodes
# through rasterio's Python file opener, whose state is per thread and not yet thread-safe
# (rasterio#3636): a dataset freed in another thread than the one that opened it can crash the
# process (seen in tests/run/test_bad_inputs.py with the fetch stage's threads).
ENABLE = "RSBUILD_HTTP_RANGES"


def is_http(href: str) -> bool:
    """True for http(s) hrefs this module serves: only when ``RSBUILD_HTTP_RANGES=YES`` and GDAL's
    own HTTP settings are not in use."""
    if not href.startswith(("http://", "https://")):
        return False
    if os.environ.get(ENABLE, "").upper() not in ("1", "YES", "TRUE", "ON"):
        return False
    return not any(os.environ.get(name) for name in GDAL_HTTP_SETTINGS)


def redact(url: str) -> str:
    """Drop query strings (signed URLs carry tokens) from messages."""
    return url.split("?", 1)[0]


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class _Client:
    """Pooled httpx clients per process (recreated after a fork): one for https, and one for
    plain http that never loads CA certificates (~0.3 CPU-s per process otherwise)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = -1
        self.clients: dict[bool, httpx.Client] = {}

    def get(self, url: str) -> httpx.Client:
        secure = url.startswith("https://")
        with self.lock:
            if self.pid != os.getpid():
                self.clients, self.pid = {}, os.getpid()
            if secure not in self.clients:
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
                # redirects are followed by `_fetch_once`, each hop with the client of its scheme:
                # the plain-http client never speaks TLS, so it needs no certificates
                self.clients[secure] = httpx.Client(limits=limits, follow_redirects=False, verify=secure)
            return self.clients[secure]


_CLIENT = _Client()


def _fetch_once(url: str, start: int, stop: int) -> tuple[bytes, int]:
    """Bytes ``[start, stop)`` of ``url`` (fewer at the end of the file) and the file's size."""
    timeout = httpx.Timeout(_env_float("GDAL_HTTP_TIMEOUT", 30.0), connect=_env_float("GDAL_HTTP_CONNECTTIMEOUT", 10.0))
    name = redact(url)
    target = url
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            answer = _CLIENT.get(target).get(target, headers={"Range": f"bytes={start}-{stop - 1}"}, timeout=timeout)
            if not answer.is_redirect:
                break
            target = str(answer.next_request.url) if answer.next_request else target
    except httpx.TimeoutException:
        raise RangeError(f"cannot read {name}: timed out", "timeout") from None
    except httpx.HTTPError as exc:
        raise RangeError(f"cannot read {name}: connection failed ({type(exc).__name__})", "connection") from None
    status = answer.status_code
    if status == 200 and start == 0 and len(answer.content) < stop:  # the whole (small) file
        return answer.content, len(answer.content)
    if status == 200:
        raise RangeError(f"cannot read {name}: the server ignores HTTP Range requests (COGs need them)")
    if status != 206:
        transient = status in (408, 429) or status >= 500
        raise RangeError(f"cannot read {name}: HTTP {status}", f"HTTP {status}" if transient else "")
    match = _CONTENT_RANGE.fullmatch(answer.headers.get("Content-Range", "").strip())
    body = answer.content
    if match is None or match.group(3) == "*":
        raise RangeError(f"cannot read {name}: no Content-Range with the file size in a 206 answer", "bad read")
    first, last, size = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if first != start or last != min(stop, size) - 1 or len(body) != last - first + 1:
        raise RangeError(f"cannot read {name}: asked bytes {start}-{stop - 1}, got {first}-{last} ({len(body)} bytes)",
                         "bad read")
    return body, size


def fetch(url: str, start: int, stop: int, *, edge: str) -> tuple[bytes, int]:
    """`_fetch_once` retried ``GDAL_HTTP_MAX_RETRY`` times on transient faults (counted under ``edge``)."""
    retries = int(_env_float("GDAL_HTTP_MAX_RETRY", 3))
    backoff = Backoff(attempts=retries + 1, base_s=_env_float("GDAL_HTTP_RETRY_DELAY", 0.5), cap_s=4.0)
    for attempt in range(backoff.attempts):
        try:
            return _fetch_once(url, start, stop)
        except RangeError as exc:
            if not exc.cause or attempt == backoff.attempts - 1:
                raise
            RETRIES.retried(edge, exc.cause)
            time.sleep(backoff.delay(attempt, f"{redact(url)}#{start}"))
    raise AssertionError("unreachable")  # pragma: no cover


class _HeaderCache:
    """Headers per URL (LRU); concurrent first requests of one URL wait for one fetch."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, Header] = OrderedDict()
        self.pending: dict[str, threading.Lock] = {}

    def _cached(self, url: str) -> Header | None:
        with self.lock:
            header = self.entries.get(url)
            if header is not None:
                self.entries.move_to_end(url)
            return header

    def get(self, url: str, edge: str) -> Header:
        header = self._cached(url)
        if header is not None:
            return header
        with self.lock:
            url_lock = self.pending.setdefault(url, threading.Lock())
        with url_lock:
            header = self._cached(url)
            if header is not None:
                return header
            try:
                length = max(1024, int(_env_float("GDAL_INGESTED_BYTES_AT_OPEN", 32768)))
                data, size = fetch(url, 0, length, edge=edge)
                header = Header(size, data)
                with self.lock:
                    self.entries[url] = header
                    while len(self.entries) > self.size:
                        self.entries.popitem(last=False)
            finally:
                with self.lock:
                    self.pending.pop(url, None)
        return header

    def drop(self, url: str) -> None:
        with self.lock:
            self.entries.pop(url, None)


HEADERS = _HeaderCache(HEADER_CACHE_FILES)


def merged(ranges: Iterable[tuple[int, int]], gap: int = MERGE_GAP_BYTES) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges sorted and merged where they overlap or lie within ``gap`` bytes."""
    out: list[list[int]] = []
    for start, stop in sorted(ranges):
        if out and start - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return [(start, stop) for start, stop in out]


@dataclass
class _Reads:
    """What one dataset's current read planned and fetched (shared by the file objects GDAL opened for it)."""

    planned: list[tuple[int, int]]
    loaded: list[tuple[int, bytes]]
    error: RangeError | None = None


class RangeFile(io.RawIOBase):
    """A remote file as a seekable binary file for GDAL: header from `HEADERS`, planned ranges
    fetched when first touched, anything else on demand. One per open dataset (not shared
    between threads); `clone` gives GDAL another cursor on the same reads. ``error`` keeps the
    last failed request (GDAL only sees a short read)."""

    def __init__(self, url: str, edge: str, fetch_range: Callable[..., tuple[bytes, int]] = fetch,
                 reads: _Reads | None = None) -> None:
        super().__init__()
        self.url = url
        self.edge = edge
        self.header = HEADERS.get(url, edge)
        self.size = self.header.size
        self.position = 0
        self.reads = reads or _Reads([], [])
        self._fetch = fetch_range

    @property
    def error(self) -> RangeError | None:
        return self.reads.error

    def clone(self) -> RangeFile:
        """Another file object (own position) over the same header, plan and fetched bytes."""
        return RangeFile(self.url, self.edge, self._fetch, self.reads)

    def plan(self, ranges: Iterable[tuple[int, int]]) -> None:
        """The byte ranges the next read needs (merged, fetched lazily)."""
        self.reads.planned = merged((max(0, a), min(self.size, b)) for a, b in ranges if b > a)

    def forget_reads(self) -> None:
        """Drop the plan and what was fetched for it (call after each read: memory stays bounded)."""
        self.reads.planned, self.reads.loaded, self.reads.error = [], [], None

    # io.RawIOBase
    def close(self) -> None:
        """Nothing to release; stays readable (GDAL may still touch the file while a dataset closes)."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        stop = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if stop <= self.position:
            return b""
        data = bytes(self._bytes(self.position, stop))
        self.position = stop
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _bytes(self, start: int, stop: int) -> memoryview:
        if stop <= len(self.header.data):
            return memoryview(self.header.data)[start:stop]
        reads = self.reads
        for first, chunk in reads.loaded:
            if first <= start and stop <= first + len(chunk):
                return memoryview(chunk)[start - first : stop - first]
        span = next(((a, b) for a, b in reads.planned if a <= start and stop <= b), None)
        if span is None:
            span = (start, min(self.size, max(stop, start + ON_DEMAND_MIN_BYTES)))
        try:
            chunk, _size = self._fetch(self.url, span[0], span[1], edge=self.edge)
        except RangeError as exc:
            reads.error = exc
            raise
        reads.loaded.append((span[0], chunk))
        return memoryview(chunk)[start - span[0] : stop - span[0]]
