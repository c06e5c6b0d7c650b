"""Units of work: deterministic ids, atomic outputs, markers written last, resume, finalize.

A run is cut into units of ``output.unit_pois`` consecutive POI rows (unit ``u`` holds rows
``u*unit_pois+1 … (u+1)*unit_pois``). Everything a unit writes has a name derived from its id:

```
shards/{split}-u{u:06d}-{part:02d}.tar (+ .stats.json)  at most 100 per split and unit (renumbered at finalize)
data/parts/{split}-{u:06d}.jsonl                      its SFT rows
units/{u:06d}.failures.jsonl                          its bad samples
images|metadata|overlays/sNNNNN/…                     NNNNNN from the sample's ordinal (POI row, tile)
mapbox_stills/sNNNNN/{poi_id}.png|jpg                 NNNNNN from the POI row (optional stills)
units/{u:06d}.json                                    the marker, written last
```

A unit is done only when its marker exists. A rerun skips done units, cleans the leftovers of
unfinished ones and redoes them; identical inputs give identical bytes, so a killed and resumed
run ends byte-identical to an uninterrupted one. `finalize` concatenates the parts in unit order
into ``data/{split}.jsonl`` and ``failures.jsonl`` and writes ``summary.json`` and the card from
the markers, so it can run again at any time (and after job-array workers each did their units).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsbuild.config import CaptionsConfig, OutputConfig
from rsbuild.dataset import sft
from rsbuild.dataset.annotations import CaptionCounts
from rsbuild.dataset.layout import (
    CARD_FILE,
    DATA_DIR,
    FAILURES_FILE,
    FOLDERS,
    LOCK_FILE,
    PARTS_DIR,
    PLOTS_DIR,
    RUN_FILE,
    SHARD_NAMES_FILE,
    SHARDS_DIR,
    STILLS_FOLDER,
    SUMMARY_FILE,
    TMP_SUFFIX,
    UNITS_DIR,
    FolderLayout,
    compact_json,
    metadata_sidecar,
    pretty_json,
)
from rsbuild.dataset.overlays import palette_of, render_overlay
from rsbuild.dataset.plots import PlotCounts
from rsbuild.dataset.sft import still_overview_row
from rsbuild.dataset.shards import (
    AtomicJsonl,
    ShardSinks,
    key_problem,
    restore_unit_shard_names,
    unit_shard_name,
    write_atomic,
)
from rsbuild.errors import InputError
from rsbuild.records import SPLITS, Failure, Poi, Sample
from rsbuild.schemes import Scheme
from rsbuild.sources.mapbox import image_extension
from rsbuild.version import __version__

SHARDS_PER_UNIT = 100


@dataclass(frozen=True)
class UnitPlan:
    """How POI rows map to units and samples to folder slots (all derived from config)."""

    unit_pois: int
    tiles_per_poi: int
    rows_per_tile: int  # an upper bound on SFT rows (overlay slots) per tile

    def unit_of_row(self, row: int) -> int:
        """The unit of a 1-based POI row."""
        return (max(row, 1) - 1) // self.unit_pois

    def unit_of(self, sample: Sample) -> int:
        return self.unit_of_row(int(sample.metadata.get("poi_row", 1)))

    def ordinal(self, sample: Sample) -> int:
        """A slot unique to (POI row, tile): folder segments follow from it, whatever order units run in."""
        row = int(sample.metadata.get("poi_row", 1))
        return (row - 1) * self.tiles_per_poi + int(sample.metadata.get("tile", 0))

    def rows_in_units(self, rows: int) -> int:
        """How many units ``rows`` POI rows make."""
        return -(-rows // self.unit_pois) if rows > 0 else 0


class Tally:
    """Counts for the summary, card and plots; bounded by the number of classes and tasks.

    ``plots`` holds what the card plots show (`PlotCounts`); ``plots_complete`` turns False when a
    merged marker has no plot counts (written before units counted them).
    """

    FIELDS = ("annotations", "annotators", "class_pixels", "class_tiles", "dominant", "tiles_by_split",
              "failures_by_reason", "failures_by_stage", "caption_failures_by_reason")

    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {name: Counter() for name in self.FIELDS}
        self.rows: dict[str, Counter] = {split: Counter() for split in SPLITS}
        self.valid_pixels = 0
        self.scene_years: set[str] = set()
        self.plots = PlotCounts()
        self.plots_complete = True
        self.derived = sft.DerivedCounts()  # vqa / referring / masks rows (absent from the JSON when none)
        self.captions = CaptionCounts()  # every generated caption, kept or rejected

    def add_sample(self, sample: Sample) -> None:
        c = self.counters
        c["tiles_by_split"][sample.split] += 1
        for ann in sample.annotations:
            c["annotations"][str(ann.get("task"))] += 1
            if ann.get("annotator"):
                c["annotators"][str(ann["annotator"])] += 1
        for failure in sample.failures:
            c["caption_failures_by_reason"][str(failure.get("reason", "unknown"))] += 1
        stats = sample.stats
        self.valid_pixels += int(stats.get("valid_pixels", 0))
        for cls in stats.get("classes", []):
            c["class_pixels"][cls["name"]] += int(cls.get("pixels", 0))
            c["class_tiles"][cls["name"]] += 1
        if stats.get("dominant_class"):
            c["dominant"][stats["dominant_class"]] += 1
        when = str((sample.metadata.get("scene") or {}).get("datetime") or "")
        if when[:4].isdigit():
            self.scene_years.add(when[:4])
        self.plots.add_sample(sample)
        self.captions.add_sample(sample)

    def add_failure(self, failure: Failure) -> None:
        self.counters["failures_by_reason"][failure.reason] += 1
        self.counters["failures_by_stage"][failure.stage] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            **{name: dict(sorted(counter.items())) for name, counter in self.counters.items()},
            "rows": {split: dict(sorted(self.rows[split].items())) for split in SPLITS},
            "valid_pixels": self.valid_pixels,
            "scene_years": sorted(self.scene_years),
            "plots": self.plots.to_json(),
            **({"derived": self.derived.to_json()} if self.derived else {}),
            "captions": self.captions.to_json(),
        }

    def merge(self, doc: Mapping[str, Any]) -> None:
        for name in self.FIELDS:
            self.counters[name].update(doc.get(name, {}))
        for split in SPLITS:
            self.rows[split].update(doc.get("rows", {}).get(split, {}))
        self.valid_pixels += int(doc.get("valid_pixels", 0))
        self.scene_years.update(doc.get("scene_years", []))
        self.derived.merge(doc.get("derived", {}))
        self.captions.merge(doc.get("captions") or {})
        if "plots" in doc:
            self.plots.merge(doc["plots"])
        else:
            self.plots_complete = False

    def classes(self) -> list[dict[str, Any]]:
        total = self.valid_pixels or 1
        pixels, tiles, dominant = (self.counters[k] for k in ("class_pixels", "class_tiles", "dominant"))
        ordered = sorted(pixels.items(), key=lambda item: (-item[1], item[0]))
        return [
            {"name": name, "pixels": count, "share": round(count / total, 6), "tiles": tiles[name], "dominant_tiles": dominant[name]}
            for name, count in ordered
        ]


class UnitWriter:
    """Everything one unit writes. ``dataset=False`` writes only shards (the fetch half's chips)."""

    def __init__(
        self,
        out_dir: Path,
        unit: int,
        plan: UnitPlan,
        output_cfg: OutputConfig,
        captions_cfg: CaptionsConfig,
        scheme: Scheme | None,
        *,
        dataset: bool = True,
        modality: str = "sentinel-2",
        slot_of: Callable[[Sample], int] | None = None,
        inputs_sha256: str | None = None,
    ) -> None:
        self.out_dir, self.unit, self.plan = Path(out_dir), unit, plan
        self.inputs_sha256 = inputs_sha256  # what made this unit (its POI rows + the run config), kept in the marker
        self.slot_of = slot_of or plan.ordinal
        self.output_cfg, self.captions_cfg, self.dataset, self.modality = output_cfg, captions_cfg, dataset, modality
        clean_unit(self.out_dir, unit)
        self._shards = ShardSinks(self.out_dir / SHARDS_DIR, output_cfg, max_shards=SHARDS_PER_UNIT, unit=unit)
        (self.out_dir / UNITS_DIR).mkdir(parents=True, exist_ok=True)
        self._failures = AtomicJsonl(failures_part(self.out_dir, unit))
        self._jsonl: dict[str, AtomicJsonl] = {}
        self._folders = FolderLayout(self.out_dir, output_cfg.folder_file_cap) if dataset else None
        self._palette = palette_of(scheme)
        self._tally = Tally()
        self._footprints: list[list[Any]] = []
        self._stills: list[tuple[int, str, dict[str, Any] | Failure]] = []  # (POI row, split, row or failure)
        self._transient = 0  # failures a retry may fix (`--retry-failed` redoes the unit)

    def write(self, sample: Sample) -> None:
        """Add one tile: shard members and, for a dataset, image, sidecar, JSONL rows, overlays."""
        problem = key_problem(sample.key)
        if problem:
            self.record_failure(Failure("write", "invalid_key", sample.metadata.get("poi_id"), sample.key, problem))
            return
        shard = self._shards.write(sample)
        self._tally.add_sample(sample)
        self._transient += sum(1 for failure in sample.failures if failure.get("transient"))
        bbox = sample.metadata.get("bbox_wgs84")
        if bbox is not None:
            self._footprints.append([sample.key, sample.split, list(bbox)])
        if self._folders is None:
            return
        cfg, slot = self.output_cfg, self.slot_of(sample)
        image = self._folders.write_at("images", f"{sample.key}.png", sample.image_png, slot) if cfg.write_images else None
        mask_in_shard = cfg.write_masks and sample.mask_png is not None
        sidecar = metadata_sidecar(sample, shard, image, mask_in_shard)
        self._folders.write_at("metadata", f"{sample.key}.json", compact_json(sidecar), slot)
        if image is not None:
            self._write_rows(sample, image, slot)

    def _write_rows(self, sample: Sample, image: str, slot: int) -> None:
        captions = self.captions_cfg
        rows = sft.build_rows(sample, captions.class_min_share, captions.max_class_rows, self.modality, captions.tasks)
        if len(rows) > self.plan.rows_per_tile:
            raise RuntimeError(f"{sample.key} has {len(rows)} rows, more than the {self.plan.rows_per_tile} overlay slots")
        self._tally.derived.add(sample, rows, captions.tasks)
        stream = self._stream(sample.split)
        for index, row in enumerate(rows):
            overlay = None
            if self.output_cfg.write_bbox_overlays:
                assert self._folders is not None  # a dataset unit always has its folders
                png, _ = render_overlay(sample.image_png, row.boxes, self._palette, self.output_cfg.png_compress_level)
                name = f"{sample.key}_{index:02d}_{row.task}.png"
                overlay = self._folders.write_at("overlays", name, png, slot * self.plan.rows_per_tile + index)
            stream.write(row.to_json(sample.key, image, overlay))
            self._tally.rows[sample.split][row.task] += 1

    def _stream(self, split: str) -> AtomicJsonl:
        stream = self._jsonl.get(split)
        if stream is None:
            stream = self._jsonl[split] = AtomicJsonl(jsonl_part(self.out_dir, split, self.unit))
        return stream

    def write_still(self, poi: Poi, split: str, still: bytes | Failure, context: str = "") -> None:
        """Add a POI's overhead still (PNG / JPEG bytes) or the failure that stopped it.

        The image goes to ``mapbox_stills/`` now, in the segment of the POI row; its JSONL row (with
        ``context`` in the answer) or failure is written at `finish`, in POI-row order, so the
        unit's files do not depend on the order in which stills arrive.
        """
        if isinstance(still, Failure):
            self._stills.append((poi.row, split, still))
            return
        if self._folders is None:
            raise RuntimeError("stills belong to a dataset; this unit writes only shards")
        name = f"{poi.poi_id}{image_extension(still)}"
        rel = self._folders.write_at(STILLS_FOLDER, name, still, max(poi.row, 1) - 1)
        self._stills.append((poi.row, split, still_overview_row(rel, poi, context)))

    def _write_stills(self) -> None:
        for _, split, outcome in sorted(self._stills, key=lambda item: item[0]):
            if isinstance(outcome, Failure):
                self.record_failure(outcome)
            else:
                self._stream(split).write(outcome)
                self._tally.rows[split][sft.STILL_TASK] += 1
        self._stills.clear()

    def record_failure(self, failure: Failure) -> None:
        """Count a bad sample and keep its record with the unit."""
        self.record_failure_json(failure.to_json())

    def record_failure_json(self, record: Mapping[str, Any]) -> None:
        """Keep a failure record as written earlier (``Failure.to_json`` shape), e.g. carried over by recaption."""
        self._failures.write(dict(record))
        self._transient += bool(record.get("transient"))
        self._tally.add_failure(Failure.from_json(dict(record)))

    def finish(self) -> dict[str, Any]:
        """Close everything, then write the marker (last): the unit is done."""
        self._write_stills()
        shards = self._shards.close()
        for stream in self._jsonl.values():
            stream.close()
        self._failures.close()
        marker = {
            "unit": self.unit,
            "rsbuild_version": __version__,
            "shards": [{k: v for k, v in s.to_json().items() if k != "seconds"} for s in shards],
            "tally": self._tally.to_json(),
            "footprints": self._footprints,
            **({"inputs_sha256": self.inputs_sha256} if self.inputs_sha256 else {}),
            **({"transient_failures": self._transient} if self._transient else {}),
        }  # no timings: markers are byte-identical across identical runs
        write_atomic(marker_path(self.out_dir, self.unit), pretty_json(marker))
        return marker

    def abort(self) -> None:
        """Drop unfinished files; the unit stays not done and is redone by the next run."""
        self._shards.abort()
        for stream in self._jsonl.values():
            stream.abort()
        self._failures.abort()


def marker_path(out_dir: Path, unit: int) -> Path:
    return Path(out_dir) / UNITS_DIR / f"{unit:06d}.json"


def failures_part(out_dir: Path, unit: int) -> Path:
    return Path(out_dir) / UNITS_DIR / f"{unit:06d}.failures.jsonl"


def jsonl_part(out_dir: Path, split: str, unit: int) -> Path:
    folder = Path(out_dir) / DATA_DIR / PARTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{split}-{unit:06d}.jsonl"


def done_units(out_dir: Path) -> set[int]:
    """Units whose marker exists."""
    folder = Path(out_dir) / UNITS_DIR
    return {int(p.name[:6]) for p in folder.glob("[0-9]" * 6 + ".json")} if folder.is_dir() else set()


def unit_inputs_sha256(fingerprint: str, rows_sha256: str) -> str:
    """sha256 of what defines a unit's bytes: the run fingerprint and the unit's POI rows."""
    return hashlib.sha256(f"{fingerprint}\x1f{rows_sha256}".encode()).hexdigest()


def _marker(out_dir: Path, unit: int) -> dict[str, Any]:
    try:
        doc = json.loads(marker_path(out_dir, unit).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def units_with_transient_failures(out_dir: Path, done: Iterable[int]) -> set[int]:
    """Done units that recorded failures a retry may fix (``Failure.transient``)."""
    return {unit for unit in done if _marker(out_dir, unit).get("transient_failures")}


def changed_units(out_dir: Path, done: set[int], expected: Mapping[int, str]) -> set[int]:
    """Done units whose marker was made from other inputs than ``expected`` (unit → inputs sha256):
    an edited POI table, or units past the end of a table that shrank. A marker without the hash
    (older rsbuild) cannot vouch for its inputs and counts as changed."""
    return {unit for unit in done if _marker(out_dir, unit).get("inputs_sha256") != expected.get(unit, "")}


def forget_unit(out_dir: Path, unit: int) -> None:
    """Remove a done unit made from other inputs: its folder files (images, sidecars, overlays,
    stills of the keys its marker lists), then everything `clean_unit` removes."""
    out_dir = Path(out_dir)
    marker = _marker(out_dir, unit)
    keys = {str(entry[0]) for entry in marker.get("footprints", []) if entry}
    pois = {key.rsplit("_t", 1)[0] for key in keys}
    if keys:
        for folder in FOLDERS:
            for path in sorted((out_dir / folder).glob("s*/*")):
                stem = path.name.split(".", 1)[0]
                owner = pois if folder == STILLS_FOLDER else keys
                if stem in owner or (folder == "overlays" and stem.rsplit("_", 2)[0] in keys):
                    path.unlink(missing_ok=True)  # job-array workers may race on a stale unit
    clean_unit(out_dir, unit)


@contextmanager
def shard_names_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``OUT/units/lock`` (an exclusive ``flock``; other processes on this folder wait).

    Finalize renames shards to their final names and a redone unit first renames them back: two
    job-array workers doing both at once on one folder could move a shard onto another. Both run
    under this lock, so the renames of one never interleave with the other's. (An ``s3://`` output
    is staged in a folder per process; workers there must not share one prefix while finalizing.)
    Not reentrant: a holder must not take it again."""
    folder = Path(out_dir) / UNITS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def clean_unit(out_dir: Path, unit: int) -> None:
    """Remove whatever an unfinished attempt at ``unit`` left (shards, sidecars, parts, marker)."""
    out_dir = Path(out_dir)
    shards_dir = out_dir / SHARDS_DIR
    with shard_names_lock(out_dir):  # no finalize renames shards meanwhile
        restore_unit_shard_names(shards_dir, shards_dir / SHARD_NAMES_FILE)  # a finalized unit's shards carry final names
        marker_path(out_dir, unit).unlink(missing_ok=True)
        for split in SPLITS:
            for path in shards_dir.glob(unit_shard_name(split, unit, 0)[:-2] + "*"):
                path.unlink(missing_ok=True)
        part = out_dir / DATA_DIR / PARTS_DIR / f"{split}-{unit:06d}.jsonl"
        for path in (part, part.with_name(part.name + TMP_SUFFIX)):
            path.unlink(missing_ok=True)
    failures = failures_part(out_dir, unit)
    for path in (failures, failures.with_name(failures.name + TMP_SUFFIX)):
        path.unlink(missing_ok=True)


def run_fingerprint(config: Mapping[str, Any]) -> str:
    """sha256 of what decides a run's outputs (the resolved config minus pure speed knobs)."""
    doc = json.loads(json.dumps(config, sort_keys=True, default=str))
    for section, key in (("imagery", "read_workers"), ("imagery", "cpu_workers"), ("captions", "concurrency"),
                         ("output", "max_failure_share"),  # speed knobs, the exit rule and timeouts: same bytes
                         ("scenes", "connect_timeout_s"), ("scenes", "read_timeout_s"), ("imagery", "http_connect_timeout_s"),
                         ("imagery", "http_timeout_s"), ("captions", "connect_timeout_s")):
        doc.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def check_output_folder(out_dir: Path) -> None:
    """Create ``out_dir`` and make sure files can be written in it; an InputError names ``--out`` otherwise."""
    if out_dir.is_file():
        raise InputError(f"--out {out_dir} is a file, not a folder; choose another output folder")
    blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"--out {out_dir} lies under {blocker}, which is a file; choose another output folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out_dir} cannot be created ({exc.strerror}); choose another output folder") from None
    probe = out_dir / f".rsbuild-write-test{TMP_SUFFIX}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out_dir} is not writable ({exc.strerror}); fix its permissions or choose another "
                         "output folder") from None


