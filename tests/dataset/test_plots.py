"""Card plots: the counts match what is in the shards, the PNGs show them, the card links them.

Expected numbers are computed here straight from the written Samples (mask pixels counted with
numpy, captions from the annotation dicts), not through rsbuild.report.preview or rsbuild.chips.stats.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsbuild.dataset.plots import (
    PLOT_FILES,
    POI_CELL_DEG,
    VERDICT_COLORS,
    card_plot_section,
    dataset_counts,
    write_plots,
)
from rsbuild.errors import InputError
from rsbuild.records import Sample
from rsbuild.schemes import ESA_WORLDCOVER, NODATA_INDEX
from tests.report.test_preview import (
    write_test_dataset,  # the shared small dataset
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    out = tmp_path_factory.mktemp("dataset")
    return out, write_test_dataset(out, n_pois=20, seed=11)


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
    words: Counter = Counter()
    for sample in samples:
        for ann in sample.annotations:
            verdict = {True: "pass", False: "fail"}.get(ann.get("verified"), "unchecked")
            verdicts.setdefault(ann["task"], Counter())[verdict] += 1
            words[len(ann["text"].split())] += 1
        for failure in sample.failures:
            verdicts.setdefault(failure["task"], Counter())["error"] += 1
    assert counts["verdicts_by_task"] == {task: dict(c) for task, c in verdicts.items()}
    assert counts["captions_by_task"] == {task: sum(n for v, n in c.items() if v != "error") for task, c in verdicts.items()}
    assert counts["pass_rate_by_task"]["class"] == pytest.approx(verdicts["class"]["pass"] / (verdicts["class"]["pass"] + verdicts["class"]["fail"]))
    assert 0 < counts["pass_rate_by_task"]["class"] < 1
    assert counts["pass_rate_by_task"]["linear"] is None  # never checked
    assert counts["caption_words"] == dict(words)

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
    assert set(plots) == set(PLOT_FILES)
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

    again = write_plots(counts, tmp_path)
    for name, path in plots.items():
        assert again[name].read_bytes() == path.read_bytes(), f"{name} is not reproducible"


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
