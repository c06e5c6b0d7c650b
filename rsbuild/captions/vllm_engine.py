"""The `vllm` engine: an in-process ``vllm.LLM`` takes the whole batch in one ``LLM.chat`` call.

The only module that imports ``vllm`` (extra ``vllm``; its wheels pin torch and transformers,
so it is never installed for tests). Prefix caching is on, so the shared instructions and
examples at the head of every prompt are computed once; paraphrases are ``n`` of one request
(``SamplingParams(n=k, seed=...)``). Plain-text captions need no structured outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult
from rsbuild.errors import require

VLLM_SAMPLING_KEYS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "stop",
    "presence_penalty", "frequency_penalty", "repetition_penalty",
})  # fmt: skip


class VllmEngine(CaptionEngine):
    """Captions from a Hugging Face model served in-process by vLLM (GPU)."""

    needs_prompts = True

    def __init__(
        self,
        model: str,
        sampling: Mapping[str, Any] | None = None,
        seed: int = 0,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._vllm = require("vllm", "vllm", "The vllm caption engine")
        self.name = model
        self.sampling = dict(sampling or {})
        self.counters = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._llm = self._vllm.LLM(model=model, enable_prefix_caching=True, seed=seed, **dict(llm_kwargs or {}))

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """The whole batch through one ``LLM.chat`` call; results in request order.

        vLLM rejects a whole call when one prompt is invalid (e.g. longer than the context);
        then the batch is split so only the bad requests carry an error.
        """
        if not requests:
            return []
        conversations = [[dict(m) for m in request.messages] for request in requests]
        params = [self._sampling_params(request) for request in requests]
        try:
            outputs = self._llm.chat(conversations, params, use_tqdm=False)
        except (ValueError, RuntimeError) as exc:
            if len(requests) == 1:
                error = f"{exc.__class__.__name__}: {exc}"
                return [CaptionResult(request=requests[0], texts=[], annotator=self.name, error=error)]
            middle = len(requests) // 2
            return self.generate(requests[:middle]) + self.generate(requests[middle:])
        self.counters["requests"] += len(requests)
        return [self._result(request, output) for request, output in zip(requests, outputs, strict=True)]

    def _sampling_params(self, request: CaptionRequest) -> Any:
        sampling = {k: v for k, v in {**self.sampling, **request.sampling}.items() if k in VLLM_SAMPLING_KEYS}
        return self._vllm.SamplingParams(n=request.n, seed=request.seed, **sampling)

    def _result(self, request: CaptionRequest, output: Any) -> CaptionResult:
        self.counters["prompt_tokens"] += len(output.prompt_token_ids or ())
        self.counters["completion_tokens"] += sum(len(c.token_ids) for c in output.outputs)
        texts = [c.text.strip() for c in output.outputs if c.text and c.text.strip()]
        if not texts:
            return CaptionResult(request=request, texts=[], annotator=self.name, error="the model returned no text")
        return CaptionResult(request=request, texts=texts, annotator=self.name)

    def close(self) -> None:
        """Drop the model (vLLM frees GPU memory when the LLM object goes away)."""
        self._llm = None
