"""SFT JSONL rows: global captions, grounding, class captions and class grounding per tile.

A POI can also get one ``still_overview`` row for its overhead context still (`rsbuild.sources.mapbox`);
its image is a PNG or a JPEG under ``mapbox_stills/`` and its ``meta.key`` is the POI id.

A row is ``{"messages": [user(image, text), assistant(text)], "meta": {...}}``; ``meta`` names
the sample key, the row task, the class (class rows), the annotator (caption rows) and the
overlay PNG (when written), so rows can be traced back to shards without parsing prompts.
Prompt wording is picked from a few phrasings by sha256 of the key, so rebuilds are identical.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rsbuild.captions.paraphrase import PARAPHRASE_TASK, chosen_questions
from rsbuild.captions.referring import referring_expressions
from rsbuild.captions.scheduler import caption_classes
from rsbuild.captions.vqa import KINDS as VQA_KINDS
from rsbuild.captions.vqa import TILE_IMAGE, VqaPair, vqa_pairs
from rsbuild.records import KEY_PATTERN, Poi, Sample

ROW_TASKS = ("global", "grounding", "class", "class_grounding")  # the rows of a tile
STILL_TASK = "still_overview"  # the row of a POI's overhead still (still_overview_row)
# rows derived from the stats (opt-in through captions.tasks vqa / referring / masks); meta.detail says what
DERIVED_ROW_TASKS = ("vqa", "referring", "region_caption", "mask_grounding")
ALL_ROW_TASKS = (*ROW_TASKS, STILL_TASK, *DERIVED_ROW_TASKS)
MAX_VQA_ROWS = 19  # the most `vqa_pairs` asks per tile (rsbuild.captions.vqa MAX_* limits)
MAX_REFERENTS = 20  # components per tile that get referring / mask rows (stats.max_components default)
_IMAGE_SUFFIXES = {STILL_TASK: (".png", ".jpg")}  # other tasks: ".png" only

MODALITIES = {
    "sentinel-2": TILE_IMAGE,
    "overhead": "this overhead context image",
}

_BOX_FORMAT = (
    ' Answer with a JSON list of objects with "label" and "bbox" = [x1, y1, x2, y2],'
    " coordinates normalised to 0-1 (x to the right, y down)."
)

PROMPTS: dict[str, tuple[str, ...]] = {
    "global": (
        "Describe {image}.",
        "Write a short caption for {image}.",
        "Describe the land cover shown in {image}.",
        "What does {image} show? Describe the landscape.",
    ),
    "grounding": (
        "Locate the land-cover regions in {image}." + _BOX_FORMAT,
        "Find the main land-cover areas in {image} and give their bounding boxes." + _BOX_FORMAT,
        "Where are the distinct land-cover patches in {image}?" + _BOX_FORMAT,
    ),
    "class": (
        "Describe the {cls} in {image}.",
        "How is {cls} distributed across {image}?",
        "Where is {cls} in {image}, and how much of the image does it cover?",
    ),
    "class_grounding": (
        "Locate every {cls} area in {image}." + _BOX_FORMAT,
        "Give the bounding boxes of the {cls} in {image}." + _BOX_FORMAT,
        "Where is {cls} in {image}?" + _BOX_FORMAT,
    ),
    "referring": (
        "Give the bounding box of {cls} in {image}." + _BOX_FORMAT,
        "Locate {cls} in {image}." + _BOX_FORMAT,
        "Where is {cls} in {image}?" + _BOX_FORMAT,
    ),
    "region_caption": (
        "What is in the region {cls} of {image}? The box is [x1, y1, x2, y2] normalised to 0-1 (x to the right, y down)."
        " Answer with a short referring phrase.",
        "Describe the area inside the box {cls} of {image} (normalised [x1, y1, x2, y2], x to the right, y down)"
        " with a phrase that singles it out.",
    ),
    "mask_grounding": (
        "Segment {cls} in {image}. Answer with a COCO run-length encoding"
        ' {{"size": [height, width], "counts": STRING}} (column-major, compressed counts).',
        "Give the pixel mask of {cls} in {image} as COCO RLE"
        ' {{"size": [height, width], "counts": STRING}} (column-major, compressed counts).',
    ),
}


@dataclass(frozen=True)
class Box:
    """A labelled box, ``bbox`` = normalised [x1, y1, x2, y2] of the output image."""

    label: str
    bbox: tuple[float, float, float, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "bbox": list(self.bbox)}


@dataclass(frozen=True)
class SftRow:
    """One SFT example before it gets an image path; ``boxes`` are what its overlay draws."""

    task: str
    prompt: str
    answer: str
    boxes: tuple[Box, ...]
    class_name: str | None = None
    annotator: str | None = None
    detail: dict[str, Any] | None = None  # derived rows: what verify needs to re-derive the answer

    def to_json(self, key: str, image: str, overlay: str | None = None) -> dict[str, Any]:
        """The JSONL row; ``image`` and ``overlay`` are paths relative to the dataset folder."""
        row: dict[str, Any] = {
            "messages": [
                {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": self.prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": self.answer}]},
            ],
            "meta": {
                "key": key,
                "task": self.task,
                "class": self.class_name,
                "annotator": self.annotator,
                "overlay": overlay,
            },
        }
        if self.detail is not None:
            row["meta"]["detail"] = self.detail
        return row


def pick_prompt(key: str, task: str, modality: str, class_name: str | None = None, variant: int = 0) -> str:
    """A phrasing for ``task`` chosen by sha256 of (key, task, class, variant); names the modality."""
    phrasings = PROMPTS[task]
    seed = "\x1f".join((key, task, class_name or "", str(variant)))
    index = int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest()[:4], "big") % len(phrasings)
    return phrasings[index].format(image=MODALITIES[modality], cls=class_name or "")


def _normalised_bbox(component: Mapping[str, Any], size: Sequence[int]) -> tuple[float, float, float, float]:
    if "bbox" in component:
        x1, y1, x2, y2 = component["bbox"]
    else:
        height, width = size
        px1, py1, px2, py2 = component["bbox_px"]
        x1, y1, x2, y2 = px1 / width, py1 / height, px2 / width, py2 / height
    return tuple(round(min(max(float(v), 0.0), 1.0), 3) for v in (x1, y1, x2, y2))  # type: ignore[return-value]


def component_boxes(stats: Mapping[str, Any], class_name: str | None = None) -> tuple[Box, ...]:
    """Boxes of the stats' connected components (area descending), optionally of one class."""
    size = stats.get("size", (1, 1))
    return tuple(
        Box(comp["class"], _normalised_bbox(comp, size))
        for comp in stats.get("components", [])
        if class_name is None or comp["class"] == class_name
    )


