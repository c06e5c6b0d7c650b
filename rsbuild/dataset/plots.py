"""Plots for the dataset card: class shares, captions per task, caption lengths (kept and
rejected captions apart), check pass rates and a map of POIs.

`PlotCounts` counts what the plots show one sample at a time: each unit writer keeps one (its
marker's ``tally["plots"]``) and finalize adds the units up, so drawing never re-reads a shard.
``dataset_counts`` counts the same numbers in one streaming pass over a dataset's shards (for
checks, and for datasets whose markers predate the plot counts); ``write_plots`` draws them as
PNGs with matplotlib's object API on the Agg canvas (no pyplot, no global backend);
``card_plot_section`` gives the card's markdown embedding them. matplotlib is imported only in
this module, and only when drawing.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rsbuild.captions.base import TASKS
from rsbuild.dataset.annotations import ERROR, FAIL, PASS, UNCHECKED, caption_entries
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.errors import InputError
from rsbuild.records import SPLITS, Sample
from rsbuild.schemes import class_colors, scheme_or_none

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POI_CELL_DEG = 0.1  # POIs are counted per 0.1° lon/lat cell: the map's memory is bounded by area
PLOT_DPI = 100
PLOT_FILES = {
    "class_share": "class_share_by_split.png",
    "captions_per_task": "captions_per_task.png",
    "caption_length": "caption_length.png",
    "check_pass_rate": "check_pass_rate_by_task.png",
    "poi_map": "poi_map.png",
    "derived_rows": "derived_rows.png",
}
PLOT_TITLES = {
    "class_share": "Class share of valid pixels per split",
    "captions_per_task": "Captions per task, by check verdict",
    "caption_length": "Caption length in words, kept and rejected captions",
    "check_pass_rate": "Faithfulness check pass rate by task",
    "poi_map": "Points of interest (lon/lat)",
    "derived_rows": "VQA answers per kind (share of questions) and rows derived from the statistics",
}
DERIVED_TOP_ANSWERS = 5  # answers shown per VQA kind; the rest are one "other" segment
ANSWER_COLORS = {"yes": "#2e7d32", "no": "#c62828"}
OTHER_ANSWER_COLORS = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#9e9d24", "#9e9e9e")
VERDICT_COLORS = {PASS: "#2e7d32", FAIL: "#c62828", UNCHECKED: "#9e9e9e", ERROR: "#6a1b9a"}
VERDICT_LABELS = {PASS: "passed", FAIL: "failed", UNCHECKED: "unchecked", ERROR: "not written"}
SPLIT_COLORS = {"train": "#1f77b4", "validation": "#ff7f0e", "test": "#2ca02c"}
FALLBACK_COLOR = "#888888"
KEPT_COLOR, KEPT_MEAN_COLOR = "#4c72b0", "#1b2f57"  # caption lengths: kept captions
REJECTED_MEAN_COLOR = "#7f1010"  # rejected captions are drawn in the "fail" colour


# ---------------------------------------------------------------------------------------------
# Counting


def _poi_cell(lon: float, lat: float) -> tuple[float, float]:
    """Centre of the POI_CELL_DEG cell holding a point (rounded so keys compare exactly)."""
    return (
        round((math.floor(lon / POI_CELL_DEG) + 0.5) * POI_CELL_DEG, 6),
        round((math.floor(lat / POI_CELL_DEG) + 0.5) * POI_CELL_DEG, 6),
    )


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def _ordered(keys: Any, order: tuple[str, ...]) -> list[str]:
    """Known names in their canonical order, then the others sorted."""
    keys = set(keys)
    return [k for k in order if k in keys] + sorted(keys - set(order))


class PlotCounts:
    """The numbers the card plots show, counted sample by sample; merged from unit markers.

    Bounded by splits x classes, tasks x verdicts, distinct caption lengths and POI cells.
    Captions come from ``rsbuild.dataset.annotations.caption_entries``: its annotation entries are
    the kept captions, its failure entries with a text the rejected ones (verdict ``fail``), and
    failures without a text (``error``, never written) have no length.
    """

    def __init__(self) -> None:
        self.samples_by_split: Counter = Counter()
        self.valid_by_split: Counter = Counter()
        self.class_pixels: dict[str, Counter] = defaultdict(Counter)  # split -> class -> pixels
        self.schemes: list[str] = []  # first seen first: a later scheme's colour wins for a shared name
        self.verdicts: dict[str, Counter] = defaultdict(Counter)  # task -> verdict -> captions
        self.words_kept: Counter = Counter()  # words -> captions
        self.words_rejected: Counter = Counter()
        self.cells: Counter = Counter()  # (split, lon, lat) of a POI_CELL_DEG cell -> tiles

    def _saw_scheme(self, name: str) -> None:
        if name not in self.schemes:
            self.schemes.append(name)

    def add_sample(self, sample: Sample) -> None:
        """Count one sample (its split, label statistics, captions and POI position)."""
        split, stats = sample.split, sample.stats
        self.samples_by_split[split] += 1
        self.valid_by_split[split] += int(stats.get("valid_pixels", 0))
        for cls in stats.get("classes", []):
            self.class_pixels[split][cls["name"]] += int(cls.get("pixels", 0))
        self._saw_scheme(str(stats.get("scheme")))  # an unknown scheme's classes get FALLBACK_COLOR
        kept = len(sample.annotations)  # caption_entries lists the annotations first
        for position, entry in enumerate(caption_entries(sample)):
            self.verdicts[entry.task][entry.verdict] += 1
            if entry.verdict != ERROR:
                (self.words_kept if position < kept else self.words_rejected)[len(entry.text.split())] += 1
        lat, lon = sample.metadata.get("lat"), sample.metadata.get("lon")
        if lat is not None and lon is not None:
            self.cells[(split, *_poi_cell(float(lon), float(lat)))] += 1

    def to_json(self) -> dict[str, Any]:
        """The counts as JSON (a unit marker's ``tally["plots"]``); `merge` reads it back."""
        return {
            "samples_by_split": dict(sorted(self.samples_by_split.items())),
            "valid_pixels_by_split": dict(sorted(self.valid_by_split.items())),
            "class_pixels_by_split": {s: dict(sorted(c.items())) for s, c in sorted(self.class_pixels.items())},
            "schemes": list(self.schemes),
            "verdicts_by_task": {t: dict(sorted(c.items())) for t, c in sorted(self.verdicts.items())},
            "caption_words_kept": {str(n): c for n, c in sorted(self.words_kept.items())},
            "caption_words_rejected": {str(n): c for n, c in sorted(self.words_rejected.items())},
            "poi_cells": [[split, lon, lat, n] for (split, lon, lat), n in sorted(self.cells.items())],
        }

    def merge(self, doc: Mapping[str, Any]) -> None:
        """Add counts written by `to_json` (another unit's)."""
        self.samples_by_split.update(doc.get("samples_by_split", {}))
        self.valid_by_split.update(doc.get("valid_pixels_by_split", {}))
        for split, pixels in doc.get("class_pixels_by_split", {}).items():
            self.class_pixels[split].update(pixels)
        for name in doc.get("schemes", []):
            self._saw_scheme(name)
        for task, verdicts in doc.get("verdicts_by_task", {}).items():
            self.verdicts[task].update(verdicts)
        self.words_kept.update({int(n): c for n, c in doc.get("caption_words_kept", {}).items()})
        self.words_rejected.update({int(n): c for n, c in doc.get("caption_words_rejected", {}).items()})
        for split, lon, lat, n in doc.get("poi_cells", []):
            self.cells[(split, lon, lat)] += n

    def counts(self) -> dict[str, Any]:
        """The numbers the plots show, as JSON-able dict:

        ``samples``; ``samples_by_split``; ``valid_pixels_by_split``; ``class_pixels_by_split``
        {split: {class: pixels}}; ``class_share_by_split`` {split: {class: pixels / valid pixels}};
        ``class_colors`` {class: "#rrggbb"}; ``verdicts_by_task`` {task: {verdict: captions}};
        ``captions_by_task`` (captions with a text, any verdict); ``pass_rate_by_task`` (passed /
        checked, None when none was checked); ``caption_words`` {words: captions} over kept and
        rejected captions, and the two apart as ``caption_words_kept`` / ``caption_words_rejected``;
        ``poi_cells`` [[split, lon, lat, tiles], ...] per ``POI_CELL_DEG`` cell of the POI coordinates.
        """
        colors: dict[str, str] = {}
        for scheme_name in self.schemes:
            colors.update((name, _hex(rgb)) for name, rgb in class_colors(scheme_or_none(scheme_name)).items())
        class_pixels, valid, verdicts = self.class_pixels, self.valid_by_split, self.verdicts
        splits = _ordered(self.samples_by_split, SPLITS)
        tasks = _ordered(verdicts, TASKS)
        all_classes = {name for counter in class_pixels.values() for name in counter}
        return {
            "samples": sum(self.samples_by_split.values()),
            "samples_by_split": {s: self.samples_by_split[s] for s in splits},
            "valid_pixels_by_split": {s: valid[s] for s in splits},
            "class_pixels_by_split": {s: dict(sorted(class_pixels[s].items())) for s in splits},
            "class_share_by_split": {
                s: {c: (n / valid[s] if valid[s] else 0.0) for c, n in sorted(class_pixels[s].items())}
                for s in splits
            },
            "class_colors": {c: colors.get(c, FALLBACK_COLOR) for c in sorted(all_classes)},
            "verdicts_by_task": {t: dict(sorted(verdicts[t].items())) for t in tasks},
            "captions_by_task": {t: sum(n for v, n in verdicts[t].items() if v != ERROR) for t in tasks},
            "pass_rate_by_task": {t: _pass_rate(verdicts[t]) for t in tasks},
            "caption_words": dict(sorted((self.words_kept + self.words_rejected).items())),
            "caption_words_kept": dict(sorted(self.words_kept.items())),
            "caption_words_rejected": dict(sorted(self.words_rejected.items())),
            "poi_cells": [[split, lon, lat, n] for (split, lon, lat), n in sorted(self.cells.items())],
        }


def dataset_counts(dataset_dir: Path) -> dict[str, Any]:
    """`PlotCounts.counts` of every sample in ``dataset_dir``'s shards, in one streaming pass."""
    shards = list_shards(Path(dataset_dir))
    if not shards:
        raise InputError(f"no shards (*.tar) under {Path(dataset_dir) / 'shards'}; pass the output folder of `rsbuild build`")
    counter = PlotCounts()
    for shard in shards:
        for sample in read_shard(shard):
            counter.add_sample(sample)
    return counter.counts()


def _pass_rate(verdicts: Mapping[str, int]) -> float | None:
    checked = verdicts.get(PASS, 0) + verdicts.get(FAIL, 0)
    return verdicts.get(PASS, 0) / checked if checked else None


# ---------------------------------------------------------------------------------------------
# Drawing


def _figure(width: float = 7.0, height: float = 3.6) -> Figure:
    from matplotlib.figure import (
        Figure,  # the only matplotlib import; Figure draws on Agg
    )

    return Figure(figsize=(width, height), dpi=PLOT_DPI, layout="constrained")


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this dataset", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _class_share(fig: Figure, counts: Mapping[str, Any]) -> None:
    ax = fig.add_subplot()
    ax.set_title(PLOT_TITLES["class_share"])
    shares: Mapping[str, Mapping[str, float]] = counts["class_share_by_split"]
    splits = list(shares)
    if not splits:
        _no_data(ax, "samples")
        return
    overall: Counter = Counter()
    for split_pixels in counts["class_pixels_by_split"].values():
        overall.update(split_pixels)
    classes = [name for name, _ in sorted(overall.items(), key=lambda kv: (-kv[1], kv[0]))]
    labels = [f"{s}\n(n={counts['samples_by_split'][s]})" for s in splits]
    left = [0.0] * len(splits)
    for name in classes:
        widths = [shares[s].get(name, 0.0) for s in splits]
        color = counts["class_colors"].get(name, FALLBACK_COLOR)
        bars = ax.barh(labels, widths, left=left, color=color, edgecolor="#333", linewidth=0.4, label=name)
        for bar, width in zip(bars, widths, strict=True):
            if width >= 0.06:
                ax.text(bar.get_x() + width / 2, bar.get_y() + bar.get_height() / 2, f"{width:.0%}",
                        ha="center", va="center", fontsize=8, color=_label_color(color))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _label_color(hex_color: str) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _captions_per_task(fig: Figure, counts: Mapping[str, Any]) -> None:
    ax = fig.add_subplot()
    ax.set_title(PLOT_TITLES["captions_per_task"])
    by_task: Mapping[str, Mapping[str, int]] = counts["verdicts_by_task"]
    tasks = list(by_task)
    if not tasks:
        _no_data(ax, "captions")
        return
    bottom = [0] * len(tasks)
    for verdict in (PASS, FAIL, UNCHECKED, ERROR):
        heights = [by_task[t].get(verdict, 0) for t in tasks]
        if any(heights):
            ax.bar(tasks, heights, bottom=bottom, color=VERDICT_COLORS[verdict], label=VERDICT_LABELS[verdict])
            bottom = [a + b for a, b in zip(bottom, heights, strict=True)]
    for x, total in enumerate(bottom):
        ax.text(x, total, str(total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("captions")
    ax.set_ylim(0, max(bottom) * 1.15 + 1)
    ax.legend(fontsize=8, frameon=False)


def _caption_length(fig: Figure, counts: Mapping[str, Any]) -> None:
    """Stacked histogram of words per caption: kept captions, rejected ones on top; a mean line each."""
    ax = fig.add_subplot()
    ax.set_title(PLOT_TITLES["caption_length"])
    kept = counts.get("caption_words_kept", counts["caption_words"])  # counts without the split: all kept
    rejected = counts.get("caption_words_rejected", {})
    groups = [
        (label, {int(k): v for k, v in words.items()}, bar_color, line_color)
        for label, words, bar_color, line_color in (
            ("kept", kept, KEPT_COLOR, KEPT_MEAN_COLOR),
            ("rejected", rejected, VERDICT_COLORS[FAIL], REJECTED_MEAN_COLOR),
        )
        if words
    ]
    if not groups:
        _no_data(ax, "captions")
        return
    width = max(1, math.ceil((max(length for _, words, _, _ in groups for length in words) + 1) / 60))  # at most ~60 bars
    bottom: Counter = Counter()
    for label, words, bar_color, line_color in groups:
        binned: Counter = Counter()
        for length, n in words.items():
            binned[length // width * width] += n
        starts = sorted(binned)
        total = sum(words.values())
        mean = sum(length * n for length, n in words.items()) / total
        ax.bar(starts, [binned[x] for x in starts], bottom=[bottom[x] for x in starts], width=width, align="edge",
               color=bar_color, edgecolor="white", linewidth=0.5, label=f"{label}: n={total}, mean {mean:.1f} words (dashed)")
        ax.axvline(mean, color=line_color, linestyle="--", linewidth=1)
        bottom.update(binned)
    ax.locator_params(axis="x", integer=True)
    ax.set_xlabel("words per caption")
    ax.set_ylabel("captions")
    ax.legend(fontsize=8, frameon=False, title=None if rejected else "no rejected captions", title_fontsize=8)


def _check_pass_rate(fig: Figure, counts: Mapping[str, Any]) -> None:
    ax = fig.add_subplot()
    ax.set_title(PLOT_TITLES["check_pass_rate"])
    tasks = list(counts["pass_rate_by_task"])
    if not tasks:
        _no_data(ax, "captions")
        return
    rates = [counts["pass_rate_by_task"][t] for t in tasks]
    bars = ax.bar(tasks, [r or 0.0 for r in rates], color=VERDICT_COLORS[PASS])
    for bar, task, rate in zip(bars, tasks, rates, strict=True):
        verdicts = counts["verdicts_by_task"][task]
        checked = verdicts.get(PASS, 0) + verdicts.get(FAIL, 0)
        text = f"{rate:.0%}\n{verdicts.get(PASS, 0)}/{checked}" if rate is not None else "not\nchecked"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), text, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.yaxis.set_major_formatter("{x:.0%}")
    ax.set_ylabel("passed / checked")


WORLD = (-180.0, 180.0, -90.0, 90.0)


def map_extent(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """(west, east, south, north) around the POI cells with a margin (a cell at least, 10 % of the
    span), inside the world; the whole world when there are no points."""
    if not points:
        return WORLD
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    pad_lon = max(POI_CELL_DEG, 0.1 * (max(lons) - min(lons)))
    pad_lat = max(POI_CELL_DEG, 0.1 * (max(lats) - min(lats)))
    return (max(-180.0, min(lons) - pad_lon), min(180.0, max(lons) + pad_lon),
            max(-90.0, min(lats) - pad_lat), min(90.0, max(lats) + pad_lat))


def _poi_map(fig: Figure, counts: Mapping[str, Any]) -> None:
    ax = fig.add_subplot()
    cells = counts["poi_cells"]
    ax.set_title(f"{PLOT_TITLES['poi_map']}, {len(cells)} cells of {POI_CELL_DEG}°")
    for split in _ordered({c[0] for c in cells}, SPLITS):
        lons = [c[1] for c in cells if c[0] == split]
        lats = [c[2] for c in cells if c[0] == split]
        ax.scatter(lons, lats, s=10, color=SPLIT_COLORS.get(split, FALLBACK_COLOR), label=split, alpha=0.8, linewidths=0)
    west, east, south, north = map_extent([(c[1], c[2]) for c in cells])
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_aspect("equal")
    if (west, east, south, north) == WORLD:
        ax.set_xticks(range(-180, 181, 60))
        ax.set_yticks(range(-90, 91, 30))
    ax.grid(True, color="#ddd", linewidth=0.6)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    if cells:
        ax.legend(fontsize=8, loc="lower left", frameon=True)




def _derived_rows(fig: Figure, counts: Mapping[str, Any]) -> None:
    """Left: per VQA kind, the share of each answer (yes green, no red: the yes/no balance); right:
    rows per derived task and the referring components skipped as ambiguous."""
    derived: Mapping[str, Any] = counts["derived"]
    answers: Mapping[str, Mapping[str, int]] = derived.get("vqa_answers", {})
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    fig.suptitle(PLOT_TITLES["derived_rows"], fontsize=10)
    if answers:
        kinds = sorted(answers)
        for row, kind in enumerate(kinds):
            total = sum(answers[kind].values())
            ranked = sorted(answers[kind].items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ranked[:DERIVED_TOP_ANSWERS]
            rest = sum(n for _, n in ranked[DERIVED_TOP_ANSWERS:])
            start, others = 0.0, iter(OTHER_ANSWER_COLORS)
            for answer, n in [*shown, *([("other", rest)] if rest else [])]:
                width = n / total
                color = ANSWER_COLORS.get(answer) or (OTHER_ANSWER_COLORS[-1] if answer == "other" else next(others, "#9e9e9e"))
                left.barh(row, width, left=start, color=color, edgecolor="#333", linewidth=0.4)
                if width >= 0.12:
                    label = answer if len(answer) <= 14 else answer[:13] + "…"
                    left.text(start + width / 2, row, label, ha="center", va="center", fontsize=7, color=_label_color(color))
                start += width
        left.set_yticks(range(len(kinds)), [f"{k} (n={sum(answers[k].values())})" for k in kinds], fontsize=8)
        left.set_xlim(0, 1)
        left.invert_yaxis()
        left.xaxis.set_major_formatter("{x:.0%}")
    else:
        _no_data(left, "VQA rows")
    rows: Mapping[str, int] = derived.get("rows_by_task", {})
    bars = {**{task: n for task, n in rows.items() if n}, "ambiguous\n(skipped)": int(derived.get("referring_ambiguous_components", 0))}
    names = list(bars)
    right.barh(names, [bars[n] for n in names], color=["#1565c0"] * (len(names) - 1) + ["#9e9e9e"], edgecolor="#333", linewidth=0.4)
    for index, name in enumerate(names):
        right.text(bars[name], index, f" {bars[name]}", va="center", fontsize=8)
    right.invert_yaxis()
    right.tick_params(axis="y", labelsize=8)
    right.set_xlabel("rows (components for skipped)", fontsize=8)


_DRAWERS = {
    "class_share": _class_share,
    "captions_per_task": _captions_per_task,
    "caption_length": _caption_length,
    "check_pass_rate": _check_pass_rate,
    "poi_map": _poi_map,
    "derived_rows": _derived_rows,
}


def write_plots(
    source: Path | str | Mapping[str, Any], out_dir: Path, derived: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Draw every card plot as a PNG in ``out_dir``; returns {plot name: path}.

    ``source`` is a dataset folder (counted with ``dataset_counts``) or counts it returned.
    ``derived`` (``summary["derived"]`` plus ``rows_by_task``: derived rows per task) adds the
    plot of VQA answer distributions and derived row counts. PNGs carry no software/date
    metadata, so the same counts give the same files.
    """
    counts = source if isinstance(source, Mapping) else dataset_counts(Path(source))
    if derived:
        counts = {**counts, "derived": derived}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, draw in _DRAWERS.items():
        if name == "derived_rows" and "derived" not in counts:
            continue
        fig = _figure(8.0 if name in ("class_share", "derived_rows") else 7.0, 4.0 if name in ("poi_map", "derived_rows") else 3.6)
        draw(fig, counts)
        path = out_dir / PLOT_FILES[name]
        fig.savefig(path, format="png", dpi=PLOT_DPI, metadata={"Software": None})
        written[name] = path
    return written


def card_plot_section(plots: Mapping[str, Path], dataset_dir: Path, heading: str = "## Plots") -> str:
    """Markdown for the dataset card embedding ``plots`` with paths relative to ``dataset_dir``."""
    lines = [heading, ""]
    for name, path in plots.items():
        rel = Path(os.path.relpath(Path(path).resolve(), Path(dataset_dir).resolve())).as_posix()
        title = PLOT_TITLES.get(name, name.replace("_", " "))
        lines += [f"### {title}", "", f"![{title}]({quote(rel)})", ""]
    return "\n".join(lines)


__all__ = ["PLOT_FILES", "POI_CELL_DEG", "PlotCounts", "card_plot_section", "dataset_counts", "write_plots"]
