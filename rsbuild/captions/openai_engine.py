"""The `openai` engine: any OpenAI-compatible server (vLLM, llama.cpp, SGLang) through AsyncOpenAI.

The only module that imports ``openai``. A batch runs on an asyncio loop with ``concurrency``
chat requests in flight, sent grouped by prompt head so servers reuse cached prefixes;
connection errors, 429 and 5xx are retried with exponential backoff.
Paraphrases are asked as ``n``; servers that ignore ``n`` (llama.cpp) are asked again for the
missing choices. The API key is read from an environment variable and never shown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import openai

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult
from rsbuild.captions.engines import follow_up_seed
from rsbuild.errors import ConfigError, InputError

NO_KEY = "sk-no-key"  # placeholder for local servers that want no key
OPENAI_SAMPLING_KEYS = frozenset({"temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "stop"})
RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
REFUSED = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)

T = TypeVar("T")


def prompt_head(request: CaptionRequest) -> tuple[str, ...]:
    """Every message but the last (the tile's facts): requests of one task and template share it."""
    return tuple(str(m.get("content", "")) for m in request.messages[:-1])


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAIEngine(CaptionEngine):
    """Captions from an OpenAI-compatible chat completions server."""

    needs_prompts = True

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        retries: int = 3,
        sampling: Mapping[str, Any] | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("captions.concurrency must be at least 1")
        self.base_url = base_url
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or NO_KEY
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.sampling = dict(sampling or {})
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.counters = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.name = model or self._server_model()

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Answer a batch with ``concurrency`` requests in flight; results in request order."""
        if not requests:
            return []
        return run_coroutine(self._generate(requests))

    # -- internals ---------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key != NO_KEY else text

    def _refused(self, exc: openai.APIStatusError) -> ConfigError:
        if isinstance(exc, openai.NotFoundError):
            hint = f"check captions.models ({self.name!r}) and captions.server_url (it usually ends in /v1)"
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

    async def _generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        semaphore = asyncio.Semaphore(self.concurrency)
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0)
        # Requests sharing a prompt head go out back to back: a single-slot server (llama.cpp)
        # then reuses the cached prefix; the semaphore hands out slots in creation order.
        order = sorted(range(len(requests)), key=lambda i: prompt_head(requests[i]))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {i: group.create_task(self._answer(client, semaphore, requests[i])) for i in order}
        except* ConfigError as errors:
            raise errors.exceptions[0] from None
        finally:
            await client.close()
        return [tasks[i].result() for i in range(len(requests))]

    async def _answer(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, request: CaptionRequest) -> CaptionResult:
        """One request: ask ``n`` choices, then ask again (n=1 each) for any the server left out."""
        try:
            texts = await self._choices(client, semaphore, request, request.n, request.seed)
        except openai.OpenAIError as exc:
            return CaptionResult(request=request, texts=[], annotator=self.name, error=self._describe(exc))
        error: str | None = None
        missing = request.n - len(texts)
        if missing > 0:
            extra = await asyncio.gather(
                *(self._choices(client, semaphore, request, 1, follow_up_seed(request.seed, i)) for i in range(1, missing + 1)),
                return_exceptions=True,
            )
            for item in extra:
                if isinstance(item, openai.OpenAIError):
                    error = self._describe(item)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    texts += item
        if not texts:
            return CaptionResult(request=request, texts=[], annotator=self.name, error=error or "the server returned no text")
        return CaptionResult(request=request, texts=texts[: request.n], annotator=self.name)

    def _describe(self, exc: openai.OpenAIError) -> str:
        return self._redact(f"{exc.__class__.__name__}: {exc}")

    async def _choices(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, request: CaptionRequest, n: int, seed: int
    ) -> list[str]:
        """One chat completion (retried on connection errors, 429 and 5xx); its non-empty texts."""
        sampling = {**self.sampling, **request.sampling}
        known = {k: v for k, v in sampling.items() if k in OPENAI_SAMPLING_KEYS}
        extra = {k: v for k, v in sampling.items() if k not in OPENAI_SAMPLING_KEYS}
        for attempt in range(self.retries + 1):
            try:
                async with semaphore:
                    self.counters["requests"] += 1
                    response = await client.chat.completions.create(
                        model=self.name,
                        messages=list(request.messages),
                        n=n,
                        seed=seed,
                        extra_body=extra or None,
                        **known,
                    )
                break
            except RETRYABLE:
                if attempt == self.retries:
                    raise
                self.counters["retries"] += 1
                await asyncio.sleep(min(self.backoff_s * 2**attempt, self.max_backoff_s))
            except REFUSED as exc:
                raise self._refused(exc) from None
        if response.usage is not None:
            self.counters["prompt_tokens"] += response.usage.prompt_tokens
            self.counters["completion_tokens"] += response.usage.completion_tokens
        return [c.message.content.strip() for c in response.choices if c.message.content and c.message.content.strip()]