def boxes_answer(boxes: Sequence[Box]) -> str:
    """The grounding answer: a JSON list of ``{"label", "bbox"}``."""
    return json.dumps([box.to_json() for box in boxes], ensure_ascii=False)


def caption_texts(annotations: Sequence[Mapping[str, Any]], task: str, class_name: str | None = None) -> list[tuple[str, str | None]]:
    """(text, annotator) of usable captions for a task: verified != False, revise paraphrases
    of that task included, duplicates dropped, order kept."""
    seen: set[str] = set()
    texts: list[tuple[str, str | None]] = []
    for ann in annotations:
        source_task = ann.get("source_task") if ann.get("task") == "revise" else ann.get("task")
        if source_task != task or ann.get("verified") is False:
            continue
        if class_name is not None and ann.get("class") != class_name:
            continue
        text = str(ann.get("text", "")).strip()
        if text and text not in seen:
            seen.add(text)
            texts.append((text, ann.get("annotator")))
    return texts


def selected_classes(stats: Mapping[str, Any], min_share: float, max_rows: int) -> list[Mapping[str, Any]]:
    """Classes that get their own rows: the caption stage's rule (`rsbuild.captions.scheduler.caption_classes`)."""
    return caption_classes(stats, min_share, max_rows)


def derived_rows_bound(tasks: Iterable[str]) -> int:
    """The most rows the derived ``tasks`` (vqa, referring, masks) add to one tile."""
    chosen = set(tasks)
    return (MAX_VQA_ROWS if "vqa" in chosen else 0) + MAX_REFERENTS * (
        2 * ("referring" in chosen) + ("masks" in chosen))


def paraphrase_outcomes(sample: Sample, image: str = TILE_IMAGE) -> tuple[list[VqaPair], dict[str, int]]:
    """The tile's VQA pairs with the checked paraphrases of its ``vqa_paraphrase`` reply in place
    (the kept annotation, else the last rejected reply) and the count of each outcome."""
    replies = _paraphrase_replies(sample)
    return chosen_questions(vqa_pairs(sample.stats, sample.key, image), replies[0] if replies else None, sample.stats)


def paraphrase_counts(sample: Sample) -> dict[str, int]:
    """`paraphrase_outcomes` counts of a tile ({} without a ``vqa_paraphrase`` reply)."""
    return paraphrase_outcomes(sample)[1] if _paraphrase_replies(sample) else {}


