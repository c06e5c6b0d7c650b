"""The caption stage: requests per task, batching, checking, re-asking with new seeds, provenance."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from rsbuild.captions.annotate import annotate
from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, request_seed
from rsbuild.captions.check import check_caption
from rsbuild.captions.template import TemplateEngine
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError
from rsbuild.schemes import get_scheme
from rsbuild.stats import compute_stats
from rsbuild.types import Sample

WRONG = "Snow and ice cover the whole tile."


def _sample(i: int) -> Sample:
    """Cropland with a band of tree cover (side depends on i) and a north-south river."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((90, 90), scheme.index_of("cropland"), dtype=np.uint8)
    band = (slice(0, 30 + i % 20), slice(None)) if i % 2 else (slice(None), slice(60 - i % 15, 90))
    grid[band] = scheme.index_of("tree cover")
    grid[:, 20 + i % 30: 24 + i % 30] = scheme.index_of("water")
    return Sample(key=f"poi{i}_t0000", split="train", image_png=b"", mask_png=None, metadata={},
                  stats=compute_stats(grid, scheme))


def _cfg(**changes) -> CaptionsConfig:
    base = {"tasks": ["area", "linear", "class"], "max_check_attempts": 3, "seed": 7}
    return CaptionsConfig(**{**base, **changes})


class SpyEngine(CaptionEngine):
    """Wraps the template engine; records every batch it is sent."""

    needs_prompts = False

    def __init__(self, name: str = "rsbuild-template") -> None:
        self.name = name
        self.inner = TemplateEngine()
        self.batches: list[list[CaptionRequest]] = []

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        self.batches.append(list(requests))
        return [CaptionResult(r.request, r.texts, self.name, r.error) for r in self.inner.generate(requests)]


class FlakyEngine(SpyEngine):
    """Writes a wrong caption for the first ``bad_attempts`` asks of each caption, then a right one."""

    def __init__(self, bad_attempts: int) -> None:
        super().__init__("flaky-model")
        self.bad_attempts = bad_attempts
        self.asked: Counter = Counter()

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        results = super().generate(requests)
        for result in results:
            slot = (result.request.key, result.request.task, result.request.subject)
            if self.asked[slot] < self.bad_attempts:
                result.texts = [WRONG] * len(result.texts)
            self.asked[slot] += 1
        return results


def test_template_annotations_are_complete_checked_and_deterministic() -> None:
    samples = [_sample(i) for i in range(6)]
    first = list(annotate(copy.deepcopy(samples), TemplateEngine(), _cfg()))
    second = list(annotate(copy.deepcopy(samples), TemplateEngine(), _cfg()))
    assert [s.annotations for s in first] == [s.annotations for s in second]
    assert [s.key for s in first] == [s.key for s in samples]
    for sample in first:
        tasks = Counter(a["task"] for a in sample.annotations)
        big = [c["name"] for c in sample.stats["classes"] if c["share"] >= 0.05][:3]
        assert tasks == {"area": 1, "linear": 1, "class": len(big)}
        assert [a["class"] for a in sample.annotations if a["task"] == "class"] == big
        assert not sample.failures
        for ann in sample.annotations:
            assert set(ann) >= {"task", "text", "annotator", "prompt", "prompt_sha256", "sampling", "seed",
                                "verified", "check_reasons"}
            assert ann["verified"] is True and ann["annotator"] == "rsbuild-template"
            assert ann["prompt"] == f"template:{ann['task']}" and len(ann["prompt_sha256"]) == 64
            assert ann["seed"] == request_seed(sample.key, ann["task"], ann.get("class"), 0, 7)
            assert check_caption(ann["text"], sample.stats).ok


def test_batches_are_bounded_and_output_is_lazy_and_ordered() -> None:
    pulled: list[int] = []

    def source() -> Iterator[Sample]:
        for i in range(7):
            pulled.append(i)
            yield _sample(i)

    engine = SpyEngine()
    out = annotate(source(), engine, _cfg(tasks=["area"]), batch_size=3)
    assert pulled == []  # nothing happens before the first sample is asked for
    assert next(out).key == "poi0_t0000"
    assert pulled == [0, 1, 2] and len(engine.batches) == 1 and len(engine.batches[0]) == 3
    rest = list(out)
    assert [s.key for s in rest] == [f"poi{i}_t0000" for i in range(1, 7)]
    assert [len(b) for b in engine.batches] == [3, 3, 1]


def test_failing_captions_are_reasked_with_new_seeds() -> None:
    engine = FlakyEngine(bad_attempts=2)
    (sample,) = annotate([_sample(3)], engine, _cfg(tasks=["area"], max_check_attempts=3))
    assert [a["task"] for a in sample.annotations] == ["area"] and not sample.failures
    seeds = [batch[0].seed for batch in engine.batches]
    assert seeds == [request_seed(sample.key, "area", None, attempt, 7) for attempt in range(3)]
    assert len(set(seeds)) == 3
    assert sample.annotations[0]["seed"] == seeds[-1] and sample.annotations[0]["annotator"] == "flaky-model"
    assert sample.annotations[0]["text"] != WRONG


