"""The dataset folder: ``images/ overlays/ metadata/ mapbox_stills/`` in ``sNNNNN/`` segments, and
the `DatasetWriter` that fills the whole output folder from a stream of samples.

```
OUT/shards/{split}-NNNNNN.tar (+ .stats.json)   rsbuild.shards
OUT/data/{train,validation,test}.jsonl          rsbuild.sft rows
OUT/images/sNNNNN/KEY.png                       the chip PNG bytes, as in the shard
OUT/overlays/sNNNNN/KEY_RR_TASK.png             one per JSONL row (output.write_bbox_overlays)
OUT/metadata/sNNNNN/KEY.json                    per-tile sidecar: metadata + label counts/shapes
OUT/mapbox_stills/                              filled by the Mapbox stage
OUT/failures.jsonl, OUT/summary.json, OUT/README.md
```

Leaf folders are chosen by a per-folder counter (file ``n`` goes to ``s{n // cap:05d}``), so the
same input order gives the same paths. Timings appear only in ``summary.json`` and shard sidecars.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import rsbuild
from rsbuild import card, sft
from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.errors import InputError
from rsbuild.overlays import palette_of, render_overlay
from rsbuild.plots import card_plot_section, write_plots
from rsbuild.schemes import Scheme
from rsbuild.shards import SHARDS_DIR, AtomicJsonl, ChipShardWriter, write_atomic
from rsbuild.splits import OverlapReport
from rsbuild.types import SPLITS, Failure, Sample

FOLDERS = ("images", "overlays", "metadata", "mapbox_stills")
PLOTS_DIR = "plots"
DATA_DIR = "data"
SUMMARY_FILE = "summary.json"
CARD_FILE = "README.md"
NODATA_INDEX = 255


class FolderLayout:
    """Files under ``OUT/{folder}/sNNNNN/`` with at most ``file_cap`` files per leaf folder."""

    def __init__(self, out_dir: Path, file_cap: int) -> None:
        if file_cap < 1:
            raise ValueError("file_cap must be at least 1")
        self.out_dir = Path(out_dir)
        self.file_cap = file_cap
        self._counts = dict.fromkeys(FOLDERS, 0)
        for folder in FOLDERS:
            (self.out_dir / folder).mkdir(parents=True, exist_ok=True)

    def allocate(self, folder: str, filename: str) -> str:
        """The next path (relative to OUT, ``/``-separated) for ``filename`` in ``folder``."""
        n = self._counts[folder]
        self._counts[folder] = n + 1
        segment = f"s{n // self.file_cap:05d}"
        if n % self.file_cap == 0:
            (self.out_dir / folder / segment).mkdir(exist_ok=True)
        return f"{folder}/{segment}/{filename}"

    def write(self, folder: str, filename: str, data: bytes) -> str:
        """Write ``data`` to the next slot of ``folder``; returns its path relative to OUT."""
        rel = self.allocate(folder, filename)
        (self.out_dir / rel).write_bytes(data)
        return rel

    def counts(self) -> dict[str, int]:
        """Files written per folder."""
        return dict(self._counts)


def metadata_sidecar(sample: Sample, shard: str, image: str | None, mask_in_shard: bool) -> dict[str, Any]:
    """The ``metadata/…/KEY.json`` document: provenance plus label counts and shapes (no pixels)."""
    return {
        "key": sample.key,
        "split": sample.split,
        "shard": f"{SHARDS_DIR}/{shard}.tar",
        "image": image,
        "metadata": sample.metadata,
        "label": {
            "stats": sample.stats,
            "mask": {"in_shard": mask_in_shard, "member": f"{sample.key}.mask.png" if mask_in_shard else None,
                     "size": sample.stats.get("size"), "nodata": NODATA_INDEX},
        },
    }


def _existing_outputs(out_dir: Path) -> list[Path]:
    names = [*FOLDERS, DATA_DIR, SHARDS_DIR, PLOTS_DIR, SUMMARY_FILE, CARD_FILE]
    found = [out_dir / name for name in names if (out_dir / name).exists()]
    return [path for path in found if path.is_file() or any(p.is_file() for p in path.rglob("*"))]


def prepare_out_dir(out_dir: Path, overwrite: bool = False) -> None:
    """Create OUT; refuse to mix with an earlier dataset there unless ``overwrite`` removes it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = _existing_outputs(out_dir)
    if existing and not overwrite:
        names = ", ".join(sorted(p.name for p in existing))
        raise InputError(f"{out_dir} already holds a dataset ({names}); choose another output folder or remove it")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


class _Tally:
    """Counts for summary.json and the card; bounded by the number of classes and tasks."""

    def __init__(self) -> None:
        self.rows: dict[str, Counter] = {split: Counter() for split in SPLITS}
        self.annotations: Counter = Counter()
        self.annotators: Counter = Counter()
        self.class_pixels: Counter = Counter()
        self.class_tiles: Counter = Counter()
        self.dominant: Counter = Counter()
        self.valid_pixels = 0
        self.scene_years: set[str] = set()

    def add_sample(self, sample: Sample) -> None:
        for ann in sample.annotations:
            self.annotations[str(ann.get("task"))] += 1
            if ann.get("annotator"):
                self.annotators[str(ann["annotator"])] += 1
        stats = sample.stats
        self.valid_pixels += int(stats.get("valid_pixels", 0))
        for cls in stats.get("classes", []):
            self.class_pixels[cls["name"]] += int(cls.get("pixels", 0))
            self.class_tiles[cls["name"]] += 1
        if stats.get("dominant_class"):
            self.dominant[stats["dominant_class"]] += 1
        when = str((sample.metadata.get("scene") or {}).get("datetime") or "")
        if when[:4].isdigit():
            self.scene_years.add(when[:4])

    def classes(self) -> list[dict[str, Any]]:
        total = self.valid_pixels or 1
        ordered = sorted(self.class_pixels.items(), key=lambda item: (-item[1], item[0]))
        return [
            {"name": name, "pixels": pixels, "share": round(pixels / total, 6),
             "tiles": self.class_tiles[name], "dominant_tiles": self.dominant[name]}
            for name, pixels in ordered
        ]


