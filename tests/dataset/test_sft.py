"""SFT rows: which rows a tile gets, their answers, the strict row schema, a chat-template consumer."""

from __future__ import annotations

import json

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rsbuild.dataset.sft import MODALITIES, PROMPTS, build_rows, grounding_answer_problems, pick_prompt, row_problems
from tests.dataset.test_shards import make_sample

STRIPES = (("cropland", 0.5), ("tree cover", 0.3), ("water", 0.16), ("built-up", 0.04))
IMAGE = "images/s00000/farm_t0000.png"

ANNOTATIONS = [
    {"task": "area", "text": "Cropland fills the west half; trees and a river lie east.", "annotator": "m1", "verified": True},
    {"task": "area", "text": "A wrong caption.", "annotator": "m1", "verified": False},
    {"task": "revise", "source_task": "area", "text": "Fields in the west, forest and water to the east.", "annotator": "m2", "verified": True},
    {"task": "area", "text": "Cropland fills the west half; trees and a river lie east.", "annotator": "m2", "verified": True},
    {"task": "class", "class": "water", "text": "A narrow strip of water runs north-south.", "annotator": "m1", "verified": True},
    {"task": "class", "class": "built-up", "text": "A few buildings.", "annotator": "m1", "verified": True},
    {"task": "linear", "text": "A river runs north to south.", "annotator": "m1", "verified": True},
]


@pytest.fixture()
def sample():
    return make_sample("farm_t0000", size=50, stripes=STRIPES, annotations=ANNOTATIONS)


def test_rows_of_a_tile(sample) -> None:
    rows = build_rows(sample, class_min_share=0.05, max_class_rows=3)
    tasks = [(r.task, r.class_name) for r in rows]
    assert tasks == [
        ("global", None), ("global", None),  # verified area caption + revise paraphrase; duplicate and unverified dropped
        ("grounding", None),
        ("class_grounding", "cropland"),
        ("class_grounding", "tree cover"),
        ("class", "water"), ("class_grounding", "water"),
        # built-up has 4 % < 5 %: no rows although it has a caption
    ]
    assert [r.answer for r in rows[:2]] == [ANNOTATIONS[0]["text"], ANNOTATIONS[2]["text"]]
    assert [r.annotator for r in rows[:2]] == ["m1", "m2"]
    assert rows[5].answer == ANNOTATIONS[4]["text"]


def test_grounding_answers_are_the_stats_components(sample) -> None:
    rows = {(r.task, r.class_name): r for r in build_rows(sample)}
    boxes = json.loads(rows[("grounding", None)].answer)
    expected = [{"label": c["class"], "bbox": [round(v, 3) for v in c["bbox"]]} for c in sample.stats["components"]]
    assert boxes == expected
    assert boxes[0] == {"label": "cropland", "bbox": [0.0, 0.0, 0.5, 1.0]}
    water = json.loads(rows[("class_grounding", "water")].answer)
    assert water == [{"label": "water", "bbox": [0.8, 0.0, 0.96, 1.0]}]
    assert all(not grounding_answer_problems(r.answer) for r in rows.values() if "grounding" in r.task)


def test_class_rows_are_capped_and_thresholded(sample) -> None:
    assert {r.class_name for r in build_rows(sample, 0.05, 1)} == {None, "cropland"}
    assert {r.class_name for r in build_rows(sample, 0.0, 10)} == {None, "cropland", "tree cover", "water", "built-up"}
    assert {r.class_name for r in build_rows(sample, 0.9, 3)} == {None}


def test_prompts_name_the_modality_and_are_deterministic(sample) -> None:
    satellite = build_rows(sample)
    overhead = build_rows(sample, modality="overhead")
    assert all(MODALITIES["sentinel-2"] in r.prompt for r in satellite)
    assert all(MODALITIES["overhead"] in r.prompt and "Sentinel" not in r.prompt for r in overhead)
    assert [r.prompt for r in satellite] == [r.prompt for r in build_rows(sample)]
    assert all("water" in r.prompt for r in satellite if r.class_name == "water")
    chosen = {pick_prompt(f"k{i}_t0000", "global", "sentinel-2") for i in range(40)}
    assert len(chosen) == len(PROMPTS["global"])  # every phrasing gets used across keys


def test_rows_follow_the_strict_schema(sample) -> None:
    for row in build_rows(sample):
        doc = json.loads(json.dumps(row.to_json(sample.key, IMAGE)))
        assert row_problems(doc) == []
        user, assistant = doc["messages"]
        assert user == {"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": row.prompt}]}
        assert assistant == {"role": "assistant", "content": [{"type": "text", "text": row.answer}]}
        assert doc["meta"]["key"] == sample.key and doc["meta"]["task"] == row.task


def _broken(row: dict, path: list, value) -> dict:
    doc = json.loads(json.dumps(row))
    target = doc
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["messages", 0, "role"], "system"),
        (["messages", 0, "content", 0, "image"], "/abs/path.png"),
        (["messages", 0, "content", 0, "image"], "../outside.png"),
        (["messages", 0, "content", 1, "text"], ""),
        (["messages", 1, "content", 0, "type"], "image"),
        (["messages", 1, "content", 0, "text"], "[{\"label\": \"water\", \"bbox\": [0.5, 0, 0.2, 1]}]"),
        (["meta", "task"], "summary"),
        (["meta", "key"], "has.dot"),
        (["meta", "class"], KeyError),
        (["extra"], 1),
    ],
)
def test_schema_rejects_broken_rows(sample, path, value) -> None:
    grounding = next(r for r in build_rows(sample) if r.task == "grounding")
    row = grounding.to_json(sample.key, IMAGE)
    assert row_problems(row) == []
    assert row_problems(_broken(row, path, value))


# A ChatML-style multimodal chat template as used by open VLMs (image parts become vision
# placeholder tokens), rendered the way transformers' apply_chat_template renders templates.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% else %}{{ raise_exception('unknown content type ' ~ part['type']) }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
)


def _raise(message: str) -> None:
    raise ValueError(message)


def test_rows_render_through_a_chat_template(sample) -> None:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    template = env.from_string(CHAT_TEMPLATE)
    for row in build_rows(sample):
        doc = json.loads(json.dumps(row.to_json(sample.key, IMAGE), ensure_ascii=False))
        text = template.render(messages=doc["messages"])
        assert text == (
            f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{row.prompt}<|im_end|>\n"
            f"<|im_start|>assistant\n{row.answer}<|im_end|>\n"
        )