def prepare_run(out_dir: Path, config: Mapping[str, Any], *, overwrite: bool = False) -> set[int]:
    """Make ``out_dir`` ready; returns the units already done (resume) — empty for a fresh run.

    An output folder written with a different config is refused (or wiped with ``overwrite``).
    """
    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    run_file = out_dir / UNITS_DIR / RUN_FILE
    fingerprint = run_fingerprint(config)
    existing = [out_dir / name for name in (*FOLDERS, DATA_DIR, SHARDS_DIR, UNITS_DIR, PLOTS_DIR, SUMMARY_FILE, CARD_FILE, FAILURES_FILE)]
    existing = [p for p in existing if p.exists() and (p.is_file() or any(p.iterdir()))]
    if overwrite:
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif run_file.exists():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            raise InputError(f"{run_file} is damaged; pass --overwrite (or another --out) to start afresh") from None
        if previous != fingerprint:
            raise InputError(
                f"{out_dir} holds a run made with a different configuration; rerun with the same config to resume, "
                "or pass --overwrite (or another --out) to start afresh"
            )
        return done_units(out_dir)
    elif existing:
        names = ", ".join(sorted(p.name for p in existing))
        raise InputError(f"{out_dir} already holds other files ({names}); choose another output folder or pass --overwrite")
    (out_dir / UNITS_DIR).mkdir(parents=True, exist_ok=True)
    write_atomic(run_file, pretty_json({"fingerprint": fingerprint, "rsbuild_version": __version__}))
    return set()


