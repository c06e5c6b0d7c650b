"""How full a vLLM server's batch is, read from its Prometheus ``/metrics``.

Speculative re-asks (`rsbuild.captions.scheduler`) should only fill slots the engine would
otherwise leave idle; an attempt asked ahead into a full batch waits in the server's queue in
front of the re-asks and revisions the run needs. A client cannot see the server's batch size,
but vLLM publishes ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (sequences:
a request of ``n`` choices runs as ``n``). `ServerLoad` turns those gauges into "sequences the
server could start now": none while any wait, otherwise the most seen running while others
waited (the batch it cannot exceed) minus those running; unknown until the server was once full.
"""

from __future__ import annotations

import re
import threading

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
_CONSTANT_LABELS = frozenset({"engine", "model_name"})  # labels every vLLM sample carries
_SAMPLE_RE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$")
_LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def _unescape(value: str) -> str:
    return value.replace("\\\\", "\x00").replace('\\"', '"').replace("\\n", "\n").replace("\x00", "\\")


def parse_prometheus_text(text: str, drop_labels: frozenset[str] = _CONSTANT_LABELS) -> dict[str, float]:
    """The numeric samples of a Prometheus text exposition, ``{key: value}``.

    The key is the sample name, followed by its remaining labels in braces when it has any
    besides ``drop_labels`` (e.g. ``vllm:prefix_cache_hits_total`` but
    ``vllm:e2e_request_latency_seconds_bucket{le="0.5"}``). Samples whose keys coincide once
    those labels are dropped (several engines) are summed. Comments and unparsable lines are
    skipped.
    """
    samples: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = [(key, _unescape(raw)) for key, raw in _LABEL_RE.findall(match["labels"] or "") if key not in drop_labels]
        key = match["name"]
        if labels:
            key += "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
        samples[key] = samples.get(key, 0.0) + value
    return samples


class ServerLoad:
    """Sequences a batching server could start now (None: unknown), kept between two readings."""

    def __init__(self) -> None:
        self.batch = 0  # most sequences seen running while others waited (0: never seen full)
        self._idle: int | None = None
        self._lock = threading.Lock()

    def read(self, metrics_text: str) -> bool:
        """Take one ``/metrics`` reading; False when it carries no vLLM queue gauges."""
        samples = parse_prometheus_text(metrics_text)
        if RUNNING not in samples or WAITING not in samples:
            return False
        running, waiting = int(samples[RUNNING]), int(samples[WAITING])
        with self._lock:
            if waiting > 0:
                self.batch = max(self.batch, running)
                self._idle = 0
            else:
                self._idle = max(0, self.batch - running) if self.batch else None
        return True

    def take(self, sequences: int) -> None:
        """Count sequences sent since the last reading against the idle ones."""
        with self._lock:
            if self._idle is not None:
                self._idle = max(0, self._idle - sequences)

    @property
    def idle(self) -> int | None:
        with self._lock:
            return self._idle
