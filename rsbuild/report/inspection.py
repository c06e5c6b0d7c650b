"""Dataset validation and counts: ``rsbuild inspect OUT``.

Reads every shard and JSONL row once (streaming) and reports counts per split / task / class,
shards, failures by reason, and every problem found: unreadable or unfinished shards, bad or
duplicate keys, undecodable PNGs, JSONL rows that do not parse or break the row schema, rows
pointing at missing images, leftover temporary files of an interrupted build. Still rows
(``still_overview``) point at a PNG or JPEG of a POI that has tiles in the shards. A
``KEY.bands.tif`` must open as 12 float32 bands named B01 … B12 on the tile's grid (shape, CRS and
transform of ``metadata["native_grid"]``).
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.table import Table

from rsbuild.chips.bands import BANDS_MEMBER
from rsbuild.dataset.annotations import CaptionCounts
from rsbuild.dataset.layout import CARD_FILE, DATA_DIR, FAILURES_FILE, SHARDS_DIR, SUMMARY_FILE, TMP_SUFFIX
from rsbuild.dataset.sft import STILL_TASK, paraphrase_counts, reported_tasks, row_problems
from rsbuild.dataset.shards import list_shards, read_shard, read_shard_stats
from rsbuild.records import KEY_PATTERN, SPLITS, Sample
from rsbuild.sources.assets import SPECTRAL_BANDS
from rsbuild.sources.raster_io import read_geotiff_bytes

MAX_PROBLEMS = 200  # listed; the count covers all


@dataclass
class Report:
    """What ``inspect_dataset`` found. ``ok`` is True when there is no problem."""

    out_dir: str
    tiles_by_split: Counter = field(default_factory=Counter)
    rows_by_split: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in SPLITS})
    class_rows: Counter = field(default_factory=Counter)
    class_tiles: Counter = field(default_factory=Counter)
    dominant_tiles: Counter = field(default_factory=Counter)
    annotations_by_task: Counter = field(default_factory=Counter)
    shards: list[dict[str, Any]] = field(default_factory=list)
    failures_by_reason: Counter = field(default_factory=Counter)
    vqa_answers: Counter = field(default_factory=Counter)  # (kind, answer) of vqa rows
    vqa_paraphrases: Counter = field(default_factory=Counter)  # kept, or why a template question stayed
    captions: CaptionCounts = field(default_factory=CaptionCounts)  # kept and rejected captions
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, message: str) -> None:
        """Record a problem (only the first ``MAX_PROBLEMS`` messages are kept)."""
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)

    def to_json(self) -> dict[str, Any]:
        tasks = reported_tasks(self.rows_by_split.values())
        answers: dict[str, dict[str, int]] = {}
        for (kind, answer), count in sorted(self.vqa_answers.items()):
            answers.setdefault(kind, {})[answer] = count
        return {
            "out_dir": self.out_dir,
            "ok": self.ok,
            "tiles": sum(self.tiles_by_split.values()),
            "tiles_by_split": {s: self.tiles_by_split[s] for s in SPLITS},
            "rows": sum(sum(c.values()) for c in self.rows_by_split.values()),
            "rows_by_split": {s: {t: self.rows_by_split[s][t] for t in tasks} for s in SPLITS},
            "annotations_by_task": dict(sorted(self.annotations_by_task.items())),
            "classes": [
                {"name": name, "tiles": self.class_tiles[name], "dominant_tiles": self.dominant_tiles[name], "rows": self.class_rows[name]}
                for name in sorted(self.class_tiles, key=lambda n: (-self.class_tiles[n], n))
            ],
            "shards": self.shards,
            "failures": sum(self.failures_by_reason.values()),
            "failures_by_reason": dict(sorted(self.failures_by_reason.items())),
            "captions": self.captions.to_json(),
            "problem_count": self.problem_count,
            "problems": self.problems,
            **({"vqa_answers": answers} if answers else {}),
            **({"vqa_paraphrases": dict(sorted(self.vqa_paraphrases.items()))} if self.vqa_paraphrases else {}),
        }


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG"}  # file extension -> the format its bytes must have


def _image_problem(data: bytes | None, expected: str = "PNG") -> str | None:
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != expected:
                return f"is {image.format}, not {expected}"
            image.verify()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:  # what PIL raises on damage
        return f"does not decode ({exc})"
    return None


def bands_problem(sample: Sample) -> str | None:
    """What is wrong with a sample's ``KEY.bands.tif`` (None: nothing, or no multispectral member)."""
    meta = sample.metadata.get("bands")
    if sample.bands_tif is None:
        return None if meta is None else f"metadata describes a {BANDS_MEMBER} member but the shard has none"
    try:
        tif = read_geotiff_bytes(sample.bands_tif)
    except (OSError, ValueError) as exc:  # rasterio's RasterioIOError is an OSError
        return f"does not open as a GeoTIFF ({exc})"
    if tif.descriptions != list(SPECTRAL_BANDS):
        return f"has bands {' '.join(tif.descriptions) or '(unnamed)'}, not the 12 L2A bands {' '.join(SPECTRAL_BANDS)}"
    if tif.array.dtype.name != "float32":
        return f"is {tif.array.dtype.name}, not float32 reflectance"
    grid = sample.metadata.get("native_grid") or {}
    got = {"shape": [tif.grid.height, tif.grid.width], "crs": tif.grid.crs, "transform": list(tif.grid.transform)}
    for field_name in ("shape", "crs", "transform"):
        if got[field_name] != grid.get(field_name):
            return f"has {field_name} {got[field_name]}, the tile's metadata native_grid says {grid.get(field_name)}"
    return None


