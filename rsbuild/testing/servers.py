"""Real servers on 127.0.0.1 for tests, benchmarks and the demo.

* ``RangeHTTPServer`` serves a folder over HTTP/1.1 with byte ranges, so GDAL can read COGs
  through ``/vsicurl/`` (``python -m http.server`` ignores ``Range``). It counts requests and
  bytes, keeps a request log and can delay every request to emulate a remote object store.
* ``RustacServer`` runs ``rustac serve`` (an in-memory STAC API: bbox, datetime, collections,
  ids via POST /search; no ``query`` / ``filter``).
* ``StacFastapiStaticServer`` runs stac-fastapi-static over a static catalog (CQL2 ``filter``).
* ``MotoS3Server`` runs moto's S3-compatible server with signed requests enforced (an object
  store with credentials, like Copernicus Data Space's S3).

Every server is a context manager with a ``.url``. The subprocess servers are built on
``rsbuild.testing.processes.ServerProcess``: each runs in its own process group, is terminated
(then killed) on exit, at interpreter exit as a last resort, and dies with its parent process
even when that is SIGKILLed (Linux).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from rsbuild.testing.processes import LOOPBACK, ServerProcess, ServerStartError, free_port, wait_until_up

__all__ = [
    "LOOPBACK",
    "ByteRangeError",
    "MotoS3Server",
    "RangeHTTPServer",
    "RequestRecord",
    "RustacServer",
    "ServerProcess",
    "ServerStartError",
    "StacFastapiStaticServer",
    "free_port",
    "parse_byte_range",
    "wait_until_up",
]

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

    def __init__(self, root: Path | str, host: str = LOOPBACK, port: int = 0, latency_s: float = 0.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.root = Path(root).resolve()
        self.tls = tls  # a server context: https
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
        if self.tls is not None:
            httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True)
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
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123`` (``https://`` with ``tls``)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

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


class _SubprocessServer:
    """A server run as a child process on a free loopback port (base for the STAC APIs).

    A thin layer over ``ServerProcess``: subclasses give the command, environment, working
    folder and probe path for a port.
    """

    name = "server"
    startup_timeout_s = 30.0
    stop_timeout_s = 5.0
    start_attempts = 3  # the free port may be taken between choosing and binding it

    def __init__(self) -> None:
        self.port = 0
        self._server: ServerProcess | None = None

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _environment(self, port: int) -> dict[str, str]:
        return {}

    def _working_dir(self) -> str | None:
        return None

    def _probe_path(self) -> str:
        return "/"

    @property
    def url(self) -> str:
        """Root URL of the API without a trailing slash."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def _process(self) -> subprocess.Popen[bytes] | None:
        return None if self._server is None else self._server.process

    def start(self) -> Self:
        """Launch the process and wait until it answers; retries on a lost port race.

        Raises ``ServerStartError`` (a ``RuntimeError``) with the tail of the server's output.
        """
        if self._server is not None and self._server.running:
            return self
        self.stop()
        self._server = ServerProcess(
            self._command,
            ready_url=self._probe_path(),
            host=LOOPBACK,
            name=self.name,
            startup_timeout_s=self.startup_timeout_s,
            stop_timeout_s=self.stop_timeout_s,
            env=self._environment,
            cwd=self._working_dir(),
            start_attempts=self.start_attempts,
        )
        try:
            self._server.start()
        except BaseException:
            self.stop()
            raise
        self.port = self._server.port
        return self

    def output(self) -> str:
        """What the process printed so far (stdout and stderr), for error messages."""
        return "" if self._server is None else self._server.output()

    def stop(self) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL) and drop its log."""
        if self._server is not None:
            self._server.close()
            self._server = None

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
        return {
            "CATALOG_HREF": self.catalog_href,
            "APP_HOST": LOOPBACK,
            "APP_PORT": str(port),
            "RELOAD": "false",
            "LOG_LEVEL": "warning",
        }

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


class MotoS3Server(_SubprocessServer):
    """moto's S3 server (PyPI ``moto[server]``) on loopback, by default answering only signed requests.

    With ``INITIAL_NO_AUTH_ACTION_COUNT=3`` the first three requests go unchecked: they create an
    IAM user, its policy (all of S3) and its access key. Every later request must carry a valid
    signature of that key (a wrong secret gets ``SignatureDoesNotMatch``, an unsigned request 403),
    as on an object store that needs credentials. The key pair (test-only) is ``access_key`` /
    ``secret_key``; ``client()`` is a boto3 S3 client signed with it.

    ``check_signatures=False`` serves any caller (moto's default) with a fixed test key pair: for
    tests of what is stored, where the signing is another test's subject.
    """

    name = "moto server"

    def __init__(self, check_signatures: bool = True) -> None:
        super().__init__()
        self.check_signatures = check_signatures
        self.access_key = "" if check_signatures else "rsbuild-test-key"
        self.secret_key = "" if check_signatures else "rsbuild-test-secret"

    def _command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]

    def _environment(self, port: int) -> dict[str, str]:
        return {"INITIAL_NO_AUTH_ACTION_COUNT": "3" if self.check_signatures else "inf"}

    def _probe_path(self) -> str:
        return "/moto-api/"  # the dashboard: not an S3 action, so not counted

    def start(self) -> Self:
        super().start()
        if not self.access_key:
            import json

            iam = self._client("iam", "bootstrap", "bootstrap")
            iam.create_user(UserName="rsbuild-test")
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            iam.put_user_policy(UserName="rsbuild-test", PolicyName="s3", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName="rsbuild-test")["AccessKey"]
            self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        return self

    def client(self) -> Any:
        """A boto3 S3 client signed with the server's key pair."""
        return self._client("s3", self.access_key, self.secret_key)

    def _client(self, service: str, access_key: str, secret_key: str) -> Any:
        """A boto3 client of this server, made apart from the machine's AWS settings (profiles,
        config files, session tokens), which would otherwise fail or change the signing."""
        import boto3

        apart = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "NO_PROXY": LOOPBACK}
        saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("AWS_") or name in apart}
        os.environ.update(apart)
        try:  # the endpoint's proxy and the configuration are resolved here, once
            return boto3.session.Session().client(service, endpoint_url=self.url, region_name="us-east-1",
                                                  aws_access_key_id=access_key, aws_secret_access_key=secret_key)  # fmt: skip
        finally:
            for name in apart:
                os.environ.pop(name, None)
            os.environ.update(saved)
