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

Requests go out through `http.client` on keep-alive connections pooled per route (~1 ms of CPU
per 1.5 MiB range, ~6 ms through httpx): ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` as httpx
reads them (https through a CONNECT tunnel; loopback never through a proxy), certificates from
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` else certifi's bundle, redirects followed, a URL's
``user:password`` sent as basic auth. Messages name a URL without its query or credentials.

Faults: 408, 429 and 5xx answers, timeouts, dropped connections, short bodies and wrong
``Content-Range`` are `RangeError`s with a ``cause``; each request is retried
``GDAL_HTTP_MAX_RETRY`` times (counted under the caller's edge) before the error goes up, where
`rsbuild.sources.raster_io` retries the whole read. Timeouts come from ``GDAL_HTTP_CONNECTTIMEOUT``
and ``GDAL_HTTP_TIMEOUT``, read at each request.
"""

from __future__ import annotations

import base64
import functools
import http.client
import ipaddress
import os
import re
import select
import ssl
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urljoin, urlsplit

from rsbuild.retries import RETRIES, Backoff
from rsbuild.sources import tiff
from rsbuild.version import __version__

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
    """Drop query strings (signed URLs carry tokens) and credentials (``user:password@``) from messages."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = base.partition("://")
    if not sep:
        return base
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# --------------------------------------------------------------------------- HTTP/1.1 transport


@dataclass(frozen=True)
class _Route:
    """Where a request's connection goes: the origin, and the HTTP proxy on the way (if any)."""

    scheme: str
    host: str
    port: int
    proxy: tuple[str, int] | None = None
    proxy_auth: str = ""  # a Proxy-Authorization value, from the proxy URL's user:password


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: a proxy cannot reach this machine's loopback, so never via one."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_proxy(host: str, port: int, entries: str) -> bool:
    """``NO_PROXY`` as curl and httpx read it: ``*``, hosts (``example.com`` also covers its
    subdomains, ``.example.com`` only them), ``host:port``, IP addresses and networks."""
    host = host.lower()
    for raw in entries.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if not entry:
            continue
        entry = entry.split("://", 1)[-1]
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]")
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                return True
            continue
        except ValueError:
            pass
        if host == name.lstrip(".") and not name.startswith(".") or host.endswith("." + name.lstrip(".")):
            return True
    return False


def _route(url: str) -> tuple[_Route, str, dict[str, str]]:
    """The route of ``url`` (``HTTP(S)_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` honoured, read at
    each request), the request target and its headers (auth from the URL's user:password)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    path = quote(parts.path or "/", safe=_SAFE) + (f"?{quote(parts.query, safe=_SAFE)}" if parts.query else "")
    headers = {"User-Agent": f"rsbuild/{__version__}"}
    if parts.username is not None:
        headers["Authorization"] = _basic(parts.username, parts.password or "")
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or _is_loopback(host) or _no_proxy(host, port, proxies.get("no", "")):
        return _Route(scheme, host, port), path, headers
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if via.scheme != "http" or not via.hostname:
        raise RangeError(f"cannot read {redact(url)}: the proxy {redact(proxy)} is not an http:// proxy, which this reader "
                         f"needs; set {ENABLE}=NO to read through GDAL (libcurl) instead")
    auth = _basic(via.username, via.password or "") if via.username is not None else ""
    route = _Route(scheme, host, port, (via.hostname, via.port or 80), auth)
    if scheme == "https":  # a CONNECT tunnel: the origin sees the path, the proxy only host and port
        return route, path, headers
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    if auth:
        headers["Proxy-Authorization"] = auth
    return route, f"http://{netloc}{path}", headers


_SAFE = "!#$%&'()*+,/:;=@[]~"  # reserved characters and escapes stay; spaces and non-ASCII are escaped


@functools.lru_cache(maxsize=4)
def _tls(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """Certificates as httpx verifies them: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's
    bundle (built once per process, and only for https: loading it costs ~0.3 CPU-s)."""
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _open(route: _Route, connect_s: float) -> http.client.HTTPConnection:
    """A new connection of ``route``, connected (through its proxy's tunnel for https)."""
    host, port = route.proxy or (route.host, route.port)
    conn: http.client.HTTPConnection
    if route.scheme == "https":
        context = _tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        conn = http.client.HTTPSConnection(host, port, timeout=connect_s, context=context)
        if route.proxy:
            conn.set_tunnel(route.host, route.port,
                            headers={"Proxy-Authorization": route.proxy_auth} if route.proxy_auth else None)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=connect_s)
    conn.connect()
    return conn


