"""Words of vegetation density and health ("lush", "dense", "sparse", "healthy") against NDVI, on tiles of
the synthetic world fetched with every band (``output.bands = "all"``): tree cover is dense green
vegetation there, built-up area and water are not; without indices such words are not checked."""

from __future__ import annotations

import copy

import pytest

from rsbuild.captions.check import check_caption
from rsbuild.chips.bands import vegetation_density
from rsbuild.records import Failure, Sample
from rsbuild.testing.synthetic import FixtureInfo
from tests.chips.test_fetch import fetch_config, run_fetch_stage

CLEAR_DAY = "2024-07-10/2024-07-10"  # the cloud-free full-swath scene


@pytest.fixture(scope="module")
def tile(fixture_data: FixtureInfo, stac_api_rustac) -> dict:
    """The stats of a fetched tile holding dense tree cover and cropland whose fields are bare soil (sparse NDVI)."""
    cfg = fetch_config(fixture_data, stac_api_rustac.url, str(fixture_data.truth_path), output__bands="all",
                       scenes__datetime=CLEAR_DAY)
    records = run_fetch_stage(cfg, [poi for poi in fixture_data.pois if poi.poi_id == "west3"])
    assert not [r for r in records if isinstance(r, Failure)]
    for sample in (r for r in records if isinstance(r, Sample)):
        density = {c["name"]: vegetation_density(c["indices"]["ndvi"]) for c in sample.stats["classes"]
                   if c["share"] >= 0.01}
        if density.get("tree cover") == "dense" and density.get("cropland") == "sparse":
            return dict(sample.stats)
    raise AssertionError("no tile with dense tree cover beside cropland of sparse NDVI")


def _with(stats: dict, text: str) -> str:
    """``text`` with the tile's true shares of tree cover, so only the vegetation words can be wrong."""
    share = round(100 * next(c["share"] for c in stats["classes"] if c["name"] == "tree cover"))
    return text.format(share=share)


@pytest.mark.parametrize("caption", [
    "Dense, healthy forest covers about {share}% of the tile.",
    "Lush tree cover takes up about {share}% of the image.",
    "Tree cover covers about {share}% of the tile; the forest is dense and green.",
])
def test_dense_words_for_dense_ndvi_pass(tile: dict, caption: str) -> None:
    verdict = check_caption(_with(tile, caption), tile)
    assert verdict.ok, verdict.reasons


@pytest.mark.parametrize("caption", [
    "Sparse, stressed forest covers about {share}% of the tile.",
    "Tree cover covers about {share}% of the tile, but the trees look unhealthy.",
])
def test_sparse_words_for_dense_ndvi_fail(tile: dict, caption: str) -> None:
    verdict = check_caption(_with(tile, caption), tile)
    assert not verdict.ok and verdict.codes == ["vegetation"], verdict.reasons
    assert "ndvi" in verdict.reasons[0].lower()


def test_lush_words_for_a_class_that_is_not_green_fail(tile: dict) -> None:
    share = round(100 * next(c["share"] for c in tile["classes"] if c["name"] == "cropland"))
    assert check_caption(f"Cropland covers about {share}% of the tile; the fields look sparse.", tile).ok
    verdict = check_caption(f"Lush, healthy cropland covers about {share}% of the tile.", tile)
    assert not verdict.ok and verdict.codes == ["vegetation"], verdict.reasons


def test_density_of_a_class_that_is_no_vegetation_is_no_claim(tile: dict) -> None:
    water = round(100 * next(c["share"] for c in tile["classes"] if c["name"] == "water"))
    assert check_caption(f"Thick, dense water covers about {water}% of the tile.", tile).ok


def test_negated_density_is_no_claim(tile: dict) -> None:
    assert check_caption(_with(tile, "Tree cover covers about {share}% of the tile; it is not sparse forest."), tile).ok


def test_dense_vegetation_needs_some_green_class(tile: dict) -> None:
    caption = _with(tile, "Tree cover covers about {share}% of the tile, with dense vegetation.")
    assert check_caption(caption, tile).ok
    grey = copy.deepcopy(tile)
    for entry in grey["classes"]:
        entry["indices"]["ndvi"] = 0.05  # as if every class were bare or built-up
    verdict = check_caption(caption, grey)
    assert not verdict.ok and "vegetation" in verdict.codes, verdict.reasons


def test_without_indices_density_words_are_not_checked(tile: dict) -> None:
    plain = copy.deepcopy(tile)
    plain.pop("indices")
    for entry in plain["classes"]:
        entry.pop("indices")
    caption = _with(tile, "Sparse, stressed forest covers about {share}% of the tile.")
    assert not check_caption(caption, tile).ok
    assert check_caption(caption, plain).ok  # no NDVI: the words are no claim the check can verify
