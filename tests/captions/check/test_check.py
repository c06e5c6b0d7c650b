"""The faithfulness check on real statistics of small label maps with a known layout."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

import rsbuild
from rsbuild.captions.check import Verdict, check_caption
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme


def _stats(scheme_name: str, fill: str, shapes: list[tuple[str, tuple[slice, slice]]], size: int = 120) -> dict:
    scheme = get_scheme(scheme_name)
    grid = np.full((size, size), scheme.index_of(fill), dtype=np.uint8)
    for name, (rows, cols) in shapes:
        grid[rows, cols] = scheme.index_of(name)
    return compute_stats(grid, scheme)


@pytest.fixture(scope="module")
def farm() -> dict:
    """Tree cover in the north (~40 %), cropland in the south (~50 %), a north-south river on the
    left (west, ~5 %) and a town in the south-east (~5 %)."""
    return _stats("esa_worldcover", "cropland", [
        ("tree cover", (slice(0, 50), slice(None))),
        ("water", (slice(None), slice(10, 16))),
        ("built-up area", (slice(90, 110), slice(80, 115))),
    ])


@pytest.fixture(scope="module")
def diagonal_road() -> dict:
    """Dynamic World grass with a road from the bottom-left to the top-right (NE-SW)."""
    scheme = get_scheme("dynamic_world")
    grid = np.full((100, 100), scheme.index_of("grass"), dtype=np.uint8)
    yy, xx = np.mgrid[:100, :100]
    grid[np.abs(xx + yy - 99) <= 2] = scheme.index_of("built-up area")
    grid[10:30, 10:30] = scheme.index_of("trees")
    return compute_stats(grid, scheme)


def test_fixture_is_what_the_captions_assume(farm: dict) -> None:
    classes = {c["name"]: c for c in farm["classes"]}
    assert classes["tree cover"]["position"] == "top"
    assert classes["water"]["position"] == "left"
    assert classes["built-up area"]["position"] == "bottom-right"
    assert 0.35 < classes["tree cover"]["share"] < 0.45 and 0.45 < classes["cropland"]["share"] < 0.55
    assert any(c["class"] == "water" and c["orientation"] == "north-south" for c in farm["components"])


@pytest.mark.parametrize("caption", [
    "Tree cover occupies the northern part of the tile (about 40%), while cropland covers roughly half of it in "
    "the south. A narrow river runs north-south along the western edge.",
    "Forest blankets the upper part of the scene while farmland stretches across the lower half.",
    "A river cuts through the left side of the image from top to bottom.",
    "Trees: ~40 %. Crops: ~50 %. Water: ~5 %.",
    "Forty percent of the tile is woodland, and fields take up about a half.",
    "A small settlement sits in the lower-right corner; the fields lie south of the forest.",
    "Cropland is the largest class, and tree cover the second-largest class.",
    "Cropland, tree cover and water make up 50%, 40% and 5% respectively.",
    "The image is mostly agricultural, with woods to the north.",
    "Between 35 and 45 percent is forest. Buildings cover less than a tenth of the image.",
])
def test_correct_captions_pass(farm: dict, caption: str) -> None:
    verdict = check_caption(caption, farm)
    assert verdict.ok, verdict.reasons
    assert verdict.reasons == []


@pytest.mark.parametrize("caption, words", [
    ("Grassland covers the south of the tile.", ["grassland", "not in the tile"]),
    ("A lake lies in the north, beside a large glacier.", ["glacier"]),
    ("Cropland and mangroves share the tile.", ["mangroves"]),
    ("Marshes line the river in the west.", ["marshes", "wetland"]),
])
def test_wrong_class_fails_naming_it(farm: dict, caption: str, words: list[str]) -> None:
    verdict = check_caption(caption, farm)
    assert not verdict.ok
    text = " ".join(verdict.reasons)
    assert all(word in text for word in words), verdict.reasons


@pytest.mark.parametrize("caption", [
    "About 80% of the scene is tree cover.",
    "Cropland covers seventy-five percent of the image.",
    "Water makes up most of the image.",
    "Buildings dominate the image.",
    "Roughly 9 in 10 pixels are trees.",
    "Only a small part of the tile, about 5%, is cropland.",
    "Tree cover is the largest class.",
])
def test_wrong_share_fails(farm: dict, caption: str) -> None:
    verdict = check_caption(caption, farm)
    assert not verdict.ok
    assert verdict.reasons and all("covers" in r or "class" in r or "dominates" in r for r in verdict.reasons)


@pytest.mark.parametrize("caption, name", [
    ("Forest blankets the lower part of the scene.", "tree cover"),
    ("A small settlement occupies the upper-left corner of the tile.", "built-up area"),
    ("There is a town in the north-west.", "built-up area"),
    ("The fields lie north of the forest.", "cropland"),
    ("Most buildings are along the western edge.", "built-up area"),
    ("The river is in the east of the image.", "water"),  # RSTeller's "left is east" mistake
    ("A river runs along the right-hand side from top to bottom.", "water"),
])
def test_wrong_position_fails(farm: dict, caption: str, name: str) -> None:
    verdict = check_caption(caption, farm)
    assert not verdict.ok
    assert any(name in reason for reason in verdict.reasons), verdict.reasons


@pytest.mark.parametrize("caption", [
    "A river flows from east to west across the tile.",
    "The stream runs horizontally through the image.",
    "A narrow river, oriented E-W, lies on the left.",
])
def test_wrong_direction_fails(farm: dict, caption: str) -> None:
    verdict = check_caption(caption, farm)
    assert not verdict.ok
    assert any("water" in r and "north-south" in r for r in verdict.reasons), verdict.reasons


def test_mirrored_diagonal_fails(diagonal_road: dict) -> None:
    right = "A road runs diagonally from the bottom-left to the top-right of the image."
    mirrored = "A road runs diagonally from the bottom-right to the top-left of the image."
    assert check_caption(right, diagonal_road).ok
    assert check_caption("A road crosses the tile NE-SW.", diagonal_road).ok
    verdict = check_caption(mirrored, diagonal_road)
    assert not verdict.ok and "built-up area" in verdict.reasons[0]
    assert not check_caption("A road runs north-west to south-east.", diagonal_road).ok


@pytest.mark.parametrize("variant", ["south-east", "southeast", "south east", "SE", "south-eastern part",
                                     "lower right", "bottom-right corner", "lower right-hand corner"])
def test_spellings_of_a_place_are_equivalent(farm: dict, variant: str) -> None:
    assert check_caption(f"Buildings lie in the {variant}.", farm).ok
    mirrored = (variant.replace("south", "north").replace("SE", "NE").replace("lower", "upper")
                .replace("bottom", "top"))
    assert not check_caption(f"Buildings lie in the {mirrored}.", farm).ok


@pytest.mark.parametrize("caption", [
    "No grassland is visible.",
    "There is no wetland, shrubland or bare soil.",
    "The image contains neither snow nor mangroves.",
    "Grassland is absent from this tile.",
    "Nothing here looks like snow or ice.",
    "I can't see any marshes, and there are no glaciers.",
    "There is hardly any grassland.",
])
def test_negated_classes_are_not_named(farm: dict, caption: str) -> None:
    verdict = check_caption(caption, farm)
    assert verdict.ok, verdict.reasons


def test_denying_a_present_class_fails(farm: dict) -> None:
    verdict = check_caption("There is no water in this tile.", farm)
    assert not verdict.ok and verdict.reasons == ["says there is no water, but it covers 5.0%"]
    assert not check_caption("Without any forest, the tile is all farmland.", farm).ok


def test_no_built_up_area_is_correct_when_absent() -> None:
    stats = _stats("esa_worldcover", "grassland", [("water", (slice(0, 30), slice(None)))])
    assert check_caption("There is no built-up area; water lies in the north.", stats).ok
    assert not check_caption("A village lies in the south.", stats).ok


def test_class_below_min_share_counts_as_absent(farm: dict) -> None:
    stats = _stats("esa_worldcover", "cropland", [("water", (slice(0, 6), slice(0, 10)))], size=100)  # 0.6 %
    verdict = check_caption("A pond lies in the north-west.", stats)
    assert not verdict.ok and "only 0.6%" in verdict.reasons[0]
    assert check_caption("A pond lies in the north-west.", stats, min_share=0.005).ok


def test_subject_reads_sentences_without_a_class(farm: dict) -> None:
    assert check_caption("It covers about 5% of the tile, in the south-east.", farm, subject="built-up area").ok
    verdict = check_caption("It covers about 5% of the tile, in the north-west.", farm, subject="built-up area")
    assert not verdict.ok and "built-up area" in verdict.reasons[0]
    # a pronoun sentence refers to the class named in the sentence before
    assert not check_caption("Water is present. It lies in the east.", farm).ok
    assert check_caption("Water is present. It lies in the west.", farm).ok


def test_scheme_aliases_map_to_the_schemes_class(diagonal_road: dict) -> None:
    assert check_caption("A small forest sits in the north-west.", diagonal_road).ok  # forest -> trees
    assert not check_caption("A marsh sits in the north-west.", diagonal_road).ok  # marsh -> flooded vegetation


def test_verdict_is_json_and_public(farm: dict) -> None:
    verdict = check_caption("Snow covers the north.", farm)
    assert isinstance(verdict, Verdict)
    doc = json.loads(json.dumps(verdict.to_json()))
    assert doc["ok"] is False and doc["reasons"] == verdict.reasons
    assert rsbuild.check_caption is check_caption
    assert not check_caption("   ", farm).ok


# --------------------------------------------------------------------------------------------
# Faults seen in real SmolLM2 captions (issue 4)

@pytest.mark.parametrize("caption, reason", [
    ("Cropland covers about half. Water is 5%, east (left).", "contradicts itself"),
    ("Tree cover is 40%, north-west (right).", "contradicts itself"),
    ("Shrubland covers 5%, east-left.", "contradicts itself"),
    ("Cropland is 50%. Water is 5%. Water is 5%. Water is 5%. Water is 5%.", "repetitive"),
    ("Rushland covers about one-fifth of the image.", "rushland"),
    ("Water is the largest part of the image.", "largest"),
    ("Cropland is the smallest part.", "smallest"),
])
def test_real_model_faults_fail(farm: dict, caption: str, reason: str) -> None:
    verdict = check_caption(caption, farm)
    assert not verdict.ok
    assert any(reason in r for r in verdict.reasons), verdict.reasons


@pytest.mark.parametrize("caption", [
    "Tree cover covers 40%, north (top), and cropland 50%, south (bottom).",
    "Cropland is the largest part of the image; water is the smallest.",
    "Forested land fills the north and grassed areas are absent.",
    "Cropland covers about half of the image, and the remaining 45% lies in the north.",
    "Tree cover is 40%. Cropland is 50%. Water is 5%.",
])
def test_real_model_phrasings_that_are_right_pass(farm: dict, caption: str) -> None:
    verdict = check_caption(caption, farm)
    assert verdict.ok, verdict.reasons


def test_grassed_means_grassland() -> None:
    stats = _stats("esa_worldcover", "cropland", [("grassland", (slice(0, 60), slice(None)))])
    assert check_caption("Grassed areas cover about half of the image, in the north.", stats).ok
    verdict = check_caption("Grassed areas cover about 5% of the image.", stats)
    assert not verdict.ok and "grassland" in verdict.reasons[0]


# --------------------------------------------------------------------------------------------
# The package rsbuild/captions/check/: its public names, and modules that import only earlier ones

PUBLIC_NAMES = ("Verdict", "check_caption", "DEFAULT_MIN_SHARE", "NEGATED_PRESENT_SHARE", "TRACE_MAX_PERCENT",
                "ORIENTATION_TOLERANCE_DEG", "MIN_ELONGATION_FOR_DIRECTION", "THIN_ELONGATION",
                "REPEATED_SENTENCE_LIMIT", "REPEATED_NGRAM_SHARE", "MIN_WORDS_FOR_NGRAMS")
PIPELINE = ("vocabulary", "text", "spans", "negation", "clauses", "compare", "faults", "__init__")


def test_check_package_keeps_its_public_names() -> None:
    package = importlib.import_module("rsbuild.captions.check")
    assert [name for name in PUBLIC_NAMES if not hasattr(package, name)] == []
    assert package.__all__ == ["Verdict", "check_caption", "present_class_count", "DEFAULT_MIN_SHARE", "REASON_CODES"]
    assert Verdict.__module__ == check_caption.__module__ == "rsbuild.captions.check"


def test_check_modules_import_only_earlier_ones() -> None:
    root = Path(importlib.import_module("rsbuild.captions.check").__file__ or "").parent
    assert sorted(p.stem for p in root.glob("*.py")) == sorted(PIPELINE)
    for i, name in enumerate(PIPELINE):
        imported = set()
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:  # from .spans import ... / from . import spans
                imported |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rsbuild.captions.check."):
                imported.add((node.module or "").split(".")[3])
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[3] for a in node.names if a.name.startswith("rsbuild.captions.check.")}
        assert imported <= set(PIPELINE[:i]), f"{name} imports {sorted(imported - set(PIPELINE[:i]))}"