def test_captions_still_wrong_after_the_last_attempt_are_recorded_as_failures() -> None:
    engine = FlakyEngine(bad_attempts=99)
    (sample,) = annotate([_sample(4)], engine, _cfg(tasks=["area", "class"], max_check_attempts=2))
    assert sample.annotations == []
    assert len(engine.batches) == 2  # every attempt of every caption in one batch
    classes = [c["name"] for c in sample.stats["classes"] if c["share"] >= 0.05][:3]
    assert [(f["task"], f.get("class")) for f in sample.failures] == [("area", None)] + [("class", c) for c in classes]
    for failure in sample.failures:
        assert failure["reason"] == "check_failed" and failure["stage"] == "caption"
        assert failure["text"] == WRONG and failure["attempts"] == 2
        assert any("snow and ice" in r for r in failure["check_reasons"])
    assert sample.json_payload()["caption_failures"] == sample.failures


def test_engine_errors_become_failures() -> None:
    class Broken(CaptionEngine):
        name, needs_prompts = "broken", False

        def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
            return [CaptionResult(r, [], self.name, error="HTTP 503 after 3 retries") for r in requests]

    (sample,) = annotate([_sample(1)], Broken(), _cfg(tasks=["area"], max_check_attempts=2))
    assert sample.annotations == []
    assert sample.failures[0]["reason"] == "engine_error" and "503" in sample.failures[0]["detail"]


def test_revise_asks_for_all_paraphrases_in_one_request() -> None:
    engine = SpyEngine()
    (sample,) = annotate([_sample(2)], engine, _cfg(tasks=["area", "revise"], paraphrases=3))
    revise_requests = [r for batch in engine.batches for r in batch if r.task == "revise"]
    assert len(revise_requests) == 1 and revise_requests[0].n == 3
    area = next(a["text"] for a in sample.annotations if a["task"] == "area")
    assert revise_requests[0].subject == area
    revised = [a for a in sample.annotations if a["task"] == "revise"]
    assert len(revised) == 3 and all(a["source_task"] == "area" for a in revised)
    assert len({a["text"] for a in revised}) == 3
    with pytest.raises(ConfigError, match="revise"):
        list(annotate([_sample(2)], engine, _cfg(tasks=["revise"])))


def test_prompted_engines_get_rendered_messages_and_record_the_template() -> None:
    class FakePrompts:
        def __init__(self) -> None:
            self.rendered: list[tuple[str, str | None]] = []

        def render(self, task, stats, subject=None):
            self.rendered.append((task, subject))
            messages = ({"role": "system", "content": "Describe land cover."},
                        {"role": "user", "content": f"{task}: {stats['dominant_class']} {subject or ''}"})
            return messages, f"{task}.j2", f"{task:0>64}"[-64:]

    class PromptedEngine(SpyEngine):
        needs_prompts = True

    prompts = FakePrompts()
    engine = PromptedEngine("tiny-llm")
    (sample,) = annotate([_sample(5)], engine, _cfg(tasks=["area", "class"], temperature=0.3), prompts=prompts)
    sent = [r for batch in engine.batches for r in batch]
    assert all(r.messages and r.messages[0]["role"] == "system" for r in sent)
    assert all(r.sampling == {"temperature": 0.3, "top_p": 0.95, "max_tokens": 160} for r in sent)
    assert ("class", sample.stats["classes"][0]["name"]) in prompts.rendered
    for ann in sample.annotations:
        assert ann["prompt"] == f"{ann['task']}.j2" and ann["prompt_sha256"].endswith(ann["task"])
        assert ann["annotator"] == "tiny-llm" and ann["sampling"]["temperature"] == 0.3
    with pytest.raises(ValueError, match="prompts"):
        list(annotate([_sample(5)], engine, _cfg()))


def test_several_annotators_share_the_work_and_each_caption_names_its_own() -> None:
    engines = [SpyEngine("model-a"), SpyEngine("model-b")]
    samples = list(annotate([_sample(i) for i in range(12)], engines, _cfg(tasks=["area", "class"])))
    used = Counter(a["annotator"] for s in samples for a in s.annotations)
    assert set(used) == {"model-a", "model-b"}
    for engine in engines:  # each engine saw exactly the captions it is credited with
        assert sum(len(b) for b in engine.batches) == used[engine.name]
    again = list(annotate([_sample(i) for i in range(12)], [SpyEngine("model-a"), SpyEngine("model-b")],
                          _cfg(tasks=["area", "class"])))
    assert [s.annotations for s in again] == [s.annotations for s in samples]
