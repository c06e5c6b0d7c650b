"""`rsbuild verify`: re-check every caption of a built dataset against its statistics.

Streams the shards once; every annotation is checked again with `check_caption` (so captions
edited or written by another tool are judged too), and captions the build already rejected
(``caption_failures`` and the ``rejected`` counts) are counted with their recorded reasons: the
pass rate is passed ÷ every caption generated, kept or rejected.

Rows derived from the stats (tasks vqa, referring, masks) are exact by construction, so verify
re-derives each from the tile's statistics (`verify_derived_rows`: every VQA answer, every
referring phrase and box, every mask's pixel count and box) and decodes each shard's masks
against ``KEY.mask.png``; any mismatch is a failure (`rsbuild verify` exits 1). Multispectral
samples get their NDVI / NDWI / NBR re-derived from ``KEY.bands.tif`` and ``KEY.mask.png``
(`index_problems`): per tile and per class, pixel counts exactly and means to within
`rsbuild.chips.bands.INDEX_TOLERANCE`; each difference is a failure naming the key and the index.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from rsbuild.captions.paraphrase import check_text, paraphrase_problem
from rsbuild.captions.referring import referring_expressions
from rsbuild.captions.vqa import VqaPair, derive_answer
from rsbuild.chips.bands import INDEX_TOLERANCE, INDICES, indices_from_members
from rsbuild.chips.masks import component_masks, decode_rle
from rsbuild.dataset.annotations import CaptionCounts
from rsbuild.dataset.layout import DATA_DIR
from rsbuild.dataset.sft import DERIVED_ROW_TASKS
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.errors import InputError
from rsbuild.records import SPLITS, Sample
from rsbuild.schemes import scheme_or_none

_NUMBERS = re.compile(r"\d+(?:\.\d+)?")
MAX_LISTED = 50  # index problems listed literally (with their keys); the count covers all


def reason_kind(reason: str) -> str:
    """A reason with its numbers blanked, so the same problem on many tiles counts once."""
    return _NUMBERS.sub("#", reason)


def verify_dataset(dataset_dir: Path, top: int = 10) -> dict[str, Any]:
    """Pass rate per task and overall, and the most frequent reasons, as a JSON-able dict.

    The pass rate is honest: captions that pass the check now ÷ every caption the build generated,
    kept or rejected (rejected texts are counted from the ``rejected`` fields and the
    ``caption_failures`` of each ``KEY.json``). ``kept_pass_rate`` looks at the kept captions only.
    """
    shards = list_shards(Path(dataset_dir))
    if not shards:
        raise InputError(f"no shards under {Path(dataset_dir) / 'shards'}; pass a folder written by `rsbuild build`")
    passed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    counts = CaptionCounts()
    reasons: Counter[str] = Counter()
    samples = 0
    mask_failures: Counter[str] = Counter()
    indices = {"tiles": 0, "not_rederivable": 0, "failures": 0, "problems": []}
    for shard in shards:
        for sample in read_shard(shard):
            samples += 1
            for problem in shard_mask_problems(sample):
                mask_failures[problem] += 1
            _count_index_problems(sample, indices)
            counts.add_sample(sample)
            for ann in sample.annotations:
                subject = ann.get("class") if ann.get("task") == "class" else None
                verdict = check_text(ann.get("task"), str(ann.get("text", "")), sample.stats, sample.key, subject)
                task = str(ann.get("task"))
                if verdict.ok:
                    passed[task] += 1
                else:
                    failed[task] += 1
                    reasons.update(reason_kind(r) for r in verdict.reasons)
            for failure in sample.failures:
                if failure.get("text"):
                    reasons.update(reason_kind(r) for r in failure.get("check_reasons") or [failure.get("reason", "unknown")])
    rejected = counts.rejected
    by_task = {}
    for task in sorted(set(passed) | set(failed) | set(rejected)):
        kept = passed[task] + failed[task]
        generated = kept + rejected[task]
        by_task[task] = {
            "generated": generated,
            "captions": kept,
            "passed": passed[task],
            "failed": failed[task],
            "rejected_at_build": rejected[task],
            "pass_rate": _rate(passed[task], generated),
            "kept_pass_rate": _rate(passed[task], kept),
        }
    kept_total = sum(passed.values()) + sum(failed.values())
    generated_total = kept_total + sum(rejected.values())
    report: dict[str, Any] = {
        "samples": samples,
        "generated": generated_total,
        "captions": kept_total,
        "passed": sum(passed.values()),
        "rejected_at_build": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(counts.rejected_by_reason.items())),
        "unwritten_by_reason": dict(sorted(counts.unwritten.items())),
        "pass_rate": _rate(sum(passed.values()), generated_total),
        "kept_pass_rate": _rate(sum(passed.values()), kept_total),
        "by_task": by_task,
        "top_reasons": [{"reason": r, "count": c} for r, c in reasons.most_common(top)],
    }
    derived = verify_derived_rows(Path(dataset_dir), top)
    if derived["rows"] or mask_failures or indices["tiles"] or indices["failures"]:
        derived["shard_mask_failures"] = sum(mask_failures.values())
        derived["failures"] += derived["shard_mask_failures"] + indices["failures"]
        derived["indices"] = indices
        derived["top_reasons"] = [{"reason": r, "count": c} for r, c in
                                  (Counter({x["reason"]: x["count"] for x in derived["top_reasons"]}) + mask_failures).most_common(top)]
        report["derived"] = derived
    return report


def shard_mask_problems(sample: Sample) -> list[str]:
    """Masks of a shard sample that are not their component's pixels in ``KEY.mask.png``."""
    if not sample.masks:
        return []
    scheme = scheme_or_none(sample.stats.get("scheme"))
    if sample.mask_png is None or scheme is None:
        return ["masks without a KEY.mask.png or a known scheme to check them against"]
    labels = np.asarray(Image.open(io.BytesIO(sample.mask_png)))
    try:
        expected = component_masks(labels, sample.stats, scheme)
    except ValueError as exc:
        return [f"masks: {exc}"]
    if len(expected) != len(sample.masks):
        return [f"masks: {len(sample.masks)} masks for {len(expected)} components"]
    return [f"mask of component {got.get('component')} is not its {got.get('class')} pixels"
            for got, want in zip(sample.masks, expected, strict=True) if got != want]


