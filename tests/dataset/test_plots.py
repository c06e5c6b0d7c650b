"""Card plots: the counts match what is in the shards, the units count the same numbers (so
finalize draws without re-reading shards), the PNGs show them, the card links them.

Expected numbers are computed here straight from the written Samples (mask pixels counted with
numpy, captions from the annotation and failure dicts), not through rsbuild.report.preview or
rsbuild.chips.stats.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset import plots
from rsbuild.dataset.finalize import finalize
from rsbuild.dataset.plots import (
    KEPT_COLOR,
    PLOT_FILES,
    POI_CELL_DEG,
    VERDICT_COLORS,
    card_plot_section,
    dataset_counts,
    write_plots,
)
from rsbuild.dataset.units import Tally, done_units, marker_path
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.errors import InputError
from rsbuild.records import Sample
from rsbuild.schemes import ESA_WORLDCOVER, NODATA_INDEX
from tests.report.test_preview import (
    make_test_samples,  # the preview's small dataset
)

OUTPUT = OutputConfig(shard_max_samples=7, write_bbox_overlays=False)

ALWAYS_DRAWN = {name: file for name, file in PLOT_FILES.items() if name != "derived_rows"}  # that one: with derived rows


def _with_rejected_captions(samples: list[Sample]) -> list[Sample]:
    """Add captions the check rejected (failure records with a text) to some samples, and to one
    a failure repeating a kept caption (that is the kept caption, not a second one)."""
    for n, sample in enumerate(samples):
        if n % 4 == 2:
            words = " ".join(["water"] * (2 + n % 11))
            sample.failures.append({"task": "class", "class": sample.stats["dominant_class"], "text": f"Mostly {words}.",
                                    "annotator": "smollm2", "reason": "check_failed", "check_reasons": ["share stated as 90 %"]})
        if n == 5:
            kept = sample.annotations[0]
            sample.failures.append({"task": kept["task"], "text": kept["text"], "reason": "check_failed"})
    return samples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    """The preview's samples plus rejected captions, built by the unit writer (markers, finalize, plots)."""
    out = tmp_path_factory.mktemp("dataset")
    samples = _with_rejected_captions(make_test_samples(n_pois=20, seed=11))
    with DatasetWriter(out, OUTPUT, SplitsConfig(), CaptionsConfig(), ESA_WORLDCOVER) as writer:
        for sample in samples:
            writer.write(sample)
    return out, sorted(samples, key=lambda s: s.split)


def _mask(sample: Sample) -> np.ndarray:
    with Image.open(io.BytesIO(sample.mask_png)) as img:
        return np.asarray(img)


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _has_colour(pixels: np.ndarray, hex_colour: str) -> bool:
    rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return bool((pixels == rgb).all(axis=-1).any())


def test_counts_match_the_samples_written(dataset: tuple[Path, list[Sample]]) -> None:
    out, samples = dataset
    counts = dataset_counts(out)

    assert counts["samples"] == len(samples)
    assert counts["samples_by_split"] == dict(Counter(s.split for s in samples))

    pixels: dict[str, Counter] = {}
    valid: Counter = Counter()
    for sample in samples:
        mask = _mask(sample)
        valid[sample.split] += int((mask != NODATA_INDEX).sum())
        hist = np.bincount(mask[mask != NODATA_INDEX], minlength=len(ESA_WORLDCOVER.classes))
        split_pixels = pixels.setdefault(sample.split, Counter())
        for index, n in enumerate(hist):
            if n:
                split_pixels[ESA_WORLDCOVER.classes[index].name] += int(n)
    assert counts["valid_pixels_by_split"] == dict(valid)
    assert counts["class_pixels_by_split"] == {split: dict(c) for split, c in pixels.items()}
    for split, shares in counts["class_share_by_split"].items():
        assert shares == pytest.approx({name: n / valid[split] for name, n in pixels[split].items()})
        assert sum(shares.values()) == pytest.approx(1.0)

    verdicts: dict[str, Counter] = {}
    kept: Counter = Counter()
    rejected: Counter = Counter()
    for sample in samples:
        for ann in sample.annotations:
            verdict = {True: "pass", False: "fail"}.get(ann.get("verified"), "unchecked")
            verdicts.setdefault(ann["task"], Counter())[verdict] += 1
            kept[len(ann["text"].split())] += 1
        for failure in sample.failures:
            if not failure.get("text"):  # never written
                verdicts.setdefault(failure["task"], Counter())["error"] += 1
            elif not any((a["task"], a["text"]) == (failure["task"], failure["text"]) for a in sample.annotations):
                verdicts.setdefault(failure["task"], Counter())["fail"] += 1
                rejected[len(failure["text"].split())] += 1
    assert counts["verdicts_by_task"] == {task: dict(c) for task, c in verdicts.items()}
    assert counts["captions_by_task"] == {task: sum(n for v, n in c.items() if v != "error") for task, c in verdicts.items()}
    assert counts["pass_rate_by_task"]["class"] == pytest.approx(verdicts["class"]["pass"] / (verdicts["class"]["pass"] + verdicts["class"]["fail"]))
    assert 0 < counts["pass_rate_by_task"]["class"] < 1
    assert counts["pass_rate_by_task"]["linear"] is None  # never checked
    assert rejected and counts["caption_words_rejected"] == dict(rejected)
    assert counts["caption_words_kept"] == dict(kept)
    assert counts["caption_words"] == dict(kept + rejected)

    cells = counts["poi_cells"]
    assert sum(n for *_, n in cells) == len(samples)
    for sample in samples:
        lon, lat = sample.metadata["lon"], sample.metadata["lat"]
        assert any(
            split == sample.split and abs(lon - clon) <= POI_CELL_DEG / 2 and abs(lat - clat) <= POI_CELL_DEG / 2
            for split, clon, clat, _ in cells
        ), f"{sample.key} at {lon}, {lat} is on no map cell"


