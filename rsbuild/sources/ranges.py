"""Byte ranges of remote rasters over HTTP(S): the bytes `rsbuild.sources.raster_io` hands GDAL
as compact in-memory copies (`rsbuild.sources.tiff`). On by default; ``RSBUILD_HTTP_RANGES=NO``
(or any of GDAL's own HTTP settings, see `GDAL_HTTP_SETTINGS`) sends http(s) reads through
GDAL's /vsicurl/ instead.

GDAL's own /vsicurl/ reader costs a size probe and a header request per file per thread that
opens it, and one request per row of blocks of a window (it merges only consecutive blocks; its
multi-range reads ignore what plain reads cached). Here instead:

- a file's first bytes (its header: IFDs and block offsets of a COG) are fetched once per process,
  with the file size from ``Content-Range``, parsed once and shared by every thread (bounded LRU;
  concurrent first opens of one URL wait for one request);
- a read's block ranges (planned by the caller from the header) closer than `MERGE_GAP_BYTES`
  are merged, so a COG's AOI is one request per band.

GDAL never calls back into Python here: it decodes bytes already in memory (rasterio's Python
file opener, which an earlier version used, is not thread-safe, rasterio#3636).

Faults: 408, 429 and 5xx answers, timeouts, dropped connections, short bodies and wrong
``Content-Range`` are `RangeError`s with a ``cause``; each request is retried
``GDAL_HTTP_MAX_RETRY`` times (counted under the caller's edge) before the error goes up, where
`rsbuild.sources.raster_io` retries the whole read. Timeouts come from ``GDAL_HTTP_CONNECTTIMEOUT``
and ``GDAL_HTTP_TIMEOUT``, read at each request.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from rsbuild.retries import RETRIES, Backoff
from rsbuild.sources import tiff

# Merge two block ranges when the bytes between them cost less than another round trip
# (2 MiB at ~100 MB/s is ~20 ms, under a typical 30-100 ms object-store latency).
MERGE_GAP_BYTES = 2 << 20
MAX_HEADER_BYTES = 4 << 20  # a TIFF whose structure reaches further is read by GDAL
HEADER_SLACK_BYTES = 65536
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
    """The first bytes of a remote file, its total size and, for a TIFF this reader understands,
    its block layout (else None: GDAL reads the file)."""

    size: int
    data: bytes
    layout: tiff.Layout | None


# HTTP settings users give GDAL (auth, headers, proxies): with any of them set, http(s) files go
# through GDAL's /vsicurl/ as before, so those settings keep working.
GDAL_HTTP_SETTINGS = ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_USERPWD", "GDAL_HTTP_AUTH",
                      "GDAL_HTTP_BEARER", "GDAL_HTTP_COOKIE", "GDAL_HTTP_PROXY", "GDAL_HTTPS_PROXY", "GDAL_HTTP_NETRC_FILE")
# NO (or 0, FALSE, OFF): read http(s) through GDAL's /vsicurl/ instead of this module.
ENABLE = "RSBUILD_HTTP_RANGES"


def is_http(href: str) -> bool:
    """True for http(s) hrefs this module serves: unless ``RSBUILD_HTTP_RANGES=NO`` or GDAL's own
    HTTP settings are in use."""
    if not href.startswith(("http://", "https://")):
        return False
    if os.environ.get(ENABLE, "YES").strip().upper() in ("0", "NO", "FALSE", "OFF"):
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
    except httpx.ConnectError:  # refused, unreachable, no such host
        raise RangeError(f"cannot read {name}: could not connect to its server", "connection") from None
    except httpx.HTTPError as exc:
        raise RangeError(f"cannot read {name}: connection failed ({type(exc).__name__})", "connection") from None
    status = answer.status_code
    if status == 200 and start == 0 and len(answer.content) < stop:  # the whole (small) file
        return answer.content, len(answer.content)
    if status == 200:
        raise RangeError(f"cannot read {name}: the server ignores HTTP Range requests (COGs need them)")
    if status != 206:
        # every range asked lies in the file (a header from byte 0, spans within its size): a 416
        # is a wrong answer (a confused proxy), retried like a short read
        transient = status in (408, 416, 429) or status >= 500
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
                header = _read_header(url, edge)
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


def _read_header(url: str, edge: str) -> Header:
    """The first ``GDAL_INGESTED_BYTES_AT_OPEN`` bytes of ``url``, more (up to `MAX_HEADER_BYTES`)
    when its TIFF structure reaches further, and its layout."""
    length = max(1024, int(_env_float("GDAL_INGESTED_BYTES_AT_OPEN", 32768)))
    data, size = fetch(url, 0, length, edge=edge)
    for _round in range(4):
        try:
            return Header(size, data, tiff.read_layout(data, size))
        except tiff.NeedBytes as need:
            if need.size > MAX_HEADER_BYTES or len(data) >= size:
                break
            # a small file whole; else past what is needed (an IFD's values follow it)
            stop = size if size <= MAX_HEADER_BYTES else min(size, max(need.size + HEADER_SLACK_BYTES, 2 * len(data)))
            more, _size = fetch(url, len(data), stop, edge=edge)
            data += more
        except tiff.Unsupported:
            break
    return Header(size, data, None)


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


def spans(url: str, header: Header, wanted: Iterable[tuple[int, int]], *, edge: str) -> list[tuple[int, bytes]]:
    """``(start, bytes)`` of each ``[start, stop)`` of ``wanted``, merged (`merged`): from the
    header's bytes when they hold it, else one request each."""
    found = []
    for start, stop in merged((max(0, a), min(header.size, b)) for a, b in wanted if b > a):
        if stop <= len(header.data):
            found.append((start, header.data[start:stop]))
        else:
            found.append((start, fetch(url, start, stop, edge=edge)[0]))
    return found
