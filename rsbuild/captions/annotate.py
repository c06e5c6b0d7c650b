"""The caption stage: Samples in, Samples with checked annotations out (same order, lazily).

For every ``batch_size`` samples pulled from the input it builds the caption requests of the
configured tasks, sends each engine its requests as one batch, checks every text with
`check_caption`, and re-asks the failing ones with a new seed (``request_seed`` with the next
attempt number) until ``cfg.max_check_attempts`` generations have been tried.

* ``area``: one caption per tile. ``linear``: one per tile that has an elongated component
  (of a class the check would accept as named). ``class``: one per class with share >=
  ``cfg.class_min_share`` (and at least the check's 1 %), largest first, at most
  ``cfg.max_class_rows``. ``revise``:
  ``max(1, cfg.paraphrases)`` rewrites of the tile's verified area caption, asked as ONE
  request with ``n`` texts (needs ``area`` in the tasks).
* Annotations hold only captions that passed the check (``verified: True``); a caption that
  still fails after the last attempt is kept out of the annotations and recorded in
  ``sample.failures`` (``KEY.json`` → ``caption_failures``) with the reason, the last text and
  the check's reasons, so the SFT writer never sees it.
* Several engines (annotator models): each caption request goes to one engine chosen by a
  sha256 of (key, task, subject), so a run spreads its captions over the annotators and every
  annotation records the model that wrote it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, request_seed
from rsbuild.captions.check import DEFAULT_MIN_SHARE, check_caption
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError
from rsbuild.types import Sample

__all__ = ["annotate", "PromptRenderer"]


class PromptRenderer(Protocol):
    """What the stage needs from a prompt set (``rsbuild.captions.prompts.PromptSet``)."""

    def render(self, task: str, stats: Mapping[str, Any], subject: str | None = None
               ) -> tuple[tuple[dict[str, Any], ...], str, str]: ...


@dataclass
class _Job:
    """One caption slot of one sample: what to ask, who answers, what has been accepted so far."""

    sample: Sample
    task: str
    engine: CaptionEngine
    subject: str | None = None  # class name ("class") or source caption ("revise")
    wanted: int = 1
    messages: tuple[dict[str, Any], ...] = ()
    template: str = ""
    template_sha256: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    last_failure: dict[str, Any] | None = None
    reused: bool = False  # kept from an earlier run (recaption with an unchanged template)

    @property
    def missing(self) -> int:
        return self.wanted - len(self.accepted)


def annotate(
    samples: Iterable[Sample],
    engine: CaptionEngine | Sequence[CaptionEngine],
    cfg: CaptionsConfig,
    *,
    prompts: PromptRenderer | None = None,
    batch_size: int = 64,
) -> Iterator[Sample]:
    """Caption samples lazily, ``batch_size`` at a time; yields them in input order.

    ``engine`` is one engine or a list (several annotator models). Engines with
    ``needs_prompts`` get chat messages from ``prompts.render(task, stats, subject)``.
    """
    engines = [engine] if isinstance(engine, CaptionEngine) else list(engine)
    if not engines:
        raise ValueError("annotate needs at least one caption engine")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if "revise" in cfg.tasks and "area" not in cfg.tasks:
        raise ConfigError("captions.tasks: 'revise' paraphrases the area caption; add 'area' to captions.tasks")
    if prompts is None and any(e.needs_prompts for e in engines):
        names = ", ".join(e.name for e in engines if e.needs_prompts)
        raise ValueError(f"engine(s) {names} write from prompt templates; pass prompts=PromptSet.load(...)")
    iterator = iter(samples)
    while batch := list(islice(iterator, batch_size)):
        _caption_batch(batch, engines, cfg, prompts)
        yield from batch


def _caption_batch(batch: list[Sample], engines: list[CaptionEngine], cfg: CaptionsConfig,
                   prompts: PromptRenderer | None) -> None:
    previous = {id(sample): _take_previous(sample, cfg) for sample in batch}
    first = [job for sample in batch for job in _first_jobs(sample, engines, cfg, prompts)]
    for job in first:
        _reuse(job, previous[id(job.sample)])
    _run(first, cfg)
    second = [job for job in (_revise_job(sample, first, engines, cfg, prompts) for sample in batch) if job]
    for job in second:
        area_reused = any(j.reused for j in first if j.sample is job.sample and j.task == "area")
        if area_reused:
            _reuse(job, previous[id(job.sample)])
    _run(second, cfg)
    for job in first + second:
        job.sample.annotations.extend(job.accepted)
        if job.missing > 0 and job.last_failure is not None:
            job.sample.failures.append(job.last_failure)


def _take_previous(sample: Sample, cfg: CaptionsConfig) -> list[dict[str, Any]]:
    """Remove (and return) the sample's existing annotations of the configured tasks.

    They come back only where the same engine and the same template would write them again
    (`_reuse`); the rest are replaced. Earlier failures of those tasks are dropped too.
    """
    tasks = set(cfg.tasks)
    previous = [a for a in sample.annotations if a.get("task") in tasks]
    sample.annotations = [a for a in sample.annotations if a.get("task") not in tasks]
    sample.failures = [f for f in sample.failures if f.get("task") not in tasks]
    return previous


def _reuse(job: _Job, previous: list[dict[str, Any]]) -> None:
    """Keep earlier captions written by this job's engine with this job's template (recaption)."""
    subject = job.subject if job.task == "class" else None
    same = [a for a in previous
            if a.get("task") == job.task and a.get("class") == subject and a.get("annotator") == job.engine.name
            and a.get("prompt_sha256") == job.template_sha256 and a.get("verified") is not False]
    if len(same) >= job.wanted:
        job.accepted = same[: job.wanted]
        job.reused = True


def _pick_engine(engines: list[CaptionEngine], key: str, task: str, subject: str | None) -> CaptionEngine:
    if len(engines) == 1:
        return engines[0]
    digest = hashlib.sha256(f"{key}\x1f{task}\x1f{subject or ''}".encode("utf-8")).digest()
    return engines[int.from_bytes(digest[:8], "big") % len(engines)]


def _new_job(sample: Sample, task: str, subject: str | None, wanted: int, engines: list[CaptionEngine],
             prompts: PromptRenderer | None) -> _Job:
    seed_subject = subject if task == "class" else None
    engine = _pick_engine(engines, sample.key, task, seed_subject)
    job = _Job(sample=sample, task=task, engine=engine, subject=subject, wanted=wanted)
    if engine.needs_prompts:
        assert prompts is not None
        job.messages, job.template, job.template_sha256 = prompts.render(task, sample.stats, subject)
        job.messages = tuple(job.messages)
    else:
        job.template, job.template_sha256 = engine.builtin_prompt(task)
    return job


def _has_linear_feature(stats: Mapping[str, Any]) -> bool:
    shares = {c.get("name"): float(c.get("share", 0.0)) for c in stats.get("classes", [])}
    return any(comp.get("elongated") and shares.get(comp.get("class"), 0.0) >= DEFAULT_MIN_SHARE
               for comp in stats.get("components", []))


def _class_subjects(stats: Mapping[str, Any], cfg: CaptionsConfig) -> list[str]:
    """Classes that get a class caption; never below the share the check accepts as named."""
    floor = max(cfg.class_min_share, DEFAULT_MIN_SHARE)
    eligible = [c for c in stats.get("classes", []) if float(c.get("share", 0.0)) >= floor]
    eligible.sort(key=lambda c: (-float(c.get("share", 0.0)), str(c.get("name"))))
    return [str(c["name"]) for c in eligible[:cfg.max_class_rows]]


def _first_jobs(sample: Sample, engines: list[CaptionEngine], cfg: CaptionsConfig,
                prompts: PromptRenderer | None) -> list[_Job]:
    jobs: list[_Job] = []
    stats = sample.stats
    for task in cfg.tasks:
        if task == "area" and stats.get("classes"):
            jobs.append(_new_job(sample, "area", None, 1, engines, prompts))
        elif task == "linear" and _has_linear_feature(stats):
            jobs.append(_new_job(sample, "linear", None, 1, engines, prompts))
        elif task == "class":
            jobs.extend(_new_job(sample, "class", name, 1, engines, prompts) for name in _class_subjects(stats, cfg))
    return jobs


def _revise_job(sample: Sample, first: list[_Job], engines: list[CaptionEngine], cfg: CaptionsConfig,
                prompts: PromptRenderer | None) -> _Job | None:
    if "revise" not in cfg.tasks:
        return None
    source = next((ann["text"] for job in first if job.sample is sample and job.task == "area"
                   for ann in job.accepted), None)
    if source is None:
        return None
    return _new_job(sample, "revise", source, max(1, cfg.paraphrases), engines, prompts)


def _sampling(engine: CaptionEngine, cfg: CaptionsConfig) -> dict[str, Any]:
    if not engine.needs_prompts:
        return {}
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}


def _request(job: _Job, cfg: CaptionsConfig) -> CaptionRequest:
    seed_subject = job.subject if job.task == "class" else None
    return CaptionRequest(
        key=job.sample.key,
        task=job.task,
        stats=job.sample.stats,
        subject=job.subject,
        messages=job.messages,
        template=job.template,
        template_sha256=job.template_sha256,
        n=job.missing,
        seed=request_seed(job.sample.key, job.task, seed_subject, job.attempts, cfg.seed),
        sampling=_sampling(job.engine, cfg),
    )


def _run(jobs: list[_Job], cfg: CaptionsConfig) -> None:
    """Ask, check and re-ask until every job has its texts or has used its attempts."""
    for _ in range(cfg.max_check_attempts):
        pending = [job for job in jobs if job.missing > 0]
        if not pending:
            return
        by_engine: dict[int, list[_Job]] = {}
        for job in pending:
            by_engine.setdefault(id(job.engine), []).append(job)
        for group in by_engine.values():
            requests = [_request(job, cfg) for job in group]
            results = group[0].engine.generate(requests)
            if len(results) != len(requests):
                raise RuntimeError(f"engine {group[0].engine.name!r} answered {len(results)} of "
                                   f"{len(requests)} caption requests")
            for job, result in zip(group, results):
                _take(job, result)
                job.attempts += 1


def _take(job: _Job, result: CaptionResult) -> None:
    """Check the texts of one result; accept passing ones, remember the last failure."""
    request = result.request
    base = {"stage": "caption", "key": job.sample.key, "task": job.task, "annotator": result.annotator,
            "seed": request.seed, "attempts": job.attempts + 1}
    if job.task == "class":
        base["class"] = job.subject
    if result.error:
        job.last_failure = {**base, "reason": "engine_error", "detail": result.error, "text": None, "check_reasons": []}
        return
    texts = [t.strip() for t in result.texts if t and t.strip()]
    if not texts:
        job.last_failure = {**base, "reason": "no_text", "detail": "the engine returned no text", "text": None,
                            "check_reasons": []}
        return
    subject = job.subject if job.task == "class" else None
    for text in texts:
        if job.missing <= 0:
            break
        verdict = check_caption(text, job.sample.stats, subject=subject)
        if verdict.ok:
            job.accepted.append(_annotation(job, result, text))
        else:
            job.last_failure = {**base, "reason": "check_failed", "detail": "; ".join(verdict.reasons),
                                "text": text, "check_reasons": list(verdict.reasons)}


def _annotation(job: _Job, result: CaptionResult, text: str) -> dict[str, Any]:
    request = result.request
    ann: dict[str, Any] = {
        "task": job.task,
        "text": text,
        "annotator": result.annotator,
        "prompt": request.template,
        "prompt_sha256": request.template_sha256,
        "sampling": dict(request.sampling),
        "seed": request.seed,
        "verified": True,
        "check_reasons": [],
    }
    if job.task == "class":
        ann["class"] = job.subject
    if job.task == "revise":
        ann["source_task"] = "area"
    return ann