def _paraphrase_replies(sample: Sample) -> list[str]:
    replies = [str(a.get("text", "")) for a in sample.annotations if a.get("task") == PARAPHRASE_TASK]
    return replies + [str(f.get("text") or "") for f in sample.failures if f.get("task") == PARAPHRASE_TASK]


def derived_rows(sample: Sample, tasks: Iterable[str], modality: str = "sentinel-2") -> list[SftRow]:
    """The rows computed from the stats alone: VQA pairs, referring expressions in both
    directions (phrase → box, box → phrase) and mask grounding (phrase → COCO RLE)."""
    chosen, key, stats = set(tasks), sample.key, sample.stats
    image = MODALITIES[modality]
    pairs, _ = paraphrase_outcomes(sample, image) if "vqa" in chosen else ([], {})
    rows = [SftRow("vqa", pair.question, pair.answer, (), None, None, pair.detail()) for pair in pairs]
    if not chosen & {"referring", "masks"}:
        return rows
    masks = {int(m["component"]): m["rle"] for m in sample.masks}
    for ref in referring_expressions(stats).referents[:MAX_REFERENTS]:
        box = Box(ref.class_name, ref.bbox)
        detail = {"component": ref.component, "phrase": ref.phrase}
        if "referring" in chosen:
            rows.append(SftRow("referring", pick_prompt(key, "referring", modality, ref.phrase), boxes_answer([box]),
                               (box,), None, None, detail))
            region = json.dumps(list(ref.bbox))
            rows.append(SftRow("region_caption", pick_prompt(key, "region_caption", modality, region), ref.phrase,
                               (box,), None, None, detail))
        if "masks" in chosen and ref.component in masks:
            rows.append(SftRow("mask_grounding", pick_prompt(key, "mask_grounding", modality, ref.phrase),
                               json.dumps(masks[ref.component], sort_keys=True), (box,), None, None, detail))
    return rows


class DerivedCounts:
    """Answer distributions of the VQA rows (per kind) and referring components skipped as
    ambiguous: what the summary and the card report; empty (and absent) unless the tasks ran."""

    def __init__(self) -> None:
        self.answers: dict[str, Counter[str]] = {}
        self.ambiguous = 0
        self.paraphrases: Counter[str] = Counter()  # kept, or the reason a template question stayed

    def add(self, sample: Sample, rows: Sequence[SftRow], tasks: Iterable[str]) -> None:
        for row in rows:
            if row.task == "vqa" and row.detail is not None:
                self.answers.setdefault(str(row.detail["kind"]), Counter())[row.answer] += 1
        if "vqa" in set(tasks):
            self.paraphrases.update(paraphrase_counts(sample))
        if set(tasks) & {"referring", "masks"}:
            self.ambiguous += referring_expressions(sample.stats).ambiguous

    def merge(self, doc: Mapping[str, Any]) -> None:
        for kind, counts in doc.get("vqa_answers", {}).items():
            self.answers.setdefault(kind, Counter()).update(counts)
        self.ambiguous += int(doc.get("referring_ambiguous_components", 0))
        self.paraphrases.update(doc.get("vqa_paraphrases", {}))

    def __bool__(self) -> bool:
        return bool(self.answers) or self.ambiguous > 0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"vqa_answers": {k: dict(sorted(c.items())) for k, c in sorted(self.answers.items())},
                               "referring_ambiguous_components": self.ambiguous}
        if self.paraphrases:  # captions.vqa_paraphrase: kept and the template questions left, by reason
            doc["vqa_paraphrases"] = dict(sorted(self.paraphrases.items()))
        return doc


def build_rows(
    sample: Sample, class_min_share: float = 0.05, max_class_rows: int = 3, modality: str = "sentinel-2",
    tasks: Iterable[str] = (),
) -> list[SftRow]:
    """Every SFT row of one tile: global captions, grounding, then per selected class its
    caption rows and grounding row, then the rows ``tasks`` derive from the stats (vqa,
    referring, masks). Tiles without captions still get their grounding rows."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    key, stats = sample.key, sample.stats
    all_boxes = component_boxes(stats)
    rows: list[SftRow] = []
    for variant, (text, annotator) in enumerate(caption_texts(sample.annotations, "area")):
        rows.append(SftRow("global", pick_prompt(key, "global", modality, None, variant), text, all_boxes, None, annotator))
    if all_boxes:
        rows.append(SftRow("grounding", pick_prompt(key, "grounding", modality), boxes_answer(all_boxes), all_boxes))
    for cls in selected_classes(stats, class_min_share, max_class_rows):
        name = cls["name"]
        boxes = component_boxes(stats, name) or (Box(name, _normalised_bbox(cls, stats.get("size", (1, 1)))),)
        for variant, (text, annotator) in enumerate(caption_texts(sample.annotations, "class", name)):
            rows.append(SftRow("class", pick_prompt(key, "class", modality, name, variant), text, boxes, name, annotator))
        rows.append(SftRow("class_grounding", pick_prompt(key, "class_grounding", modality, name), boxes_answer(boxes), boxes, name))
    return rows + derived_rows(sample, tasks, modality)


def _check_text_part(part: Any, where: str, problems: list[str]) -> None:
    if not isinstance(part, dict) or set(part) != {"type", "text"} or part.get("type") != "text":
        problems.append(f"{where} must be exactly {{'type': 'text', 'text': ...}}")
    elif not isinstance(part["text"], str) or not part["text"].strip():
        problems.append(f"{where}.text must be a non-empty string")


def derived_row_counts(rows_by_split: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Rows per derived task (``DERIVED_ROW_TASKS`` order) over all splits."""
    return {task: sum(int(rows.get(task, 0)) for rows in rows_by_split.values()) for task in DERIVED_ROW_TASKS}


