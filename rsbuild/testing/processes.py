"""One helper for servers run as child processes: start, wait until ready, stop, restart.

``ServerProcess`` runs a command on a loopback port, sends its output to a log file, polls a
readiness URL and raises ``ServerStartError`` (with the last lines of the log) when the
process exits early or does not get ready in time. Every server:

* runs in its own process group (session), so ``stop()`` can signal the whole group: SIGTERM,
  then SIGKILL after ``stop_timeout_s``, and a final SIGKILL sweep for stragglers;
* dies with its parent, even when the parent is SIGKILLed:

  - on Linux the child asks the kernel for ``PR_SET_PDEATHSIG`` = SIGKILL (``prctl`` through
    ctypes, between fork and exec). That signal follows the *thread* that forked the child, so
    processes are forked from the main thread or from one long-lived helper thread, never from
    a short-lived worker thread;
  - that signal reaches only the direct child, and servers such as vLLM run further processes
    (engine core, workers) that would outlive it. So each server also gets a tiny watchdog
    process holding the read end of a pipe whose write end only the parent holds: when the
    parent dies the pipe reaches end-of-file and the watchdog SIGKILLs the server's process
    group. ``stop()`` tells the watchdog to stand down (one byte) before it exits. (A child
    the parent forks without exec, e.g. a ``fork`` multiprocessing worker, inherits the write
    end and delays that until it exits too);
* is stopped at interpreter exit as a last resort.

``LlamaServer``, ``VllmServer``, ``RustacServer`` and ``StacFastapiStaticServer`` are built on it.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

from rsbuild.concurrency import PR_SET_PDEATHSIG, libc_prctl, pid_exists

LOOPBACK = "127.0.0.1"


def send_json(handler: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
    """Answer an ``http.server`` request with ``doc`` as JSON (the loopback test servers' replies)."""
    body = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """A server process exited during start-up or did not get ready in time."""


# --------------------------------------------------------------------------- dying with the parent


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGKILL when its parent dies (Linux; else None).

    Closes the race of a parent dying before ``prctl`` runs: the child then kills itself.
    """
    prctl = libc_prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent is already gone
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Spawner:
    """Forks children from a thread that lives as long as the interpreter.

    The kernel sends PR_SET_PDEATHSIG when the thread that forked the child ends, so a server
    started from a worker thread (say, a test restarting it mid-batch) would die with that thread.
    The main thread forks directly; any other thread hands the ``Popen`` call to one daemon thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[subprocess.Popen[bytes]], dict[str, Any]]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def popen(self, **kwargs: Any) -> subprocess.Popen[bytes]:
        if threading.current_thread() is threading.main_thread():
            return subprocess.Popen(**kwargs)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rsbuild-server-spawner", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._jobs.put((future, kwargs))
        return future.result()

    def _run(self) -> None:
        while True:
            future, kwargs = self._jobs.get()
            try:
                future.set_result(subprocess.Popen(**kwargs))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)


_SPAWNER = _Spawner()

# argv: read-end fd, process group id. EOF on the fd (the parent died): SIGKILL the group
# until it is empty. One byte: the parent stopped the server itself, exit quietly.
_WATCHDOG_CODE = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
fd, pgid = int(sys.argv[1]), int(sys.argv[2])
try:
    data = os.read(fd, 1)
except OSError:
    data = b""
if not data:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            break
        time.sleep(0.05)
"""


class _Watchdog:
    """A watchdog process that SIGKILLs process group ``pgid`` if this process dies first."""

    def __init__(self, pgid: int) -> None:
        read_fd, self._write_fd = os.pipe()  # both non-inheritable; read_fd is passed explicitly
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-S", "-c", _WATCHDOG_CODE, str(read_fd), str(pgid)],
                pass_fds=(read_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # not hit by signals meant for our own process group
            )
        except BaseException:
            os.close(self._write_fd)
            raise
        finally:
            os.close(read_fd)

    def stand_down(self) -> None:
        """Tell the watchdog the group was stopped on purpose, and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.write(self._write_fd, b"x")
        except OSError:
            pass
        finally:
            os.close(self._write_fd)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_LIVE: set[ServerProcess] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for server in leftovers:
        server.stop(timeout_s=2.0)


