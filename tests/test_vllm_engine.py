"""The `vllm` engine's calls into vLLM, checked with a stand-in `vllm` module (vLLM itself
is a CUDA build that is never installed for tests)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rsbuild.captions.base import CaptionRequest, request_seed
from rsbuild.captions.cache import CachedEngine
from rsbuild.captions.engines import make_engines
from rsbuild.captions.prompts import EXAMPLE_CAPTION, EXAMPLE_STATS, PromptSet
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError, MissingExtraError


@dataclass
class FakeSamplingParams:
    """Mirrors the fields of vllm.SamplingParams the engine sets."""

    n: int = 1
    seed: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion] = field(default_factory=list)


class FakeLLM:
    """Records the constructor arguments and every ``chat`` call; rejects prompts holding BAD."""

    instances: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.model, self.kwargs, self.calls = model, kwargs, []
        FakeLLM.instances.append(self)

    def chat(self, messages: list[list[dict[str, str]]], sampling_params: list[FakeSamplingParams], use_tqdm: bool = True):
        self.calls.append({"messages": messages, "params": sampling_params, "use_tqdm": use_tqdm})
        if any("BAD" in conversation[-1]["content"] for conversation in messages):
            raise ValueError("The decoder prompt is longer than the maximum model length")
        outputs = []
        for conversation, params in zip(messages, sampling_params, strict=True):
            head = conversation[-1]["content"][:5]
            completions = [FakeCompletion(f"{head} s{params.seed} #{i} ", [5, 6]) for i in range(params.n)]
            outputs.append(FakeRequestOutput([1] * 7, completions))
        return outputs


@pytest.fixture()
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    FakeLLM.instances = []
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def requests_for(tasks: list[tuple[str, str | None, int]]) -> list[CaptionRequest]:
    prompts = PromptSet.load()
    out = []
    for i, (task, subject, n) in enumerate(tasks):
        messages, template, sha = prompts.render(task, EXAMPLE_STATS, subject)
        key = f"p{i}_t0000"
        out.append(CaptionRequest(
            key=key, task=task, stats=EXAMPLE_STATS, subject=subject, messages=messages, template=template,
            template_sha256=sha, n=n, seed=request_seed(key, task, subject, 0),
            sampling={"temperature": 0.6, "top_p": 0.9, "max_tokens": 64},
        ))  # fmt: skip
    return out


def test_whole_batch_goes_through_one_chat_call(fake_vllm: types.ModuleType) -> None:
    from rsbuild.captions.vllm_engine import VllmEngine

    engine = VllmEngine("HuggingFaceTB/SmolLM2-360M-Instruct", seed=7)
    (llm,) = FakeLLM.instances
    assert llm.model == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert llm.kwargs["enable_prefix_caching"] is True and llm.kwargs["seed"] == 7
    requests = requests_for([("area", None, 1), ("class", "water", 1), ("revise", EXAMPLE_CAPTION, 3)])
    results = engine.generate(requests)
    (call,) = llm.calls
    assert call["use_tqdm"] is False
    assert call["messages"] == [[dict(m) for m in r.messages] for r in requests]
    assert [(p.n, p.seed, p.temperature, p.top_p, p.max_tokens) for p in call["params"]] == [
        (r.n, r.seed, 0.6, 0.9, 64) for r in requests
    ]
    assert [len(r.texts) for r in results] == [1, 1, 3]  # paraphrases are n of one request
    assert results[2].texts == [f"{requests[2].messages[-1]['content'][:5]} s{requests[2].seed} #{i}" for i in range(3)]
    assert all(r.annotator == "HuggingFaceTB/SmolLM2-360M-Instruct" and r.error is None for r in results)
    assert engine.counters == {"requests": 3, "prompt_tokens": 21, "completion_tokens": 10}


def test_one_bad_prompt_fails_only_its_request(fake_vllm: types.ModuleType) -> None:
    from rsbuild.captions.vllm_engine import VllmEngine

    engine = VllmEngine("m")
    requests = requests_for([("area", None, 1)] * 3 + [("revise", "BAD caption", 2)] + [("area", None, 1)])
    results = engine.generate(requests)
    assert [bool(r.texts) for r in results] == [True, True, True, False, True]
    assert "maximum model length" in results[3].error
    assert [r.request.key for r in results] == [r.key for r in requests]


def test_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from rsbuild.captions.vllm_engine import VllmEngine

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingExtraError, match=r"rsbuild\[vllm\]"):
        VllmEngine("m")


def test_make_engines_one_cached_engine_per_model(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="captions.models"):
        make_engines(CaptionsConfig(engine="vllm"), tmp_path)
    engines = make_engines(CaptionsConfig(engine="vllm", models=["org/a", "org/b"], seed=3), tmp_path)
    assert [e.name for e in engines] == ["org/a", "org/b"]
    assert all(isinstance(e, CachedEngine) for e in engines)
    assert [llm.kwargs["seed"] for llm in FakeLLM.instances] == [3, 3]
    for engine in engines:
        engine.close()
