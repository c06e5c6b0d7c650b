"""Label statistics: shares of valid pixels, positions, directions, components, stable JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rsbuild.chips.stats import STATS_VERSION, compute_stats, orientation_name, position_name, stats_sha256
from rsbuild.schemes import NODATA_INDEX, get_scheme

ESA = get_scheme("esa_worldcover")
TREE = ESA.index_of("tree cover")
GRASS = ESA.index_of("grassland")
BUILT = ESA.index_of("built-up area")
WATER = ESA.index_of("water")

TOP_KEYS = {"version", "scheme", "size", "pixels", "valid_pixels", "valid_share", "cloud_share",
            "unknown_code_pixels", "dominant_class", "num_classes", "classes", "components"}
CLASS_KEYS = {"name", "code", "index", "pixels", "share", "centroid", "position", "bbox", "components",
              "small_patches", "small_patch_pixels"}
COMPONENT_KEYS = {"class", "pixels", "share", "bbox_px", "bbox", "centroid", "position", "elongation",
                  "elongated", "orientation", "orientation_deg", "touches_frame"}


def tile(fill: int = GRASS, size: int = 224) -> np.ndarray:
    return np.full((size, size), fill, dtype=np.uint8)


def class_entry(stats: dict, name: str) -> dict:
    return next(c for c in stats["classes"] if c["name"] == name)


def components_of(stats: dict, name: str) -> list[dict]:
    return [c for c in stats["components"] if c["class"] == name]


def test_half_water_tile_is_half_water():
    labels = tile(TREE)
    labels[:, 112:] = WATER
    stats = compute_stats(labels, ESA)
    assert class_entry(stats, "water")["share"] == 0.5
    assert class_entry(stats, "tree cover")["share"] == 0.5
    assert class_entry(stats, "water")["position"] == "right"
    assert class_entry(stats, "water")["bbox"] == [0.5, 0.0, 1.0, 1.0]
    assert [c["name"] for c in stats["classes"]] == ["tree cover", "water"]  # tie: lower index first
    assert stats["dominant_class"] == "tree cover" and stats["num_classes"] == 2


def test_schema_keys_and_types_match_architecture():
    labels = tile()
    labels[50:120, 60:90] = WATER
    stats = compute_stats(labels, ESA)
    assert set(stats) == TOP_KEYS
    assert stats["version"] == STATS_VERSION == 1
    assert stats["scheme"] == "esa_worldcover" and stats["size"] == [224, 224] and stats["pixels"] == 224 * 224
    assert all(set(c) == CLASS_KEYS for c in stats["classes"])
    assert stats["components"] and all(set(c) == COMPONENT_KEYS for c in stats["components"])
    water = class_entry(stats, "water")
    assert (water["code"], water["index"], water["pixels"]) == (80, WATER, 70 * 30)


def test_vertical_river_is_elongated_north_south():
    labels = tile()
    labels[:, 10:22] = WATER
    (river,) = components_of(compute_stats(labels, ESA), "water")
    assert river["bbox_px"] == [10, 0, 22, 224]
    assert river["bbox"] == [round(10 / 224, 4), 0.0, round(22 / 224, 4), 1.0]
    assert river["elongated"] and river["elongation"] == pytest.approx(224 / 12, abs=1e-3)
    assert river["orientation"] == "north-south" and river["orientation_deg"] == 0.0
    assert river["position"] == "left" and river["touches_frame"]


def test_horizontal_band_runs_east_west():
    labels = tile()
    labels[150:160, :] = WATER
    (band,) = components_of(compute_stats(labels, ESA), "water")
    assert band["orientation"] == "east-west" and band["orientation_deg"] == 90.0
    assert band["elongated"] and band["position"] == "bottom"


@pytest.mark.parametrize(
    ("anti_diagonal", "name", "degrees"),
    [(True, "northeast-southwest", 45.0), (False, "northwest-southeast", 135.0)],
)
def test_diagonal_bands_have_diagonal_directions(anti_diagonal, name, degrees):
    y, x = np.mgrid[0:224, 0:224]
    # anti-diagonal: from bottom-left (x 0, y 223) to top-right (x 223, y 0); y grows downwards
    offset = x + y - 223 if anti_diagonal else x - y
    labels = tile()
    labels[np.abs(offset) <= 4] = WATER
    (band,) = components_of(compute_stats(labels, ESA), "water")
    assert band["orientation"] == name
    assert band["orientation_deg"] == pytest.approx(degrees, abs=0.5)
    assert band["elongated"] and band["position"] == "center"


def test_forest_blob_in_the_top_left():
    labels = tile()
    labels[10:50, 20:60] = TREE
    stats = compute_stats(labels, ESA)
    forest = class_entry(stats, "tree cover")
    assert forest["position"] == "top-left"
    assert forest["centroid"] == [round(40 / 224, 4), round(30 / 224, 4)]
    assert forest["bbox"] == [round(20 / 224, 4), round(10 / 224, 4), round(60 / 224, 4), round(50 / 224, 4)]
    (blob,) = components_of(stats, "tree cover")
    assert blob["bbox_px"] == [20, 10, 60, 50] and not blob["touches_frame"]
    assert blob["elongation"] == pytest.approx(1.0) and not blob["elongated"]


def test_shares_count_only_valid_pixels():
    labels = tile(TREE, size=100)
    labels[:20, :] = NODATA_INDEX  # unknown label
    labels[60:, :50] = WATER
    valid = np.ones((100, 100), dtype=bool)
    valid[:, :10] = False  # no image data
    stats = compute_stats(labels, ESA, valid=valid)
    valid_pixels = 80 * 90
    water_pixels = 40 * 40
    assert stats["valid_pixels"] == valid_pixels and stats["valid_share"] == 0.72
    assert class_entry(stats, "water")["pixels"] == water_pixels
    assert class_entry(stats, "water")["share"] == round(water_pixels / valid_pixels, 4)
    assert class_entry(stats, "tree cover")["share"] == round((valid_pixels - water_pixels) / valid_pixels, 4)
    assert sum(c["pixels"] for c in stats["classes"]) == valid_pixels


def test_small_patches_count_in_shares_but_not_as_components():
    labels = tile(TREE, size=120)
    for k in range(10):
        labels[10 * k + 2: 10 * k + 4, 50:52] = BUILT  # ten separate 2x2 patches
    stats = compute_stats(labels, ESA, min_component_pixels=30)
    built = class_entry(stats, "built-up area")
    assert built["pixels"] == 40 and built["share"] == round(40 / 120**2, 4)
    assert (built["components"], built["small_patches"], built["small_patch_pixels"]) == (0, 10, 40)
    assert components_of(stats, "built-up area") == []
    assert [c["pixels"] for c in components_of(stats, "tree cover")] == [120**2 - 40]


def test_components_use_eight_connectivity():
    labels = tile(TREE, size=60)
    labels[10:15, 10:15] = BUILT
    labels[15:20, 15:20] = BUILT  # touches the first square only at a corner
    stats = compute_stats(labels, ESA, min_component_pixels=30)
    assert [c["pixels"] for c in components_of(stats, "built-up area")] == [50]
    assert class_entry(stats, "built-up area")["small_patches"] == 0


def test_only_the_largest_components_are_listed():
    labels = tile(TREE)
    sizes = []
    for k in range(25):
        row, col = divmod(k, 5)
        side = 6 + k % 7
        labels[row * 44 + 5: row * 44 + 5 + side, col * 44 + 5: col * 44 + 5 + 6] = WATER
        sizes.append(side * 6)
    stats = compute_stats(labels, ESA, max_components=10, min_component_pixels=30)
    listed = stats["components"]
    assert len(listed) == 10
    assert [c["pixels"] for c in listed] == sorted((c["pixels"] for c in listed), reverse=True)
    assert listed[0]["class"] == "tree cover"
    assert [c["pixels"] for c in listed[1:]] == sorted(sizes, reverse=True)[:9]
    assert class_entry(stats, "water")["components"] == 25


def test_cloud_share_and_unknown_codes_from_encode():
    codes = np.full((40, 40), 10, dtype=np.uint8)
    codes[:10, :] = 33  # not a WorldCover code
    codes[10:20, :] = 0  # WorldCover nodata
    index, unknown = ESA.encode(codes)
    cloud = np.zeros((40, 40), dtype=bool)
    cloud[:, :10] = True
    stats = compute_stats(index, ESA, cloud=cloud, unknown_code_pixels=unknown)
    assert stats["unknown_code_pixels"] == 400
    assert stats["valid_pixels"] == 800 and stats["valid_share"] == 0.5
    assert stats["cloud_share"] == 0.25
    assert class_entry(stats, "tree cover")["share"] == 1.0


def test_no_valid_pixel_gives_empty_classes():
    stats = compute_stats(tile(NODATA_INDEX, size=16), ESA)
    assert stats["valid_pixels"] == 0 and stats["valid_share"] == 0.0
    assert stats["dominant_class"] is None and stats["classes"] == [] and stats["components"] == []


def test_index_beyond_the_scheme_is_rejected():
    with pytest.raises(ValueError, match="11 classes"):
        compute_stats(tile(11, size=8), ESA)


def test_json_round_trip_and_stable_hash():
    labels = tile()
    labels[:, 10:22] = WATER
    labels[10:50, 100:140] = TREE
    stats = compute_stats(labels, ESA)
    text = json.dumps(stats)
    assert json.loads(text) == stats
    assert stats_sha256(json.loads(text)) == stats_sha256(stats)
    assert stats_sha256(compute_stats(labels.copy(), ESA)) == stats_sha256(stats)
    labels[200, 200] = BUILT
    assert stats_sha256(compute_stats(labels, ESA)) != stats_sha256(stats)

    def floats(value):
        if isinstance(value, float):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from floats(item)
        elif isinstance(value, list):
            for item in value:
                yield from floats(item)

    assert all(round(f, 4) == f for f in floats(stats))


def test_position_and_orientation_names():
    assert position_name(0.1, 0.1) == "top-left"
    assert position_name(0.5, 0.5) == "center"
    assert position_name(0.9, 0.5) == "right"
    assert position_name(0.5, 0.99) == "bottom"
    assert position_name(1.0, 1.0) == "bottom-right"
    assert orientation_name(10) == "north-south" and orientation_name(170) == "north-south"
    assert orientation_name(40) == "northeast-southwest"
    assert orientation_name(95) == "east-west"
    assert orientation_name(130) == "northwest-southeast"