class DatasetWriter:
    """Streams samples into the finished dataset: shards, folders, SFT JSONL, overlays, card.

    Use as a context manager (or call ``close``): on an exception the unfinished shard and the
    partial JSONL files are removed, so nothing half-written appears under a final name.
    Memory stays flat: per sample only counters and a footprint box are kept.
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
        self.output_cfg, self.splits_cfg, self.captions_cfg = output_cfg, splits_cfg, captions_cfg
        self.scheme = scheme
        self.config = config
        self.modality = modality
        prepare_out_dir(self.out_dir, overwrite)
        self.started = time.perf_counter()
        self._shards = ChipShardWriter(self.out_dir, output_cfg, overwrite=overwrite)
        self._folders = FolderLayout(self.out_dir, output_cfg.folder_file_cap)
        (self.out_dir / DATA_DIR).mkdir(exist_ok=True)
        self._jsonl = {split: AtomicJsonl(self.out_dir / DATA_DIR / f"{split}.jsonl") for split in SPLITS}
        self._palette = palette_of(scheme)
        self._overlap = OverlapReport()
        self._tally = _Tally()
        self._summary: dict[str, Any] | None = None

    def write(self, sample: Sample) -> None:
        """Add one tile: shard members, image, metadata sidecar, JSONL rows and their overlays."""
        shard = self._shards.write(sample)
        if shard is None:  # refused and recorded as a failure
            return
        cfg = self.output_cfg
        image = self._folders.write("images", f"{sample.key}.png", sample.image_png) if cfg.write_images else None
        mask_in_shard = cfg.write_masks and sample.mask_png is not None
        sidecar = metadata_sidecar(sample, shard, image, mask_in_shard)
        self._folders.write("metadata", f"{sample.key}.json", _pretty_json(sidecar))
        if image is not None:
            self._write_rows(sample, image)
        self._tally.add_sample(sample)
        bbox = sample.metadata.get("bbox_wgs84")
        if bbox is not None:
            self._overlap.add(sample.key, bbox, sample.split)

    def _write_rows(self, sample: Sample, image: str) -> None:
        captions = self.captions_cfg
        rows = sft.build_rows(sample, captions.class_min_share, captions.max_class_rows, self.modality)
        for index, row in enumerate(rows):
            overlay = None
            if self.output_cfg.write_bbox_overlays:
                png, _ = render_overlay(sample.image_png, row.boxes, self._palette, self.output_cfg.png_compress_level)
                overlay = self._folders.write("overlays", f"{sample.key}_{index:02d}_{row.task}.png", png)
            self._jsonl[sample.split].write(row.to_json(sample.key, image, overlay))
            self._tally.rows[sample.split][row.task] += 1

    def record_failure(self, failure: Failure) -> None:
        """Count a bad sample and append it to ``failures.jsonl``."""
        self._shards.record_failure(failure)

    def close(self) -> dict[str, Any]:
        """Finish shards and JSONL, then write ``summary.json`` and ``README.md``; the summary."""
        if self._summary is not None:
            return self._summary
        shard_summary = self._shards.close()
        for stream in self._jsonl.values():
            stream.close()
        tally = self._tally
        summary: dict[str, Any] = {
            "rsbuild_version": rsbuild.__version__,
            "scheme": self.scheme.name if self.scheme else None,
            **{k: v for k, v in shard_summary.items() if k != "seconds"},
            "rows": sum(sum(c.values()) for c in tally.rows.values()),
            "rows_by_split": {split: {t: tally.rows[split][t] for t in sft.ROW_TASKS} for split in SPLITS},
            "annotations_by_task": dict(sorted(tally.annotations.items())),
            "annotators": dict(sorted(tally.annotators.items())),
            "classes": tally.classes(),
            "files": self._folders.counts(),
            "overlap": self._overlap.to_json(),
            "splits": self.splits_cfg.model_dump(mode="json"),
            "scene_years": sorted(tally.scene_years),
        }
        card_text = card.render_card(summary, self.output_cfg, self.scheme, self.config)
        if self.output_cfg.write_plots:
            plots_dir = self.out_dir / PLOTS_DIR
            plot_files = write_plots(self.out_dir, plots_dir)
            card_text = card_text.rstrip("\n") + "\n\n" + card_plot_section(plot_files, self.out_dir) + "\n"
        seconds = time.perf_counter() - self.started
        summary["seconds"] = round(seconds, 3)
        summary["tiles_per_second"] = round(summary["tiles"] / seconds, 3) if seconds > 0 else None
        write_atomic(self.out_dir / SUMMARY_FILE, _pretty_json(summary))
        write_atomic(self.out_dir / CARD_FILE, card_text.encode("utf-8"))
        self._summary = summary
        return summary

    def abort(self) -> None:
        """Remove the unfinished shard and partial JSONL files; finished shards stay."""
        self._shards.abort()
        for stream in self._jsonl.values():
            stream.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _pretty_json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
