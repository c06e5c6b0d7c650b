"""`rsbuild verify`: re-check every caption of a built dataset against its statistics.

Streams the shards once; every annotation is checked again with `check_caption` (so captions
edited or written by another tool are judged too), and captions the build already rejected
(``caption_failures`` and the ``rejected`` counts) are counted with their recorded reasons: the
pass rate is passed ÷ every caption generated, kept or rejected.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rsbuild.captions.check import check_caption
from rsbuild.dataset.annotations import CaptionCounts
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.errors import InputError

_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


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
    for shard in shards:
        for sample in read_shard(shard):
            samples += 1
            counts.add_sample(sample)
            for ann in sample.annotations:
                subject = ann.get("class") if ann.get("task") == "class" else None
                verdict = check_caption(str(ann.get("text", "")), sample.stats, subject=subject)
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
    return {
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