def rows_per_tile_bound(captions: CaptionsConfig) -> int:
    """The most SFT rows one tile can get (global + grounding + class rows), for overlay slots."""
    models = max(1, len(captions.models))
    return 4 + (2 + captions.paraphrases + 2 * captions.max_class_rows) * models + sft.derived_rows_bound(captions.tasks)


def plan_for(cfg: Any) -> UnitPlan:
    """The unit plan of a run config (`rsbuild.config.Config`)."""
    from rsbuild.grid import tile_windows

    img = cfg.imagery
    tiles = len(tile_windows(img.aoi_size, img.tile_size, img.tile_stride))
    return UnitPlan(cfg.output.unit_pois, tiles, rows_per_tile_bound(cfg.captions))


class UnitRouter:
    """The pipeline's sink: sends each sample / failure to the writer of its unit.

    Units are finished (marker written) as soon as the ordered stream has moved past them;
    failures bypass the caption stage and so always arrive before later samples. The caption
    stage reads ahead in its own thread, so failures and samples arrive from two threads:
    every method holds ``lock`` (callers hold it too around work that touches open writers).
    """

    def __init__(self, open_unit: Callable[[int], UnitWriter], plan: UnitPlan, units: Iterable[int]) -> None:
        self.lock = threading.RLock()
        self.open_unit, self.plan = open_unit, plan
        self.pending = sorted(set(units))  # units this run must finish, in order
        self._open: dict[int, UnitWriter] = {}
        self.finished: list[int] = []

    def _writer(self, unit: int) -> UnitWriter:
        writer = self._open.get(unit)
        if writer is None:
            writer = self._open[unit] = self.open_unit(unit)
        return writer

    def _finish_before(self, unit: int) -> None:
        while self.pending and self.pending[0] < unit:
            done = self.pending.pop(0)
            self._writer(done).finish()
            self._open.pop(done)
            self.finished.append(done)

    def write(self, sample: Sample) -> None:
        with self.lock:
            unit = self.plan.unit_of(sample)
            self._finish_before(unit)
            self._writer(unit).write(sample)

    def record_failure(self, failure: Failure, unit: int) -> None:
        with self.lock:
            self._writer(unit).record_failure(failure)

    def close(self) -> list[int]:
        """Finish every remaining unit (also those that got no record); the units finished."""
        with self.lock:
            self._finish_before(1 << 62)
            return self.finished

    def abort(self) -> None:
        with self.lock:
            for writer in self._open.values():
                writer.abort()
            self._open.clear()
