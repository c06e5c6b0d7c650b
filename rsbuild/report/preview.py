"""A static HTML preview gallery of a built dataset: chips, label overlays, boxes, captions.

``write_preview`` streams the samples of ``OUT/shards`` and writes ONE HTML file with no server,
CDN or external script: the page embeds one small JSON record per sample and its own vanilla
JavaScript renders one page of cards at a time (pagination keeps thousands of samples
responsive). Chips and pre-rendered RGBA label overlays are written beside the page in
``{stem}_files/sNNNNN/`` (referenced relatively, loaded lazily) or, with ``inline_images``,
embedded as ``data:`` URIs so the page is a single portable file.

Filters (split, task, class present, caption verdict) exist twice with one meaning: at write
time (``PreviewFilter``, chooses what goes into the page) and in the page (select boxes that
change what is shown). A sample matches a task/verdict filter when one of its captions has
that task and that verdict. Memory stays flat: each record is written as soon as it is built.
"""

from __future__ import annotations

import base64
import html
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
from rsbuild.dataset.annotations import VERDICTS, CaptionEntry, caption_entries
from rsbuild.dataset.sft import component_boxes
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.errors import ConfigError, InputError
from rsbuild.records import SPLITS, Sample
from rsbuild.schemes import NODATA_INDEX, SCHEMES, Scheme, class_colors, scheme_or_none

FILTER_KEYS = ("split", "task", "class", "verdict")
DEFAULT_PAGE_SIZE = 24
SAMPLES_PER_FOLDER = 4000  # two images per sample: at most 8000 files per leaf folder
UNKNOWN_COLOR = (136, 136, 136)
OVERLAY_COMPRESS_LEVEL = 1


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
    """The RGBA overlay PNG of an L-mode class-index mask PNG."""
    with Image.open(io.BytesIO(mask_png)) as img:
        mask = np.asarray(img.convert("L") if img.mode != "L" else img)
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


def sample_record(sample: Sample, image_src: str, overlay_src: str | None, scheme: Scheme | None) -> dict[str, Any]:
    """The JSON record one card is drawn from (image sources already resolved)."""
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
    tmp = out_file.with_name(out_file.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as page:
            page.write(_page_head(dataset_dir.resolve().name or str(dataset_dir)))
            page.write('<script type="application/json" id="rsb-records">[\n')
            for sample in _matching_samples(shards, flt, summary):
                scheme = scheme_or_none(sample.stats.get("scheme"))
                overlay = overlay_png(sample.mask_png, scheme) if sample.mask_png is not None else None
                chip_src, overlay_src = images.put(sample.key, sample.image_png, overlay)
                record = sample_record(sample, chip_src, overlay_src, scheme)
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
            }
            page.write(']</script>\n<script type="application/json" id="rsb-info">' + _script_json(info) + "</script>\n")
            page.write("<script>\n" + _PAGE_SCRIPT + "</script>\n</body>\n</html>\n")
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return summary


def _page_head(title: str) -> str:
    safe = html.escape(f"rsbuild preview: {title}")
    return _PAGE_HEAD.replace("@TITLE@", safe)


