"""The one interface every caption engine implements: requests in, results out.

The caption stage (`rsbuild.captions.scheduler`) streams `CaptionRequest`s into an engine with
`CaptionEngine.submit` as soon as they are known and keeps up to `CaptionEngine.max_in_flight`
of them open; each future resolves to one `CaptionResult`. `generate` answers a whole batch
(in order) for callers that have one. An engine implements at least one of the two; the other
follows. Engines never see samples or config files; LLM engines read ``messages`` (rendered by
the prompt set), the template engine reads ``stats`` and ``subject``.
"""

from __future__ import annotations

import hashlib
from abc import ABC
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

TASKS: tuple[str, ...] = ("area", "linear", "class", "revise")
OPTIONAL_TASKS: tuple[str, ...] = ("vqa_paraphrase",)  # asked only when a config field turns them on


@dataclass(frozen=True)
class CaptionRequest:
    """What to write for one sample: a task, the sample's stats and how to sample."""

    key: str  # sample key
    task: str  # "area" | "linear" | "class" | "revise"
    stats: Mapping[str, Any]  # the sample's stats (ARCHITECTURE.md schema)
    subject: str | None = None  # class name for "class"; the source caption for "revise"
    messages: tuple[dict[str, Any], ...] = ()  # chat messages rendered from prompt templates (LLM engines)
    template: str = ""  # template name, e.g. "area.j2" or "template:area"
    template_sha256: str = ""
    n: int = 1  # number of texts wanted (paraphrases)
    seed: int = 0
    sampling: Mapping[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens


@dataclass
class CaptionResult:
    """The texts an engine wrote for one request (possibly fewer than ``request.n``)."""

    request: CaptionRequest
    texts: list[str]
    annotator: str  # model id that wrote the texts
    error: str | None = None  # set when the request failed (after retries)
    error_transient: bool = False  # that failure was a transient fault (timeout, 429, 5xx, connection): a rerun may succeed
    finish_reasons: list[str] = field(default_factory=list)  # one per text where the engine says ("stop", "length")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens served from the engine's prefix cache, when reported
    cached: bool = False  # answered from rsbuild's own caption cache, not by the engine


class EngineFailure(Exception):
    """The engine cannot answer any more requests (a dead vLLM engine, a refused server): stop the run."""


class CaptionEngine(ABC):
    """A caption writer: requests in, one result per request out.

    A failed request gives a result with ``error`` set, not an exception; an exception (e.g.
    `EngineFailure`, `rsbuild.errors.ConfigError`) means the engine cannot go on.
    """

    name: str  # annotator id recorded in annotations
    needs_prompts: bool  # False for the template engine (it reads stats directly)
    max_in_flight: int = 1  # requests worth keeping open at once (a server's slots, vLLM's batch)
    batches_requests: bool = False  # answers its open requests together (vLLM, a server): an idle slot costs nothing

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.submit is CaptionEngine.submit and cls.generate is CaptionEngine.generate:
            raise TypeError(f"{cls.__name__} must implement submit() or generate()")

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        """Start answering one request; the future resolves to its result (default: answer it now)."""
        future: Future[CaptionResult] = Future()
        try:
            future.set_result(self.generate([request])[0])
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Answer a batch; results in request order (default: submit each, wait for all)."""
        futures = [self.submit(request) for request in requests]
        return [future.result() for future in futures]

    def idle_sequences(self) -> int | None:
        """Sequences the engine could start decoding now beside those it runs; None when it cannot tell
        (then its free ``max_in_flight`` slots decide). Speculative re-asks fill only these."""
        return None

    def telemetry(self) -> dict[str, Any]:
        """Engine-side counters for the run summary (requests, tokens, retries, ...)."""
        return dict(getattr(self, "counters", {}))

    def close(self) -> None:  # noqa: B027  (an optional hook, not an abstract method)
        """Release clients, servers or models. The default does nothing."""

    def builtin_prompt(self, task: str) -> tuple[str, str]:
        """(template name, sha256) recorded for engines that write without prompt templates.

        Only used when ``needs_prompts`` is False; engines with their own wording tables
        (the template engine) override it so a wording change changes the recorded sha256.
        """
        name = f"{self.name}:{task}"
        return name, hashlib.sha256(name.encode("utf-8")).hexdigest()

    def __enter__(self) -> CaptionEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def request_seed(key: str, task: str, subject: str | None, attempt: int, base_seed: int = 0) -> int:
    """A stable 31-bit seed for one (sample, task, subject, attempt), derived with sha256.

    ``attempt`` starts at 0; a caption that fails the check is re-asked with ``attempt + 1``.
    """
    text = "\x1f".join((str(base_seed), key, task, subject or "", str(attempt)))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def follow_up_seed(seed: int, index: int) -> int:
    """Seed of a request's ``index``-th extra text (``index`` >= 1) when texts are asked one by one.

    The first text uses the request's own seed; engines that cannot ask for ``n`` choices at
    once (llama.cpp) derive the others with sha256 so reruns ask for the same texts.
    """
    digest = hashlib.sha256(f"{seed}\x1f{index}".encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
