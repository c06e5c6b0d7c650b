"""Split assignment by sha256 and the cross-split footprint overlap report."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rsbuild.chips.splits import OverlapReport, assign_split, overlap_report, split_for, split_key_for
from rsbuild.config import SplitsConfig
from rsbuild.records import Poi

KEYS = [f"poi-{i:05d}" for i in range(2000)]


def test_assignment_is_deterministic_and_matches_fractions() -> None:
    first = [assign_split(key) for key in KEYS]
    assert first == [assign_split(key) for key in KEYS]
    counts = Counter(first)
    assert set(counts) == {"train", "validation", "test"}
    # binomial standard deviation at n=2000, p=0.1 is ~13 keys: allow ~4 sigma
    assert abs(counts["train"] / 2000 - 0.8) < 0.035
    assert abs(counts["validation"] / 2000 - 0.1) < 0.03
    assert abs(counts["test"] / 2000 - 0.1) < 0.03


def test_fractions_and_salt_change_the_assignment() -> None:
    half = Counter(assign_split(key, (0.5, 0.0, 0.5)) for key in KEYS)
    assert half["validation"] == 0 and abs(half["train"] / 2000 - 0.5) < 0.05
    assert Counter(assign_split(key, (0.0, 0.0, 1.0)) for key in KEYS) == {"test": 2000}
    salted = [assign_split(key, salt="v2") for key in KEYS]
    moved = sum(a != b for a, b in zip(salted, (assign_split(key) for key in KEYS)))
    assert 200 < moved < 800  # a new salt reshuffles about 1 - (0.8² + 0.1² + 0.1²) = 34 %
    with pytest.raises(ValueError):
        assign_split("x", (0.5, 0.5))


def test_split_keys_by_poi_and_by_cell() -> None:
    by_poi, by_cell = SplitsConfig(), SplitsConfig(by="cell", cell_size_deg=0.5)
    a, b = Poi("a", 45.10, 7.10), Poi("b", 45.40, 7.45)
    far = Poi("c", 45.60, 7.10)
    assert split_key_for(a, by_poi) == "a"
    assert split_key_for(a, by_cell) == split_key_for(b, by_cell) == "cell:90:14"
    assert split_key_for(far, by_cell) == "cell:91:14"
    assert split_key_for(Poi("s", -0.1, -0.1), by_cell) == "cell:-1:-1"  # floor, not truncation
    assert split_for(a, by_cell) == split_for(b, by_cell)


def _tiles_of_pois(pois: list[Poi], cfg: SplitsConfig, half: float = 0.004) -> list[tuple[str, list[float], str]]:
    """Three overlapping tiles per POI (like a 512 px tile every 256 px), each in the POI's split."""
    tiles = []
    for poi in pois:
        split = split_for(poi, cfg)
        for t, dx in enumerate((-half, 0.0, half)):
            lon = poi.lon + dx
            tiles.append((f"{poi.poi_id}_t{t:04d}", [lon - half, poi.lat - half, lon + half, poi.lat + half], split))
    return tiles


def test_cell_split_has_no_cross_split_overlap_and_poi_split_does() -> None:
    # 60 POIs on a 0.006° lattice inside cell centres: neighbours' footprints overlap
    pois = [Poi(f"p{c}x{i}", 10.25 + 0.5 * c + 0.006 * (i // 6), 20.25 + 0.006 * (i % 6)) for c in range(6) for i in range(10)]
    by_cell = SplitsConfig(by="cell", cell_size_deg=0.5)
    by_poi = SplitsConfig(by="poi")
    assert len({split_for(p, by_cell) for p in pois}) > 1  # cells differ, so the zero below is not trivial
    cell_report = overlap_report(_tiles_of_pois(pois, by_cell))
    poi_report = overlap_report(_tiles_of_pois(pois, by_poi))
    assert cell_report.tiles == poi_report.tiles == 180
    assert cell_report.overlapping_pairs == 0
    assert poi_report.overlapping_pairs > 0
    assert sum(poi_report.pairs_by_splits.values()) == poi_report.overlapping_pairs
    assert poi_report.to_json()["examples"]


def test_bucketed_report_matches_brute_force() -> None:
    rng = random.Random(7)
    tiles = []
    for i in range(300):
        w, s = rng.uniform(0, 1.0), rng.uniform(0, 1.0)
        size = rng.uniform(0.005, 0.15)  # some boxes span several buckets
        tiles.append((f"k{i}", [w, s, w + size, s + size], rng.choice(["train", "validation", "test"])))
    expected = sum(
        1
        for i, (_, a, sa) in enumerate(tiles)
        for (_, b, sb) in tiles[:i]
        if sa != sb and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    )
    assert expected > 0
    assert overlap_report(tiles, bucket_deg=0.05).overlapping_pairs == expected


def test_touching_footprints_do_not_overlap() -> None:
    report = OverlapReport()
    report.add("a", [0.0, 0.0, 0.1, 0.1], "train")
    assert report.add("b", [0.1, 0.0, 0.2, 0.1], "test") == 0
    assert report.add("c", [0.05, 0.05, 0.15, 0.15], "test") == 1  # overlaps a (train), not b (same split)
    with pytest.raises(ValueError):
        report.add("d", [0.2, 0.0, 0.1, 0.1], "test")
