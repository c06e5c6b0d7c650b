"""The caption stage: requests per task, streaming, checking, re-asking with new seeds, provenance."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, EngineFailure, follow_up_seed, request_seed
from rsbuild.captions.check import check_caption
from rsbuild.captions.engines.template import TemplateEngine
from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.chips.stats import compute_stats
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError
from rsbuild.records import Sample
from rsbuild.schemes import get_scheme

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


class ThreadedEngine(SpyEngine):
    """Answers on worker threads after a delay derived from the request (so completions arrive out
    of order); records how many requests were open at once and the order they were sent in."""

    def __init__(self, name: str = "rsbuild-template", slots: int = 16, delay_s: float = 0.004,
                 slow_keys: frozenset[str] = frozenset(), hold_until_full: bool = False) -> None:
        super().__init__(name)
        # with hold_until_full, no answer comes before `slots` requests were open at once (or 30 s
        # passed): whether the driver fills the engine then does not depend on the machine's load
        self.full = threading.Event()
        if not hold_until_full:
            self.full.set()
        self.max_in_flight = slots
        self.delay_s, self.slow_keys = delay_s, slow_keys
        self.pool = ThreadPoolExecutor(max_workers=slots)
        self.lock = threading.Lock()
        self.open = self.max_open = 0
        self.sent: list[tuple[str, str, int]] = []  # (key, task, open requests of the slow key at that moment)
        self.slow_open = 0

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        with self.lock:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
            if self.open >= self.max_in_flight:
                self.full.set()
            self.sent.append((request.key, request.task, self.slow_open))
            slow = request.key in self.slow_keys
            self.slow_open += slow
        digest = hashlib.sha256(f"{request.key}{request.task}{request.seed}".encode()).digest()
        delay = (0.25 if slow else self.delay_s * (1 + digest[0] % 4))

        def answer() -> CaptionResult:
            self.full.wait(timeout=30)
            time.sleep(delay)
            (result,) = self.generate([request])
            with self.lock:
                self.open -= 1
                self.slow_open -= slow
            return result

        return self.pool.submit(answer)


def test_stream_is_lazy_bounded_ordered_and_independent_of_timing() -> None:
    pulled: list[int] = []

    def source() -> Iterator[Sample]:
        for i in range(60):
            pulled.append(i)
            yield _sample(i)

    engine = ThreadedEngine(slots=8, hold_until_full=True)
    out = annotate(source(), engine, _cfg(tasks=["area", "class"]), window=12)
    assert pulled == []  # nothing happens before the first sample is asked for
    first = next(out)
    assert first.key == "poi0_t0000"
    time.sleep(0.2)
    assert len(pulled) <= 12 + 2  # the reader stays within the window
    rest = list(out)
    assert [s.key for s in [first, *rest]] == [f"poi{i}_t0000" for i in range(60)]
    assert engine.max_open == 8  # the engine was kept full
    serial = list(annotate([_sample(i) for i in range(60)], SpyEngine(), _cfg(tasks=["area", "class"])))
    assert [s.annotations for s in [first, *rest]] == [s.annotations for s in serial]
    assert [s.failures for s in [first, *rest]] == [s.failures for s in serial]


def test_reasks_and_revisions_go_out_while_other_requests_are_still_open() -> None:
    engine = FlakyEngine(bad_attempts=1)
    threaded = ThreadedEngine("flaky-model", slots=32, slow_keys=frozenset({"poi0_t0000"}))
    threaded.generate = engine.generate  # type: ignore[method-assign]  # wrong first, right second
    samples = list(annotate([_sample(i) for i in range(10)], threaded, _cfg(tasks=["area", "revise"], paraphrases=2)))
    assert all(Counter(a["task"] for a in s.annotations) == {"area": 1, "revise": 2} for s in samples)
    # while poi0's slow first request was open, other samples' re-asks and revisions were sent
    during = [(key, task) for key, task, slow_open in threaded.sent if slow_open and key != "poi0_t0000"]
    assert any(task == "revise" for _, task in during)
    assert sum(1 for key, task in during if task == "area") > 9  # first asks of 9 samples + their re-asks


def test_truncated_captions_are_reasked_and_never_kept() -> None:
    class Truncating(SpyEngine):
        def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
            results = super().generate(requests)
            for result in results:
                first = result.request.seed == request_seed(result.request.key, "area", None, 0, 7)
                result.finish_reasons = ["length" if first else "stop"] * len(result.texts)
            return results

    engine = Truncating()
    (sample,) = annotate([_sample(3)], engine, _cfg(tasks=["area"]))
    assert len(engine.batches) == 2 and len(sample.annotations) == 1 and not sample.failures
    (cut,) = annotate([_sample(3)], engine, _cfg(tasks=["area"], max_check_attempts=1))
    assert cut.annotations == [] and cut.failures[0]["reason"] == "truncated"
    assert "raise captions.max_tokens" in cut.failures[0]["detail"]


def test_an_engine_that_cannot_go_on_stops_the_stage() -> None:
    class Dead(SpyEngine):
        def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
            raise EngineFailure("the vLLM engine died")

    with pytest.raises(EngineFailure, match="died"):
        list(annotate([_sample(i) for i in range(5)], Dead(), _cfg(tasks=["area"])))


def test_telemetry_counts_what_the_stage_did() -> None:
    telemetry = CaptionTelemetry()
    list(annotate([_sample(i) for i in range(4)], FlakyEngine(bad_attempts=1), _cfg(tasks=["area"]), telemetry=telemetry))
    assert telemetry.requests == 8 and telemetry.samples == 4
    assert telemetry.captions_generated == 8 and telemetry.captions_kept == 4 and telemetry.captions_rejected == 4
    assert telemetry.pass_rate == 0.5 and telemetry.in_flight == 0
    assert telemetry.to_json()["captions_kept"] == 4


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
    classes = [c["name"] for c in sample.stats["classes"] if c["share"] >= 0.05][:3]
    assert len(engine.batches) == 2 * (1 + len(classes))  # two attempts for each caption, one request each
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


class SeededFaultEngine(ThreadedEngine):
    """A batching engine whose candidate i depends only on its own seed (as vLLM's ``seed + i`` and
    the engines' follow-up seeds): the template's text, or a wrong one for one seed in three."""

    batches_requests = True

    def __init__(self, slots: int) -> None:
        super().__init__("seeded-model", slots=slots)
        self.open_by_slot: Counter = Counter()
        self.most_open_by_slot: Counter = Counter()

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        slot = (request.key, request.task, request.subject)
        with self.lock:
            self.open_by_slot[slot] += 1
            self.most_open_by_slot[slot] = max(self.most_open_by_slot[slot], self.open_by_slot[slot])
        future = super().submit(request)
        future.add_done_callback(lambda _: self._closed(slot))
        return future

    def _closed(self, slot: tuple) -> None:
        with self.lock:
            self.open_by_slot[slot] -= 1

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        results = []
        for request in requests:
            texts = []
            for i in range(request.n):
                seed = request.seed if i == 0 else follow_up_seed(request.seed, i)
                (own,) = self.inner.generate([dataclasses.replace(request, n=1, seed=seed)])
                wrong = hashlib.sha256(str(seed).encode()).digest()[0] % 3 == 0
                texts.append(WRONG if wrong else own.texts[0])
            results.append(CaptionResult(request, texts, self.name))
        return results


@pytest.mark.parametrize("best_of", [1, 2])
def test_attempts_asked_ahead_keep_the_same_texts_as_asking_in_turn(best_of: int) -> None:
    """Speculative re-asks: idle slots at the end of the input ask the next attempts early; the kept
    captions, failures and rejection counts are those of asking one attempt after the other."""
    samples = [_sample(i) for i in range(24)]
    cfg = {"tasks": ["area", "class", "revise"], "paraphrases": 2, "best_of": best_of}
    runs = {}
    for speculate in (False, True):
        engine, telemetry = SeededFaultEngine(slots=64), CaptionTelemetry()
        out = list(annotate(copy.deepcopy(samples), engine, _cfg(**cfg, speculative_reasks=speculate),
                            telemetry=telemetry))
        runs[speculate] = (out, engine, telemetry)
    (plain, plain_engine, plain_t), (ahead, ahead_engine, ahead_t) = runs[False], runs[True]
    assert json.dumps([s.json_payload() for s in ahead]) == json.dumps([s.json_payload() for s in plain])
    assert sum(len(s.annotations) for s in plain) > 24 * 3 and plain_t.captions_rejected > 24  # re-asks mattered
    assert plain_t.speculative_requests == 0 and max(plain_engine.most_open_by_slot.values()) == 1
    # attempts of one caption were open at the same time, and the unneeded ones were dropped
    assert ahead_t.speculative_requests > 0 and max(ahead_engine.most_open_by_slot.values()) > 1
    assert 0 < ahead_t.speculative_discarded <= ahead_t.speculative_requests
    assert ahead_t.requests - ahead_t.speculative_discarded == plain_t.requests
    for counter in ("captions_generated", "captions_kept", "captions_rejected", "candidates_unchecked"):
        assert getattr(ahead_t, counter) == getattr(plain_t, counter), counter


def test_engines_that_answer_one_request_at_a_time_are_never_asked_ahead() -> None:
    telemetry = CaptionTelemetry()
    engine = ThreadedEngine("flaky-model", slots=16)
    engine.generate = FlakyEngine(bad_attempts=1).generate  # type: ignore[method-assign]
    list(annotate([_sample(i) for i in range(6)], engine, _cfg(tasks=["area"]), telemetry=telemetry))
    assert telemetry.speculative_requests == 0 and telemetry.requests == 12


class BatchedFaultEngine(SeededFaultEngine):
    """A `SeededFaultEngine` that decodes ``batch`` sequences at once (as vLLM's ``max_num_seqs``) and
    says how many of them are idle; records, per request, the open sequences when it was sent and
    whether the caption stage sent it ahead (its ``speculative_requests`` counter rose)."""

    def __init__(self, slots: int, batch: int, telemetry: CaptionTelemetry, tells: bool = True) -> None:
        super().__init__(slots=slots)
        self.batch, self.telemetry, self.tells = batch, telemetry, tells
        self.open_sequences = 0
        self.asked: list[tuple[int, bool]] = []  # (open sequences before it, asked ahead)
        self._ahead_seen = 0

    def idle_sequences(self) -> int | None:
        with self.lock:
            return max(0, self.batch - self.open_sequences) if self.tells else None

    def submit(self, request: CaptionRequest) -> Future[CaptionResult]:
        with self.lock:
            ahead = self.telemetry.speculative_requests > self._ahead_seen  # counted just before submit
            self._ahead_seen = self.telemetry.speculative_requests
            self.asked.append((self.open_sequences, ahead))
            self.open_sequences += request.n
        future = super().submit(request)
        future.add_done_callback(lambda _: self._release(request.n))
        return future

    def _release(self, sequences: int) -> None:
        with self.lock:
            self.open_sequences -= sequences


def test_attempts_are_asked_ahead_only_into_sequences_the_engine_says_are_idle() -> None:
    """An engine whose batch is smaller than its open requests (a vLLM server behind a high
    concurrency) is asked ahead only while its batch has room, with the same kept captions."""
    samples = [_sample(i) for i in range(24)]
    cfg = _cfg(tasks=["area", "class", "revise"], paraphrases=2)
    runs = {}
    for tells in (True, False):
        telemetry = CaptionTelemetry()
        engine = BatchedFaultEngine(slots=64, batch=8, telemetry=telemetry, tells=tells)
        out = list(annotate(copy.deepcopy(samples), engine, cfg, telemetry=telemetry))
        runs[tells] = (out, engine, telemetry)
    (told, told_engine, told_t), (blind, blind_engine, blind_t) = runs[True], runs[False]
    assert json.dumps([s.json_payload() for s in told]) == json.dumps([s.json_payload() for s in blind])
    ahead_told = [open_ for open_, ahead in told_engine.asked if ahead]
    assert told_t.speculative_requests == len(ahead_told) > 0  # the tail still asks ahead
    assert max(ahead_told) < 8  # ... but only while the batch had room
    # without the engine's answer the free requests decide, and attempts go out into a full batch
    assert max(open_ for open_, ahead in blind_engine.asked if ahead) >= 8
    assert told_t.speculative_requests < blind_t.speculative_requests
