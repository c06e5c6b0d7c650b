"""The `openai` engine: any OpenAI-compatible server (vLLM, llama.cpp, SGLang) through AsyncOpenAI.

The only module that imports ``openai``. One long-lived client on one event loop (in its own
thread) streams requests: `submit` hands a request to the loop and at most ``concurrency``
chat completions are open at once (default 256, enough to fill a vLLM server's batch). Requests go
out as raw JSON bodies through the client's ``post`` and replies are parsed here: openai's request
transform and response models cost more client CPU than the HTTP exchange at hundreds in flight.
Connection errors, timeouts (a stalled or truncated answer included), 429 and 5xx are retried with
exponential backoff and deterministic jitter here, not by the openai client (``max_retries=0``: its
own retries would be invisible and multiply ours); retries and give-ups are counted under edge
``llm`` of `rsbuild.retries`. Connect timeout ``min(connect_timeout_s, timeout_s)`` (10 s), read timeout ``timeout_s``.
Paraphrases are asked as ``n``; servers that ignore ``n`` (llama.cpp) are asked again for the
missing choices. With ``constrained`` area and class requests carry the GBNF grammar of
`rsbuild.captions.constraints` as vLLM's structured outputs (``"structured_outputs": {"grammar": ...}``
in the body; the server's ``auto`` backend compiles it with xgrammar) and the annotator name says so
(``…+grammar``); a server that does not read that field (llama.cpp's) would decode free, so the grammar is
for vLLM servers. The API key is read from an environment variable and never shown.
Once the caption stage asks how many sequences the server could still start (`idle_sequences`, for
speculative re-asks), the server's ``/metrics`` is read every 0.25 s (`ServerLoad`: vLLM's queue
gauges); a server without them (llama.cpp) leaves the answer unknown.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

import openai

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, follow_up_seed
from rsbuild.captions.constraints import caption_grammar, grammar_suffix
from rsbuild.captions.engines.server_load import ServerLoad
from rsbuild.concurrency import LoopThread
from rsbuild.errors import ConfigError, InputError
from rsbuild.retries import RETRIES

NO_KEY = "sk-no-key"  # placeholder for local servers that want no key
OPENAI_SAMPLING_KEYS = frozenset({"temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "stop"})


class UnreadableReply(openai.OpenAIError):
    """A 200 answer whose body is not a chat completion (cut off mid-body): retried like a dropped connection."""


RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError,
             UnreadableReply)  # APITimeoutError is a connection error
DEFAULT_CONCURRENCY = 256
LOAD_POLL_S = 0.25  # how often the server's /metrics is read while the caption stage asks for idle slots
REFUSED = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)



def _cause(exc: BaseException) -> str:
    """The transient fault behind a retryable openai error (``HTTP 503``, ``timeout``, ``connection``)."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, UnreadableReply):
        return "unreadable"
    return "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"


def _completion(raw: bytes) -> dict[str, Any]:
    """The parsed body of a chat completion: a dict with a ``choices`` list (else `UnreadableReply`)."""
    try:
        reply = json.loads(raw)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list) or not isinstance(
            reply.get("usage") or {}, dict):
        raise UnreadableReply(f"the server's answer is not a chat completion ({len(raw)} bytes)")
    return reply


def _jitter(seed: int, attempt: int) -> float:
    """A deterministic factor in [0.5, 1.5) for backoff (no shared random state)."""
    digest = hashlib.sha256(f"{seed}\x1f{attempt}".encode("ascii")).digest()
    return 0.5 + int.from_bytes(digest[:2], "big") / 65536


