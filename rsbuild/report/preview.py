"""A static HTML preview gallery of a built dataset: chips, label overlays, boxes, captions.

``write_preview`` streams the samples of ``OUT/shards`` and writes ONE HTML file with no server,
CDN or external script: the page embeds one small JSON record per sample and its own vanilla
JavaScript renders one page of cards at a time (pagination keeps thousands of samples
responsive). Chips and pre-rendered RGBA label overlays are written beside the page in
``{stem}_files/sNNNNN/`` (referenced relatively, loaded lazily) or, with ``inline_images``,
embedded as ``data:`` URIs so the page is a single portable file. The page's markup, style and
script are package files (``preview_assets/page.html``, ``style.css``, ``app.js``) copied into it.

Filters (split, task, class present, caption verdict) exist twice with one meaning: at write
time (``PreviewFilter``, chooses what goes into the page) and in the page (select boxes that
change what is shown). A sample matches a task/verdict filter when one of its captions has
that task and that verdict. Memory stays flat: each record is written as soon as it is built.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib.resources
import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from rsbuild.captions.base import TASKS
from rsbuild.config import DERIVED_TASKS
from rsbuild.dataset.annotations import FAIL, PASS, VERDICTS, CaptionEntry, caption_entries
from rsbuild.dataset.layout import CONFIG_FILE
from rsbuild.dataset.sft import component_boxes, derived_rows
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.errors import ConfigError, InputError
from rsbuild.records import SPLITS, Sample
from rsbuild.schemes import NODATA_INDEX, SCHEMES, Scheme, class_colors, scheme_or_none

FILTER_KEYS = ("split", "task", "class", "verdict")
DEFAULT_PAGE_SIZE = 24
SAMPLES_PER_FOLDER = 4000  # two images per sample: at most 8000 files per leaf folder
UNKNOWN_COLOR = (136, 136, 136)
OVERLAY_COMPRESS_LEVEL = 1
ASSETS_DIR = "preview_assets"  # page.html, style.css, app.js (package data)


# ---------------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class PreviewFilter:
    """Which samples go into the page. Empty sets allow everything; values of one key are
    alternatives (OR), different keys must all hold (AND)."""

    splits: frozenset[str] = frozenset()
    tasks: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    verdicts: frozenset[str] = frozenset()

    def matches(self, split: str, class_names: Sequence[str], captions: Sequence[CaptionEntry]) -> bool:
        """True when a sample with this split, these classes and captions passes the filter."""
        if self.splits and split not in self.splits:
            return False
        if self.classes and not self.classes.intersection(class_names):
            return False
        if self.tasks or self.verdicts:
            return any(
                (not self.tasks or c.task in self.tasks) and (not self.verdicts or c.verdict in self.verdicts)
                for c in captions
            )
        return True

    def to_json(self) -> dict[str, list[str]]:
        return {
            "split": sorted(self.splits),
            "task": sorted(self.tasks),
            "class": sorted(self.classes),
            "verdict": sorted(self.verdicts),
        }


def _known_class_names() -> set[str]:
    return {name for scheme in SCHEMES.values() for name in scheme.names}


def parse_filters(specs: Sequence[str]) -> PreviewFilter:
    """``["task=area", "class=water,cropland", "verdict=fail"]`` → a `PreviewFilter`.

    Each spec is ``KEY=VALUE[,VALUE...]`` with KEY one of split, task, class, verdict; repeating
    a key adds values. Raises ConfigError naming the bad spec and the accepted values.
    """
    allowed: dict[str, set[str] | None] = {
        "split": set(SPLITS),
        "task": set(TASKS),
        "class": _known_class_names(),
        "verdict": set(VERDICTS),
    }
    values: dict[str, set[str]] = {key: set() for key in FILTER_KEYS}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip().lower()
        if not sep or key not in values:
            raise ConfigError(
                f"--filter {spec!r}: use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}, e.g. --filter verdict=fail"
            )
        for value in (v.strip() for v in raw.split(",")):
            choices = allowed[key]
            if not value or (choices is not None and value not in choices):
                raise ConfigError(
                    f"--filter {spec!r}: {value!r} is not a known {key}; use one of {', '.join(sorted(choices or ()))}"
                )
            values[key].add(value)
    return PreviewFilter(
        splits=frozenset(values["split"]),
        tasks=frozenset(values["task"]),
        classes=frozenset(values["class"]),
        verdicts=frozenset(values["verdict"]),
    )


# ---------------------------------------------------------------------------------------------
# Sample → page record


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def text_color_on(color: Sequence[int]) -> str:
    """Black or white, whichever reads better on ``color`` (sRGB relative luminance)."""
    r, g, b = (c / 255.0 for c in color[:3])
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "#ffffff"


def overlay_rgba(mask: np.ndarray, scheme: Scheme | None) -> np.ndarray:
    """(H, W, 4) uint8 overlay of a class-index mask: class colour, opaque; nodata transparent.

    The page sets the overlay's opacity, so the PNG itself stays fully opaque where labelled.
    Indices the scheme does not have are drawn in grey.
    """
    table = np.zeros((256, 4), dtype=np.uint8)
    table[:, :3] = UNKNOWN_COLOR
    table[:, 3] = 255
    if scheme is not None:
        table[: len(scheme.classes), :3] = scheme.colormap()[: len(scheme.classes)]
    table[NODATA_INDEX] = 0
    return table[mask]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=OVERLAY_COMPRESS_LEVEL)
    return buffer.getvalue()


def overlay_png(mask_png: bytes, scheme: Scheme | None) -> bytes:
    """The RGBA overlay PNG of a class-index mask PNG (palette or grey: the pixel values are the indices)."""
    with Image.open(io.BytesIO(mask_png)) as img:
        mask = np.asarray(img if img.mode in ("L", "P") else img.convert("L"))  # P: the values are the indices
    return _png(overlay_rgba(mask, scheme))


def _metadata_view(sample: Sample) -> dict[str, Any]:
    meta, stats = sample.metadata, sample.stats
    scene = meta.get("scene") or {}
    centre = meta.get("tile_center")
    lat, lon = (centre[0], centre[1]) if centre else (meta.get("lat"), meta.get("lon"))
    return {
        "poi": meta.get("poi_id"),
        "scene": scene.get("id"),
        "date": str(scene.get("datetime") or "")[:10] or None,
        "scene_cloud": scene.get("cloud_cover"),
        "tile_cloud": stats.get("cloud_share"),
        "lat": lat,
        "lon": lon,
    }


def dataset_derived_tasks(dataset_dir: Path) -> tuple[str, ...]:
    """The derived tasks (vqa, referring, masks) the dataset was built with, from its resolved config."""
    path = Path(dataset_dir) / CONFIG_FILE
    try:
        tasks = json.loads(path.read_text(encoding="utf-8")).get("captions", {}).get("tasks", [])
    except (OSError, ValueError, AttributeError):
        return ()
    return tuple(task for task in DERIVED_TASKS if task in tasks)


def derived_records(sample: Sample, tasks: Sequence[str], styled: Any) -> list[dict[str, Any]]:
    """The tile's derived rows as the card lists them: question and answer, referring phrases with
    their boxes (drawn on the chip), masks as their component's pixel count (the RLE is in the JSONL)."""
    pixels = {int(m["component"]): int(m["pixels"]) for m in sample.masks}
    records = []
    for row in derived_rows(sample, tasks):
        detail = row.detail or {}
        answer = row.answer
        if row.task == "mask_grounding":
            answer = f"COCO RLE mask of {pixels.get(int(detail.get('component', -1)), 0)} pixels"
        records.append({
            "task": row.task, "kind": detail.get("kind"), "prompt": row.prompt, "answer": answer,
            "boxes": [{"label": box.label, "bbox": list(box.bbox), **styled(box.label)} for box in row.boxes],
        })  # fmt: skip
    return records