def _check_shards(out: Path, report: Report) -> tuple[set[str], set[str]]:
    """Read every shard fully; returns all sample keys and the POI ids they belong to."""
    keys: set[str] = set()
    poi_ids: set[str] = set()
    for shard in list_shards(out):
        expected_split = shard.name.split("-", 1)[0]
        samples = 0
        try:
            for sample in read_shard(shard):
                samples += 1
                where = f"{shard.name}: {sample.key}"
                if not KEY_PATTERN.match(sample.key):
                    report.problem(f"{where}: key has characters outside [A-Za-z0-9_-]")
                if sample.key in keys:
                    report.problem(f"{where}: key also appears earlier (keys must be unique across shards)")
                keys.add(sample.key)
                poi_ids.add(str(sample.metadata.get("poi_id")))
                if sample.split != expected_split:
                    report.problem(f"{where}: split {sample.split!r} in metadata but shard is {expected_split!r}")
                for member, data in ((".png", sample.image_png), (".mask.png", sample.mask_png)):
                    issue = _image_problem(data)
                    if issue:
                        report.problem(f"{where}{member} {issue}")
                issue = bands_problem(sample)
                if issue:
                    report.problem(f"{where}.{BANDS_MEMBER} {issue}")
                report.tiles_by_split[sample.split] += 1
                for ann in sample.annotations:
                    report.annotations_by_task[str(ann.get("task"))] += 1
                report.captions.add_sample(sample)
                report.vqa_paraphrases.update(paraphrase_counts(sample))
                for cls in sample.stats.get("classes", []):
                    report.class_tiles[cls["name"]] += 1
                if sample.stats.get("dominant_class"):
                    report.dominant_tiles[sample.stats["dominant_class"]] += 1
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            report.problem(f"{shard.name}: unreadable after {samples} samples ({exc})")
        _check_sidecar(shard, samples, report)
        report.shards.append({"name": shard.name, "split": expected_split, "samples": samples, "bytes": shard.stat().st_size})
    if not report.shards:
        report.problem(f"no shards in {out / SHARDS_DIR}")
    return keys, poi_ids


def _check_sidecar(shard: Path, samples: int, report: Report) -> None:
    try:
        stats = read_shard_stats(shard)
    except (OSError, json.JSONDecodeError) as exc:
        report.problem(f"{shard.name}: stats sidecar unreadable ({exc})")
        return
    if stats is None:
        report.problem(f"{shard.name}: no stats sidecar (the shard was not finished)")
    elif stats.get("samples") != samples:
        report.problem(f"{shard.name}: holds {samples} samples but its stats sidecar says {stats.get('samples')}")
    elif stats.get("bytes") not in (None, shard.stat().st_size):
        report.problem(f"{shard.name}: is {shard.stat().st_size} bytes but its stats sidecar says {stats.get('bytes')}")


def _check_jsonl(out: Path, keys: set[str], poi_ids: set[str], report: Report) -> None:
    checked: set[str] = set()  # image paths already checked (rows share images)
    for split in SPLITS:
        path = out / DATA_DIR / f"{split}.jsonl"
        if not path.exists():
            report.problem(f"{DATA_DIR}/{split}.jsonl is missing")
            continue
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                where = f"{DATA_DIR}/{split}.jsonl line {number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    report.problem(f"{where}: not JSON ({exc.msg})")
                    continue
                issues = row_problems(row)
                if issues:
                    report.problem(f"{where}: {'; '.join(issues)}")
                    continue
                meta = row["meta"]
                report.rows_by_split[split][meta["task"]] += 1
                if meta["class"]:
                    report.class_rows[meta["class"]] += 1
                if meta["task"] == "vqa":
                    report.vqa_answers[(meta["detail"]["kind"], row["messages"][1]["content"][0]["text"])] += 1
                if meta["task"] == STILL_TASK and meta["key"] not in poi_ids:
                    report.problem(f"{where}: still of POI {meta['key']!r}, which has no tile in the shards")
                elif meta["task"] != STILL_TASK and meta["key"] not in keys:
                    report.problem(f"{where}: key {meta['key']!r} is in no shard")
                for rel in (row["messages"][0]["content"][0]["image"], meta["overlay"]):
                    if rel is None or rel in checked:
                        continue
                    checked.add(rel)  # a missing or broken file is reported once, at its first row
                    if not (out / rel).is_file():
                        report.problem(f"{where}: {rel} does not exist")
                        continue
                    issue = _image_problem((out / rel).read_bytes(), IMAGE_FORMATS[Path(rel).suffix])
                    if issue:
                        report.problem(f"{where}: {rel} {issue}")


