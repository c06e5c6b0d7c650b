"""The dataset card ``OUT/README.md``: Hugging Face YAML front matter, provenance, licences, counts.

The card is rendered from the writer's summary (never its timing fields, so rebuilds give the
same card) and the resolved config. URLs lose credentials and query strings before they are
printed: a card is meant to be published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rsbuild.config import OutputConfig
from rsbuild.dataset.layout import IMAGEFOLDER_SUFFIX, STILLS_FOLDER
from rsbuild.dataset.sft import STILL_TASK, reported_tasks
from rsbuild.dataset.shards import brace_pattern
from rsbuild.records import SPLITS
from rsbuild.schemes import Scheme

_SIZE_BOUNDS = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)

TASK_CATEGORIES = ("image-to-text", "visual-question-answering", "image-text-to-text")
TAGS = ("remote-sensing", "earth-observation", "sentinel-2", "land-cover", "satellite-imagery", "webdataset")

LABEL_ATTRIBUTION = {
    "esa_worldcover": "ESA WorldCover project / Contains modified Copernicus Sentinel data processed by the "
    "ESA WorldCover consortium (CC-BY-4.0, https://esa-worldcover.org/en/data-access).",
    "dynamic_world": "Dynamic World V1, produced by Google and the World Resources Institute (CC-BY-4.0).",
    "io_lulc": "Impact Observatory, Microsoft and Esri, 10 m Annual Land Use Land Cover (CC-BY-4.0).",
}

SENTINEL_TERMS_URL = "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice"
MAPBOX_TERMS_URL = "https://www.mapbox.com/legal/tos"


def size_category(count: int) -> str:
    """The Hugging Face ``size_categories`` value for ``count`` examples."""
    for bound, label in _SIZE_BOUNDS:
        if count < bound:
            return label
    return "n>1B"


def public_url(value: str) -> str:
    """A URL without user:password and query string (tokens, signatures); paths unchanged."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # not a port number: keep only the host (the netloc may hold credentials)
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def front_matter(summary: Mapping[str, Any], output_cfg: OutputConfig) -> str:
    """The YAML block between ``---`` lines: license, tasks, size, name and data-file configs."""
    rows = sum(sum(tasks.values()) for tasks in summary.get("rows_by_split", {}).values())
    lines = [
        "---",
        f"license: {output_cfg.license}",
        f"pretty_name: {_yaml_str(output_cfg.pretty_name)}",
        "language:",
        "- en",
        "task_categories:",
        *(f"- {category}" for category in TASK_CATEGORIES),
        "tags:",
        *(f"- {tag}" for tag in TAGS),
        "size_categories:",
        f"- {size_category(rows or summary.get('tiles', 0))}",
        "configs:",
    ]
    lines += _configs_lines(summary)
    lines.append("---")
    return "\n".join(lines)


def _configs_lines(summary: Mapping[str, Any]) -> list[str]:
    """The ``default`` config: `datasets` reads it with its imagefolder builder, so the SFT rows load
    with an ``Image()`` column ``image``.

    `datasets` picks one builder per repository, from the file extensions of the first config's
    files (most files wins, ties go to ``.jsonl``), so there is one config. Its rows are
    ``{split}.metadata.jsonl`` at the top of the folder (``file_name`` is resolved against the
    folder of the metadata file and may not climb out of it); each split lists the image files too,
    which is how the builder is chosen and what a download from the Hub fetches."""
    splits = [s for s in SPLITS if sum(summary.get("rows_by_split", {}).get(s, {}).values())]
    if not splits:
        return []
    files = summary.get("files", {})
    images = ["images/**/*.png"] if files.get("images") else []
    if _still_rows(summary):
        images.append(f"{STILLS_FOLDER}/**")
    if sum(files.get(folder, 0) for folder in ("images", STILLS_FOLDER)) == 1:
        images.append(images[0])  # one image and one metadata file would tie, and the tie picks the JSON builder
    lines = ["- config_name: default", "  metadata_filenames:", *(f"  - {s}{IMAGEFOLDER_SUFFIX}" for s in splits),
             "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", "    path:", *(f"    - {_yaml_str(p)}" for p in (f"{split}{IMAGEFOLDER_SUFFIX}", *images))]
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return out


def _still_rows(summary: Mapping[str, Any]) -> int:
    return sum(tasks.get(STILL_TASK, 0) for tasks in summary.get("rows_by_split", {}).values())


