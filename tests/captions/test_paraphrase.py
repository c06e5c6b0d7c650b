"""The check of LLM paraphrases of VQA questions, on written examples: a rewording is kept only
when it is still a question about the same classes, keeps the kind's constraint words and does
not give the answer away; the reply is read line by line."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.captions.paraphrase import chosen_questions, paraphrase_problem, paraphrase_subject, parse_reply
from rsbuild.captions.vqa import TILE_IMAGE, VqaPair, derive_answer, vqa_pairs
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme

SCHEME = get_scheme("esa_worldcover")


@pytest.fixture(scope="module")
def stats() -> dict:
    """Cropland, a tree-cover block in the north-east and a north-south river."""
    labels = np.full((96, 96), SCHEME.index_of("cropland"), np.uint8)
    labels[:, 20:26] = SCHEME.index_of("water")
    labels[8:30, 66:90] = SCHEME.index_of("tree cover")
    return dict(compute_stats(labels, SCHEME))


def pair(stats: dict, kind: str, subjects: tuple[str, ...] = ()) -> VqaPair:
    """The tile's question of ``kind`` about ``subjects`` (one the tile was not asked: its exact answer)."""
    asked = [p for p in vqa_pairs(stats, "poi_t0000") if p.kind == kind and (not subjects or p.subjects == subjects)]
    answer = derive_answer(stats, kind, subjects)
    assert answer is not None
    return asked[0] if asked else VqaPair(kind, subjects, "", answer)


@pytest.mark.parametrize(
    ("kind", "subjects", "text", "reason"),
    [
        ("presence", ("tree cover",), "Are there any trees visible in this satellite image?", None),  # a synonym
        ("presence", ("tree cover",), "Is there any forest in this picture?", None),
        ("presence", ("tree cover",), "Is there any water in this picture?", "wrong_class"),
        ("presence", ("tree cover",), "There is tree cover in this picture.", "not_a_question"),
        ("presence", ("tree cover",), "Where is the tree cover in this picture?", "lost_constraint"),  # no longer yes/no
        ("largest", (), "Which kind of land cover takes up most of this image?", None),
        ("largest", (), "Does cropland take up most of this image?", "leaks_answer"),
        ("position", ("tree cover",), "Where does the tree cover lie? Answer with a compass direction; north is up.", None),
        ("position", ("tree cover",), "Where does the tree cover lie in this image?", "lost_constraint"),  # compass dropped
        ("position", ("tree cover",), "Is the tree cover in the north-east? Give a compass direction.", "leaks_answer"),
        ("count", ("tree cover",), "How many distinct patches of tree cover can you see?", None),
        ("count", ("tree cover",), "How many patches of tree cover, one perhaps, can you see?", "leaks_answer"),
        ("count", ("tree cover",), "How many distinct patches of cropland can you see?", "wrong_class"),
        ("share_bin", ("water",), "What part of this image is water?", "lost_constraint"),  # the answer choices dropped
        # SmolLM2-135M's rewordings that change the kind of question (seen in the llama.cpp test)
        ("largest", (), "How many different kinds of land cover are there in this image?", "lost_constraint"),
        ("orientation", ("water",), "What percentage of land cover is comprised of water in this direction?", "lost_constraint"),
        ("presence", ("tree cover",), "Does the image contain trees? 17. Is there more forest?", "not_a_question"),
    ],
)
def test_paraphrase_check_on_written_examples(stats, kind, subjects, text, reason) -> None:
    assert paraphrase_problem(pair(stats, kind, subjects), text, stats) == reason


def test_every_template_question_passes_its_own_check(stats) -> None:
    for p in vqa_pairs(stats, "poi_t0000"):
        assert paraphrase_problem(p, p.question, stats) is None, p


