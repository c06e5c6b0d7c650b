"""The grammar of claims: counts, shares after any verb, frames of reference, quadrants, comparisons,
copies of the prompts' examples and fact-free text, on real statistics of small label maps."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.captions.check import REASON_CODES, check_caption
from rsbuild.captions.engines.template import area_caption, class_caption, linear_caption
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme


@pytest.fixture(scope="module")
def lakes() -> dict:
    """Grassland (~83 %) with three separate lakes (north-west, north-east, south) and a forest
    block in the lower-left quarter (~9 %)."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((120, 120), scheme.index_of("grassland"), dtype=np.uint8)
    for rows, cols in ((slice(5, 20), slice(5, 20)), (slice(5, 20), slice(95, 110)), (slice(100, 112), slice(50, 65))):
        grid[rows, cols] = scheme.index_of("water")
    grid[70:105, 5:45] = scheme.index_of("tree cover")
    return compute_stats(grid, scheme)


def test_fixture_is_what_the_captions_assume(lakes: dict) -> None:
    classes = {c["name"]: c for c in lakes["classes"]}
    assert classes["water"]["components"] == 3 and classes["tree cover"]["components"] == 1
    assert 0.08 < classes["tree cover"]["share"] < 0.11 and classes["grassland"]["share"] > 0.8


@pytest.mark.parametrize("caption", [
    "There are three separate patches of water.",
    "Water appears as 3 distinct ponds scattered over the grassland.",
    "Forest forms a single continuous block in the lower-left quarter.",
    "Several small lakes dot the meadow.",
])
def test_true_counts_pass(lakes: dict, caption: str) -> None:
    verdict = check_caption(caption, lakes)
    assert verdict.ok, verdict.reasons


@pytest.mark.parametrize("caption", [
    "A single lake lies in the grassland.",
    "Water forms one connected area.",
    "There are five separate patches of water.",
    "The woodland is split into three parts.",
])
def test_wrong_counts_fail_with_the_count_code(lakes: dict, caption: str) -> None:
    verdict = check_caption(caption, lakes)
    assert not verdict.ok and "count" in verdict.codes, verdict.reasons


@pytest.mark.parametrize("verb", ["covers", "takes up", "spreads over", "extends across", "occupies", "accounts for",
                                  "sprawls across", "stretches over", "blankets", "makes up"])
def test_shares_after_any_verb_are_read(lakes: dict, verb: str) -> None:
    assert check_caption(f"Meadow {verb} about 80% of the image.", lakes).ok
    verdict = check_caption(f"Meadow {verb} about 30% of the image.", lakes)
    assert not verdict.ok and verdict.codes == ["share"], verdict.reasons


@pytest.mark.parametrize("caption", [
    "Roughly 10% of the whole image is forest.", "A tenth of the entire tile consists of woodland.",
    "Of the entire scene, about 80 percent is grass.", "Forest: ~9 %.", "Woods (about 10 %) lie in the south-west.",
])
def test_a_frame_of_reference_is_not_a_claim(lakes: dict, caption: str) -> None:
    verdict = check_caption(caption, lakes)
    assert verdict.ok, verdict.reasons


def test_a_share_after_a_colon_is_read(lakes: dict) -> None:
    verdict = check_caption("Forest: 60%.", lakes)
    assert not verdict.ok and verdict.codes == ["share"]


def test_quadrants_are_quarters_of_the_image_not_corners(lakes: dict) -> None:
    assert check_caption("Forest fills the lower-left quarter.", lakes).ok
    assert check_caption("Trees occupy the south-western quadrant.", lakes).ok
    verdict = check_caption("Forest fills the upper-right quarter.", lakes)
    assert not verdict.ok and verdict.codes == ["position"]


@pytest.mark.parametrize("caption, ok", [
    ("There is more grassland than forest.", True), ("There is more forest than grassland.", False),
    ("Woodland covers less of the image than meadow.", True), ("Meadow covers less of the image than woodland.", False),
    ("Grass is larger than the forest.", True), ("The forest is bigger than the grassland.", False),
    ("Water outweighs the forest.", False), ("Mostly grass.", True), ("Mostly water.", False),
    ("Grassland is the largest class.", True), ("Forest is the largest class.", False),
])
def test_relative_size_claims(lakes: dict, caption: str, ok: bool) -> None:
    verdict = check_caption(caption, lakes)
    assert verdict.ok is ok, verdict.reasons
    if not ok:
        assert set(verdict.codes) <= {"relative", "rank"}