def _idle_and_open(conn: http.client.HTTPConnection) -> bool:
    """True when a pooled connection can take a request: connected, and nothing to read (a server
    that closed an idle connection makes its socket readable)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        return not select.select([sock], [], [], 0)[0]
    except (OSError, ValueError):
        return False


class _Pool:
    """Idle keep-alive connections per route, shared by the threads of a process (a thread takes
    one for a request and gives it back after reading the whole answer; dropped after a fork)."""

    def __init__(self, per_route: int) -> None:
        self.per_route = per_route
        self.lock = threading.Lock()
        self.pid = -1
        self.idle: dict[_Route, list[http.client.HTTPConnection]] = {}

    def take(self, route: _Route) -> http.client.HTTPConnection | None:
        stale = []
        with self.lock:
            if self.pid != os.getpid():
                self.idle, self.pid = {}, os.getpid()
            stack = self.idle.get(route, [])
            found = None
            while stack and found is None:
                conn = stack.pop()
                if _idle_and_open(conn):
                    found = conn
                else:
                    stale.append(conn)
        for conn in stale:
            conn.close()
        return found

    def give(self, route: _Route, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            stack = self.idle.setdefault(route, [])
            if self.pid == os.getpid() and conn.sock is not None and len(stack) < self.per_route:
                stack.append(conn)
                return
        conn.close()


_POOL = _Pool(per_route=32)
_REDIRECTS = (301, 302, 303, 307, 308)
_DRAIN_BYTES = 65536  # an error answer's body up to this size is read, so its connection stays open


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes | None  # a 206's range; a 200's first bytes (fewer than asked: the whole file); else None


def _read_answer(response: http.client.HTTPResponse, start: int, stop: int) -> tuple[_Answer, bool]:
    """The answer and whether its connection may be reused (its whole body was read)."""
    status, length = response.status, response.length
    if status == 206:
        return _Answer(status, response.msg, response.read()), not response.will_close
    if status == 200 and start == 0 and (length is None or length < stop):
        body = response.read(stop)  # fewer bytes than asked: the whole (small) file
        return _Answer(status, response.msg, body), response.isclosed() and not response.will_close
    if length is not None and length <= _DRAIN_BYTES:
        response.read()
        return _Answer(status, response.msg, None), not response.will_close
    return _Answer(status, response.msg, None), False


def _request(url: str, start: int, stop: int, name: str) -> _Answer:
    """One GET of bytes ``[start, stop)`` of ``url`` on a pooled connection; faults as `RangeError`."""
    connect_s, read_s = _env_float("GDAL_HTTP_CONNECTTIMEOUT", 10.0), _env_float("GDAL_HTTP_TIMEOUT", 30.0)
    route, target, headers = _route(url)
    headers["Range"] = f"bytes={start}-{stop - 1}"
    conn = _POOL.take(route)
    if conn is None:
        try:
            conn = _open(route, connect_s)
        except TimeoutError:
            raise RangeError(f"cannot read {name}: timed out connecting to its server", "timeout") from None
        except ssl.SSLCertVerificationError as exc:  # retrying cannot help
            raise RangeError(f"cannot read {name}: its server's certificate is not trusted ({exc.verify_message}); "
                             "SSL_CERT_FILE names a bundle to trust") from None
        except (OSError, http.client.HTTPException):  # refused, unreachable, no such host, a proxy that said no
            raise RangeError(f"cannot read {name}: could not connect to its server", "connection") from None
    reuse = False
    try:
        if conn.sock is not None:
            conn.sock.settimeout(read_s)
        conn.request("GET", target, headers=headers)
        with conn.getresponse() as response:
            answer, reuse = _read_answer(response, start, stop)
        return answer
    except TimeoutError:
        raise RangeError(f"cannot read {name}: timed out", "timeout") from None
    except (OSError, http.client.HTTPException) as exc:  # reset, dropped, a body shorter than announced
        raise RangeError(f"cannot read {name}: connection failed ({type(exc).__name__})", "connection") from None
    finally:
        if reuse:
            _POOL.give(route, conn)
        else:
            conn.close()


def _fetch_once(url: str, start: int, stop: int) -> tuple[bytes, int]:
    """Bytes ``[start, stop)`` of ``url`` (fewer at the end of the file) and the file's size."""
    name = redact(url)
    target = url
    for _hop in range(MAX_REDIRECTS + 1):
        answer = _request(target, start, stop, name)
        location = answer.headers.get("Location")
        if answer.status not in _REDIRECTS or not location:
            break
        target = urljoin(target, location)
    status, body = answer.status, answer.body
    if status == 200 and body is not None and len(body) < stop:  # the whole (small) file
        return body, len(body)
    if status == 200:
        raise RangeError(f"cannot read {name}: the server ignores HTTP Range requests (COGs need them)")
    if status != 206:
        # every range asked lies in the file (a header from byte 0, spans within its size): a 416
        # is a wrong answer (a confused proxy), retried like a short read
        transient = status in (408, 416, 429) or status >= 500
        raise RangeError(f"cannot read {name}: HTTP {status}", f"HTTP {status}" if transient else "")
    match = _CONTENT_RANGE.fullmatch((answer.headers.get("Content-Range") or "").strip())
    body = body or b""
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