def test_reply_is_read_by_number_and_failing_lines_keep_the_template(stats) -> None:
    pairs = vqa_pairs(stats, "poi_t0000")[:3]
    subject = paraphrase_subject(pairs)
    assert subject.splitlines() == [f"1. {pairs[0].question}", f"2. {pairs[1].question}", f"3. {pairs[2].question}"]
    good = pairs[1].question.replace("?", " at all?")
    reply = f"Here you go:\n2) {good}\n1. The answer is yes.\n"
    assert parse_reply(reply, 3) == ["The answer is yes.", good, None]
    chosen, counts = chosen_questions(pairs, reply, stats)
    assert [p.answer for p in chosen] == [p.answer for p in pairs]  # answers never change
    assert chosen[1].question == good and chosen[1].paraphrased and chosen[1].detail()["paraphrased"] is True
    assert chosen[0] == pairs[0] and chosen[2] == pairs[2]  # fell back to the templates
    assert counts == {"kept": 1, "not_a_question": 1, "missing": 1}
    assert chosen_questions(pairs, None, stats) == (pairs, {})


@pytest.mark.parametrize(("captions", "fix"), [
    ({"engine": "template", "tasks": ["area", "vqa"]}, "captions.engine"),
    ({"engine": "local", "tasks": ["area"]}, "add 'vqa' to captions.tasks"),
])
def test_the_option_needs_vqa_rows_and_an_llm(captions: dict, fix: str) -> None:
    from rsbuild.config import CaptionsConfig, config_from_dict
    from rsbuild.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        config_from_dict({"pois": {"path": "pois.csv"}, "scenes": {"catalog": "http://127.0.0.1:1/"},
                          "captions": {**captions, "vqa_paraphrase": True}})
    assert "captions.vqa_paraphrase" in str(error.value) and fix in str(error.value)
    assert CaptionsConfig().vqa_paraphrase is False and "vqa_paraphrase" not in CaptionsConfig().caption_tasks
    on = CaptionsConfig(engine="local", tasks=["vqa"], vqa_paraphrase=True)
    assert on.caption_tasks == ["vqa_paraphrase"]


def test_the_shipped_template_renders_the_numbered_questions(stats) -> None:
    from rsbuild.captions.prompts import PromptSet

    subject = paraphrase_subject(vqa_pairs(stats, "poi_t0000")[:2])
    messages, name, _ = PromptSet.load(tasks=["vqa_paraphrase"]).render("vqa_paraphrase", stats, subject)
    assert name == "vqa_paraphrase.j2" and messages[-1] == {"role": "user", "content": subject}  # one line each
    assert len(subject.splitlines()) == 2


def test_outcomes_are_counted_only_when_the_option_ran(stats) -> None:
    from rsbuild.dataset.sft import DerivedCounts, derived_rows, paraphrase_counts
    from rsbuild.records import Sample

    plain = Sample("poi_t0000", "train", b"", None, {}, stats)  # type: ignore[arg-type]
    counts = DerivedCounts()
    counts.add(plain, derived_rows(plain, ["vqa"]), ["vqa"])
    assert "vqa_paraphrases" not in counts.to_json() and paraphrase_counts(plain) == {}
    pairs = vqa_pairs(stats, "poi_t0000", TILE_IMAGE)  # the wording of the rows
    reply = f"1. {pairs[0].question.replace('?', ' at all?')}\n2. Yes."
    worded = Sample("poi_t0000", "train", b"", None, {}, stats,  # type: ignore[arg-type]
                    annotations=[{"task": "vqa_paraphrase", "text": reply}])
    rows = derived_rows(worded, ["vqa"])
    assert rows[0].prompt.endswith(" at all?") and rows[0].detail == {**pairs[0].detail(), "paraphrased": True}
    assert [r.prompt for r in rows[1:]] == [p.question for p in pairs[1:]]
    counts.add(worded, rows, ["vqa"])
    assert counts.to_json()["vqa_paraphrases"] == {"kept": 1, "not_a_question": 1, "missing": len(pairs) - 2}
    again = DerivedCounts()
    again.merge(counts.to_json())
    assert again.to_json() == counts.to_json()
