"""Round 4 of the grammar: the number of classes, "the small ones", the place of a class as a whole
after its share, the centre, and nonsense that reads like a claim (invented kinds of vegetation, one class
made of two, species, "the largest and smallest", places relative to things that are no class, a share of
a class in itself, "the rest is X", round shapes of strips), on real statistics of a small label map."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.captions.check import check_caption, present_class_count
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme


@pytest.fixture(scope="module")
def blocks() -> dict:
    """Grassland with a built-up block in the north-west, a tree-cover band along the south and a thin
    north-south river near the east edge (four classes, no small patches)."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((120, 120), scheme.index_of("grassland"), dtype=np.uint8)
    grid[0:50, 0:55] = scheme.index_of("built-up area")
    grid[80:120, :] = scheme.index_of("tree cover")
    grid[:80, 100:103] = scheme.index_of("water")
    return compute_stats(grid, scheme)


def test_fixture_is_what_the_captions_assume(blocks: dict) -> None:
    classes = {c["name"]: c for c in blocks["classes"]}
    assert present_class_count(blocks) == 4
    assert 0.17 < classes["built-up area"]["share"] < 0.21 and classes["built-up area"]["position"] == "top-left"
    assert 0.3 < classes["tree cover"]["share"] < 0.36 and classes["tree cover"]["position"] == "bottom"
    assert 0.4 < classes["grassland"]["share"] < 0.5
    assert classes["water"]["components"] == 1 and not classes["water"]["small_patches"]
    assert all(c["elongation"] >= 5 for c in blocks["components"] if c["class"] == "water")


def _fails_with(caption: str, stats: dict, code: str, subject: str | None = None) -> None:
    verdict = check_caption(caption, stats, subject=subject)
    assert not verdict.ok and code in verdict.codes, (caption, verdict.reasons, verdict.codes)


@pytest.mark.parametrize("caption", [
    "This tile shows 4 land-cover classes: grassland, tree cover, built-up area and water.",
    "There are 4 different land cover types; grassland is the largest.",
    "The scene contains at least three classes, mostly grassland.",
])
def test_a_true_number_of_classes_passes(blocks: dict, caption: str) -> None:
    assert check_caption(caption, blocks).ok, check_caption(caption, blocks).reasons


@pytest.mark.parametrize("caption", [
    "This tile shows 6 land-cover classes, mostly grassland.",
    "The image has two classes: grassland and tree cover.",
])
def test_a_wrong_number_of_classes_fails_as_a_count(blocks: dict, caption: str) -> None:
    _fails_with(caption, blocks, "count")


def test_a_trace_class_widens_the_number_of_classes() -> None:
    scheme = get_scheme("esa_worldcover")
    grid = np.full((100, 100), scheme.index_of("grassland"), dtype=np.uint8)
    grid[:, :40] = scheme.index_of("cropland")
    grid[50, 50:55] = scheme.index_of("water")  # 0.05 %: present, but a reader may not count it
    stats = compute_stats(grid, scheme)
    assert present_class_count(stats) is None
    for n, ok in ((2, True), (3, True), (4, False)):
        assert check_caption(f"This tile shows {n} land-cover classes, mostly grassland.", stats).ok is ok, n


@pytest.mark.parametrize("caption", [
    "Water takes up about 3% of the image, but the small ones are scattered to the sides.",
    "Built-up area forms one large block and a small one in the north-west.",
])
def test_small_ones_claim_small_patches(blocks: dict, caption: str) -> None:
    _fails_with(caption, blocks, "count")


def test_a_count_in_a_class_caption_is_about_its_class(blocks: dict) -> None:
    caption = "It takes up about a fifth, and there are a few large patches that cover a third of the remaining area."
    _fails_with(caption, blocks, "count", subject="built-up area")


@pytest.mark.parametrize("caption, ok", [
    ("Built-up area covers about 19%, north-west.", True),
    ("Built-up area covers about 19%, mostly in the north-west.", True),
    ("Tree cover covers about a third of the image, south.", True),
    ("Tree cover covers about 33%, south-west.", True),  # the southern band holds the south-west too
    ("Built-up area covers about 19%, south-west.", False),  # opposite side
    ("Tree cover covers about a third of the image, mostly in the north-east.", False),
    ("Grassland covers about 45%, north-west.", False),  # its centre lies in the middle row and column
])
def test_a_place_after_a_share_is_where_the_class_lies_as_a_whole(blocks: dict, caption: str, ok: bool) -> None:
    verdict = check_caption(caption, blocks)
    assert verdict.ok is ok and (ok or verdict.codes == ["position"]), (caption, verdict.reasons)


@pytest.mark.parametrize("caption, ok", [
    ("Grassland lies in the center.", True),
    ("Built-up area is found in the center of the image.", False),  # a corner block that only touches the centre
    ("Built-up area is 19% of the image, across the center.", False),
])
def test_the_centre_holds_a_good_part_of_a_class_placed_there(blocks: dict, caption: str, ok: bool) -> None:
    verdict = check_caption(caption, blocks)
    assert verdict.ok is ok, (caption, verdict.reasons)


@pytest.mark.parametrize("caption", [
    "Glimmered vegetation covers about 20% of the image.",  # an unknown word made into a kind of vegetation
    "Grassland covers about 45%, dotted with built-up vegetation.",
    "An urban forest covers the south.",  # one class made of two
    "Sibellus (Sibellus polipensis) grows in the north, among the grassland.",
    "Grassland is the largest and smallest class of the tile.",
    "Grassland lies west of the marina.",
    "Tree cover covers about 3 out of 10 tree cover in the south.",
    "The water is a round, compact patch near the east edge.",
    "Grassland is a term that means land covered by grasses, which are types of plants found in many places.",
])
def test_nonsense_that_reads_like_a_claim_fails(blocks: dict, caption: str) -> None:
    assert not check_caption(caption, blocks).ok, caption


@pytest.mark.parametrize("caption", [
    "Grassland lies west of the river.",
    "Natural vegetation covers most of the west; grassland covers about 45% of the image.",
    "The built-up area is a compact block in the north-west.",
    "Trees fill about 33% of the tile; the rest is mostly grassland.",
])
def test_their_plain_neighbours_pass(blocks: dict, caption: str) -> None:
    verdict = check_caption(caption, blocks)
    assert verdict.ok, (caption, verdict.reasons)


def test_the_rest_is_what_the_stated_shares_leave(blocks: dict) -> None:
    _fails_with("Trees fill about 33% of the tile; the remaining area is water.", blocks, "share")
