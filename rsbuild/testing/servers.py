"""Real servers on 127.0.0.1 for tests, benchmarks and the demo.

* ``RangeHTTPServer`` serves a folder over HTTP/1.1 with byte ranges, so GDAL can read COGs
  through ``/vsicurl/`` (``python -m http.server`` ignores ``Range``). It counts requests and
  bytes, keeps a request log and can delay every request to emulate a remote object store.
* ``RustacServer`` runs ``rustac serve`` (an in-memory STAC API: bbox, datetime, collections,
  ids via POST /search; no ``query`` / ``filter``).
* ``StacFastapiStaticServer`` runs stac-fastapi-static over a static catalog (CQL2 ``filter``).

Every server is a context manager with a ``.url``; subprocess servers run in their own process
group and are terminated (then killed) on exit, at interpreter exit as a last resort.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Self

LOOPBACK = "127.0.0.1"
_COPY_CHUNK = 1 << 16
_RANGE_RE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
_CONTENT_TYPES = {
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".csv": "text/csv",
    ".png": "image/png",
    ".txt": "text/plain",
}


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 20.0, *, process: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers with any HTTP status below 500.

    Raises ``RuntimeError`` when ``process`` (if given) exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with code {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                if response.status < 500:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s ({last_error})")


# --------------------------------------------------------------------------- range-capable HTTP


@dataclass(frozen=True)
class RequestRecord:
    """One request seen by ``RangeHTTPServer``: method, URL path, raw Range header (or None)."""

    method: str
    path: str
    range: str | None


class ByteRangeError(ValueError):
    """A Range header that cannot be satisfied for the file's size (answer 416)."""


def parse_byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte range of a single-range ``Range`` header.

    Returns None when the header should be ignored (not ``bytes=``, malformed or several ranges:
    the whole body is sent). Raises ``ByteRangeError`` when the range lies outside the file.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_RE.match(spec)
    if not match or match.group(0).strip() == "-":
        return None
    first_text, last_text = match.groups()
    if not first_text:  # suffix range: the last n bytes
        length = int(last_text)
        if length == 0 or size == 0:
            raise ByteRangeError(header)
        return max(0, size - length), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last < first:
        return None
    if first >= size:
        raise ByteRangeError(header)
    return first, min(last, size - 1)