def _counts_section(summary: Mapping[str, Any]) -> list[str]:
    rows_by_split = summary.get("rows_by_split", {})
    tasks = reported_tasks(rows_by_split.values())
    header = ["split", "tiles", *(f"{task} rows" for task in tasks), "shards"]
    shards_by_split = {s: sum(1 for shard in summary.get("shards", []) if shard["split"] == s) for s in SPLITS}
    body = [
        [split, summary.get("tiles_by_split", {}).get(split, 0), *(rows_by_split.get(split, {}).get(t, 0) for t in tasks), shards_by_split[split]]
        for split in SPLITS
    ]
    lines = ["## Counts", "", *_table(header, body), ""]
    annotations = summary.get("annotations_by_task", {})
    if annotations:
        lines += ["Annotations in the shards by task (`KEY.json` → `annotations`):", ""]
        lines += _table(["task", "annotations"], sorted(annotations.items()))
        lines.append("")
    return lines


def _classes_section(summary: Mapping[str, Any]) -> list[str]:
    classes = summary.get("classes", [])
    if not classes:
        return []
    body = [[c["name"], f"{100 * c['share']:.2f} %", c["tiles"], c["dominant_tiles"]] for c in classes]
    return [
        "## Class distribution",
        "",
        "Share of all valid label pixels, tiles where the class is present, tiles where it dominates.",
        "",
        *_table(["class", "pixel share", "tiles", "dominant in"], body),
        "",
    ]


def _provenance_section(summary: Mapping[str, Any], config: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Provenance", "", f"- Built with rsbuild {summary.get('rsbuild_version', '?')}."]
    if config:
        scenes, imagery, labels = config.get("scenes", {}), config.get("imagery", {}), config.get("labels", {})
        captions, splits = config.get("captions", {}), config.get("splits", {})
        lines += [
            (
                f"- Imagery: `{scenes.get('collection')}` from the STAC catalog `{public_url(str(scenes.get('catalog')))}`, "
                f"dates {scenes.get('datetime')}, scene cloud cover <= {scenes.get('max_cloud_cover')} %."
            ),
            (
                f"- Chips: {imagery.get('aoi_size')} px AOI per point at 10 m, tiles of {imagery.get('tile_size')} px "
                f"every {imagery.get('tile_stride')} px, written at {imagery.get('output_size')} px "
                f"({imagery.get('rgb_source')} RGB)."
            ),
        ]
        lines.append(
            f"- Labels: `{labels.get('scheme')}` {labels.get('version') or ''} from {_label_origin(labels)}, "
            f"{labels.get('downsample')} downsampling.".replace("  ", " ")
        )
        models = ", ".join(captions.get("models") or []) or "engine default"
        lines.append(f"- Captions: engine `{captions.get('engine')}` ({models}), tasks {', '.join(captions.get('tasks', []))}.")
        if splits:
            lines.append(_split_line(splits))
        stills = config.get("stills", {})
        if stills.get("mapbox"):
            lines.append(_stills_line(stills, _still_rows(summary)))
    elif summary.get("splits"):
        lines.append(_split_line(summary["splits"]))
    annotators = summary.get("annotators", {})
    if annotators:
        lines.append("- Caption annotators: " + ", ".join(f"`{name}` ({count})" for name, count in sorted(annotators.items())) + ".")
    overlap = summary.get("overlap", {})
    if overlap:
        lines.append(
            f"- Tile footprints of different splits that overlap: {overlap.get('overlapping_pairs', 0)} pairs "
            f"over {overlap.get('tiles', 0)} tiles."
        )
    lines += _caption_accounting_lines(summary.get("captions") or {})
    failures = summary.get("failures_by_reason", {})
    if failures:
        lines.append("- Skipped (see `failures.jsonl`): " + ", ".join(f"{reason} {n}" for reason, n in sorted(failures.items())) + ".")
    return [*lines, ""]


def _caption_accounting_lines(captions: Mapping[str, Any]) -> list[str]:
    """Kept and rejected captions (every generated text counts), rejected ones by reason."""
    generated = int(captions.get("captions_generated") or 0)
    if not generated:
        return []
    kept, rejected = int(captions.get("captions_kept") or 0), int(captions.get("captions_rejected") or 0)
    line = f"- Captions generated: {generated}; kept {kept} ({kept / generated:.0%}), rejected {rejected}"
    reasons = captions.get("rejected_by_reason") or {}
    if reasons:
        line += " (" + ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) + ")"
    lines = [line + ". Per tile: `KEY.json` → `caption_failures` (slots left empty, with the last rejected text) "
             "and `rejected` (counts by reason) on annotations and failures."]
    unwritten = captions.get("unwritten_by_reason") or {}
    if unwritten:
        lines.append("- Captions never written: " + ", ".join(f"{reason} {n}" for reason, n in sorted(unwritten.items())) + ".")
    return lines