def kill_process_group(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop ``process`` and its process group: SIGTERM, SIGKILL after ``timeout_s``, then reap.

    The group is swept with SIGKILL once the leader has exited (while it is still an unreaped
    zombie, so its id cannot have been reused), which kills children that outlived it.
    """
    pgid = process.pid  # the leader of its own session: group id == pid
    if process.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_exited(process, timeout_s):
            _signal_group(pgid, signal.SIGKILL)
            _wait_exited(process, timeout_s)
    if process.returncode is None:
        _signal_group(pgid, signal.SIGKILL)  # stragglers that outlived the leader
    elif not pid_exists(pgid):
        # Reaped earlier: the id is not reused while stragglers hold the group, so it is ours.
        _signal_group(pgid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not pid_exists(pgid) and _signal_group(pgid, 0):  # until the group is empty
        time.sleep(0.02)


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # only an unrelated process could carry this id now
        return False
    return True


def _wait_exited(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until ``process`` has exited, without reaping it (it stays a zombie); True if it did."""
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: reap it (the sweep then checks the id)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped
            return True
        if info is not None and info.si_pid == process.pid:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# --------------------------------------------------------------------------- the helper

PortTemplate = str | Callable[[int], str]


class ServerProcess:
    """A server command run as a child process on a loopback port, as a context manager.

    ``command`` is the argument list, or a function of the port returning it; string arguments
    may hold ``{port}``, replaced by the port. ``ready_url`` is polled until ``ready_status``
    accepts the HTTP status (default: any status below 500): a path such as ``/health`` (on
    ``url``), a full URL (``{port}`` replaced) or a function of the port. ``port=0`` picks a
    free port at the first start; the port is then kept, so ``restart()`` reuses it. With
    ``start_attempts`` > 1 and a picked port, a failed first start is retried on a new free
    port (the port may be taken between picking and binding it).

    The output (stdout and stderr) is appended to ``log_path``; without one, a temporary file
    is used and removed by ``close()`` (and on leaving the ``with`` block). ``env`` holds
    variables set on top of ``os.environ``.
    """

    def __init__(
        self,
        command: Sequence[str] | Callable[[int], Sequence[str]],
        *,
        ready_url: PortTemplate = "/",
        port: int = 0,
        host: str = LOOPBACK,
        name: str | None = None,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        log_path: Path | str | None = None,
        env: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None,
        cwd: Path | str | None = None,
        ready_status: Callable[[int], bool] = lambda status: status < 500,
        ready_headers: Mapping[str, str] | None = None,
        start_attempts: int = 1,
        log_tail_lines: int = 40,
    ) -> None:
        self._command = command
        self._ready_url = ready_url
        self.port = port
        self.host = host
        self.name = name
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._own_log = log_path is None
        self.log_path: Path | None = None if log_path is None else Path(log_path)
        self._env = env
        self.cwd = cwd
        self.ready_status = ready_status
        self.ready_headers = dict(ready_headers or {})
        self.start_attempts = max(1, start_attempts)
        self.log_tail_lines = log_tail_lines
        self._port_pinned = port != 0
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: _Watchdog | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ description
    @property
    def url(self) -> str:
        """``http://HOST:PORT`` without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def ready_url(self) -> str:
        """The URL polled for readiness."""
        if callable(self._ready_url):
            return self._ready_url(self.port)
        if self._ready_url.startswith("/"):
            return self.url + self._ready_url
        return self._ready_url.replace("{port}", str(self.port))

    def command(self) -> list[str]:
        """The command line for the current port."""
        raw = self._command(self.port) if callable(self._command) else self._command
        return [str(arg).replace("{port}", str(self.port)) for arg in raw]

    def environment(self) -> dict[str, str]:
        """``os.environ`` plus ``env``."""
        extra = self._env(self.port) if callable(self._env) else self._env
        return {**os.environ, **(extra or {})}

    @property
    def label(self) -> str:
        """``name``, or the program's file name."""
        if self.name:
            return self.name
        raw = self._command(self.port) if callable(self._command) else self._command
        return Path(str(raw[0])).name if raw else "server"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running (or exited, not yet stopped) process, None when stopped."""
        return self._process

    @property
    def pid(self) -> int | None:
        """The process id while started."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start the process and wait until ``ready_url`` answers; no-op while it runs.

        Raises ``ServerStartError`` (the process is stopped) with the tail of the log.
        """
        with self._lock:
            if self.running:
                return self
            self.stop()
            errors: list[str] = []
            attempts = 1 if self._port_pinned else self.start_attempts
            for attempt in range(attempts):
                if self.port == 0 or (attempt > 0 and not self._port_pinned):
                    self.port = free_port(self.host)
                try:
                    self._launch()
                    self._wait_ready()
                except ServerStartError as exc:
                    self.stop()
                    errors.append(str(exc))
                    continue
                except BaseException:
                    self.stop()
                    raise
                self._port_pinned = True
                return self
            raise ServerStartError("\n---\n".join(errors))

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the process group (SIGTERM, then SIGKILL); the log file stays."""
        with self._lock:
            process, self._process = self._process, None
            watchdog, self._watchdog = self._watchdog, None
            with _LIVE_LOCK:
                _LIVE.discard(self)
            try:
                if process is not None:
                    kill_process_group(process, self.stop_timeout_s if timeout_s is None else timeout_s)
            finally:
                if watchdog is not None:
                    watchdog.stand_down()

    def restart(self) -> Self:
        """Stop and start again on the same port."""
        with self._lock:
            self.stop()
            return self.start()

    def close(self) -> None:
        """Stop, and remove the log file if it is a temporary one."""
        self.stop()
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ output
    def output(self) -> str:
        """Everything in the log file so far."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int | None = None) -> str:
        """The last ``lines`` lines of the log (default ``log_tail_lines``)."""
        text = self.output().splitlines()[-(lines or self.log_tail_lines) :]
        return "\n".join(text) if text else "(the log is empty)"

    # ------------------------------------------------------------------ internals
    def _launch(self) -> None:
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"rsbuild-{self.label}-".replace(" ", "-"), suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        command = self.command()
        with self.log_path.open("ab") as log:
            log.write(f"[rsbuild] {time.strftime('%Y-%m-%d %H:%M:%S')} start: {shlex.join(command)}\n".encode())
            log.flush()
            try:
                self._process = _SPAWNER.popen(
                    args=command,
                    env=self.environment(),
                    cwd=None if self.cwd is None else str(self.cwd),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() signals the whole group
                    preexec_fn=die_with_parent_preexec(),  # prctl + getppid only
                )
            except OSError as exc:
                raise ServerStartError(f"{self.label} did not start: cannot run {shlex.join(command)}: {exc}") from exc
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._watchdog = _Watchdog(self._process.pid)

    def _wait_ready(self) -> None:
        url = self.ready_url
        deadline = time.monotonic() + self.startup_timeout_s
        last_error = "no answer yet"
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                self._fail(f"the process exited with code {code} before {url} answered")
            status, last_error = _probe(url, self.ready_headers, last_error)
            if status is not None and self.ready_status(status):
                return
            if time.monotonic() >= deadline:
                self._fail(f"{url} did not answer within {self.startup_timeout_s:g} s ({last_error})")
            time.sleep(0.1)

    def _fail(self, reason: str) -> None:
        raise ServerStartError(
            f"{self.label} did not start: {reason}\n"
            f"command: {shlex.join(self.command())}\n"
            f"last lines of its log {self.log_path}:\n{self.log_tail()}"
        )

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ServerProcess {self.label} {self.url} {state}>"


def _probe(url: str, headers: Mapping[str, str], last_error: str) -> tuple[int | None, str]:
    """One GET: ``(status, description)``; status None when nothing answered."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=2.0) as response:
            return int(response.status), f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return int(exc.code), f"HTTP {exc.code}"
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        return None, str(getattr(exc, "reason", exc)) or last_error


def wait_until_up(url: str, timeout: float = 20.0, *, process: subprocess.Popen[Any] | None = None) -> None:
    """Poll ``url`` until it answers with any HTTP status below 500.

    Raises ``RuntimeError`` when ``process`` (if given) exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with code {process.returncode} before {url} answered")
        status, last_error = _probe(url, {}, last_error)
        if status is not None and status < 500:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s ({last_error})")


class ManagedServer:
    """The life-cycle surface shared by servers wrapped around one `ServerProcess` (``_server``):
    subclasses give ``start`` (checks, then ``self._server.start()``) and may extend ``close``."""

    _server: ServerProcess

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after the stop timeout)."""
        self._server.stop()

    def restart(self) -> Self:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop for good and drop a temporary log."""
        self._server.close()

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._server.running

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (its children share its process group)."""
        return self._server.pid

    @property
    def startup_timeout_s(self) -> float:
        """Seconds to wait for readiness at each start."""
        return self._server.startup_timeout_s

    @startup_timeout_s.setter
    def startup_timeout_s(self, value: float) -> None:
        self._server.startup_timeout_s = value

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        return self._server.log_tail(lines)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
