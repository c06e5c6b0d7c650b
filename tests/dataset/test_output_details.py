"""Output details a first real run meets: no empty folders, a POI map of the POIs' area, a
synthetic dataset's card that claims no source licences."""

from __future__ import annotations

from pathlib import Path

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.plots import WORLD, map_extent
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.schemes import get_scheme
from tests.dataset.test_shards import make_sample

SCHEME = get_scheme("esa_worldcover")


def _build(out: Path, **output) -> str:
    with DatasetWriter(out, OutputConfig(**output), SplitsConfig(), CaptionsConfig(), SCHEME) as writer:
        for i in range(3):
            writer.write(make_sample(f"p{i}_t0000", seed=i))
    writer.close()
    return (out / "README.md").read_text(encoding="utf-8")


def test_no_empty_stills_or_overlay_folders(tmp_path: Path) -> None:
    _build(tmp_path)
    assert not (tmp_path / "mapbox_stills").exists() and not (tmp_path / "overlays").exists()
    assert any((tmp_path / "images").rglob("*.png")) and any((tmp_path / "metadata").rglob("*.json"))


def test_synthetic_card_claims_no_copernicus_or_worldcover_licence(tmp_path: Path) -> None:
    real = _build(tmp_path / "real")
    synthetic = _build(tmp_path / "synthetic", synthetic=True)
    assert "Copernicus Sentinel data" in real and "ESA WorldCover project" in real
    licences = synthetic.split("## Source licences", 1)[1].split("##", 1)[0]
    assert "synthetic" in licences and "no Copernicus Sentinel data" in licences
    assert "Contains modified Copernicus" not in synthetic and "CC-BY-4.0" not in licences


def test_poi_map_zooms_to_the_pois() -> None:
    west, east, south, north = map_extent([(13.35, 52.45), (13.55, 52.55)])
    assert 13.0 < west < 13.35 and 13.55 < east < 14.0 and 52.0 < south < 52.45 and 52.55 < north < 53.0
    assert map_extent([]) == WORLD
    assert map_extent([(-179.95, 89.95), (179.95, -89.95)]) == WORLD  # clamped to the world