def reported_tasks(counts_by_split: Iterable[Mapping[str, int]]) -> tuple[str, ...]:
    """The row tasks a count table lists: every tile task, and still and derived rows when there are any."""
    tables = list(counts_by_split)
    return ROW_TASKS + tuple(t for t in (STILL_TASK, *DERIVED_ROW_TASKS) if any(c.get(t, 0) for c in tables))


def row_problems(row: Any) -> list[str]:
    """Everything wrong with one parsed JSONL row against the strict row schema ([] = valid)."""
    problems: list[str] = []
    if not isinstance(row, dict) or set(row) != {"messages", "meta"}:
        return ["row must be an object with exactly 'messages' and 'meta'"]
    messages = row["messages"]
    if not isinstance(messages, list) or len(messages) != 2:
        return ["messages must be a list of two messages (user, assistant)"]
    task = row["meta"].get("task") if isinstance(row["meta"], dict) else None
    suffixes = _IMAGE_SUFFIXES.get(task, (".png",)) if isinstance(task, str) else (".png",)
    user, assistant = messages
    if not isinstance(user, dict) or set(user) != {"role", "content"} or user.get("role") != "user":
        problems.append("messages[0] must be {'role': 'user', 'content': [...]}")
    elif not isinstance(user["content"], list) or len(user["content"]) != 2:
        problems.append("messages[0].content must be [image, text]")
    else:
        image_part, text_part = user["content"]
        if not isinstance(image_part, dict) or set(image_part) != {"type", "image"} or image_part.get("type") != "image":
            problems.append("messages[0].content[0] must be exactly {'type': 'image', 'image': PATH}")
        elif not _is_relative_image(image_part["image"], suffixes):
            problems.append(f"messages[0].content[0].image must be a relative path to a {' or '.join(suffixes)}")
        _check_text_part(text_part, "messages[0].content[1]", problems)
    if not isinstance(assistant, dict) or set(assistant) != {"role", "content"} or assistant.get("role") != "assistant":
        problems.append("messages[1] must be {'role': 'assistant', 'content': [...]}")
    elif not isinstance(assistant["content"], list) or len(assistant["content"]) != 1:
        problems.append("messages[1].content must be [text]")
    else:
        _check_text_part(assistant["content"][0], "messages[1].content[0]", problems)
    problems.extend(_meta_problems(row["meta"]))
    if not problems and row["meta"]["task"] in ("grounding", "class_grounding", "referring"):
        problems.extend(grounding_answer_problems(assistant["content"][0]["text"]))
    if not problems and row["meta"]["task"] == "mask_grounding":
        problems.extend(mask_answer_problems(assistant["content"][0]["text"]))
    return problems


def _is_relative_image(path: Any, suffixes: tuple[str, ...] = (".png",)) -> bool:
    return isinstance(path, str) and path.endswith(suffixes) and not path.startswith("/") and ".." not in path.split("/")


