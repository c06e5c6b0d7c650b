"""The caption stage: Samples in, Samples with checked annotations out (same order, lazily).

A stream, not rounds: every request is submitted to its engine as soon as it is known and the
engine is kept at ``max_in_flight`` open requests. A caption that fails the check is re-asked
(``request_seed`` with the next attempt number) the moment its result arrives, a ``revise``
request goes out the moment its area caption passes, across sample and shard boundaries, until
``cfg.max_check_attempts`` generations have been tried. Three threads meet through bounded
queues: a reader pulls input samples (shard reading or the fetch stage) up to ``window``
samples ahead, a driver renders prompts, submits, checks and assembles, and the consumer writes
what this generator yields. Output order is input order and every text depends only on its
request's seed, so the bytes do not depend on timing.

* ``area``: one caption per tile. ``linear``: one per tile that has an elongated component
  (of a class the check would accept as named). ``class``: one per class with share >=
  ``cfg.class_min_share`` (and at least the check's 1 %), largest first, at most
  ``cfg.max_class_rows``. ``revise``: ``max(1, cfg.paraphrases)`` rewrites of the tile's
  verified area caption, asked as ONE request with ``n`` texts (needs ``area`` in the tasks).
* Speculative re-asks (``cfg.speculative_reasks``, engines that batch): once the input is all in
  and an engine has free slots with nothing new to ask, the next attempts of captions still being
  checked are asked ahead (not before the input ends: a slow fetch stage leaves slots idle, and
  they stay idle), and only into slots the engine says are idle (`CaptionEngine.idle_sequences`:
  vLLM's batch, a vLLM server's queue gauges). Attempts are taken strictly in order and a text beyond what the in-order attempt
  would have asked is never looked at, so kept texts, failures and counts are those of asking one
  attempt after another; only the tail gets shorter. Unneeded attempts are cancelled or dropped
  (``speculative_discarded``).
* Best of ``cfg.best_of``: each request asks ``best_of`` candidates per caption still missing
  (``n``; vLLM shares one prefill), checked in order; the first that pass are kept (an annotation
  records its ``candidate`` index when ``best_of > 1``) and the rest are counted unchecked.
* Annotations hold only captions that passed the check (``verified: True``); a caption that
  still fails after the last attempt (or was cut off at ``max_tokens``) is kept out of the
  annotations and recorded in ``sample.failures`` (``KEY.json`` → ``caption_failures``) with the
  reason, the last text and the check's reasons, so the SFT writer never sees it.
* Several engines (annotator models): each caption request goes to one engine chosen by a
  sha256 of (key, task, subject), so a run spreads its captions over the annotators and every
  annotation records the model that wrote it.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult, request_seed
from rsbuild.captions.check import DEFAULT_MIN_SHARE
from rsbuild.captions.paraphrase import PARAPHRASE_TASK, check_text, reply_sampling, request_subject
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError
from rsbuild.records import Annotation, CaptionFailure, Sample

__all__ = ["CaptionTelemetry", "PromptRenderer", "annotate", "caption_classes"]

DEFAULT_WINDOW_PER_SLOT = 4  # samples admitted ahead per open request slot (head-of-line re-asks need slack)
MIN_WINDOW = 16
TRUNCATED = "length"  # finish reason of a text cut off at max_tokens


class PromptRenderer(Protocol):
    """What the stage needs from a prompt set (``rsbuild.captions.prompts.PromptSet``)."""

    def render(self, task: str, stats: Mapping[str, Any], subject: str | None = None
               ) -> tuple[tuple[dict[str, Any], ...], str, str]: ...


@dataclass
class CaptionTelemetry:
    """What the caption stage did so far; read by the progress display and the run summary."""

    started: float = field(default_factory=time.perf_counter)
    samples: int = 0
    requests: int = 0
    cache_hits: int = 0
    in_flight: int = 0
    max_in_flight_seen: int = 0
    captions_generated: int = 0  # texts checked (kept + rejected)
    captions_kept: int = 0
    captions_rejected: int = 0
    candidates_unchecked: int = 0  # best-of-n candidates left once the slot was filled
    speculative_requests: int = 0  # attempts asked ahead (see speculative re-asks)
    speculative_discarded: int = 0  # of those, answers not needed (their caption was settled first)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)  # "check_failed", "truncated"
    truncated: int = 0
    engine_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reported_prompt_tokens: int = 0  # prompt tokens of results that report cache hits
    busy_seconds: float = 0.0  # time integral of requests in flight (for mean occupancy)
    _last_change: float = field(default_factory=time.perf_counter)

    def _in_flight_change(self, delta: int) -> None:
        now = time.perf_counter()
        self.busy_seconds += self.in_flight * (now - self._last_change)
        self._last_change = now
        self.in_flight += delta
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @property
    def pass_rate(self) -> float | None:
        return self.captions_kept / self.captions_generated if self.captions_generated else None

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        return self.cached_prompt_tokens / self.reported_prompt_tokens if self.reported_prompt_tokens else None

    def discard(self, request: CaptionRequest) -> None:
        """An attempt asked ahead that its caption did not need (answered, or cancelled when it was settled)."""
        self.speculative_discarded += 1

    def to_json(self) -> dict[str, Any]:
        elapsed = self.elapsed
        return {
            "seconds": round(elapsed, 3),
            "samples": self.samples,
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "captions_generated": self.captions_generated,
            "captions_kept": self.captions_kept,
            "captions_rejected": self.captions_rejected,
            "candidates_unchecked": self.candidates_unchecked,
            "speculative_requests": self.speculative_requests,
            "speculative_discarded": self.speculative_discarded,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "truncated": self.truncated,
            "engine_errors": self.engine_errors,
            "pass_rate": None if self.pass_rate is None else round(self.pass_rate, 4),
            "captions_per_s": round(self.captions_kept / elapsed, 3),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "output_tokens_per_s": round(self.completion_tokens / elapsed, 2),
            "prefix_cache_hit_rate": None if self.prefix_cache_hit_rate is None else round(self.prefix_cache_hit_rate, 4),
            "mean_in_flight": round(self.busy_seconds / elapsed, 2),
            "max_in_flight": self.max_in_flight_seen,
        }


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
    accepted: list[Annotation] = field(default_factory=list)
    attempts: int = 0  # attempts taken (checked), in order
    sent: int = 0  # attempts asked; ahead of ``attempts`` while answers are out (speculatively by more than one)
    out: dict[int, tuple[Future[CaptionResult], CaptionRequest]] = field(default_factory=dict)  # asked, not answered
    arrived: dict[int, tuple[Future[CaptionResult], CaptionRequest]] = field(default_factory=dict)  # await their turn
    finished: bool = False
    last_failure: CaptionFailure | None = None
    rejected: Counter[str] = field(default_factory=Counter)  # texts of this slot rejected, by reason
    reused: bool = False  # kept from an earlier run (recaption with an unchanged template)

    @property
    def missing(self) -> int:
        return self.wanted - len(self.accepted)


@dataclass
class _Pending:
    """A sample between admission and output: its jobs (in creation order) and open requests."""

    seq: int
    sample: Sample
    previous: list[Annotation]
    jobs: list[_Job] = field(default_factory=list)
    open: int = 0  # jobs still asking

    @property
    def done(self) -> bool:
        return self.open == 0


_END = object()


def annotate(
    samples: Iterable[Sample],
    engine: CaptionEngine | Sequence[CaptionEngine],
    cfg: CaptionsConfig,
    *,
    prompts: PromptRenderer | None = None,
    max_in_flight: int | None = None,
    window: int | None = None,
    telemetry: CaptionTelemetry | None = None,
) -> Iterator[Sample]:
    """Caption samples as a stream; yields them in input order.

    ``engine`` is one engine or a list (several annotator models). Engines with
    ``needs_prompts`` get chat messages from ``prompts.render(task, stats, subject)``.
    ``max_in_flight`` caps the open requests per engine (default: the engine's own
    ``max_in_flight``); ``window`` caps the samples held between input and output (default
    ``4 × max_in_flight``, at least 16), which bounds memory whatever the dataset size.
    """
    engines = [engine] if isinstance(engine, CaptionEngine) else list(engine)
    if not engines:
        raise ValueError("annotate needs at least one caption engine")
    if "revise" in cfg.tasks and "area" not in cfg.tasks:
        raise ConfigError("captions.tasks: 'revise' paraphrases the area caption; add 'area' to captions.tasks")
    if prompts is None and any(e.needs_prompts for e in engines):
        names = ", ".join(e.name for e in engines if e.needs_prompts)
        raise ValueError(f"engine(s) {names} write from prompt templates; pass prompts=PromptSet.load(...)")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    driver = _Driver(engines, cfg, prompts, max_in_flight, window, telemetry or CaptionTelemetry())
    return driver.run(samples)


class _Driver:
    """The stage's state machine; runs in its own thread, fed by a reader thread."""

    def __init__(self, engines: list[CaptionEngine], cfg: CaptionsConfig, prompts: PromptRenderer | None,
                 max_in_flight: int | None, window: int | None, telemetry: CaptionTelemetry) -> None:
        self.engines, self.cfg, self.prompts, self.telemetry = engines, cfg, prompts, telemetry
        self.limits = {id(e): max(1, max_in_flight or e.max_in_flight) for e in engines}
        slots = sum(self.limits.values())
        self.window = window or max(MIN_WINDOW, DEFAULT_WINDOW_PER_SLOT * slots)
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.output: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.admit = threading.Semaphore(self.window)  # released when the consumer takes a sample
        self.stop = threading.Event()
        self.open_by_engine = {id(e): 0 for e in engines}
        self.ready: dict[int, list[tuple[bool, int, int, _Pending, _Job]]] = {id(e): [] for e in engines}  # heaps (see _queue)
        self.revise = "revise" in cfg.tasks
        self.pending: deque[_Pending] = deque()
        self.order = itertools.count()
        self.input_done = False
        self.asking: dict[int, tuple[_Pending, _Job]] = {}  # jobs with answers out, by id (speculation picks from them)
        self.speculate = cfg.speculative_reasks

    # -- threads ---------------------------------------------------------------------------

    def run(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        reader = threading.Thread(target=self._read, args=(iter(samples),), name="rsbuild-caption-reader", daemon=True)
        driver = threading.Thread(target=self._drive, name="rsbuild-caption-driver", daemon=True)
        started = False
        try:
            reader.start()
            driver.start()
            started = True
            while True:
                item = self.output.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.admit.release()
                yield item
        finally:
            self.stop.set()  # the reader sees it within 0.2 s (it waits for admission with a timeout)
            self.events.put(("stop", None))
            if started:
                driver.join()

    def _read(self, samples: Iterator[Sample]) -> None:
        """Pull input samples while the window has room (bounded read-ahead)."""
        try:
            for sample in samples:
                while not self.admit.acquire(timeout=0.2):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                self.events.put(("sample", sample))
            self.events.put(("input_done", None))
        except BaseException as exc:
            self.events.put(("error", exc))

    def _drive(self) -> None:
        try:
            while True:
                kind, payload = self.events.get()
                if kind == "stop":
                    return
                if kind == "error":
                    raise payload
                if kind == "sample":
                    self._admit(payload)
                elif kind == "input_done":
                    self.input_done = True
                elif kind == "result":
                    self._on_result(*payload)
                self._submit_ready()
                self._emit_done()
                if self.input_done and not self.pending:
                    self.output.put(_END)
                    return
        except BaseException as exc:
            self.output.put(exc)
        finally:
            self.stop.set()

    # -- the state machine -----------------------------------------------------------------

    def _admit(self, sample: Sample) -> None:
        entry = _Pending(next(self.order), sample, _take_previous(sample, self.cfg))
        self.pending.append(entry)
        for job in _first_jobs(sample, self.engines, self.cfg, self.prompts):
            _reuse(job, entry.previous)
            self._add_job(entry, job)

    def _add_job(self, entry: _Pending, job: _Job) -> None:
        entry.jobs.append(job)
        if job.missing > 0:
            entry.open += 1
            self._queue(entry, job)
        elif job.task == "area":
            self._after_area(entry, job)

    def _after_area(self, entry: _Pending, area: _Job) -> None:
        revise = _revise_job(area, self.engines, self.cfg, self.prompts)
        if revise is None:
            return
        if area.reused:
            _reuse(revise, entry.previous)
        self._add_job(entry, revise)

    def _queue(self, entry: _Pending, job: _Job) -> None:
        """Chain heads first (a re-ask, or an area caption a revise waits for), then leaves; oldest sample first
        within each: the last samples' dependent chains start early, so the run ends without a long tail."""
        leaf = job.sent == 0 and not self._heads_chain(job)
        heapq.heappush(self.ready[id(job.engine)], (leaf, entry.seq, next(self.order), entry, job))

    def _heads_chain(self, job: _Job) -> bool:
        """An area caption a revise waits for."""
        return job.task == "area" and self.revise

    def _submit_ready(self) -> None:
        for engine in self.engines:
            heap, key = self.ready[id(engine)], id(engine)
            while heap and self.open_by_engine[key] < self.limits[key]:
                _, _, _, entry, job = heapq.heappop(heap)
                self._send(entry, job)
            if self.speculate and self.input_done and not heap and engine.batches_requests:
                self._ask_ahead(engine)

    def _send(self, entry: _Pending, job: _Job, speculative: bool = False) -> None:
        """Ask the job's next attempt."""
        attempt, job.sent = job.sent, job.sent + 1
        engine = job.engine
        self.open_by_engine[id(engine)] += 1
        self.telemetry.requests += 1
        self.telemetry.speculative_requests += speculative
        self.telemetry._in_flight_change(+1)
        self.asking[id(job)] = (entry, job)
        request = _request(job, self.cfg, attempt)
        future = engine.submit(request)
        job.out[attempt] = (future, request)
        future.add_done_callback(self._on_done(entry, job, attempt))

    def _ask_ahead(self, engine: CaptionEngine) -> None:
        """Fill the engine's idle slots with the next attempts of captions being checked: fewest asked
        ahead first, then chain heads (an area caption a revise waits for), then the oldest sample.
        Only into slots the engine would leave idle (`CaptionEngine.idle_sequences`, when it can tell):
        an attempt asked ahead into a full batch queues in front of the work the run needs."""
        free = self.limits[id(engine)] - self.open_by_engine[id(engine)]
        if free <= 0 or engine.idle_sequences() == 0:
            return
        last = self.cfg.max_check_attempts
        ahead = [(job.sent - job.attempts, not self._heads_chain(job), entry.seq, entry, job)
                 for entry, job in self.asking.values() if job.engine is engine and job.sent < last]
        for *_, entry, job in heapq.nsmallest(free, ahead, key=lambda item: item[:3]):
            if engine.idle_sequences() == 0:  # the engine counts what was just sent
                return
            self._send(entry, job, speculative=True)

    def _on_done(self, entry: _Pending, job: _Job, attempt: int) -> Callable[[Future[CaptionResult]], None]:
        """The callback that hands a finished request back to the driver thread."""
        def done(future: Future[CaptionResult]) -> None:
            self.events.put(("result", (entry, job, attempt, future)))

        return done

    def _on_result(self, entry: _Pending, job: _Job, attempt: int, future: Future[CaptionResult]) -> None:
        self.open_by_engine[id(job.engine)] -= 1
        self.telemetry._in_flight_change(-1)
        _, request = job.out.pop(attempt)
        if job.finished:  # an attempt asked ahead that the caption no longer needs (counted when it was settled)
            self._count_unused(future)
            return
        job.arrived[attempt] = (future, request)
        while job.attempts in job.arrived:  # attempts are taken in order, whenever their answers came
            result = job.arrived.pop(job.attempts)[0].result()  # an exception here: the engine cannot go on
            self._count(result)
            _take(job, result, self.telemetry, self.cfg.best_of)
            job.attempts += 1
            if job.missing <= 0 or job.attempts >= self.cfg.max_check_attempts:
                self._finish(entry, job)
                return
        if job.sent == job.attempts:  # nothing out for it: ask the next attempt in its turn
            self.asking.pop(id(job), None)
            self._queue(entry, job)

    def _finish(self, entry: _Pending, job: _Job) -> None:
        job.finished = True
        self.asking.pop(id(job), None)
        for future, request in job.out.values():  # attempts asked ahead: stop them (a server drops the request)
            future.cancel()
            self.telemetry.discard(request)
        for future, request in job.arrived.values():
            self._count_unused(future)
            self.telemetry.discard(request)
        job.arrived.clear()
        entry.open -= 1
        if job.task == "area":
            self._after_area(entry, job)

    def _count_unused(self, future: Future[CaptionResult]) -> None:
        """The tokens of an answer nobody reads (a cancelled or failed one has none to count)."""
        if not future.cancelled() and future.exception() is None:
            self._count(future.result())

    def _count(self, result: CaptionResult) -> None:
        t = self.telemetry
        if result.cached:
            t.cache_hits += 1
        if result.error:
            t.engine_errors += 1
        t.prompt_tokens += result.prompt_tokens
        t.completion_tokens += result.completion_tokens
        if result.cached_tokens is not None:
            t.cached_prompt_tokens += result.cached_tokens
            t.reported_prompt_tokens += result.prompt_tokens

    def _emit_done(self) -> None:
        while self.pending and self.pending[0].done:
            entry = self.pending.popleft()
            for job in entry.jobs:
                _record_rejections(job)
                entry.sample.annotations.extend(job.accepted)
                if job.missing > 0 and job.last_failure is not None:
                    entry.sample.failures.append(job.last_failure)
            self.telemetry.samples += 1
            self.output.put(entry.sample)


def _record_rejections(job: _Job) -> None:
    """Write the slot's rejected-text counts where a reader finds them: on its failure record when the
    slot stayed (partly) empty, else on its first accepted caption. Each rejected text is counted once."""
    if not job.rejected or job.reused:
        return
    counts = dict(sorted(job.rejected.items()))
    if job.missing > 0 and job.last_failure is not None:
        job.last_failure["rejected"] = counts
    elif job.accepted:
        job.accepted[0]["rejected"] = counts


def _take_previous(sample: Sample, cfg: CaptionsConfig) -> list[Annotation]:
    """Remove (and return) the sample's existing annotations of the configured tasks.

    They come back only where the same engine and the same template would write them again
    (`_reuse`); the rest are replaced. Earlier failures of those tasks are dropped too.
    """
    tasks = set(cfg.tasks) | ({PARAPHRASE_TASK} if cfg.vqa_paraphrase else set())
    previous = [a for a in sample.annotations if a.get("task") in tasks]
    sample.annotations = [a for a in sample.annotations if a.get("task") not in tasks]
    sample.failures = [f for f in sample.failures if f.get("task") not in tasks]
    return previous


def _reuse(job: _Job, previous: list[Annotation]) -> None:
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
    digest = hashlib.sha256(f"{key}\x1f{task}\x1f{subject or ''}".encode()).digest()
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


def caption_classes(stats: Mapping[str, Any], min_share: float, max_rows: int) -> list[Mapping[str, Any]]:
    """The ONE rule for which classes get a class caption and class SFT rows: share >= ``min_share``
    (never below the share the check accepts as named), largest first, at most ``max_rows``."""
    floor = max(min_share, DEFAULT_MIN_SHARE)
    eligible = [c for c in stats.get("classes", []) if float(c.get("share", 0.0)) >= floor and c.get("pixels", 0) > 0]
    eligible.sort(key=lambda c: (-float(c.get("share", 0.0)), str(c.get("name"))))
    return eligible[:max_rows]


def _class_subjects(stats: Mapping[str, Any], cfg: CaptionsConfig) -> list[str]:
    return [str(c["name"]) for c in caption_classes(stats, cfg.class_min_share, cfg.max_class_rows)]


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
    if cfg.vqa_paraphrase and (questions := request_subject(stats, sample.key)):  # one request: every VQA question
        jobs.append(_new_job(sample, PARAPHRASE_TASK, questions, 1, engines, prompts))
    return jobs


def _revise_job(area: _Job, engines: list[CaptionEngine], cfg: CaptionsConfig,
                prompts: PromptRenderer | None) -> _Job | None:
    """The paraphrase job of a sample whose area caption was accepted (None if there is none to do)."""
    if "revise" not in cfg.tasks or not area.accepted:
        return None
    return _new_job(area.sample, "revise", area.accepted[0]["text"], max(1, cfg.paraphrases), engines, prompts)


def _sampling(engine: CaptionEngine, cfg: CaptionsConfig) -> dict[str, Any]:
    return cfg.sampling() if engine.needs_prompts else {}


def _request(job: _Job, cfg: CaptionsConfig, attempt: int) -> CaptionRequest:
    seed_subject = job.subject if job.task == "class" else None
    return CaptionRequest(
        key=job.sample.key,
        task=job.task,
        stats=job.sample.stats,
        subject=job.subject,
        messages=job.messages,
        template=job.template,
        template_sha256=job.template_sha256,
        n=job.missing * cfg.best_of,
        seed=request_seed(job.sample.key, job.task, seed_subject, attempt, cfg.seed),
        sampling=(reply_sampling(job.subject, _sampling(job.engine, cfg)) if job.task == PARAPHRASE_TASK
                  else _sampling(job.engine, cfg)),
    )


def _take(job: _Job, result: CaptionResult, telemetry: CaptionTelemetry, best_of: int) -> None:
    """Check the texts of one result; accept passing ones, remember the last failure.

    Only the first ``missing × best_of`` texts count: what this attempt asks when it is asked in turn
    (an attempt asked ahead may have asked for more; candidate i never depends on ``n``)."""
    request = result.request
    base: CaptionFailure = {"stage": "caption", "key": job.sample.key, "task": job.task, "annotator": result.annotator,
                            "seed": request.seed, "attempts": job.attempts + 1}
    if job.task == "class" and job.subject is not None:
        base["class"] = job.subject
    if result.error:
        job.last_failure = {**base, "reason": "engine_error", "detail": result.error, "text": None, "check_reasons": []}
        if result.error_transient:  # `build --retry-failed` redoes the unit (the cache answers what was kept)
            job.last_failure["transient"] = True
        return
    reasons = result.finish_reasons if len(result.finish_reasons) == len(result.texts) else [""] * len(result.texts)
    in_turn = job.missing * best_of
    texts = [(t.strip(), reason) for t, reason in zip(result.texts[:in_turn], reasons[:in_turn]) if t and t.strip()]
    if not texts:
        job.last_failure = {**base, "reason": "no_text", "detail": "the engine returned no text", "text": None,
                            "check_reasons": []}
        return
    subject = job.subject if job.task == "class" else None
    for index, (text, reason) in enumerate(texts):
        if job.missing <= 0:
            telemetry.candidates_unchecked += len(texts) - index
            break
        telemetry.captions_generated += 1
        if reason == TRUNCATED:
            _reject(job, telemetry, "truncated")
            telemetry.truncated += 1
            limit = request.sampling.get("max_tokens")
            where = f"max_tokens={limit}" if limit else "the engine's token limit"
            job.last_failure = {**base, "reason": "truncated", "text": text, "check_reasons": [],
                                "detail": f"cut off at {where}; raise captions.max_tokens"}
            continue
        verdict = check_text(job.task, text, job.sample.stats, job.sample.key, subject)
        if verdict.ok:
            telemetry.captions_kept += 1
            job.accepted.append(_annotation(job, result, text, index if best_of > 1 else None))
        else:
            _reject(job, telemetry, "check_failed")
            job.last_failure = {**base, "reason": "check_failed", "detail": "; ".join(verdict.reasons),
                                "text": text, "check_reasons": list(verdict.reasons)}


def _reject(job: _Job, telemetry: CaptionTelemetry, reason: str) -> None:
    telemetry.captions_rejected += 1
    telemetry.rejected_by_reason[reason] += 1
    job.rejected[reason] += 1


def _annotation(job: _Job, result: CaptionResult, text: str, candidate: int | None = None) -> Annotation:
    request = result.request
    ann: Annotation = {
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
    if job.task == "class" and job.subject is not None:
        ann["class"] = job.subject
    if job.task == "revise":
        ann["source_task"] = "area"
    if candidate is not None:
        ann["candidate"] = candidate
    return ann
