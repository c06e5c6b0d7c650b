"""What a sample's captions say, in one normalised form: verdicts and caption entries.

Shared by the card plots (`rsbuild.dataset.plots`) and the HTML preview (`rsbuild.report.preview`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