def sample_record(
    sample: Sample, image_src: str, overlay_src: str | None, scheme: Scheme | None, derived_tasks: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON record one card is drawn from (image sources already resolved); ``derived_tasks``
    adds the tile's derived rows (``derived``)."""
    colors = class_colors(scheme)

    def styled(name: str) -> dict[str, str]:
        rgb = colors.get(name, UNKNOWN_COLOR)
        return {"color": _hex(rgb), "text": text_color_on(rgb)}

    height, width = sample.stats.get("size") or (1, 1)
    return {
        "key": sample.key,
        "split": sample.split,
        "image": image_src,
        "overlay": overlay_src,
        "aspect": round(width / height, 4) if height else 1.0,
        "scheme": sample.stats.get("scheme"),
        "meta": _metadata_view(sample),
        "classes": [
            {"name": c["name"], "share": c.get("share"), **styled(c["name"])}
            for c in sample.stats.get("classes", [])
        ],
        "boxes": [
            {"label": box.label, "bbox": list(box.bbox), **styled(box.label)}
            for box in component_boxes(sample.stats)
        ],
        "captions": [entry.to_json() for entry in caption_entries(sample)],
        "derived": derived_records(sample, derived_tasks, styled) if derived_tasks else [],
    }


# ---------------------------------------------------------------------------------------------
# Writing the page


@dataclass
class PreviewSummary:
    """What went into a preview page."""

    out_file: Path
    assets_dir: Path | None  # None when images are inlined
    samples: int = 0
    scanned: int = 0  # samples read from the shards (before filters and limit)
    shards: int = 0
    samples_by_split: Counter = field(default_factory=Counter)
    captions_by_verdict: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "out_file": str(self.out_file),
            "assets_dir": str(self.assets_dir) if self.assets_dir else None,
            "samples": self.samples,
            "scanned": self.scanned,
            "shards": self.shards,
            "samples_by_split": dict(sorted(self.samples_by_split.items())),
            "captions_by_verdict": dict(sorted(self.captions_by_verdict.items())),
        }