class OpenAIEngine(CaptionEngine):
    """Captions from an OpenAI-compatible chat completions server."""

    needs_prompts = True

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        retries: int = 3,
        sampling: Mapping[str, Any] | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        constrained: bool = False,
        varied: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("captions.concurrency must be at least 1")
        self.base_url = base_url
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or NO_KEY
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retries = retries
        self.sampling = dict(sampling or {})
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_in_flight = concurrency
        self.batches_requests = True
        self.counters = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.constrained = constrained
        self.varied = varied
        self.model = model or self._server_model()
        self.name = self.model + grammar_suffix(constrained, varied)
        self._loop: LoopThread | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._slots: asyncio.Semaphore | None = None
        self.server_load = ServerLoad()
        self._load_readable = True
        self._watcher: Future[None] | None = None

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        """Start one request on the engine's loop; at most ``concurrency`` are open at once."""
        if self._loop is None:
            self._loop = LoopThread(f"rsbuild-openai-{self.name}")
            self._loop.submit(self._open()).result()
        self.server_load.take(request.n)
        return self._loop.submit(self._answer(request))

    def idle_sequences(self) -> int | None:
        """Sequences the server could start now, from its ``/metrics`` (read from the first call on);
        None when it publishes no vLLM queue gauges."""
        if self._loop is None or not self._load_readable:
            return None
        if self._watcher is None:
            self._watcher = self._loop.submit(self._watch_load())
        return self.server_load.idle

    def close(self) -> None:
        """Close the client and stop its loop."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.close(self._shutdown())

    async def _open(self) -> None:
        timeout = openai.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))
        self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, timeout=timeout, max_retries=0)
        self._slots = asyncio.Semaphore(self.concurrency)

    async def _shutdown(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._client is not None:
            await self._client.close()

    # -- internals ---------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key != NO_KEY else text

    def _refused(self, exc: openai.APIStatusError) -> ConfigError:
        if isinstance(exc, openai.NotFoundError):
            hint = f"check captions.models ({getattr(self, 'model', None)!r}) and captions.server_url (it usually ends in /v1)"
        else:
            hint = f"set the environment variable {self.api_key_env} to a key this server accepts"
        return ConfigError(f"the server at {self.base_url} refused the request (HTTP {exc.status_code}); {hint}")

    def _server_model(self) -> str:
        """The first model the server lists at /v1/models (used when no model is configured)."""
        client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=self.retries)
        try:
            models = [m.id for m in client.models.list().data]
        except openai.APIConnectionError:
            raise InputError(
                f"cannot reach the OpenAI-compatible server at {self.base_url}; start it or fix captions.server_url"
            ) from None
        except REFUSED as exc:
            raise self._refused(exc) from None
        finally:
            client.close()
        if not models:
            raise ConfigError(f"the server at {self.base_url} lists no models; name one in captions.models")
        return models[0]

    async def _answer(self, request: CaptionRequest) -> CaptionResult:
        """One request: ask ``n`` choices, then ask again (n=1 each) for any the server left out."""
        result = CaptionResult(request=request, texts=[], annotator=self.name)
        try:
            await self._choices(request, request.n, request.seed, result)
        except openai.OpenAIError as exc:
            result.error, result.error_transient = self._describe(exc), isinstance(exc, RETRYABLE)
            return result
        missing = request.n - len(result.texts)
        if missing > 0:
            extra = await asyncio.gather(
                *(self._choices(request, 1, follow_up_seed(request.seed, i), result) for i in range(1, missing + 1)),
                return_exceptions=True,
            )
            for item in extra:
                if isinstance(item, openai.OpenAIError):
                    result.error, result.error_transient = self._describe(item), isinstance(item, RETRYABLE)
                elif isinstance(item, BaseException):
                    raise item
        if not result.texts:
            result.error = result.error or "the server returned no text"
            return result
        result.error, result.error_transient = None, False
        result.texts, result.finish_reasons = result.texts[: request.n], result.finish_reasons[: request.n]
        return result

    async def _watch_load(self) -> None:
        """Read the server's queue gauges every ``LOAD_POLL_S`` until closed (or the server has none)."""
        assert self._client is not None
        parts = urlsplit(self.base_url)
        url = f"{parts.scheme}://{parts.netloc}/metrics"  # vLLM serves it at the root, beside /v1
        while True:
            try:
                text = await self._client.get(url, cast_to=str, options={"timeout": 5.0})
            except openai.OpenAIError:
                text = ""
            if not self.server_load.read(text):
                self._load_readable = False
                return
            await asyncio.sleep(LOAD_POLL_S)

    def _describe(self, exc: openai.OpenAIError) -> str:
        return self._redact(f"{exc.__class__.__name__}: {exc}")

    async def _choices(self, request: CaptionRequest, n: int, seed: int, result: CaptionResult) -> None:
        """One chat completion (retried on connection errors, timeouts, 429 and 5xx); adds its texts to ``result``."""
        assert self._client is not None and self._slots is not None
        sampling = {**self.sampling, **request.sampling}
        body = {**{k: v for k, v in sampling.items() if k not in OPENAI_SAMPLING_KEYS},  # extra body fields
                "model": self.model, "messages": list(request.messages), "n": n, "seed": seed,
                **{k: v for k, v in sampling.items() if k in OPENAI_SAMPLING_KEYS}}
        grammar = (caption_grammar(request.task, request.stats, request.subject, varied=self.varied)
                   if self.constrained else None)
        if grammar is not None:
            body["structured_outputs"] = {"grammar": grammar}
        for attempt in range(self.retries + 1):
            try:
                async with self._slots:
                    self.counters["requests"] += 1
                    # the raw body, parsed here: openai's request transform and response models cost more CPU
                    # than the rest of the request at hundreds in flight (scripts/bench_caption.py)
                    reply = _completion(await self._client.post("/chat/completions", body=body, cast_to=bytes))
                break
            except RETRYABLE as exc:
                if attempt == self.retries:
                    RETRIES.gave_up("llm", _cause(exc))
                    raise
                RETRIES.retried("llm", _cause(exc))
                self.counters["retries"] += 1
                await asyncio.sleep(min(self.backoff_s * 2**attempt, self.max_backoff_s) * _jitter(seed, attempt))
            except REFUSED as exc:
                raise self._refused(exc) from None
        usage = reply.get("usage") or {}
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.counters["prompt_tokens"] += prompt_tokens
        self.counters["completion_tokens"] += completion_tokens
        result.prompt_tokens += prompt_tokens
        result.completion_tokens += completion_tokens
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is not None:
            result.cached_tokens = (result.cached_tokens or 0) + int(cached)
        for choice in reply["choices"]:
            text = str((choice.get("message") or {}).get("content") or "").strip()
            if text:
                result.texts.append(text)
                result.finish_reasons.append(str(choice.get("finish_reason") or ""))