def _label_origin(labels: Mapping[str, Any]) -> str:
    """Where the labels came from: the COG, the STAC catalog / collection, or the Earth Engine dataset."""
    source = labels.get("source")
    if source == "earthengine":
        from rsbuild.sources.labels.earthengine import EE_DATASETS

        dataset = EE_DATASETS.get(str(labels.get("ee_dataset")))
        if dataset is None:
            return f"the Earth Engine dataset `{labels.get('ee_dataset')}`"
        if dataset.dated:
            how = f"mode of band `{dataset.band}` over the scene date +- {labels.get('ee_window_days')} days"
        else:
            how = f"band `{dataset.band}`"
        return f"Earth Engine `{dataset.collection}` ({how}, computed on the chip grid)"
    if source == "cog":
        return f"`{public_url(str(labels.get('url')))}`"
    return f"`{labels.get('collection')}` in the STAC catalog `{public_url(str(labels.get('catalog')))}`"


def _stills_line(stills: Mapping[str, Any], written: int) -> str:
    """The stills' source as configured (never the token: it lives in the environment only)."""
    size = stills.get("size")
    retina = " @2x" if stills.get("retina") else ""
    return (
        f"- Context stills: Mapbox Static Images API `{public_url(str(stills.get('base_url')))}`, style "
        f"`{stills.get('style')}`, zoom {float(stills.get('zoom', 0)):g}, {size}x{size} px{retina}, one per POI "
        f"with a scene ({written} written) in `mapbox_stills/`, each with a `{STILL_TASK}` row."
    )


def _split_line(splits: Mapping[str, Any]) -> str:
    by = splits.get("by", "poi")
    how = "the POI id" if by == "poi" else f"a {splits.get('cell_size_deg')}° grid cell"
    fractions = "/".join(f"{100 * f:g}" for f in splits.get("fractions", ()))
    return f"- Splits: sha256 of {how}, train/validation/test {fractions} %."


SYNTHETIC_NOTE = (
    "- Imagery and labels are synthetic: generated by rsbuild from a seeded truth map (`rsbuild demo`). "
    "They contain no Copernicus Sentinel data and no land-cover product; the class names follow the scheme "
    "only to exercise the pipeline. Do not train models meant for real imagery on them."
)


def _licences_section(summary: Mapping[str, Any], scheme: Scheme | None, output_cfg: OutputConfig) -> list[str]:
    if output_cfg.synthetic:
        return ["## Source licences", "", SYNTHETIC_NOTE,
                "- Captions: written from the label statistics by the annotators listed above.", ""]
    years = summary.get("scene_years", [])
    year_text = f" {years[0]}" if len(years) == 1 else (f" {years[0]}–{years[-1]}" if years else "")
    lines = [
        "## Source licences",
        "",
        (
            f"- Imagery: Contains modified Copernicus Sentinel data{year_text}, used under the Copernicus Sentinel "
            f"data terms (free, full and open access; attribution required): {SENTINEL_TERMS_URL}."
        ),
    ]
    scheme_name = scheme.name if scheme else summary.get("scheme")
    if scheme_name:
        title = scheme.title if scheme else scheme_name
        licence = scheme.license if scheme else "see the producer's terms"
        attribution = LABEL_ATTRIBUTION.get(scheme_name, "")
        lines.append(f"- Land-cover labels: {title}, {licence}. {attribution}".rstrip())
    if _still_rows(summary):
        lines.append(
            "- Context stills: © Mapbox, © OpenStreetMap contributors and, for satellite styles, the imagery "
            f"providers Mapbox names; their use and redistribution follow the Mapbox terms of service: {MAPBOX_TERMS_URL}."
        )
    lines += ["- Captions: written from the label statistics by the annotators listed above.", ""]
    return lines


def shard_patterns(summary: Mapping[str, Any]) -> dict[str, str]:
    """Brace pattern of each split's shards (numbered 0, 1, 2 … per split), splits with shards only."""
    counts = {s: sum(1 for shard in summary.get("shards", []) if shard["split"] == s) for s in SPLITS}
    return {split: brace_pattern(split, n) for split, n in counts.items() if n}


