"""VQA pairs and referring expressions from the stats, checked against label maps with a known truth.

Every answer is re-derived here from the label array itself (numpy / scipy, not the stats), and
every referring phrase is matched against every pixel group of the tile, small patches included.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from rsbuild.captions.check import check_caption
from rsbuild.captions.engines.template import POSITION_MARGIN
from rsbuild.captions.referring import referring_expressions
from rsbuild.captions.vqa import derive_answer, vqa_pairs
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme

SCHEME = get_scheme("esa_worldcover")
SIZE = 96
CELL_WORDS = {(0, 0): "north-west", (0, 1): "north", (0, 2): "north-east", (1, 0): "west", (1, 1): "centre",
              (1, 2): "east", (2, 0): "south-west", (2, 1): "south", (2, 2): "south-east"}
BINS = [(0.0, 0.1, "less than 10%"), (0.1, 0.25, "10-25%"), (0.25, 0.5, "25-50%"), (0.5, 0.75, "50-75%"), (0.75, 2, "more than 75%")]


def known_world() -> np.ndarray:
    """Cropland with a north-south river, a forest block in the north-east, two built-up blocks
    in the south and a 9-pixel grassland speck."""
    labels = np.full((SIZE, SIZE), SCHEME.index_of("cropland"), np.uint8)
    labels[:, 20:26] = SCHEME.index_of("water")
    labels[8:30, 66:90] = SCHEME.index_of("tree cover")
    labels[70:78, 6:14] = SCHEME.index_of("built-up area")
    labels[70:76, 72:78] = SCHEME.index_of("built-up area")
    labels[45:48, 45:48] = SCHEME.index_of("grassland")
    return labels


def truth_answer(labels: np.ndarray, kind: str, subjects: tuple[str, ...]) -> str:
    """The answer computed from the pixels, written for this map (no stats involved)."""
    counts = {c.name: int((labels == SCHEME.index_of(c.name)).sum()) for c in SCHEME.classes}
    share = {name: n / labels.size for name, n in counts.items()}
    if kind == "presence":
        return "yes" if counts[subjects[0]] else "no"
    if kind == "largest":
        return max(counts, key=counts.__getitem__)
    if kind == "num_classes":
        return str(sum(1 for n in counts.values() if n))
    if kind == "compare":
        return "yes" if counts[subjects[0]] > counts[subjects[1]] else "no"
    mask = labels == SCHEME.index_of(subjects[0])
    if kind == "share_bin":
        return next(label for low, high, label in BINS if low <= share[subjects[0]] < high)
    if kind == "count":
        return str(ndimage.label(mask, structure=np.ones((3, 3)))[1])
    if kind == "position":
        ys, xs = np.nonzero(mask)
        return CELL_WORDS[(int((ys.mean() + 0.5) / SIZE * 3), int((xs.mean() + 0.5) / SIZE * 3))]
    if kind == "orientation":
        assert subjects[0] in ("water", "cropland")  # the river and the cropland strip west of it
        return "north-south"
    raise AssertionError(kind)


def test_every_vqa_answer_matches_the_pixels():
    labels = known_world()
    stats = compute_stats(labels, SCHEME)
    pairs = vqa_pairs(stats, "world_t0000", "this image")
    assert len(pairs) >= 10
    assert {p.kind for p in pairs} >= {"presence", "largest", "share_bin", "count", "position", "compare", "orientation"}
    assert "num_classes" not in {p.kind for p in pairs}  # the speck makes "how many classes" a matter of eyesight
    for pair in pairs:
        assert pair.answer == truth_answer(labels, pair.kind, pair.subjects), pair
        assert all(s in pair.question for s in pair.subjects) and "this image" in pair.question
    # the 9-pixel grassland speck (0.1 %) is too small to call present; nothing asks about it
    assert not any("grassland" in p.subjects for p in pairs)
    assert derive_answer(stats, "presence", ("grassland",)) is None
    # the river runs north-south; the forest block sits in the north-east (and the check agrees)
    by_kind = {(p.kind, p.subjects): p.answer for p in pairs}
    assert by_kind[("orientation", ("water",))] == "north-south"
    assert by_kind.get(("position", ("tree cover",)), "north-east") == "north-east"
    assert check_caption("Tree cover lies in the north-east.", stats).ok


def test_yes_and_no_are_balanced_and_wording_is_deterministic():
    answers: Counter[str] = Counter()
    rng = np.random.default_rng(7)
    for tile in range(12):
        labels = known_world()
        labels[rng.integers(30, 60):, rng.integers(30, 60):] = SCHEME.index_of(("grassland", "shrubland", "water")[tile % 3])
        stats = compute_stats(labels, SCHEME)
        pairs = vqa_pairs(stats, f"p{tile}_t0000")
        answers.update(p.answer for p in pairs if p.kind in ("presence", "compare"))
        assert pairs == vqa_pairs(stats, f"p{tile}_t0000")  # same key, same questions
        presence = Counter(p.answer for p in pairs if p.kind == "presence")
        assert presence["yes"] == presence["no"] > 0
    assert abs(answers["yes"] - answers["no"]) <= 0.2 * (answers["yes"] + answers["no"])
    questions = {p.question for t in range(8) for p in vqa_pairs(compute_stats(known_world(), SCHEME), f"k{t}_t0000")}
    assert len(questions) > len(vqa_pairs(compute_stats(known_world(), SCHEME), "k0_t0000"))  # phrasings vary by key


def test_no_question_near_an_edge_of_its_answer():
    labels = np.full((100, 100), SCHEME.index_of("cropland"), np.uint8)
    labels[:, :25] = SCHEME.index_of("water")  # exactly 25 %: on the 10-25 % / 25-50 % edge
    stats = compute_stats(labels, SCHEME)
    assert derive_answer(stats, "share_bin", ("water",)) is None
    assert not any(p.kind == "share_bin" and p.subjects == ("water",) for p in vqa_pairs(stats, "e_t0000"))


def _groups(labels: np.ndarray):
    """Every 8-connected pixel group of the map: (class, pixels, centroid x, y), all sizes."""
    for cls in SCHEME.classes:
        labelled, count = ndimage.label(labels == SCHEME.index_of(cls.name), structure=np.ones((3, 3)))
        for i in range(1, count + 1):
            ys, xs = np.nonzero(labelled == i)
            yield cls.name, xs.size, (xs.mean() + 0.5) / labels.shape[1], (ys.mean() + 0.5) / labels.shape[0]


def _could_be_in(cell: str, cx: float, cy: float, margin: float = POSITION_MARGIN) -> bool:
    """Whether a reader could place a point in ``cell`` (a border point counts for both sides)."""
    (row, col), = [rc for rc, word in CELL_WORDS.items() if word == cell]
    return all(k / 3 - margin <= v <= (k + 1) / 3 + margin for k, v in ((col, cx), (row, cy)))


def _matching_groups(phrase: str, class_name: str, labels: np.ndarray, stats) -> int:
    """Pixel groups the phrase fits, read from its words; groups below the component size may be
    elongated or not (their shape is not measured), so they fit any shape word."""
    cell = next((w for w in sorted(CELL_WORDS.values(), key=len, reverse=True) if phrase.endswith(f"in the {w}")), None)
    groups = [g for g in _groups(labels) if g[0] == class_name]
    sizes = sorted((g[1] for g in groups), reverse=True)
    elongated = {(c["pixels"], round(c["centroid"][0], 2)): c["elongated"] for c in stats["components"]}
    fits = 0
    for _, pixels, cx, cy in groups:
        if cell and not _could_be_in(cell, cx, cy):
            continue
        if "second-largest" in phrase and pixels != sizes[1]:
            continue
        if "largest" in phrase.replace("second-largest", "") and pixels != sizes[0]:
            continue
        shape = elongated.get((pixels, round(cx, 2)))
        if "elongated" in phrase and shape is False:
            continue
        fits += 1
    return fits


@pytest.mark.parametrize("seed", range(15))
def test_referring_phrases_fit_exactly_one_pixel_group(seed):
    rng = np.random.default_rng(seed)
    labels = np.full((SIZE, SIZE), SCHEME.index_of("grassland"), np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        cls = SCHEME.index_of(str(rng.choice(["water", "tree cover", "built-up area", "cropland"])))
        y, x = rng.integers(0, SIZE - 8, 2)
        h, w = (int(rng.integers(2, 40)), int(rng.integers(2, 12)))[:: 1 if rng.random() < 0.5 else -1]
        labels[y:y + h, x:x + w] = cls
    stats = compute_stats(labels, SCHEME)
    result = referring_expressions(stats)
    assert len(result.referents) + result.ambiguous == len(stats["components"])
    assert len({r.phrase for r in result.referents}) == len(result.referents)
    for ref in result.referents:
        comp = stats["components"][ref.component]
        assert ref.class_name == comp["class"] and ref.phrase.startswith("the ") and comp["class"] in ref.phrase
        assert _matching_groups(ref.phrase, comp["class"], labels, stats) == 1, ref.phrase


def test_referring_on_the_known_world_and_ambiguous_twins():
    stats = compute_stats(known_world(), SCHEME)
    phrases = {r.phrase for r in referring_expressions(stats).referents}
    assert "the water area" in phrases  # one blob of water, no specks: the class alone is unique
    assert {"the built-up area in the south-west", "the built-up area in the south-east"} <= phrases
    twins = np.full((SIZE, SIZE), SCHEME.index_of("cropland"), np.uint8)
    twins[5:11, 5:11] = twins[5:11, 15:21] = SCHEME.index_of("water")  # same size, same cell
    twins[50:52, 80:82] = SCHEME.index_of("water")  # a speck: "the water area in ..." cannot be trusted
    result = referring_expressions(compute_stats(twins, SCHEME, min_component_pixels=30))
    assert [r.class_name for r in result.referents] == ["cropland"]
    assert result.ambiguous == 2
