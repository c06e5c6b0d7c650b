"""Text that is not about the tile: linear captions with no feature's direction or place, encyclopedic
or story text, invented names, sizes in metres, one class said to be another, and a centre "filled"
by a class that only touches it; on real statistics of a small label map."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.captions.check import REASON_CODES, check_caption
from rsbuild.captions.engines.template import area_caption, linear_caption
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme


@pytest.fixture(scope="module")
def river() -> dict:
    """Grassland with a thin river running north-south down the west side, a forest block in the
    centre and snow in the north-east corner (touching the centre only at its edge)."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((120, 120), scheme.index_of("grassland"), dtype=np.uint8)
    grid[:, 10:14] = scheme.index_of("water")
    grid[40:80, 40:80] = scheme.index_of("tree cover")
    grid[0:45, 75:120] = scheme.index_of("snow and ice")
    return compute_stats(grid, scheme)


def test_fixture_is_what_the_captions_assume(river: dict) -> None:
    comps = [c for c in river["components"] if c["class"] == "water"]
    assert len(comps) == 1 and comps[0]["elongated"] and comps[0]["orientation"] == "north-south"
    assert {c["name"] for c in river["classes"]} == {"grassland", "water", "tree cover", "snow and ice"}


@pytest.mark.parametrize("caption", [
    "A thin river runs north-south.",
    "A river crosses the image along its west side.",
    "The water forms a narrow strip on the left.",
])
def test_linear_captions_with_a_direction_or_place_pass(river: dict, caption: str) -> None:
    verdict = check_caption(caption, river, task="linear")
    assert verdict.ok, verdict.reasons


@pytest.mark.parametrize("caption", [
    "A building is built-up in the image edge.",
    "A wide, flat area with trees.",
    "This is a river.",
])
def test_linear_captions_without_a_feature_fact_fail_as_no_fact(river: dict, caption: str) -> None:
    verdict = check_caption(caption, river, task="linear")
    assert not verdict.ok and "no_fact" in verdict.codes, verdict.reasons


@pytest.mark.parametrize("caption, code", [
    ("Grasslands are an essential habitat for many species of animals around the world, and the climate "
     "shapes them.", "text"),
    ("Snow and ice occur in many parts of the world, but are most commonly found in the Arctic.", "text"),
    ("Serbia's grassland is wide.", "class"),
    ("Grassland covers most of the image, and Sibellus grows on its north side.", "class"),
    ("A 30-foot-long river runs north-south down the west side.", "text"),
    ("The grassland is filled with trees.", "class"),
    ("Tree cover is also part of the grassland.", "class"),
    ("Grassland covers most of the tile, while water accounts for 3% of the grassland.", "class"),
    ("Grassland covers most of the image and the centre is filled with snow and ice.", "position"),
])
def test_text_not_about_the_tile_fails_with_a_clear_code(river: dict, caption: str, code: str) -> None:
    verdict = check_caption(caption, river)
    assert not verdict.ok and code in verdict.codes, verdict.reasons
    assert set(verdict.codes) <= set(REASON_CODES)


@pytest.mark.parametrize("caption", [
    "Grassland covers most of the image; the centre is filled with forest.",
    "Meadows cover most of the tile. A river runs north-south in the west, and snow lies in the north-east.",
    "The grassland surrounds a block of trees in the middle of the image.",
    "Grassland covers most of the tile; all of the water lies in the west.",
    "Snow and ice fill the north-east corner, while a river runs down the West side.",
])
def test_true_captions_in_the_same_words_pass(river: dict, caption: str) -> None:
    verdict = check_caption(caption, river)
    assert verdict.ok, verdict.reasons


def test_template_captions_of_the_tile_pass(river: dict) -> None:
    for seed in range(6):
        assert check_caption(area_caption(river, seed), river, task="area").ok
        assert check_caption(linear_caption(river, seed), river, task="linear").ok


def test_a_few_small_patches_need_small_parts(river: dict) -> None:
    """The forest is one block (no small patches): "a few small patches" of it is a wrong count."""
    verdict = check_caption("Tree cover lies in the centre, with a few small patches.", river)
    assert not verdict.ok and verdict.codes == ["count"], verdict.reasons
    assert check_caption("Tree cover forms one block in the centre.", river).ok


def test_a_linear_caption_may_state_the_strips_own_share() -> None:
    """The linear prompt lists each elongated part with its own share: "a 3% river runs north-south"
    is about the strip (water is 6 % with a pond); a share that fits neither still fails."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((120, 120), scheme.index_of("grassland"), dtype=np.uint8)
    grid[:, 10:14] = scheme.index_of("water")
    grid[90:110, 90:110] = scheme.index_of("water")
    stats = compute_stats(grid, scheme)
    water = next(c for c in stats["classes"] if c["name"] == "water")
    assert 0.05 < water["share"] < 0.07
    assert check_caption("A 3% river runs north-south.", stats, task="linear").ok
    assert not check_caption("Water covers 3% of the image.", stats, task="area").ok
    verdict = check_caption("A 40% river runs north-south.", stats, task="linear")
    assert not verdict.ok and "share" in verdict.codes, verdict.reasons
