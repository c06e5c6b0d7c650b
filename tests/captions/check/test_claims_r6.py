"""Round 6 of the grammar, from the misses of heldout_r5.jsonl, as mechanisms that read a family of phrasings: small
parts of a class in any construction, counts attached to nonsense, a share stated against the rest, the subject of
any stated share, a class word that modifies another, a number share that outranks a judging word, a place glossed
with another, an axis refined by a second one, and a copy that must carry the example's facts; on real statistics of
small label maps."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.captions.check import check_caption
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme


@pytest.fixture(scope="module")
def strip() -> dict:
    """Grassland (83 %, two halves) cut by one north-south water strip (4 %), a snow block (5 %) in the north-west and a
    built-up block (8 %) in the south-east; no class has a small patch."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((100, 100), scheme.index_of("grassland"), dtype=np.uint8)
    grid[:, 48:52] = scheme.index_of("water")
    grid[5:25, 5:30] = scheme.index_of("snow and ice")
    grid[80:100, 60:100] = scheme.index_of("built-up area")
    return compute_stats(grid, scheme)


@pytest.fixture(scope="module")
def road() -> dict:
    """Grassland (94 %) with a diagonal road from the north-west to the south-east, three small ponds and a thin
    wetland strip (1.6 %) in the east."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((100, 100), scheme.index_of("grassland"), dtype=np.uint8)
    for row in range(100):
        grid[row, max(0, row - 2):row + 2] = scheme.index_of("built-up area")
    grid[0:3, 0:3] = scheme.index_of("grassland")
    for y, x in ((10, 80), (30, 85), (70, 15)):
        grid[y:y + 3, x:x + 3] = scheme.index_of("water")
    grid[60:64, 60:100] = scheme.index_of("herbaceous wetland")
    return compute_stats(grid, scheme)


def test_fixtures_are_what_the_captions_assume(strip: dict, road: dict) -> None:
    classes = {c["name"]: c for c in strip["classes"]}
    assert {n: (c["components"], c["small_patches"]) for n, c in classes.items()} == {
        "grassland": (2, 0), "water": (1, 0), "snow and ice": (1, 0), "built-up area": (1, 0)}
    assert classes["built-up area"]["share"] == pytest.approx(0.08) and classes["grassland"]["share"] == pytest.approx(0.83)
    ponds = {c["name"]: c for c in road["classes"]}["water"]
    assert (ponds["components"], ponds["small_patches"]) == (0, 3)
    assert {c["orientation"] for c in road["components"] if c["class"] == "built-up area"} == {"northwest-southeast"}


def _verdict(caption: str, stats: dict, subject: str | None = None, task: str | None = None) -> tuple[bool, list[str]]:
    verdict = check_caption(caption, stats, subject=subject, task=task)
    return verdict.ok, verdict.codes


@pytest.mark.parametrize(("caption", "subject"), [
    ("Water takes up about 4% of the image, mostly in the center, where the large and small water patches meet.", "water"),
    ("There are two large patches of grass, 83% of the image, with the small patches a bit smaller.", "grassland"),
    ("The grass is spread across the middle of the image, with a small patch of it in the center.", "grassland"),
    ("Grassland covers most of the image, in small and large pockets.", "grassland"),
    ("This land-cover class covers about 8%, a large patch, and a small patch near the river.", "built-up area"),
])
def test_small_parts_in_any_construction_claim_small_patches(strip: dict, caption: str, subject: str) -> None:
    assert _verdict(caption, strip, subject, "class") == (False, ["count"])


def test_one_large_part_needs_a_part_beyond_the_small_patches(road: dict, strip: dict) -> None:
    assert _verdict("Water lies in a large patch in the north-east.", road, "water", "class") == (False, ["count"])
    assert _verdict("Snow and ice lies in a large patch in the north-west.", strip, "snow and ice", "class") == (True, [])
    assert _verdict("Water covers a large patch of the image.", road, "water", "class")[1] != ["count"]  # a share


def test_small_parts_pass_where_the_class_has_them(strip: dict, road: dict) -> None:
    assert _verdict("Water lies in the small water patches scattered over the grass.", road, "water", "class") == (True, [])
    assert _verdict("Snow covers about 5%, a small patch in the north-west.", strip, "snow and ice", "class") == (True, [])
    assert _verdict("Grassland covers about 83% of the image, with no small patches.", strip) == (True, [])
    assert _verdict("Built-up area covers a small part of the image.", strip) == (True, [])  # a share, not a part
    caption = "Grassland covers 83%, a larger patch in the west and a smaller patch in the east."
    assert _verdict(caption, strip, "grassland", "class") == (True, [])  # two parts compared


@pytest.mark.parametrize("caption", [
    "The grass covers about 83% of the image, with a small patch of 2 large and a large patch of 0 small.",
    "The built-up area is a 4th-large patch in the south-east.",
    "Grassland covers about 83% of the image, while the rest is made up of the three highlighted areas.",
    "Built-up area covers about 8%, and the 0 small patches are all the same.",
])
def test_counts_attached_to_nonsense_fail(strip: dict, caption: str) -> None:
    ok, codes = _verdict(caption, strip)
    assert not ok and "text" in codes, (caption, codes)


def test_the_prompts_patch_facts_are_no_nonsense(strip: dict) -> None:
    assert _verdict("Grassland takes up about 83% of the image, with 2 large and 0 small patches.", strip) == (True, [])
    assert _verdict("Built-up area covers about 8%, in a large patch of 1 large.", strip) == (True, [])


def test_a_share_against_the_rest_is_checked(strip: dict) -> None:
    assert _verdict("The built-up area is 2% larger than the rest.", strip) == (False, ["relative"])
    assert _verdict("Grassland is larger than the rest of the image.", strip) == (True, [])
    assert _verdict("Snow covers 5%, water 4%, and the rest is land that is built-up.", strip) == (False, ["share"])
    assert _verdict("Snow covers 5%, water 4%, and the rest is land that is mostly grassland.", strip) == (True, [])
    assert _verdict("Grassland is larger than the others.", strip) == (True, [])  # each of them
    assert _verdict("Water is larger than the others.", strip) == (False, ["relative"])
    assert _verdict("The built-up area is 5% less than the snow.", strip) == (False, ["relative"])  # 8 % and 5 %
    assert _verdict("The snow is 3% less than the built-up area.", strip) == (True, [])


def test_the_subject_of_any_stated_share_must_be_a_class(strip: dict) -> None:
    assert _verdict("Crows provide a large area of grassland.", strip) == (False, ["class"])
    assert _verdict("Grasslands provide a large area of the image.", strip) == (True, [])
    assert _verdict("These patches make up most of the image, all grassland.", strip) == (True, [])
    assert _verdict("Grassland and water cover 87%. Together they cover most of the image.", strip) == (True, [])
    assert _verdict("Build-up area takes up about 8% of the image, in the south-east.", strip) == (True, [])


def test_class_words_in_a_compound_name_the_last_one_s_class(road: dict, strip: dict) -> None:
    assert _verdict("There is less freshwater wetlands than grassland.", road) == (True, [])
    assert _verdict("There is more freshwater wetlands than grassland.", road) == (False, ["relative"])
    assert _verdict("There is less farm fields than grassland.", strip) == (False, ["class"])  # no cropland
    assert _verdict("Grassland covers 94% of the image, while the freshwater wetlands are about 2%.", road) == (True, [])
    assert _verdict("Grassland covers 94% of the image, while the freshwater wetlands are about 20%.", road) == (
        False, ["share"])  # the head noun's class is checked


def test_a_stated_number_outranks_a_judging_word_not_a_quantity(strip: dict) -> None:
    caption = "There is a considerable amount of built-up area, which makes up 8% of the image."
    assert _verdict(caption, strip) == (True, [])
    assert _verdict("Built-up area fills the entire image, 8%.", strip) == (False, ["share"])


def test_a_share_s_denominator_is_no_subject(strip: dict) -> None:
    caption = "Snow and ice is 5% of the vegetation, which is located in the south-east corner."
    ok, codes = _verdict(caption, strip)
    assert not ok and "position" in codes


def test_a_place_glossed_with_another_side(strip: dict) -> None:
    assert _verdict("Built-up area is 8%, south of the top (bottom), in the east.", strip) == (True, [])
    assert _verdict("Water lies in the image's center (top).", strip) == (False, ["position"])
    assert _verdict("Snow lies on the left edge (right).", strip) == (False, ["position"])
    assert _verdict("Snow lies on the left edge (left).", strip) == (True, [])


def test_an_axis_refined_by_a_second_one(road: dict) -> None:
    caption = "A 4% built-up area crosses the image from north to south along its north-west-south-east side."
    assert _verdict(caption, road, task="linear") == (True, [])
    assert _verdict("A road crosses the image from north to south.", road, task="linear") == (False, ["direction"])
    assert _verdict("A road runs diagonally from the bottom left to the top right.", road) == (False, ["direction"])


def test_a_copy_carries_the_example_s_facts(road: dict) -> None:
    ok, codes = _verdict("A thin river crosses the image from north to south along its west side.", road, task="linear")
    assert not ok and "copied_example" in codes
    caption = "A thin road crosses the image from north to south along its north-west-south-east diagonal."
    assert "copied_example" not in _verdict(caption, road, task="linear")[1]


def test_a_capital_after_a_colon_starts_a_sentence_not_a_name(strip: dict) -> None:
    assert _verdict("Aerial view: There is grassland over most of the image.", strip) == (True, [])
    assert _verdict("Caption: Roughly 83% of the image is grassland.", strip) == (True, [])
    assert _verdict("Caption: 8% of the whole image is built-up land.", strip) == (True, [])
    assert _verdict("Grassland: 83%. Sphinx: 8%.", strip) == (False, ["class"])
    assert _verdict("Grassland covers 83%, as in Serbia.", strip) == (False, ["class"])


@pytest.mark.parametrize("opener", ["", "In this image, ", "Overall, ", "- ", '"', "We can see that "])
def test_sentence_start_rules_read_past_a_discourse_opener(strip: dict, opener: str) -> None:
    def said(text: str) -> str:
        return opener + (text if opener in ("", "- ", '"') else text[:1].lower() + text[1:])

    assert _verdict(said("Influshed vegetation covers about 8% of the image."), strip)[0] is False
    assert _verdict(said("Crows provide a large area of grassland."), strip) == (False, ["class"])
    assert _verdict(said("Snow and built-up area cover about 40% of the image."), strip) == (False, ["share"])
    assert _verdict(said("Snow and built-up area cover about 13% of the image."), strip) == (True, [])


def test_mostly_x_in_the_rest_dominates_the_rest(strip: dict) -> None:
    assert _verdict("Grassland covers about 83%; the rest is mostly built-up area.", strip) == (True, [])
    assert _verdict("Grassland covers about 83%; the remaining 17% is mainly built-up area.", strip) == (True, [])
    assert _verdict("The image is mostly built-up area.", strip) == (False, ["rank"])


def test_a_strip_lies_where_the_stats_place_it() -> None:
    """A thin water strip from (0.72, 0) to (0, 0.72): its centroid cell is the centre, though little of its axis is."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((100, 100), scheme.index_of("grassland"), dtype=np.uint8)
    for row in range(72):
        grid[row, max(0, 71 - row):74 - row] = scheme.index_of("water")
    stats = compute_stats(grid, scheme)
    strip = next(c for c in stats["components"] if c["class"] == "water")
    assert strip["elongated"] and strip["position"] == "center" and strip["orientation"] == "northeast-southwest"
    caption = "A 2% strip of water runs northeast-southwest, center (center), reaching the image edge."
    assert _verdict(caption, stats, task="linear") == (True, [])
    assert _verdict("A 2% strip of water runs northeast-southwest along the south-east edge.", stats, task="linear") == (
        False, ["position"])
