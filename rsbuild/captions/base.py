"""The one batch interface every caption engine implements.

A caption stage builds `CaptionRequest`s, hands a whole batch to `CaptionEngine.generate`, and
gets one `CaptionResult` per request back, in the same order. Engines never see samples or
config files; LLM engines read ``messages`` (rendered by the prompt set), the template engine
reads ``stats`` and ``subject``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TASKS: tuple[str, ...] = ("area", "linear", "class", "revise")


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


class CaptionEngine(ABC):
    """A caption writer: many requests in, one result per request out, same order."""

    name: str  # annotator id recorded in annotations
    needs_prompts: bool  # False for the template engine (it reads stats directly)

    @abstractmethod
    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Answer every request; a failed request gives a result with ``error`` set, not an exception."""

    def close(self) -> None:
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
