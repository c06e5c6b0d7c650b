"""`DatasetWriter`: one-unit dataset writing for library users and tests (shards, folders, JSONL, card)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.finalize import finalize
from rsbuild.dataset.units import UnitPlan, UnitWriter, prepare_run, rows_per_tile_bound
from rsbuild.records import Failure, Sample
from rsbuild.schemes import Scheme


class DatasetWriter:
    """A whole dataset from one stream of samples, as a single unit (tests, small jobs, tools).

    Folder slots follow the stream order. ``close`` finalizes (JSONL, failures, summary, card).
    """

    def __init__(
        self,
        out_dir: Path,
        output_cfg: OutputConfig,
        splits_cfg: SplitsConfig,
        captions_cfg: CaptionsConfig,
        scheme: Scheme | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        modality: str = "sentinel-2",
        overwrite: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.output_cfg, self.splits_cfg, self.scheme, self.config = output_cfg, splits_cfg, scheme, config
        prepare_run(self.out_dir, {"config": config or {}, "output": output_cfg.model_dump(mode="json")}, overwrite=overwrite)
        self._count = 0
        plan = UnitPlan(1 << 40, 1, rows_per_tile_bound(captions_cfg))
        self._unit = UnitWriter(self.out_dir, 0, plan, output_cfg, captions_cfg, scheme, modality=modality, slot_of=self._next_slot)
        self._summary: dict[str, Any] | None = None

    def _next_slot(self, sample: Sample) -> int:
        self._count += 1
        return self._count - 1

    def write(self, sample: Sample) -> None:
        self._unit.write(sample)

    def record_failure(self, failure: Failure) -> None:
        self._unit.record_failure(failure)

    def close(self) -> dict[str, Any]:
        if self._summary is None:
            self._unit.finish()
            self._summary = finalize(self.out_dir, self.output_cfg, self.splits_cfg, self.scheme, self.config)
        return self._summary

    def abort(self) -> None:
        self._unit.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