def header_text(summary: PreviewSummary, dataset_dir: Path) -> str:
    """The page's header line: the dataset's counts (from its ``summary.json``) and the pass rate of
    the captions on the page (checked ones: pass ÷ (pass + fail))."""
    parts = []
    try:
        doc = json.loads((Path(dataset_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = {}
    if doc:
        by_split = doc.get("tiles_by_split", {})
        parts.append(f"{doc.get('tiles', 0)} tiles (" + ", ".join(f"{s} {by_split.get(s, 0)}" for s in SPLITS) + ")")
        parts.append(f"{len(doc.get('shards', []))} shards, {doc.get('rows', 0)} SFT rows, {doc.get('failures', 0)} skipped")
    verdicts = summary.captions_by_verdict
    checked = verdicts[PASS] + verdicts[FAIL]
    rate = f"{verdicts[PASS] / checked:.1%}" if checked else "-"
    parts.append(f"this page: {summary.samples} samples, {sum(verdicts.values())} captions, check pass rate {rate}")
    return "; ".join(parts)


def default_preview_path(dataset_dir: Path) -> Path:
    """Where ``rsbuild preview DIR`` writes without ``--out``: ``DIR/preview.html``."""
    return Path(dataset_dir) / "preview.html"


def _script_json(doc: Any) -> str:
    """JSON safe inside a <script> element: no ``<``, ``>`` or ``&`` that could end it."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class _ImageStore:
    """Puts chip and overlay PNGs beside the page (relative paths) or inline (data: URIs)."""

    def __init__(self, out_file: Path, inline: bool) -> None:
        self.inline = inline
        self.folder_name = f"{out_file.stem}_files"
        self._url_prefix = quote(self.folder_name)
        self.assets_dir = None if inline else out_file.parent / self.folder_name
        self._count = 0

    def put(self, key: str, chip_png: bytes, overlay: bytes | None) -> tuple[str, str | None]:
        """Store one sample's images; returns the ``src`` of the chip and of the overlay."""
        if self.inline:
            return _data_uri(chip_png), _data_uri(overlay) if overlay is not None else None
        segment = f"s{self._count // SAMPLES_PER_FOLDER:05d}"
        self._count += 1
        folder = self.assets_dir / segment  # type: ignore[operator]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key}.png").write_bytes(chip_png)
        chip_src = f"{self._url_prefix}/{segment}/{key}.png"
        if overlay is None:
            return chip_src, None
        (folder / f"{key}.overlay.png").write_bytes(overlay)
        return chip_src, f"{self._url_prefix}/{segment}/{key}.overlay.png"


def _shards_to_read(dataset_dir: Path, splits: frozenset[str]) -> list[Path]:
    shards = list_shards(dataset_dir)
    if not shards:
        raise InputError(
            f"no shards (*.tar) under {Path(dataset_dir) / 'shards'}; pass the output folder of `rsbuild build` or `rsbuild fetch`"
        )
    if not splits:
        return shards
    return [p for p in shards if p.name.split("-", 1)[0] in splits or p.name.split("-", 1)[0] not in SPLITS]


def _matching_samples(shards: Sequence[Path], filters: PreviewFilter, summary: PreviewSummary) -> Iterator[Sample]:
    """Stream the samples that pass ``filters``, counting shards opened and samples read."""
    for shard in shards:
        summary.shards += 1
        for sample in read_shard(shard):
            summary.scanned += 1
            class_names = [c["name"] for c in sample.stats.get("classes", [])]
            if filters.matches(sample.split, class_names, caption_entries(sample)):
                yield sample


def write_preview(
    dataset_dir: Path,
    out_file: Path | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    filters: PreviewFilter | Sequence[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    inline_images: bool = False,
) -> PreviewSummary:
    """Write the HTML preview of the dataset in ``dataset_dir``; returns what went in.

    ``split`` keeps one split (shorthand for a split filter), ``limit`` stops after that many
    matching samples, ``filters`` is a `PreviewFilter` or ``--filter`` specs (see
    ``parse_filters``). Images go to ``{out stem}_files/`` beside the page unless
    ``inline_images``. The page appears atomically (temporary name, then rename).
    """
    dataset_dir = Path(dataset_dir)
    out_file = Path(out_file) if out_file is not None else default_preview_path(dataset_dir)
    flt = filters if isinstance(filters, PreviewFilter) else parse_filters(filters or ())
    if split is not None:
        if split not in SPLITS:
            raise ConfigError(f"--split {split!r} is not a split; use one of {', '.join(SPLITS)}")
        if flt.splits and split not in flt.splits:
            raise ConfigError(f"--split {split!r} contradicts --filter split={','.join(sorted(flt.splits))}; keep one of them")
        flt = replace(flt, splits=frozenset({split}))
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} must be at least 1 (or left out for every sample)")
    if page_size < 1:
        raise ConfigError(f"page_size {page_size} must be at least 1")

    out_file.parent.mkdir(parents=True, exist_ok=True)
    shards = _shards_to_read(dataset_dir, flt.splits)
    images = _ImageStore(out_file, inline_images)
    summary = PreviewSummary(out_file=out_file, assets_dir=images.assets_dir)
    legend: dict[str, str] = {}
    tasks: set[str] = set()
    derived = dataset_derived_tasks(dataset_dir)
    tmp = out_file.with_name(out_file.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as page:
            page.write(_page_head(dataset_dir.resolve().name or str(dataset_dir)))
            page.write('<script type="application/json" id="rsb-records">[\n')
            for sample in _matching_samples(shards, flt, summary):
                scheme = scheme_or_none(sample.stats.get("scheme"))
                overlay = overlay_png(sample.mask_png, scheme) if sample.mask_png is not None else None
                chip_src, overlay_src = images.put(sample.key, sample.image_png, overlay)
                record = sample_record(sample, chip_src, overlay_src, scheme, derived)
                page.write(("," if summary.samples else "") + _script_json(record) + "\n")
                summary.samples += 1
                summary.samples_by_split[sample.split] += 1
                summary.captions_by_verdict.update(c["verdict"] for c in record["captions"])
                tasks.update(c["task"] for c in record["captions"])
                legend.update((c["name"], c["color"]) for c in record["classes"])
                if limit is not None and summary.samples >= limit:
                    break
            info = {
                "page_size": page_size,
                "splits": [s for s in SPLITS if s in summary.samples_by_split],
                "tasks": sorted(tasks),
                "verdicts": [v for v in VERDICTS if v in summary.captions_by_verdict],
                "legend": [{"name": name, "color": legend[name]} for name in sorted(legend)],
                "filters": flt.to_json(),
                "scanned": summary.scanned,
                "header": header_text(summary, dataset_dir),
            }
            page.write(']</script>\n<script type="application/json" id="rsb-info">' + _script_json(info) + "</script>\n")
            page.write(_page_tail())
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return summary


@functools.cache
def _page_template() -> tuple[str, str]:
    """The page around the data scripts: (head with ``@TITLE@`` left in, tail), read once from
    ``preview_assets/``: ``page.html`` with ``style.css`` at ``@STYLE@`` and ``app.js`` at
    ``@SCRIPT@``, cut at ``@DATA@`` (each placeholder is a line of its own)."""
    assets = importlib.resources.files("rsbuild.report") / ASSETS_DIR
    page, css, script = ((assets / name).read_text(encoding="utf-8") for name in ("page.html", "style.css", "app.js"))
    head, tail = page.split("@DATA@\n")
    return head.replace("@STYLE@\n", css), tail.replace("@SCRIPT@\n", script)


def _page_head(title: str) -> str:
    safe = html.escape(f"rsbuild preview: {title}")
    return _page_template()[0].replace("@TITLE@", safe)


def _page_tail() -> str:
    return _page_template()[1]


__all__ = [
    "PreviewFilter",
    "PreviewSummary",
    "default_preview_path",
    "overlay_png",
    "overlay_rgba",
    "parse_filters",
    "sample_record",
    "write_preview",
]
