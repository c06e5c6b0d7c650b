"""A fault-injecting HTTP proxy on loopback, for tests of how rsbuild survives a bad network.

`FaultProxy(upstream, shares)` forwards GET / HEAD / POST to ``upstream`` (the COG server, a
STAC API, an LLM server) and answers a configurable share of requests with a fault instead:

- ``500``, ``503``, ``429``: that status with a small JSON error body;
- ``reset``: the connection is reset (TCP RST) without an answer;
- ``stall``: nothing is sent for ``stall_s`` seconds (past the client's timeout), then the
  connection closes;
- ``truncate``: the upstream answer with its full ``Content-Length`` but half the body;
- ``wrong_range``: a byte-range request answered with another range of the file (with an honest
  ``Content-Range``); requests without ``Range`` pass through.

Whether a request is faulted, and how, depends only on the seed, the request (method, path,
range, body) and how many times that same request was seen before: reruns fault the same
requests whatever the timing, and a retried request draws again. Requests and faults are counted,
and faulted requests kept (``faulted``; `times_seen` says whether the very same request came again).
Links to the upstream in JSON answers (a STAC API's search link) are rewritten to the proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from rsbuild.config import Config, config_from_dict
from rsbuild.records import Failure, Sample
from rsbuild.testing.processes import LOOPBACK
from rsbuild.testing.servers import RustacServer
from rsbuild.testing.synthetic import FixtureInfo

FAULT_KINDS = ("500", "503", "429", "reset", "stall", "truncate", "wrong_range")
_FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified")
_DROPPED_REQUEST_HEADERS = {"host", "connection", "keep-alive", "accept-encoding", "content-length", "proxy-connection"}


def draw(seed: int, request_id: str, occurrence: int) -> float:
    """A number in [0, 1) from the seed, the request and its occurrence (no shared random state)."""
    digest = hashlib.sha256(f"{seed}\x1f{request_id}\x1f{occurrence}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        byte_range = self.headers.get("Range")
        kind = proxy.choose(self.command, self.path, byte_range, body)
        if kind in ("500", "503", "429"):
            payload = json.dumps({"error": {"message": f"injected {kind}", "type": "server_error"}}).encode()
            self._reply(int(kind), {"Content-Type": "application/json"}, payload)
            return
        if kind == "reset":
            self._reset()
            return
        if kind == "stall":
            proxy.stopping.wait(proxy.stall_s)
            self.close_connection = True
            return
        if kind == "wrong_range" and byte_range:
            byte_range = _shifted(byte_range)
        status, headers, answer = proxy.forward(self.command, self.path, self.headers, body, byte_range)
        if kind == "truncate" and len(answer) > 1 and self.command != "HEAD":
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self._reset()
            return
        self._reply(status, headers, proxy.rewrite(headers, answer))

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        length = headers.pop("Content-Length", None) if self.command == "HEAD" else None
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the client sees a connection reset."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def _shifted(header: str) -> str:
    """``bytes=a-b`` moved forward by half its length (at least one byte)."""
    try:
        first, last = (int(v) for v in header.split("=", 1)[1].split(",")[0].split("-"))
    except ValueError:
        return header
    shift = max(1, (last - first + 1) // 2)
    return f"bytes={first + shift}-{last + shift}"


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (they do, after a fault) are not errors."""


