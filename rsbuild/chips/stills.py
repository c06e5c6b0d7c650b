"""The stills stage of `rsbuild build`: one overhead context still per POI with a scene.

The pipeline submits each POI that produced at least one tile as the fetch stream passes it; a
small thread pool fetches the stills (`rsbuild.sources.mapbox`) and `StillsStage.take` hands the results
back in POI order, for the unit writers to write. Until a first still has come back, requests go
one at a time, so a rejected token costs exactly one request; a 401 / 403 then turns stills off
for the rest of the run with one message (`disabled_reason`) and one recorded failure.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from rsbuild.config import StillsConfig
from rsbuild.records import Failure, Poi, Sample
from rsbuild.sources.mapbox import STAGE, MapboxStills

STILL_WORKERS = 4  # concurrent requests: stills are small, the API is fast
MAX_IN_FLIGHT = 4 * STILL_WORKERS  # requests queued or running before `submit` waits


@dataclass(frozen=True)
class StillJob:
    """One POI's still on its way: where its outcome goes (unit, split) and the answer's context."""

    poi: Poi
    unit: int
    split: str
    context: str
    future: Future[bytes | Failure]


def tiles_class_summary(samples: Sequence[Sample], top: int = 3, min_share: float = 0.05) -> str:
    """A short land-cover summary of a POI's tiles (pixel shares over their label statistics)."""
    pixels: Counter[str] = Counter()
    valid = 0
    for sample in samples:
        valid += int(sample.stats.get("valid_pixels", 0))
        for cls in sample.stats.get("classes", []):
            pixels[str(cls["name"])] += int(cls.get("pixels", 0))
    if not valid:
        return ""
    ranked = sorted(pixels.items(), key=lambda item: (-item[1], item[0]))
    parts = [f"{name} ({100 * count / valid:.0f}%)" for name, count in ranked[:top] if count / valid >= min_share]
    if not parts:
        return ""
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Land cover in the Sentinel-2 tiles around it: {listing}."


class StillsStage:
    """Fetches stills concurrently (bounded) and returns their outcomes in submission order."""

    def __init__(self, client: MapboxStills, workers: int = STILL_WORKERS, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.client = client
        self.max_in_flight = max(1, max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rsbuild-still")
        self._pending: deque[StillJob] = deque()
        self._token_accepted = False  # set once a still came back: from then on requests run concurrently
        self._rejection_kept = False
        self.written = 0
        self.failures_by_reason: Counter[str] = Counter()

    @classmethod
    def from_config(cls, cfg: StillsConfig) -> StillsStage | None:
        """The stage for ``[stills]``, or None when stills are off. A missing token logs one
        warning and gives a stage that requests nothing (stills are optional, not an error)."""
        if not cfg.mapbox:
            return None
        client = MapboxStills(cfg.base_url, cfg.style, cfg.zoom, cfg.size, cfg.token_env, retina=cfg.retina)
        return cls(client)

    @property
    def disabled_reason(self) -> str | None:
        """Why no (more) stills are fetched: token missing or rejected; None while enabled."""
        return self.client.disabled_reason

    def submit(self, poi: Poi, unit: int, split: str, context: str = "") -> None:
        """Start fetching the still of ``poi`` (nothing once stills are off)."""
        if not self._token_accepted:
            wait([job.future for job in self._pending])  # one request at a time until the token is proven
        running = [job.future for job in self._pending if not job.future.done()]
        while len(running) >= self.max_in_flight:
            wait(running, return_when=FIRST_COMPLETED)
            running = [future for future in running if not future.done()]
        if self.client.enabled:
            self._pending.append(StillJob(poi, unit, split, context, self._pool.submit(self._fetch, poi)))

    def _fetch(self, poi: Poi) -> bytes | Failure:
        try:
            result = self.client.fetch(poi)
        except Exception as exc:
            detail = self.client.redact(f"{type(exc).__name__}: {exc}")
            return Failure(STAGE, "error", poi.poi_id, detail=f"{detail} for {self.client.still_url(poi)}")
        if isinstance(result, bytes):
            self._token_accepted = True
        return result

    def take(self, wait_below: float, ready: Callable[[int], bool]) -> Iterator[tuple[StillJob, bytes | Failure]]:
        """Outcomes to write, in submission order: every job of a unit below ``wait_below``
        (waited for), then jobs already done whose unit ``ready`` accepts. POIs skipped because
        stills went off give nothing; a rejected token gives one failure for the whole run."""
        while self._pending:
            job = self._pending[0]
            if job.unit >= wait_below and not (job.future.done() and ready(job.unit)):
                return
            self._pending.popleft()
            outcome = job.future.result()
            if self._keep(outcome):
                yield job, outcome

    def take_all(self) -> Iterator[tuple[StillJob, bytes | Failure]]:
        """Every remaining outcome (waits for all requests)."""
        return self.take(math.inf, lambda unit: True)

    def _keep(self, outcome: bytes | Failure) -> bool:
        if isinstance(outcome, bytes):
            self.written += 1
            return True
        if outcome.reason == "stills_disabled":
            return False
        if outcome.reason == "token_rejected":
            if self._rejection_kept:
                return False
            self._rejection_kept = True
        self.failures_by_reason[outcome.reason] += 1
        return True

    def summary(self) -> dict[str, Any]:
        """What the run summary shows: the source (never the token), counts, why stills stopped."""
        return {
            "source": self.client.describe(),
            "written": self.written,
            "failures_by_reason": dict(sorted(self.failures_by_reason.items())),
            "disabled_reason": self.disabled_reason,
        }

    def close(self) -> None:
        """Cancel what is still queued, wait for running requests, close the client."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self.client.close()