def _check_failures(out: Path, report: Report) -> None:
    path = out / FAILURES_FILE
    if not path.exists():
        report.problem(f"{FAILURES_FILE} is missing (the build did not finish)")
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                report.failures_by_reason[json.loads(line)["reason"]] += 1
            except (json.JSONDecodeError, KeyError, TypeError):
                report.problem(f"{FAILURES_FILE} line {number}: not a failure record")


def inspect_dataset(out_dir: Path) -> Report:
    """Validate a dataset folder written by `DatasetWriter` and count what it holds."""
    out = Path(out_dir)
    report = Report(out_dir=str(out))
    if not out.is_dir():
        report.problem(f"{out} is not a folder")
        return report
    for folder in (out, out / SHARDS_DIR, out / DATA_DIR):
        for leftover in sorted(folder.glob(f"*{TMP_SUFFIX}")):
            report.problem(f"{leftover.relative_to(out)}: temporary file left by an interrupted build")
    for name in (SUMMARY_FILE, CARD_FILE):
        if not (out / name).is_file():
            report.problem(f"{name} is missing (the build did not finish)")
    try:
        if (out / SUMMARY_FILE).is_file():
            json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (ValueError, OSError):
        report.problem(f"{SUMMARY_FILE} is damaged (not JSON); rerun the same build to write it again")
    keys, poi_ids = _check_shards(out, report)
    _check_jsonl(out, keys, poi_ids, report)
    _check_failures(out, report)
    return report


def render_report(report: Report, console: Console) -> None:
    """Print the report as rich tables, then the problems (or that the dataset is valid)."""
    data = report.to_json()
    splits = Table(title=f"dataset {report.out_dir}", header_style="bold")
    tasks = reported_tasks(report.rows_by_split.values())
    for column in ("split", "tiles", "shards", *tasks):
        splits.add_column(column, justify="left" if column == "split" else "right")
    for split in SPLITS:
        shard_count = sum(1 for s in report.shards if s["split"] == split)
        rows = data["rows_by_split"][split]
        splits.add_row(split, str(data["tiles_by_split"][split]), str(shard_count), *(str(rows[t]) for t in tasks))
    console.print(splits)
    if data["classes"]:
        classes = Table(title="classes", header_style="bold")
        for column in ("class", "tiles", "dominant in", "class rows"):
            classes.add_column(column, justify="left" if column == "class" else "right")
        for cls in data["classes"]:
            classes.add_row(cls["name"], str(cls["tiles"]), str(cls["dominant_tiles"]), str(cls["rows"]))
        console.print(classes)
    captions = data["captions"]
    if data["annotations_by_task"] or data["failures_by_reason"] or captions["captions_generated"]:
        other = Table(title="annotations and failures", header_style="bold")
        other.add_column("what")
        other.add_column("count", justify="right")
        for task, count in data["annotations_by_task"].items():
            other.add_row(f"annotations: {task}", str(count))
        for reason, count in data["failures_by_reason"].items():
            other.add_row(f"failed: {reason}", str(count))
        if captions["captions_generated"]:
            rate = captions["pass_rate"]
            other.add_row("captions generated (kept + rejected)", str(captions["captions_generated"]))
            other.add_row(f"captions kept ({rate:.0%} of generated)", str(captions["captions_kept"]))
            for reason, count in captions["rejected_by_reason"].items():
                other.add_row(f"captions rejected: {reason}", str(count))
            for reason, count in captions["unwritten_by_reason"].items():
                other.add_row(f"captions not written: {reason}", str(count))
        console.print(other)
    if data.get("vqa_answers"):
        vqa = Table(title="VQA answers", header_style="bold")
        vqa.add_column("kind")
        vqa.add_column("answers (count)")
        for kind, answers in data["vqa_answers"].items():
            vqa.add_row(kind, ", ".join(f"{a}: {n}" for a, n in sorted(answers.items(), key=lambda kv: (-kv[1], kv[0]))[:8]))
        console.print(vqa)
    if data.get("vqa_paraphrases"):
        console.print("VQA questions reworded by the LLM: " + ", ".join(f"{r} {n}" for r, n in data["vqa_paraphrases"].items())
                      + " (a rejected rewording keeps the template question)", markup=False, highlight=False)
    if report.ok:
        console.print("[bold green]valid[/]: every shard reads, keys are unique, every JSONL row parses and its image exists")
        return
    console.print(f"[bold red]{report.problem_count} problem(s)[/]:")
    for message in report.problems:
        console.print(f"  - {message}", markup=False, highlight=False)
    if report.problem_count > len(report.problems):
        console.print(f"  … and {report.problem_count - len(report.problems)} more")
