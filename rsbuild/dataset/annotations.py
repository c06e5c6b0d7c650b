"""What a sample's captions say, in one normalised form: verdicts and caption entries.

Shared by the card plots (`rsbuild.dataset.plots`) and the HTML preview (`rsbuild.report.preview`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rsbuild.records import Sample

PASS, FAIL, UNCHECKED, ERROR = "pass", "fail", "unchecked", "error"
VERDICTS = (PASS, FAIL, UNCHECKED, ERROR)  # ERROR: the caption was never written (engine failure)



@dataclass(frozen=True)
class CaptionEntry:
    """One caption as people judge it: task, text, who wrote it and what the check said."""

    task: str
    text: str
    annotator: str | None
    verdict: str  # one of VERDICTS
    reasons: tuple[str, ...] = ()
    class_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "text": self.text,
            "annotator": self.annotator,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "class": self.class_name,
        }


def _reasons(doc: Mapping[str, Any]) -> tuple[str, ...]:
    raw = doc.get("check_reasons") or doc.get("reasons") or ()
    if isinstance(raw, str):
        raw = [raw]
    reasons = [str(r) for r in raw if str(r).strip()]
    if not reasons and doc.get("reason"):
        detail = str(doc.get("detail") or "").strip()
        reasons = [f"{doc['reason']}: {detail}" if detail else str(doc["reason"])]
    return tuple(reasons)


def _annotation_verdict(verified: Any) -> str:
    if verified is True:
        return PASS
    if verified is False:
        return FAIL
    return UNCHECKED


def caption_entries(sample: Sample) -> list[CaptionEntry]:
    """Every caption of a sample with its verdict: annotations first, then caption failures.

    Annotations give ``pass`` (verified true), ``fail`` (verified false) or ``unchecked``.
    A failure record holding a text not already among the annotations is a caption that failed
    the check (``fail``); one without text is a caption that was never written (``error``).
    """
    entries = [
        CaptionEntry(
            task=str(ann.get("task", "")),
            text=str(ann.get("text", "")),
            annotator=ann.get("annotator"),
            verdict=_annotation_verdict(ann.get("verified")),
            reasons=_reasons(ann),
            class_name=ann.get("class"),
        )
        for ann in sample.annotations
    ]
    written = {(e.task, e.text) for e in entries}
    for failure in sample.failures:
        task, text = str(failure.get("task", "")), str(failure.get("text") or "")
        if text and (task, text) in written:
            continue
        entries.append(
            CaptionEntry(
                task=task,
                text=text,
                annotator=failure.get("annotator"),
                verdict=FAIL if text else ERROR,
                reasons=_reasons(failure),
                class_name=failure.get("class"),
            )
        )
    return entries


@dataclass
class CaptionCounts:
    """Every caption a build generated, kept or rejected, counted from the samples' JSON.

    A kept caption is an annotation; its ``rejected`` field (and a failure's) counts the texts of
    the same caption slot that the check (or the token limit) turned down, by reason. A failure
    written before that field existed counts as one rejected text when it holds a text. Requests
    that produced no text at all (engine errors) are ``unwritten``, not generated captions.
    """

    kept: Counter[str] = field(default_factory=Counter)  # task -> captions kept
    rejected: Counter[str] = field(default_factory=Counter)  # task -> texts rejected
    rejected_by_reason: Counter[str] = field(default_factory=Counter)  # "check_failed", "truncated", ...
    unwritten: Counter[str] = field(default_factory=Counter)  # reason -> caption slots with no text

    @property
    def generated(self) -> int:
        return sum(self.kept.values()) + sum(self.rejected.values())

    def add_sample(self, sample: Sample) -> None:
        for ann in sample.annotations:
            task = str(ann.get("task", ""))
            self.kept[task] += 1
            self._add_rejected(task, ann.get("rejected"))
        for failure in sample.failures:
            task = str(failure.get("task", ""))
            if failure.get("rejected"):
                self._add_rejected(task, failure.get("rejected"))
            elif failure.get("text"):
                self._add_rejected(task, {str(failure.get("reason") or "check_failed"): 1})
            else:
                self.unwritten[str(failure.get("reason") or "unknown")] += 1

    def _add_rejected(self, task: str, counts: Any) -> None:
        if not isinstance(counts, Mapping):
            return
        for reason, count in counts.items():
            self.rejected[task] += int(count)
            self.rejected_by_reason[str(reason)] += int(count)

    def to_json(self) -> dict[str, Any]:
        generated = self.generated
        return {
            "captions_generated": generated,
            "captions_kept": sum(self.kept.values()),
            "captions_rejected": sum(self.rejected.values()),
            "pass_rate": round(sum(self.kept.values()) / generated, 4) if generated else None,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "kept_by_task": dict(sorted(self.kept.items())),
            "rejected_by_task": dict(sorted(self.rejected.items())),
            "unwritten_by_reason": dict(sorted(self.unwritten.items())),
        }

    def merge(self, doc: Mapping[str, Any]) -> None:
        """Add counts written by ``to_json`` plus ``kept_by_task`` (a unit marker's tally)."""
        self.kept.update({str(k): int(v) for k, v in (doc.get("kept_by_task") or {}).items()})
        self.rejected.update({str(k): int(v) for k, v in (doc.get("rejected_by_task") or {}).items()})
        self.rejected_by_reason.update({str(k): int(v) for k, v in (doc.get("rejected_by_reason") or {}).items()})
        self.unwritten.update({str(k): int(v) for k, v in (doc.get("unwritten_by_reason") or {}).items()})