@pytest.mark.parametrize("caption", [
    "A thin river crosses the image from north to south along its west side.",
    "Tree cover takes up about a third of the image, mostly in the south-west, in three large patches and a few "
    "small ones.",
    "Cropland covers about three fifths of the image, across the center.",
])
def test_copies_of_the_prompts_examples_fail(caption: str) -> None:
    """The examples' own facts: a copy fails as a copy even on a tile where it happens to be true."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((90, 90), scheme.index_of("tree cover"), dtype=np.uint8)
    grid[:, 8:12] = scheme.index_of("water")
    verdict = check_caption(caption, compute_stats(grid, scheme))
    assert not verdict.ok and "copied_example" in verdict.codes
    assert check_caption(caption, compute_stats(grid, scheme), examples=()).codes.count("copied_example") == 0


@pytest.mark.parametrize("caption", [
    "This is a satellite image of the Earth's surface.", "An aerial view with a mix of colours and textures.",
    "Vegetation and other surfaces appear throughout the scene.",
])
def test_fact_free_text_fails_with_its_own_code(lakes: dict, caption: str) -> None:
    verdict = check_caption(caption, lakes)
    assert not verdict.ok and verdict.codes == ["no_fact"]


def test_a_class_caption_about_its_subject_states_facts(lakes: dict) -> None:
    assert check_caption("It covers about a tenth of the tile, in the south-west.", lakes, subject="tree cover",
                         task="class").ok
    assert check_caption("It is an interesting part of the image.", lakes, subject="tree cover",
                         task="class").codes == ["no_fact"]


def test_every_code_is_known_and_template_captions_pass(lakes: dict) -> None:
    captions = [area_caption(lakes, i) for i in range(10)] + [class_caption(lakes, "water", i) for i in range(10)]
    captions += [linear_caption(lakes, i) for i in range(3)]
    for text in filter(None, captions):
        verdict = check_caption(text, lakes)
        assert verdict.ok, (text, verdict.reasons)
    verdict = check_caption("Snow covers the north. A single lake. Forest: 60%.", lakes)
    assert len(verdict.codes) == len(verdict.reasons) and set(verdict.codes) <= set(REASON_CODES)


@pytest.mark.parametrize("caption", ["Sovereignty takes up about 10% of the image.", "Grass: 83%\nSphinx: 9%",
                                     "Rushland covers a fifth of the tile."])
def test_a_share_of_no_class_is_an_invented_class(lakes: dict, caption: str) -> None:
    verdict = check_caption(caption, lakes)
    assert not verdict.ok and "class" in verdict.codes, verdict.reasons


@pytest.mark.parametrize("caption", ["The rest: 8%.", "Total: 100%.", "It covers about 9% of the tile."])
def test_frames_and_pronouns_before_a_share_are_not_classes(lakes: dict, caption: str) -> None:
    verdict = check_caption(caption, lakes, subject="tree cover", task="class")
    assert not any("which is no land-cover class" in r for r in verdict.reasons), verdict.reasons


@pytest.fixture(scope="module")
def ring() -> dict:
    """Cropland in four blocks near the middle of each side (none near the centre), grassland elsewhere,
    and a thin east-west water strip along the south."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((90, 90), scheme.index_of("grassland"), dtype=np.uint8)
    for rows, cols in ((slice(2, 14), slice(33, 57)), (slice(66, 78), slice(33, 57)), (slice(33, 57), slice(2, 14)),
                       (slice(33, 57), slice(76, 88))):
        grid[rows, cols] = scheme.index_of("cropland")
    grid[80:84, :] = scheme.index_of("water")
    return compute_stats(grid, scheme)


def test_a_ring_is_where_its_position_says(ring: dict) -> None:
    """The check and the stats' ``position`` (the place the prompts state) agree: a class whose parts ring
    the centre is "mainly in the center"; it still does not fill the centre."""
    cropland = next(c for c in ring["classes"] if c["name"] == "cropland")
    assert cropland["position"] == "center" and cropland["components"] == 4
    assert check_caption("Cropland covers about 14% of the image, mainly in the center.", ring).ok
    verdict = check_caption("Cropland fills the centre of the image.", ring)
    assert not verdict.ok and verdict.codes == ["position"], verdict.reasons


def test_along_a_side_means_stretching_along_it(ring: dict) -> None:
    assert check_caption("A thin band of water runs along the south side.", ring).ok
    verdict = check_caption("Water lies down the left side of the image.", ring)
    assert not verdict.ok and verdict.codes == ["position"], verdict.reasons


def test_a_heading_is_a_place_not_the_axis(ring: dict) -> None:
    """"then heads east to the image edge" says where a stretch goes, not that the feature runs east-west."""
    assert check_caption("A stream flows west to east, then heads south to the image edge.", ring).ok
    assert not check_caption("A stream flows from north to south along the southern edge.", ring).ok


def test_a_stated_share_outranks_a_vague_largely(ring: dict) -> None:
    assert check_caption("The land is largely water, covering about 4% of the image.", ring).ok
    verdict = check_caption("The land is largely water.", ring)
    assert not verdict.ok and verdict.codes == ["rank"], verdict.reasons