class FaultProxy:
    """A loopback HTTP proxy in front of ``upstream`` that injects faults by share (see module doc).

    >>> with FaultProxy(cog_server.url, {"503": 0.1, "reset": 0.1}, seed=1) as proxy:
    ...     rasterio.open(f"{proxy.url}/scene/red.tif")
    """

    def __init__(self, upstream: str, shares: dict[str, float] | None = None, *, seed: int = 0,
                 stall_s: float = 10.0, upstream_timeout_s: float = 60.0) -> None:
        unknown = set(shares or {}) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        if sum((shares or {}).values()) > 1:
            raise ValueError("fault shares add up to more than 1")
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or LOOPBACK
        self.upstream_port = parts.port or 80
        self.upstream_prefix = parts.path.rstrip("/")
        self.shares = dict(shares or {})
        self.seed = seed
        self.stall_s = stall_s
        self.upstream_timeout_s = upstream_timeout_s
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.faulted: list[tuple[str, str, bytes]] = []  # (kind, request id, body) of every faulted request
        self._serving: tuple[_ProxyServer, threading.Thread] | None = None
        self.port = 0

    # -- faults ------------------------------------------------------------------------------

    def choose(self, method: str, path: str, byte_range: str | None, body: bytes) -> str | None:
        """The fault for this request (None: forward it), counted."""
        request_id = f"{method} {path} {byte_range or ''} {hashlib.sha256(body).hexdigest()}"
        with self._lock:
            occurrence = self._seen[request_id]
            self._seen[request_id] += 1
            self.requests += 1
        value, edge = draw(self.seed, request_id, occurrence), 0.0
        for kind in FAULT_KINDS:
            edge += self.shares.get(kind, 0.0)
            if value < edge:
                if kind == "wrong_range" and not byte_range:
                    return None
                with self._lock:
                    self.faults[kind] += 1
                    self.faulted.append((kind, request_id, body))
                return kind
        return None

    def forward(self, method: str, path: str, headers: Any, body: bytes, byte_range: str | None
                ) -> tuple[int, dict[str, str], bytes]:
        """The upstream's answer to this request (status, headers kept, body)."""
        sent = {k: v for k, v in headers.items() if k.lower() not in _DROPPED_REQUEST_HEADERS and k.lower() != "range"}
        if byte_range:
            sent["Range"] = byte_range
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout_s)
        try:
            connection.request(method, self.upstream_prefix + path, body=body or None, headers=sent)
            response = connection.getresponse()
            answer = response.read()
            names = (*_FORWARDED_RESPONSE_HEADERS, "Content-Length") if method == "HEAD" else _FORWARDED_RESPONSE_HEADERS
            kept = {name: response.getheader(name) for name in names if response.getheader(name)}
            return response.status, {k: v for k, v in kept.items() if v is not None}, answer
        finally:
            connection.close()

    def rewrite(self, headers: dict[str, str], body: bytes) -> bytes:
        """JSON answers name the upstream in their links (a STAC API's search link): point them here."""
        if "json" not in headers.get("Content-Type", ""):
            return body
        upstream = f"http://{self.upstream_host}:{self.upstream_port}".encode()
        return body.replace(upstream, self.url.encode())

    def times_seen(self, request_id: str) -> int:
        """How often this very request (method, path, range, body) reached the proxy."""
        with self._lock:
            return self._seen[request_id]

    def counts(self) -> dict[str, Any]:
        """``{"requests": n, "faults": {kind: n}}`` so far."""
        with self._lock:
            return {"requests": self.requests, "faults": dict(sorted(self.faults.items()))}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL (the upstream's path prefix is added when forwarding)."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        httpd = _ProxyServer((LOOPBACK, 0), _Handler)
        httpd.owner = self
        self.port = int(httpd.server_address[1])
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"fault-proxy-{self.port}", daemon=True)
        thread.start()
        self._serving = (httpd, thread)
        return self

    def stop(self) -> None:
        """Stop serving (stalled answers end at once)."""
        self.stopping.set()
        serving, self._serving = self._serving, None
        if serving is not None:
            httpd, thread = serving
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FaultyWorld:
    """The synthetic world behind fault proxies: COGs (scenes and labels) and a STAC API (``rustac serve``).

    ``shares`` apply to both proxies unless ``stac_shares`` gives the STAC API its own.

    ``stac_url`` and ``label_url`` go into a config; the items' hrefs point at the COG proxy. Each
    world has its own ports, so GDAL's per-URL caches never carry over from another world.
    """

    def __init__(self, fixture: FixtureInfo, cog_server_url: str, folder: Path,
                 shares: dict[str, float] | None = None, *, stac_shares: dict[str, float] | None = None,
                 seed: int = 0, stall_s: float = 10.0) -> None:
        self.fixture = fixture
        self.cog = FaultProxy(cog_server_url, shares, seed=seed, stall_s=stall_s)
        self.stac_shares = shares if stac_shares is None else stac_shares
        self.seed, self.stall_s, self.folder = seed + 1, stall_s, folder
        self._stack = contextlib.ExitStack()
        self.stac: FaultProxy | None = None

    def __enter__(self) -> Self:
        try:
            self._stack.enter_context(self.cog)
            files = self.fixture.write_stac_api_files(self.cog.url, self.folder)
            api = self._stack.enter_context(RustacServer(files))
            self.stac = self._stack.enter_context(FaultProxy(api.url, self.stac_shares, seed=self.seed, stall_s=self.stall_s))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def stac_url(self) -> str:
        assert self.stac is not None, "enter the world first"
        return self.stac.url

    @property
    def label_url(self) -> str:
        rel = self.fixture.label_4326_path.relative_to(self.fixture.cog_dir).as_posix()
        return f"{self.cog.url}/{rel}"

    def config(self, **imagery: Any) -> Config:
        """A fetch config for this world (scenes from its STAC API, labels from its COG proxy)."""
        return config_from_dict({
            "pois": {"path": str(self.fixture.pois_path)},
            "scenes": {"catalog": self.stac_url, "collection": "sentinel-2-l2a", "datetime": "2024-07-01/2024-07-31"},
            "imagery": {"aoi_size": self.fixture.aoi_size, "tile_size": 128, "tile_stride": 64, "output_size": 64,
                        "read_workers": 4, "cpu_workers": 0, **imagery},
            "labels": {"source": "cog", "url": self.label_url},
        })  # fmt: skip

    def fetch(self, cfg: Config) -> list[Sample | Failure]:
        """Every POI of the fixture through the fetch stage: samples and failures in input order."""
        from rsbuild.chips.fetch import Fetcher
        from rsbuild.run.pipeline import make_searcher
        from rsbuild.sources.labels.factory import make_label_source

        with Fetcher(cfg, make_searcher(cfg), make_label_source(cfg.labels)) as fetcher:
            return [record for _poi, group in fetcher.run(list(self.fixture.pois)) for record in group]

    def counts(self) -> dict[str, Any]:
        """Requests and faults per proxy: ``{"cog": {...}, "stac": {...}}``."""
        return {"cog": self.cog.counts(), "stac": self.stac.counts() if self.stac else {}}


__all__ = ["FAULT_KINDS", "FaultProxy", "FaultyWorld", "draw"]