def test_plots_are_written_show_the_data_and_are_reproducible(dataset: tuple[Path, list[Sample]], tmp_path: Path) -> None:
    out, _ = dataset
    counts = dataset_counts(out)
    plots = write_plots(out, out / "plots")
    assert set(plots) == set(ALWAYS_DRAWN)
    for name, path in plots.items():
        assert path == out / "plots" / PLOT_FILES[name] and path.exists()
        pixels = _rgb(path)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 600
        assert pixels.std() > 10, f"{name} looks blank"

    class_share = _rgb(plots["class_share"])
    for name, colour in counts["class_colors"].items():
        assert colour == "#{:02x}{:02x}{:02x}".format(*ESA_WORLDCOVER.classes[ESA_WORLDCOVER.index_of(name)].color)
        assert _has_colour(class_share, colour), f"class {name} has no bar"
    captions = _rgb(plots["captions_per_task"])
    for verdict in ("pass", "fail", "unchecked", "error"):
        assert _has_colour(captions, VERDICT_COLORS[verdict]), f"no {verdict} bars"
    lengths = _rgb(plots["caption_length"])
    assert _has_colour(lengths, KEPT_COLOR) and _has_colour(lengths, VERDICT_COLORS["fail"]), "kept and rejected bars"

    again = write_plots(counts, tmp_path)
    for name, path in plots.items():
        assert again[name].read_bytes() == path.read_bytes(), f"{name} is not reproducible"


def _merged_tally(out: Path) -> Tally:
    tally = Tally()
    for unit in sorted(done_units(out)):
        tally.merge(json.loads(marker_path(out, unit).read_text(encoding="utf-8"))["tally"])
    return tally


def test_units_count_what_the_shards_hold(dataset: tuple[Path, list[Sample]]) -> None:
    out, _ = dataset
    tally = _merged_tally(out)
    assert tally.plots_complete
    assert json.dumps(tally.plots.counts()) == json.dumps(dataset_counts(out))  # same numbers, same order


def test_finalize_reads_no_shard_for_the_plots_unless_a_marker_lacks_their_counts(
    dataset: tuple[Path, list[Sample]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = dataset
    drawn = {name: (out / "plots" / file).read_bytes() for name, file in ALWAYS_DRAWN.items()}
    assert drawn == {name: path.read_bytes() for name, path in write_plots(dataset_counts(out), tmp_path / "from-shards").items()}
    read: list[Path] = []
    read_shard = plots.read_shard

    def counting_read_shard(path: Path) -> Iterator[Sample]:
        read.append(path)
        return read_shard(path)

    monkeypatch.setattr(plots, "read_shard", counting_read_shard)
    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.rmtree(again / "plots")
    finalize(again, OUTPUT, SplitsConfig(), ESA_WORLDCOVER)
    assert read == []
    assert {name: (again / "plots" / file).read_bytes() for name, file in ALWAYS_DRAWN.items()} == drawn

    for unit in done_units(again):  # a marker written before units counted the plots
        marker = json.loads(marker_path(again, unit).read_text(encoding="utf-8"))
        del marker["tally"]["plots"]
        marker_path(again, unit).write_text(json.dumps(marker), encoding="utf-8")
    shutil.rmtree(again / "plots")
    finalize(again, OUTPUT, SplitsConfig(), ESA_WORLDCOVER)
    assert read, "the plots must then be counted from the shards"
    assert {name: (again / "plots" / file).read_bytes() for name, file in ALWAYS_DRAWN.items()} == drawn


def test_card_section_links_every_plot_relatively(dataset: tuple[Path, list[Sample]]) -> None:
    out, _ = dataset
    plots = write_plots(dataset_counts(out), out / "plots")
    section = card_plot_section(plots, out)
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", section)
    assert len(links) == len(plots)
    assert all(not Path(link).is_absolute() for link in links)
    assert sorted((out / link).resolve() for link in links) == sorted(p.resolve() for p in plots.values())


def test_counting_an_empty_folder_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no shards"):
        dataset_counts(tmp_path)