class _RangeRequestHandler(BaseHTTPRequestHandler):
    """GET / HEAD of files under the server's root, honouring single byte ranges."""

    protocol_version = "HTTP/1.1"
    server: _OwnedHTTPServer

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self, send_body: bool) -> None:
        owner = self.server.owner
        range_header = self.headers.get("Range")
        owner._record(RequestRecord(self.command, self.path, range_header))
        if owner.latency_s > 0:
            time.sleep(owner.latency_s)
        path = owner._resolve(self.path)
        if path is None:
            self._send_empty(HTTPStatus.NOT_FOUND)
            return
        size = path.stat().st_size
        byte_range: tuple[int, int] | None = None
        if range_header:
            try:
                byte_range = parse_byte_range(range_header, size)
            except ByteRangeError:
                self._send_empty(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"})
                return
        first, last = byte_range if byte_range else (0, size - 1)
        length = max(0, last - first + 1)
        self.send_response(HTTPStatus.PARTIAL_CONTENT if byte_range else HTTPStatus.OK)
        self.send_header("Content-Type", _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if byte_range:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if send_body and length:
            self._copy(path, first, length)

    def _copy(self, path: Path, first: int, length: int) -> None:
        sent = 0
        try:
            with path.open("rb") as handle:
                handle.seek(first)
                while sent < length:
                    chunk = handle.read(min(_COPY_CHUNK, length - sent))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the client hung up mid-body (GDAL does)
            self.close_connection = True
        finally:
            self.server.owner._add_bytes(sent)

    def _send_empty(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _OwnedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: RangeHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client drops its connection; report anything else."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RangeHTTPServer:
    """Threaded HTTP/1.1 file server with byte ranges, counters and optional latency.

    >>> with RangeHTTPServer(folder) as server:
    ...     rasterio.open(f"{server.url}/scene/red.tif")
    """

    def __init__(self, root: Path | str, host: str = LOOPBACK, port: int = 0, latency_s: float = 0.0) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self.latency_s = float(latency_s)
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._methods: Counter[str] = Counter()
        self._bytes_sent = 0
        self._httpd: _OwnedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> Self:
        """Bind and serve in a background thread."""
        if self._httpd is not None:
            return self
        httpd = _OwnedHTTPServer((self.host, self.port), _RangeRequestHandler)
        httpd.owner = self
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"range-http-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.port}"

    # statistics
    @property
    def requests(self) -> int:
        """Requests received since start or the last ``reset_stats()``."""
        with self._lock:
            return len(self._log)

    @property
    def requests_by_method(self) -> dict[str, int]:
        """Request counts per HTTP method."""
        with self._lock:
            return dict(self._methods)

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent."""
        with self._lock:
            return self._bytes_sent

    @property
    def request_log(self) -> list[RequestRecord]:
        """A copy of the request log, in arrival order."""
        with self._lock:
            return list(self._log)

    def reset_stats(self) -> None:
        """Zero the counters and clear the request log."""
        with self._lock:
            self._log.clear()
            self._methods.clear()
            self._bytes_sent = 0

    # used by the handler
    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self._methods[record.method] += 1

    def _add_bytes(self, count: int) -> None:
        with self._lock:
            self._bytes_sent += count

    def _resolve(self, url_path: str) -> Path | None:
        """The file under root named by a URL path, or None (missing, folder or outside root)."""
        relative = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path).lstrip("/")
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate


# --------------------------------------------------------------------------- subprocess servers

_LIVE_PROCESSES: set[subprocess.Popen] = set()


def _kill_process_group(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within ``grace_s``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=grace_s)
    _LIVE_PROCESSES.discard(process)


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_LIVE_PROCESSES):
        _kill_process_group(process, grace_s=2.0)


class _SubprocessServer:
    """A server run as a child process on a free loopback port (base for the STAC APIs)."""

    name = "server"
    startup_timeout_s = 30.0
    start_attempts = 3  # the free port may be taken between choosing and binding it

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _environment(self, port: int) -> dict[str, str]:
        return dict(os.environ)

    def _working_dir(self) -> str | None:
        return None

    def _probe_path(self) -> str:
        return "/"

    @property
    def url(self) -> str:
        """Root URL of the API without a trailing slash."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        """Launch the process and wait until it answers; retries on a lost port race."""
        if self._process is not None:
            return self
        errors: list[str] = []
        for _ in range(self.start_attempts):
            port = free_port()
            self._launch(port)
            try:
                wait_until_up(self.url + self._probe_path(), self.startup_timeout_s, process=self._process)
                return self
            except RuntimeError as exc:
                errors.append(f"{exc}\n{self.output()[-2000:]}")
                self.stop()
        raise RuntimeError(f"{self.name} did not start:\n" + "\n---\n".join(errors))

    def _launch(self, port: int) -> None:
        self.port = port
        self._log_file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in stop()
        self._process = subprocess.Popen(
            self._command(port),
            env=self._environment(port),
            cwd=self._working_dir(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: we can kill its children too
        )
        _LIVE_PROCESSES.add(self._process)

    def output(self) -> str:
        """What the process printed so far (stdout and stderr), for error messages."""
        if self._log_file is None:
            return ""
        self._log_file.flush()
        self._log_file.seek(0)
        return self._log_file.read().decode("utf-8", "replace")

    def stop(self) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL)."""
        if self._process is not None:
            _kill_process_group(self._process)
            self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _console_script(name: str) -> str:
    """Path of an installed console script (next to this interpreter first, then PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the {name!r} command is not installed; install it with: pip install {name}")
    return found


class RustacServer(_SubprocessServer):
    """``rustac serve`` over collection / item / item-collection JSON files (in-memory STAC API).

    ``rustac.main`` parses the process arguments after the interpreter, so it is started through
    its console script (``python .../bin/rustac serve --addr HOST:PORT FILES...``).
    """

    name = "rustac serve"

    def __init__(self, paths: list[Path] | list[str]) -> None:
        super().__init__()
        self.paths = [Path(p).resolve() for p in paths]

    def _command(self, port: int) -> list[str]:
        script = _console_script("rustac")
        return [sys.executable, script, "serve", "--addr", f"{LOOPBACK}:{port}", *map(str, self.paths)]

    def _probe_path(self) -> str:
        return "/conformance"


class StacFastapiStaticServer(_SubprocessServer):
    """stac-fastapi-static (uvicorn) over a static ``catalog.json``.

    Configured through its pydantic settings' environment variables: ``CATALOG_HREF`` (a
    ``file://`` URI or an http(s) URL), ``APP_HOST``, ``APP_PORT``, ``RELOAD=false``.
    """

    name = "stac-fastapi-static"
    startup_timeout_s = 60.0

    def __init__(self, catalog_href: Path | str) -> None:
        super().__init__()
        href = str(catalog_href)
        if "://" not in href:
            href = Path(href).resolve().as_uri()
        self.catalog_href = href
        self._workdir: tempfile.TemporaryDirectory | None = None

    def _command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "stac_fastapi.static.app:app",
            "--host", LOOPBACK, "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip

    def _environment(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CATALOG_HREF=self.catalog_href,
            APP_HOST=LOOPBACK,
            APP_PORT=str(port),
            RELOAD="false",
            LOG_LEVEL="warning",
        )
        return env

    def _working_dir(self) -> str:
        # Settings read a `.env` file from the working directory: run in an empty one.
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="rsbuild-stac-fastapi-")
        return self._workdir.name

    def _probe_path(self) -> str:
        return "/conformance"

    def stop(self) -> None:
        super().stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