def index_problems(sample: Sample) -> list[str] | None:
    """Where the spectral indices in a sample's stats differ from those re-derived from its
    ``KEY.bands.tif`` and ``KEY.mask.png``; None when the sample has no indices or no mask to
    re-derive them with (``output.write_masks = false``)."""
    stats, key = sample.stats, sample.key
    if sample.bands_tif is None:
        return [f"{key}: indices in the stats but no KEY.bands.tif"] if "indices" in stats else None
    if sample.mask_png is None:
        return None
    try:
        labels = np.asarray(Image.open(io.BytesIO(sample.mask_png)))
        whole, per_class = indices_from_members(sample.bands_tif, labels, sample.metadata.get("bands") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:  # rasterio's errors are OSError / ValueError
        return [f"{key}: KEY.bands.tif or its cloud mask does not read ({exc})"]
    problems = _index_differences(key, "the tile", stats.get("indices"), whole)
    for entry in stats.get("classes", []):
        derived = per_class.get(int(entry["index"]), {"pixels": 0, **dict.fromkeys(INDICES)})
        problems += _index_differences(key, str(entry["name"]), entry.get("indices"), derived)
    return problems


def _index_differences(key: str, where: str, stored: Mapping[str, Any] | None, derived: Mapping[str, Any]) -> list[str]:
    if not stored:
        return [f"{key}: no indices of {where} in the stats"]
    problems = []
    if stored.get("pixels") != derived["pixels"]:
        problems.append(f"{key}: indices of {where} count {stored.get('pixels')} pixels, KEY.bands.tif and KEY.mask.png give {derived['pixels']}")
    for name in INDICES:
        got, want = stored.get(name), derived[name]
        if (got is None) != (want is None) or (got is not None and abs(float(got) - float(want)) > INDEX_TOLERANCE):
            problems.append(f"{key}: {name} of {where} is {got}, KEY.bands.tif gives {want}")
    return problems


def _count_index_problems(sample: Sample, indices: dict[str, Any]) -> None:
    problems = index_problems(sample)
    if problems is None:
        indices["not_rederivable"] += int("indices" in sample.stats)
        return
    indices["tiles"] += 1
    indices["failures"] += len(problems)
    indices["problems"] += problems[: MAX_LISTED - len(indices["problems"])]


def _rows(out: Path) -> Iterator[dict[str, Any]]:
    for split in SPLITS:
        path = out / DATA_DIR / f"{split}.jsonl"
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                yield from (json.loads(line) for line in handle)


def _sidecar_stats(out: Path, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stats of a row's tile from its ``metadata/…/KEY.json`` (beside ``images/…/KEY.png``)."""
    image = str(row["messages"][0]["content"][0]["image"])
    if not image.startswith("images/"):
        return None
    path = out / ("metadata/" + image.removeprefix("images/").removesuffix(".png") + ".json")
    if not path.is_file():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8"))["label"]["stats"])


def derived_row_problem(row: Mapping[str, Any], stats: Mapping[str, Any]) -> str | None:
    """Why a derived row's answer does not follow from the stats (None: it does)."""
    meta, answer = row["meta"], str(row["messages"][1]["content"][0]["text"])
    detail = meta.get("detail") or {}
    task = meta["task"]
    if task == "vqa":
        kind, subjects = str(detail.get("kind")), list(detail.get("subjects", []))
        expected = derive_answer(stats, kind, subjects)
        if expected != answer:
            return f"vqa {kind}: answer {answer!r}, the stats give {expected!r}"
        question = str(row["messages"][0]["content"][1]["text"])
        reason = paraphrase_problem(VqaPair(kind, tuple(subjects), question, answer), question, stats) if detail.get("paraphrased") else None
        return None if reason is None else f"vqa {kind}: the paraphrased question fails its check ({reason})"
    referents = {r.component: r for r in referring_expressions(stats).referents}
    ref = referents.get(detail.get("component"))  # type: ignore[arg-type]
    if ref is None or ref.phrase != detail.get("phrase"):
        return f"{task}: component {detail.get('component')} has no unambiguous phrase {detail.get('phrase')!r}"
    if task == "region_caption":
        return None if answer == ref.phrase else f"region_caption: answer {answer!r}, the stats give {ref.phrase!r}"
    if task == "referring":
        want = [{"label": ref.class_name, "bbox": list(ref.bbox)}]
        return None if json.loads(answer) == want else f"referring: box {answer} is not {ref.phrase}'s box"
    comp = stats["components"][ref.component]
    pixels = decode_rle(json.loads(answer))
    ys, xs = np.nonzero(pixels)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else []
    if int(pixels.sum()) != int(comp["pixels"]) or box != list(comp["bbox_px"]):
        return f"mask_grounding: mask of {ref.phrase} has {int(pixels.sum())} pixels in {box}, the stats say {comp['pixels']} in {comp['bbox_px']}"
    return None


def verify_derived_rows(out: Path, top: int = 10) -> dict[str, Any]:
    """Every derived JSONL row re-derived from its tile's stats: counts, answer distributions of
    the VQA kinds, components skipped as ambiguous, and the reasons of any mismatch."""
    passed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    answers: dict[str, Counter[str]] = {}
    ambiguous = 0
    last_key, stats = None, None
    for row in _rows(out):
        task = row.get("meta", {}).get("task")
        if task not in DERIVED_ROW_TASKS:
            continue
        if row["meta"]["key"] != last_key:  # a tile's rows are consecutive: one sidecar read per tile
            last_key, stats = row["meta"]["key"], _sidecar_stats(out, row)
            ambiguous += referring_expressions(stats).ambiguous if stats is not None else 0
        try:
            problem = "no metadata sidecar with the tile's stats" if stats is None else derived_row_problem(row, stats)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            problem = f"{task}: unreadable answer ({exc})"
        if problem is None:
            passed[task] += 1
        else:
            failed[task] += 1
            reasons[reason_kind(problem)] += 1
        if task == "vqa":
            answers.setdefault(str(row["meta"]["detail"]["kind"]), Counter())[row["messages"][1]["content"][0]["text"]] += 1
    tasks = sorted(set(passed) | set(failed))
    return {
        "rows": sum(passed.values()) + sum(failed.values()),
        "failures": sum(failed.values()),
        "by_task": {t: {"rows": passed[t] + failed[t], "passed": passed[t], "failed": failed[t]} for t in tasks},
        "vqa_answers": {kind: dict(sorted(c.items())) for kind, c in sorted(answers.items())},
        "referring_ambiguous_components": ambiguous,
        "top_reasons": [{"reason": r, "count": c} for r, c in reasons.most_common(top)],
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def render_verify(report: dict[str, Any], console: Console) -> None:
    """Tables of the verify report."""
    table = Table(title=f"captions: {report['generated']} generated ({report['captions']} kept, "
                        f"{report['rejected_at_build']} rejected at build), pass rate {report['pass_rate']}")
    for column in ("task", "generated", "kept", "rejected at build", "kept and passing now", "pass rate"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task, row in report["by_task"].items():
        table.add_row(task, str(row["generated"]), str(row["captions"]), str(row["rejected_at_build"]), str(row["passed"]),
                      str(row["pass_rate"]))
    console.print(table)
    if report["rejected_by_reason"]:
        console.print("rejected at build by reason: " + ", ".join(f"{r} {n}" for r, n in report["rejected_by_reason"].items()),
                      markup=False, highlight=False)
    if report["top_reasons"]:
        reasons = Table(title="most frequent reasons")
        reasons.add_column("reason")
        reasons.add_column("count", justify="right")
        for item in report["top_reasons"]:
            reasons.add_row(item["reason"], str(item["count"]))
        console.print(reasons)
    derived = report.get("derived")
    if derived:
        table = Table(title=f"rows derived from the stats: {derived['rows']} re-derived, {derived['failures']} wrong")
        for column in ("task", "rows", "passed", "failed"):
            table.add_column(column, justify="left" if column == "task" else "right")
        for task, row in derived["by_task"].items():
            table.add_row(task, str(row["rows"]), str(row["passed"]), str(row["failed"]))
        console.print(table)
        console.print(f"components without an unambiguous phrase (skipped): {derived['referring_ambiguous_components']}",
                      markup=False, highlight=False)
        indices = derived.get("indices")
        if indices and (indices["tiles"] or indices["not_rederivable"]):
            console.print(f"spectral indices re-derived from KEY.bands.tif on {indices['tiles']} tiles "
                          f"(within {INDEX_TOLERANCE}): {indices['failures']} wrong"
                          + (f", {indices['not_rederivable']} tiles without a KEY.mask.png to re-derive them"
                             if indices["not_rederivable"] else ""), markup=False, highlight=False)
            for problem in indices["problems"]:
                console.print(f"  {problem}", markup=False, highlight=False)
        for item in derived["top_reasons"]:
            console.print(f"  {item['count']} x {item['reason']}", markup=False, highlight=False)