_PAGE_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
:root { --mask-opacity: 0.45; font-family: system-ui, sans-serif; color: #1d1d1f; background: #f4f4f6; }
body { margin: 0; }
header { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid #ccc; padding: 8px 14px; }
header h1 { font-size: 17px; margin: 0 0 6px; }
.controls { display: flex; flex-wrap: wrap; gap: 10px 16px; align-items: center; font-size: 13px; }
.controls label { display: inline-flex; gap: 4px; align-items: center; }
#rsb-legend { display: flex; flex-wrap: wrap; gap: 4px 10px; font-size: 12px; margin-top: 6px; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #0006; vertical-align: middle; margin-right: 3px; }
main { padding: 12px 14px; }
#rsb-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #d0d0d6; border-radius: 6px; padding: 8px; font-size: 12.5px; content-visibility: auto; contain-intrinsic-size: 320px 640px; }
.chip { position: relative; width: 100%; max-width: 448px; background: #222; overflow: hidden; }
.chip img { position: absolute; inset: 0; width: 100%; height: 100%; }
.chip img.mask { opacity: var(--mask-opacity); image-rendering: pixelated; }
.box { position: absolute; border: 2px solid; box-sizing: border-box; pointer-events: none; }
.box span { position: absolute; left: -2px; top: -2px; font-size: 10px; line-height: 12px; padding: 0 2px; white-space: nowrap; max-width: 100%; overflow: hidden; text-overflow: ellipsis; }
body.hide-boxes .box { display: none; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 8px; margin: 6px 0; font-size: 12px; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: 1px 8px; margin: 4px 0 6px; }
.meta dt { color: #666; } .meta dd { margin: 0; overflow-wrap: anywhere; }
.captions { list-style: none; padding: 0; margin: 0; display: flex; flex-direction: column; gap: 5px; }
.cap { border-left: 4px solid #999; padding: 3px 6px; background: #f7f7f9; }
.cap p { margin: 2px 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.cap .head { font-size: 11.5px; color: #444; }
.badge { display: inline-block; font-weight: 600; font-size: 11px; padding: 0 4px; border-radius: 3px; margin-right: 4px; color: #fff; background: #888; }
.verdict-pass { border-left-color: #2e7d32; } .verdict-pass .badge { background: #2e7d32; }
.verdict-fail { border-left-color: #c62828; background: #fdecec; } .verdict-fail .badge { background: #c62828; }
.verdict-fail p { text-decoration: line-through; text-decoration-color: #c6282880; }
.verdict-error { border-left-color: #6a1b9a; background: #f5ecf8; } .verdict-error .badge { background: #6a1b9a; }
.reasons { margin: 2px 0 0 14px; padding: 0; color: #b71c1c; }
.cap.dim { opacity: 0.4; }
#rsb-empty, #rsb-note { color: #666; font-size: 12px; }
</style>
</head>
<body>
<header>
<h1>@TITLE@</h1>
<div class="controls">
<label>split <select id="rsb-split"><option value="">all</option></select></label>
<label>task <select id="rsb-task"><option value="">all</option></select></label>
<label>class <select id="rsb-class"><option value="">all</option></select></label>
<label>verdict <select id="rsb-verdict"><option value="">all</option></select></label>
<label>per page <select id="rsb-page-size"></select></label>
<label>overlay <input id="rsb-opacity" type="range" min="0" max="1" step="0.05" value="0.45"></label>
<label><input id="rsb-boxes" type="checkbox" checked> boxes</label>
<button id="rsb-prev" type="button">&larr; prev</button>
<span id="rsb-page"></span>
<button id="rsb-next" type="button">next &rarr;</button>
<span><b id="rsb-count">0</b> samples match</span>
</div>
<div id="rsb-legend"></div>
<div id="rsb-note" hidden></div>
</header>
<main>
<p id="rsb-empty" hidden>No sample matches these filters.</p>
<div id="rsb-grid"></div>
</main>
"""

_PAGE_SCRIPT = r"""(function () {
'use strict';
const records = JSON.parse(document.getElementById('rsb-records').textContent);
const info = JSON.parse(document.getElementById('rsb-info').textContent);
const $ = (id) => document.getElementById(id);
const state = { split: '', task: '', cls: '', verdict: '', page: 0, pageSize: info.page_size };
const VERDICT_LABEL = { pass: '\u2713 passed check', fail: '\u2717 failed check', unchecked: 'unchecked', error: '\u2717 not written' };
let matched = records;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function addOptions(select, values) {
  for (const value of values) { const o = el('option', null, value); o.value = value; select.append(o); }
}
function pct(value) { return value === null || value === undefined ? '\u2013' : (100 * value).toFixed(1) + ' %'; }
function swatch(color) { const s = el('span', 'swatch'); s.style.background = color; return s; }

function captionMatches(c) {
  return (!state.task || c.task === state.task) && (!state.verdict || c.verdict === state.verdict);
}
function matches(rec) {
  if (state.split && rec.split !== state.split) return false;
  if (state.cls && !rec.classes.some((c) => c.name === state.cls)) return false;
  if (state.task || state.verdict) return rec.captions.some(captionMatches);
  return true;
}

function chip(rec) {
  const box = el('div', 'chip');
  box.style.aspectRatio = String(rec.aspect);
  const img = el('img', 'rgb'); img.loading = 'lazy'; img.decoding = 'async'; img.alt = 'chip ' + rec.key; img.src = rec.image;
  box.append(img);
  if (rec.overlay) {
    const mask = el('img', 'mask'); mask.loading = 'lazy'; mask.decoding = 'async'; mask.alt = ''; mask.src = rec.overlay;
    box.append(mask);
  }
  for (const b of rec.boxes) {
    const [x1, y1, x2, y2] = b.bbox;
    const d = el('div', 'box');
    d.style.left = (100 * x1) + '%'; d.style.top = (100 * y1) + '%';
    d.style.width = (100 * (x2 - x1)) + '%'; d.style.height = (100 * (y2 - y1)) + '%';
    d.style.borderColor = b.color;
    const label = el('span', null, b.label); label.style.background = b.color; label.style.color = b.text;
    d.append(label); box.append(d);
  }
  return box;
}
function legend(rec) {
  const div = el('div', 'legend');
  for (const c of rec.classes) { const item = el('span'); item.append(swatch(c.color), c.name + ' ' + pct(c.share)); div.append(item); }
  return div;
}
function metadata(rec) {
  const m = rec.meta;
  const rows = [['key', rec.key], ['split', rec.split], ['POI', m.poi], ['scene', m.scene], ['date', m.date],
    ['scene cloud', m.scene_cloud === null || m.scene_cloud === undefined ? '\u2013' : m.scene_cloud + ' %'],
    ['tile cloud', pct(m.tile_cloud)],
    ['lat, lon', m.lat === null || m.lat === undefined ? '\u2013' : Number(m.lat).toFixed(5) + ', ' + Number(m.lon).toFixed(5)]];
  const dl = el('dl', 'meta');
  for (const [k, v] of rows) dl.append(el('dt', null, k), el('dd', null, v === null || v === undefined ? '\u2013' : v));
  return dl;
}
function captions(rec) {
  const ul = el('ul', 'captions');
  for (const c of rec.captions) {
    const li = el('li', 'cap verdict-' + c.verdict + ((state.task || state.verdict) && !captionMatches(c) ? ' dim' : ''));
    li.dataset.verdict = c.verdict; li.dataset.task = c.task;
    const head = el('div', 'head');
    head.append(el('span', 'badge', VERDICT_LABEL[c.verdict] || c.verdict), el('b', null, c.task + (c.class ? ' \u00b7 ' + c.class : '')), ' \u00b7 ' + (c.annotator || 'unknown annotator'));
    li.append(head);
    if (c.text) li.append(el('p', 'text', c.text));
    if (c.reasons.length) { const r = el('ul', 'reasons'); for (const reason of c.reasons) r.append(el('li', null, reason)); li.append(r); }
    ul.append(li);
  }
  if (!rec.captions.length) ul.append(el('li', 'cap', 'no captions'));
  return ul;
}
function card(rec) {
  const article = el('article', 'card');
  article.dataset.key = rec.key; article.dataset.split = rec.split;
  article.append(chip(rec), legend(rec), metadata(rec), captions(rec));
  return article;
}

function render() {
  const pages = Math.max(1, Math.ceil(matched.length / state.pageSize));
  state.page = Math.min(Math.max(state.page, 0), pages - 1);
  const start = state.page * state.pageSize;
  $('rsb-grid').replaceChildren(...matched.slice(start, start + state.pageSize).map(card));
  $('rsb-count').textContent = String(matched.length);
  $('rsb-page').textContent = 'page ' + (state.page + 1) + ' of ' + pages;
  $('rsb-prev').disabled = state.page === 0;
  $('rsb-next').disabled = state.page >= pages - 1;
  $('rsb-empty').hidden = matched.length > 0;
}
function applyFilters() {
  state.split = $('rsb-split').value; state.task = $('rsb-task').value;
  state.cls = $('rsb-class').value; state.verdict = $('rsb-verdict').value;
  matched = records.filter(matches);
  state.page = 0;
  render();
}

addOptions($('rsb-split'), info.splits);
addOptions($('rsb-task'), info.tasks);
addOptions($('rsb-class'), info.legend.map((c) => c.name));
addOptions($('rsb-verdict'), info.verdicts);
addOptions($('rsb-page-size'), [...new Set([info.page_size, 12, 24, 48, 96])].sort((a, b) => a - b));
$('rsb-page-size').value = String(info.page_size);
for (const c of info.legend) { const item = el('span'); item.append(swatch(c.color), c.name); $('rsb-legend').append(item); }
const chosen = Object.entries(info.filters).filter(([, values]) => values.length).map(([k, values]) => k + '=' + values.join(','));
if (chosen.length || info.scanned !== records.length) {
  $('rsb-note').textContent = 'This page holds ' + records.length + ' of the ' + info.scanned + ' samples read'
    + (chosen.length ? ' (written with filters ' + chosen.join(' ') + ')' : '') + '.';
  $('rsb-note').hidden = false;
}
for (const id of ['rsb-split', 'rsb-task', 'rsb-class', 'rsb-verdict']) $(id).addEventListener('change', applyFilters);
$('rsb-page-size').addEventListener('change', () => { state.pageSize = Number($('rsb-page-size').value); state.page = 0; render(); });
$('rsb-prev').addEventListener('click', () => { state.page -= 1; render(); window.scrollTo(0, 0); });
$('rsb-next').addEventListener('click', () => { state.page += 1; render(); window.scrollTo(0, 0); });
$('rsb-opacity').addEventListener('input', (e) => document.documentElement.style.setProperty('--mask-opacity', e.target.value));
$('rsb-boxes').addEventListener('change', (e) => document.body.classList.toggle('hide-boxes', !e.target.checked));
applyFilters();
})();
"""


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