def _layout_section(summary: Mapping[str, Any], output_cfg: OutputConfig) -> list[str]:
    mask = (", `KEY.mask.png` (palette PNG: the pixel value is the class index, 255 = nodata, "
            "the palette gives the scheme's colours)") if output_cfg.write_masks else ""
    patterns = shard_patterns(summary)
    listed = "; ".join(f"{split} `{pattern}`" for split, pattern in patterns.items())
    return [
        "## Layout",
        "",
        (
            f"- `shards/{{split}}-NNNNNN.tar`: WebDataset shards, one sample per tile: `KEY.png` (RGB), `KEY.json` "
            f"(`metadata`, `stats`, `annotations`){mask}; `{{shard}}.stats.json` beside each."
        ),
        *([f"- Shards are numbered without gaps per split: {listed}; `data/{{split}}.shards.txt` lists them."]
          if patterns else []),
        (
            "- `data/{train,validation,test}.jsonl`: SFT rows (`messages` with the image path and prompt, the answer; "
            "`meta` with key, task, class, annotator, overlay)."
        ),
        (
            "- `{train,validation,test}.metadata.jsonl`: the same rows with `file_name`, the image path, first "
            "(without `meta.detail`): the `default` config, read by `datasets` with an `Image()` column `image`."
        ),
        (
            f"- `images/`, `overlays/`, `metadata/`, `mapbox_stills/`: files in `sNNNNN/` folders of at most "
            f"{output_cfg.folder_file_cap} files."
        ),
        "- Boxes are `[x1, y1, x2, y2]` normalised to 0-1 of the image; north is up.",
        "",
    ]


def _loading_section(summary: Mapping[str, Any]) -> list[str]:
    pattern = shard_patterns(summary).get("train", "shards/train-000000.tar")
    return [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "rows = load_dataset(\"path/to/this/folder\")  # SFT rows: image (PIL), messages, meta",
        "# shards: KEY.json fields vary between tiles, so declare it as Json (datasets infers types from 5 samples)",
        "from datasets import Features, Image, Json, Value",
        "features = Features({\"__key__\": Value(\"string\"), \"__url__\": Value(\"string\"), \"json\": Json(),",
        "                     \"png\": Image(), \"mask.png\": Image()})",
        "tiles = load_dataset(\"webdataset\", data_files={\"train\": \"path/to/this/folder/shards/train-*.tar\"},",
        "                     split=\"train\", features=features)",
        "",
        "import webdataset as wds",
        f"chips = wds.WebDataset(\"path/to/this/folder/{pattern}\", shardshuffle=False).decode(\"pil\").to_tuple(\"png\", \"json\")",
        "```",
        "",
        "`decode(\"pil\")` converts every image to RGB; read `mask.png` as bytes and open it with PIL to keep class indices.",
        "",
    ]


def _derived_section(summary: Mapping[str, Any]) -> list[str]:
    """Answer distributions of the VQA rows and the referring components skipped (tasks vqa / referring / masks)."""
    derived = summary.get("derived")
    if not derived:
        return []
    lines = ["## Rows derived from the statistics", "",
             "VQA answers, referring phrases, boxes and masks follow exactly from the label statistics "
             "(`rsbuild verify` re-derives each one).", ""]
    answers = derived.get("vqa_answers", {})
    if answers:
        top = [(kind, ", ".join(f"{a}: {n}" for a, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8]),
                sum(counts.values())) for kind, counts in answers.items()]
        lines += [*_table(["VQA kind", "questions", "answers (most frequent first)"], [(k, n, a) for k, a, n in top]), ""]
    paraphrases = derived.get("vqa_paraphrases")
    if paraphrases:  # captions.vqa_paraphrase
        lines += ["VQA questions reworded by the LLM and checked: " + ", ".join(f"{r} {n}" for r, n in paraphrases.items())
                  + " (a rejected rewording keeps the template question; answers never change).", ""]
    lines += [f"Components without an unambiguous referring phrase (skipped): {derived.get('referring_ambiguous_components', 0)}", ""]
    return lines


def render_card(
    summary: Mapping[str, Any],
    output_cfg: OutputConfig,
    scheme: Scheme | None = None,
    config: Mapping[str, Any] | None = None,
) -> str:
    """The whole ``README.md``. ``config`` is the resolved config (``Config.dump()``) when known."""
    parts = [
        front_matter(summary, output_cfg),
        "",
        f"# {output_cfg.pretty_name}",
        "",
        (
            ("Synthetic " if output_cfg.synthetic else "")
            + "Sentinel-2 RGB chips with per-pixel land-cover labels aligned on the same grid, label statistics, "
            "captions and grounding boxes, as WebDataset shards and SFT JSONL."
        ),
        "",
        *_counts_section(summary),
        *_classes_section(summary),
        *_derived_section(summary),
        *_provenance_section(summary, config),
        *_licences_section(summary, scheme, output_cfg),
        *_layout_section(summary, output_cfg),
        *_loading_section(summary),
    ]
    return "\n".join(parts)
