"""`rsbuild scenes`: the dry run. Which scene each POI would get, found by the real scene search,
without reading a pixel (no COG, SCL or label request)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from rsbuild.config import Config
from rsbuild.errors import SampleError
from rsbuild.grid import NATIVE_RESOLUTION_M
from rsbuild.records import Failure, Poi, Scene
from rsbuild.run.pipeline import make_searcher
from rsbuild.sources.pois import PoiReader


@dataclass(frozen=True)
class SceneChoice:
    """One POI's outcome: the scene the fetch would start from, or why there is none."""

    poi: Poi
    scene: Scene | None
    reason: str = ""  # failure reason and detail when there is no scene

    @property
    def date(self) -> str:
        return self.scene.datetime[:10] if self.scene else ""


def choose_scenes(cfg: Config, limit: int | None = None) -> Iterator[SceneChoice]:
    """The best scene per POI, in POI order (at most ``limit`` POIs)."""
    searcher = make_searcher(cfg)
    half_m = cfg.imagery.aoi_size * NATIVE_RESOLUTION_M / 2
    for count, poi in enumerate(PoiReader(cfg.pois)):
        if limit is not None and count >= limit:
            return
        try:
            found = searcher.find(poi, half_m)
        except SampleError as exc:
            yield SceneChoice(poi, None, f"search_error: {str(exc)[:200]}")
            continue
        if isinstance(found, Failure):
            yield SceneChoice(poi, None, f"{found.reason}: {found.detail}".rstrip(": "))
        else:
            yield SceneChoice(poi, found)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def scenes_table(choices: list[SceneChoice], aoi_cloud_candidates: int = 1) -> Table:
    """POI → scene id, date, scene cloud, AOI cloud, or the reason (every cell printed literally)."""
    table = Table(title=f"scenes for {len(choices)} POIs (dry run: no pixels read)")
    for column in ("POI", "lat, lon", "scene", "date", "scene cloud", "AOI cloud", "note"):
        table.add_column(column)
    for choice in choices:
        scene = choice.scene
        cells = [
            choice.poi.poi_id,
            f"{choice.poi.lat:.5f}, {choice.poi.lon:.5f}",
            scene.id if scene else "-",
            choice.date or "-",
            _percent(scene.cloud_cover) if scene else "-",
            "not read",
            choice.reason,
        ]
        table.add_row(*(Text(cell) for cell in cells))
    caption = "AOI cloud comes from the scene's SCL pixels: the fetch measures it (aoi_cloud_share in KEY.json)"
    if aoi_cloud_candidates > 1:
        caption += f"; the fetch then takes the clearest AOI among the best {aoi_cloud_candidates} scenes"
    table.caption = Text(caption)
    return table