def _meta_problems(meta: Any) -> list[str]:
    fields = {"key", "task", "class", "annotator", "overlay"}
    derived = isinstance(meta, dict) and meta.get("task") in DERIVED_ROW_TASKS
    if not isinstance(meta, dict) or set(meta) != (fields | {"detail"} if derived else fields):
        return ["meta must have exactly key, task, class, annotator, overlay (and detail on "
                f"{', '.join(DERIVED_ROW_TASKS)} rows)"]
    problems = _detail_problems(meta["task"], meta["detail"]) if derived else []
    if not isinstance(meta["key"], str) or not KEY_PATTERN.match(meta["key"]):
        problems.append("meta.key must match [A-Za-z0-9_-]+")
    if meta["task"] not in ALL_ROW_TASKS:
        problems.append(f"meta.task must be one of {', '.join(ALL_ROW_TASKS)}")
    elif (meta["task"] in ("class", "class_grounding")) != isinstance(meta["class"], str):
        problems.append("meta.class must be a class name on class rows and null otherwise")
    if meta["annotator"] is not None and not isinstance(meta["annotator"], str):
        problems.append("meta.annotator must be a string or null")
    if meta["overlay"] is not None and not _is_relative_image(meta["overlay"]):
        problems.append("meta.overlay must be null or a relative path to a .png")
    elif meta["task"] == STILL_TASK and meta["overlay"] is not None:
        problems.append("meta.overlay must be null on still_overview rows")
    return problems


def _detail_problems(task: str, detail: Any) -> list[str]:
    if task == "vqa":
        ok = (isinstance(detail, dict) and set(detail) - {"paraphrased"} == {"kind", "subjects"} and detail["kind"] in VQA_KINDS
              and detail.get("paraphrased", True) is True
              and isinstance(detail["subjects"], list) and all(isinstance(s, str) for s in detail["subjects"]))
        return [] if ok else [f"meta.detail of a vqa row must be {{'kind': one of {', '.join(VQA_KINDS)}, 'subjects': [class, ...]}}"]
    ok = (isinstance(detail, dict) and set(detail) == {"component", "phrase"} and isinstance(detail["component"], int)
          and isinstance(detail["phrase"], str))
    return [] if ok else [f"meta.detail of a {task} row must be {{'component': int, 'phrase': str}}"]


def mask_answer_problems(answer: str) -> list[str]:
    """Problems of a mask answer: JSON ``{"size": [height, width], "counts": compressed COCO string}``."""
    try:
        rle = json.loads(answer)
    except json.JSONDecodeError:
        return ["mask answer is not JSON"]
    size = rle.get("size") if isinstance(rle, dict) else None
    if (not isinstance(rle, dict) or set(rle) != {"size", "counts"} or not isinstance(rle["counts"], str)
            or not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size))):
        return ['mask answer must be {"size": [height, width], "counts": STRING} (COCO RLE)']
    return []


def grounding_answer_problems(answer: str) -> list[str]:
    """Problems of a grounding answer: JSON list of {label, bbox in 0-1 with x1<=x2, y1<=y2}."""
    try:
        boxes = json.loads(answer)
    except json.JSONDecodeError:
        return ["grounding answer is not JSON"]
    if not isinstance(boxes, list) or not boxes:
        return ["grounding answer must be a non-empty JSON list"]
    problems = []
    for i, box in enumerate(boxes):
        bbox = box.get("bbox") if isinstance(box, dict) else None
        if not isinstance(box, dict) or set(box) != {"label", "bbox"} or not isinstance(box["label"], str):
            problems.append(f"box {i} must be exactly {{'label': str, 'bbox': [x1, y1, x2, y2]}}")
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            problems.append(f"box {i}: bbox must be four numbers")
        elif not (0 <= bbox[0] <= bbox[2] <= 1 and 0 <= bbox[1] <= bbox[3] <= 1):
            problems.append(f"box {i}: bbox {bbox} must satisfy 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1")
    return problems


STILL_PROMPT = (
    f"Describe {MODALITIES['overhead']}. It is a map still of the surroundings, "
    "not the Sentinel-2 satellite chip."
)


def _lat_lon_text(poi: Poi) -> str:
    lat = f"{abs(poi.lat):.5f}° {'N' if poi.lat >= 0 else 'S'}"
    lon = f"{abs(poi.lon):.5f}° {'E' if poi.lon >= 0 else 'W'}"
    return f"{lat}, {lon}"


def still_overview_row(rel_path: str, poi: Poi, summary: str = "") -> dict[str, Any]:
    """The SFT row of a still: the prompt says it is overhead context, not the satellite chip;
    the answer places the POI and adds ``summary`` (e.g. the tile's class summary) when given."""
    if rel_path.startswith("/") or ".." in rel_path.split("/"):
        raise ValueError(f"still path must be relative to the dataset folder, got {rel_path!r}")
    answer = f"An overhead view of the surroundings of point {poi.poi_id} at {_lat_lon_text(poi)}."
    if summary.strip():
        answer += " " + " ".join(summary.split())
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image", "image": rel_path}, {"type": "text", "text": STILL_PROMPT}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "meta": {"key": poi.poi_id, "task": STILL_TASK, "class": None, "annotator": None, "overlay": None},
    }
