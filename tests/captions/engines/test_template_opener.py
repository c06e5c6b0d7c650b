"""The template area caption's opener counts the tile's classes, not the ones it goes on to describe."""

from __future__ import annotations

import re

import numpy as np

from rsbuild.captions.check import check_caption
from rsbuild.captions.engines.template import MAX_AREA_CLASSES, area_caption
from rsbuild.captions.vqa import derive_answer
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme

COUNT = re.compile(r"This tile shows (\w+) land-cover classes\.")


def _six_class_tile(trace: bool = False) -> dict:
    """Six vertical bands of ESA WorldCover classes (each >= 5 %), or with a 2-pixel speck of a seventh."""
    scheme = get_scheme("esa_worldcover")
    names = ["tree cover", "cropland", "grassland", "shrubland", "built-up area", "water"]
    grid = np.zeros((120, 120), dtype=np.uint8)
    for i, (name, width) in enumerate(zip(names, (40, 30, 20, 12, 10, 8), strict=True)):
        start = sum((40, 30, 20, 12, 10, 8)[:i])
        grid[:, start:start + width] = scheme.index_of(name)
    if trace:
        grid[60, 60:62] = scheme.index_of("moss and lichen")
    return compute_stats(grid, scheme)


def _openers(stats: dict) -> list[str]:
    captions = [area_caption(stats, "key", seed) for seed in range(60)]
    return [m.group(1) for c in captions if c and (m := COUNT.search(c))]


def test_the_opener_states_the_number_of_classes_the_tile_has() -> None:
    stats = _six_class_tile()
    assert len(stats["classes"]) == 6 > MAX_AREA_CLASSES
    counts = _openers(stats)
    assert counts, "some seeds pick the counting opener"
    assert set(counts) == {"6"} == {derive_answer(stats, "num_classes", ())}
    for seed in range(10):
        text = area_caption(stats, "key", seed)
        assert text and check_caption(text, stats).ok, text


def test_no_count_when_a_trace_class_makes_it_unclear() -> None:
    stats = _six_class_tile(trace=True)
    assert len(stats["classes"]) == 7 and derive_answer(stats, "num_classes", ()) is None
    assert _openers(stats) == []
    assert all(area_caption(stats, "key", seed) for seed in range(60))