def test_the_prompts_patch_facts_and_class_pronouns_are_read(ring: dict) -> None:
    assert check_caption("This land-cover class is a large patch, with 1 large and 0 small.", ring,
                         subject="water", task="class").ok
    verdict = check_caption("This land-cover class forms 3 large, 0 small.", ring, subject="water", task="class")
    assert not verdict.ok and verdict.codes == ["count"], verdict.reasons


def test_small_ones_in_a_class_caption_are_the_prompts_small_patches(ring: dict) -> None:
    """The class prompt states "Patches: 4 large, 0 small": "a few small ones" contradicts it there; in
    other captions a part small in the image may be called small."""
    text = "Cropland covers about 14% of the image, mostly in the center, with a few small ones."
    verdict = check_caption(text, ring, subject="cropland", task="class")
    assert not verdict.ok and verdict.codes == ["count"], verdict.reasons
    assert check_caption("Several small fields of cropland surround the centre.", ring, task="area").ok


def test_a_sentence_said_twice_is_degenerate(ring: dict) -> None:
    """Twice for a sentence without a fact ("Trees are planted in flooded vegetation." twice); a fact may be
    said twice (two strips that run alike)."""
    verdict = check_caption("Grassland covers most of the image. The fields look well tended. The fields look "
                            "well tended.", ring)
    assert not verdict.ok and verdict.codes == ["text"], verdict.reasons
    assert check_caption("A thin strip of water runs from west to east. A thin strip of water runs from west to "
                         "east.", ring).ok


def test_a_share_held_by_no_class_is_an_invented_class(ring: dict) -> None:
    verdict = check_caption("Grassland covers most of the image. Shoplifters have 21% of the area.", ring)
    assert not verdict.ok and verdict.codes == ["class"], verdict.reasons


def test_a_share_of_two_classes_joined_by_and_is_their_sum(lakes: dict) -> None:
    """"Grassland and forest occupy about 92%" (83 % + 9 %); "about 50%" is wrong for the pair even though
    no single class is far from it; "each" and "respectively" keep the shares apart."""
    assert check_caption("Grassland and forest occupy about 92% of the image.", lakes).ok
    verdict = check_caption("Grassland and water occupy about 50% of the image.", lakes)
    assert not verdict.ok and verdict.codes == ["share"] and "together" in verdict.reasons[0], verdict.reasons
    assert check_caption("Forest and water cover about 9% and 5%, respectively.", lakes).ok


def test_a_thin_strip_does_not_fill_or_cover_the_centre() -> None:
    scheme = get_scheme("esa_worldcover")
    grid = np.full((90, 90), scheme.index_of("grassland"), dtype=np.uint8)
    for i in range(90):
        grid[i, max(0, i - 2):i + 2] = scheme.index_of("water")
    stats = compute_stats(grid, scheme)
    assert check_caption("A thin strip of water crosses the centre diagonally.", stats).ok
    for text in ("Water fills the center.", "Grassland covers most of the image and water covers the center."):
        verdict = check_caption(text, stats)
        assert not verdict.ok and verdict.codes == ["position"], (text, verdict.reasons)


def test_a_class_said_to_include_another_fails(lakes: dict) -> None:
    verdict = check_caption("Grassland covers about 83% of the image, including the water.", lakes)
    assert not verdict.ok and verdict.codes == ["class"], verdict.reasons
    assert check_caption("Grassland covers about 83% of the image; water, in three ponds, covers about 5%.", lakes).ok


def test_a_class_that_fills_a_corner_holds_a_good_part_of_it(lakes: dict) -> None:
    assert check_caption("Forest fills the south-west corner.", lakes).ok
    assert check_caption("A small lake lies in the north-east corner.", lakes).ok
    verdict = check_caption("Water fills the north-east corner.", lakes)
    assert not verdict.ok and verdict.codes == ["position"], verdict.reasons


@pytest.mark.parametrize("caption, ok", [("A stream runs north-west to south-east.", True),
                                         ("A stream runs northwest-southwest.", False),
                                         ("The water is also running in southwest-southeast.", False)])
def test_an_axis_between_sides_that_are_not_opposite_is_no_direction(lakes: dict, caption: str, ok: bool) -> None:
    verdict = check_caption(caption, lakes)
    assert verdict.ok is ok and (ok or "direction" in verdict.codes), verdict.reasons


def test_one_object_with_adjectives_is_still_one_object(lakes: dict) -> None:
    verdict = check_caption("A long, thin tree lies on the image edge.", lakes)
    assert not verdict.ok and "text" in verdict.codes, verdict.reasons
    assert check_caption("A long, thin strip of forest lies in the south-west.", lakes).ok
