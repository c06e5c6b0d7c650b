"""`rsbuild verify`: re-check every caption of a built dataset against its statistics.

Streams the shards once; every annotation is checked again with `check_caption` (so captions
edited or written by another tool are judged too), and captions the build already rejected
(``caption_failures``) are counted with their recorded reasons.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rsbuild.captions.check import check_caption
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.errors import InputError

_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def reason_kind(reason: str) -> str:
    """A reason with its numbers blanked, so the same problem on many tiles counts once."""
    return _NUMBERS.sub("#", reason)


def verify_dataset(dataset_dir: Path, top: int = 10) -> dict[str, Any]:
    """Pass rate per task and overall, and the most frequent reasons, as a JSON-able dict."""
    shards = list_shards(Path(dataset_dir))
    if not shards:
        raise InputError(f"no shards under {Path(dataset_dir) / 'shards'}; pass a folder written by `rsbuild build`")
    passed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    rejected_at_build: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    samples = 0
    for shard in shards:
        for sample in read_shard(shard):
            samples += 1
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
                rejected_at_build[str(failure.get("task"))] += 1
                reasons.update(reason_kind(r) for r in failure.get("check_reasons") or [failure.get("reason", "unknown")])
    tasks = sorted(set(passed) | set(failed) | set(rejected_at_build))
    by_task = {}
    for task in tasks:
        checked = passed[task] + failed[task]
        by_task[task] = {
            "captions": checked,
            "passed": passed[task],
            "failed": failed[task],
            "pass_rate": round(passed[task] / checked, 4) if checked else None,
            "rejected_at_build": rejected_at_build[task],
        }
    total = sum(passed.values()) + sum(failed.values())
    return {
        "samples": samples,
        "captions": total,
        "pass_rate": round(sum(passed.values()) / total, 4) if total else None,
        "rejected_at_build": sum(rejected_at_build.values()),
        "by_task": by_task,
        "top_reasons": [{"reason": r, "count": c} for r, c in reasons.most_common(top)],
    }


def render_verify(report: dict[str, Any], console: Console) -> None:
    """Tables of the verify report."""
    table = Table(title=f"captions: {report['captions']} checked, pass rate {report['pass_rate']}")
    for column in ("task", "captions", "passed", "failed", "pass rate", "rejected at build"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task, row in report["by_task"].items():
        table.add_row(task, str(row["captions"]), str(row["passed"]), str(row["failed"]), str(row["pass_rate"]),
                      str(row["rejected_at_build"]))
    console.print(table)
    if report["top_reasons"]:
        reasons = Table(title="most frequent reasons")
        reasons.add_column("reason")
        reasons.add_column("count", justify="right")
        for item in report["top_reasons"]:
            reasons.add_row(item["reason"], str(item["count"]))
        console.print(reasons)
