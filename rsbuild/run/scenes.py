"""`rsbuild scenes`: the dry run. Which scene each POI would get, found by the real scene search,
without reading imagery or labels. With ``aoi_cloud`` it reads only the SCL window of each
candidate scene over the POI's AOI (no band, visual or label request), measures the AOI's cloud
share and, like the fetch, takes the clearest of the best ``scenes.aoi_cloud_candidates``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from rsbuild.chips.imagery import cloud_mask
from rsbuild.concurrency import ordered_map
from rsbuild.config import Config
from rsbuild.errors import SampleError
from rsbuild.grid import NATIVE_RESOLUTION_M, aoi_grid
from rsbuild.records import Failure, Poi, Scene
from rsbuild.run.pipeline import make_searcher
from rsbuild.sources import raster_io
from rsbuild.sources.pois import PoiReader


@dataclass(frozen=True)
class SceneChoice:
    """One POI's outcome: the scene the fetch would start from, or why there is none."""

    poi: Poi
    scene: Scene | None
    reason: str = ""  # failure reason and detail when there is no scene
    aoi_cloud: float | None = None  # cloudy share of the AOI's observed SCL pixels, when read

    @property
    def date(self) -> str:
        return self.scene.datetime[:10] if self.scene else ""


def scl_cloud_share(cfg: Config, poi: Poi, scene: Scene) -> float | None:
    """The share of the AOI's observed SCL pixels (SCL != 0) in ``imagery.cloud_classes``, read from
    the scene's SCL asset only (its header too when the item has no ``proj`` fields); None without SCL."""
    scl_asset = scene.assets.get("scl")
    if scl_asset is None:
        return None
    crs, transform = scene.crs, scene.transform
    if crs is None:
        crs = raster_io.raster_info(scl_asset.href).grid.crs
    # without the 10 m transform the AOI snaps to multiples of 10 m (the SCL's own grid is 20 m)
    grid = aoi_grid(poi, crs, cfg.imagery.aoi_size, transform)
    scl = raster_io.read_on_grid(scl_asset.href, grid, fill=0)
    observed = scl != 0
    if not observed.any():
        return 1.0
    return float(cloud_mask(scl[observed], cfg.imagery.cloud_classes).mean())


def _clearest(cfg: Config, poi: Poi, ranked: list[Scene]) -> SceneChoice:
    """The fetch's choice among the ranked scenes: the clearest AOI (ties keep the search order)."""
    shares = [scl_cloud_share(cfg, poi, scene) for scene in ranked]
    measured = [i for i, share in enumerate(shares) if share is not None]
    if len(measured) < 2:  # nothing to compare: the fetch keeps the search's best
        return SceneChoice(poi, ranked[0], "" if shares[0] is not None else "no SCL asset", aoi_cloud=shares[0])
    best = min(measured, key=lambda i: (shares[i], i))
    return SceneChoice(poi, ranked[best], aoi_cloud=shares[best])


def choose_scenes(cfg: Config, limit: int | None = None, *, aoi_cloud: bool = False) -> Iterator[SceneChoice]:
    """The best scene per POI, in POI order (at most ``limit`` POIs); with ``aoi_cloud``, the
    clearest over the AOI among the best ``scenes.aoi_cloud_candidates`` (SCL reads in threads)."""
    searcher = make_searcher(cfg)
    half_m = cfg.imagery.aoi_size * NATIVE_RESOLUTION_M / 2
    candidates = max(1, cfg.scenes.aoi_cloud_candidates) if aoi_cloud else 1

    def choose(poi: Poi) -> SceneChoice:
        try:
            ranked = searcher.rank(poi, half_m, candidates)
        except SampleError as exc:
            return SceneChoice(poi, None, f"search_error: {str(exc)[:200]}")
        if isinstance(ranked, Failure):
            return SceneChoice(poi, None, f"{ranked.reason}: {ranked.detail}".rstrip(": "))
        if not aoi_cloud:
            return SceneChoice(poi, ranked[0])
        try:
            return _clearest(cfg, poi, ranked)
        except SampleError as exc:
            return SceneChoice(poi, ranked[0], f"scl_read_error: {str(exc)[:200]}")

    pois = (poi for count, poi in enumerate(PoiReader(cfg.pois)) if limit is None or count < limit)
    workers = cfg.imagery.read_workers if aoi_cloud else 1
    with ThreadPoolExecutor(workers, thread_name_prefix="rsbuild-scenes") as pool:
        yield from ordered_map(choose, pois, pool, workers)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def scenes_table(choices: list[SceneChoice], aoi_cloud_candidates: int = 1, *, aoi_cloud: bool = False) -> Table:
    """POI → scene id, date, scene cloud, AOI cloud, or the reason (every cell printed literally)."""
    reads = "SCL windows only" if aoi_cloud else "no pixels read"
    table = Table(title=f"scenes for {len(choices)} POIs (dry run: {reads})")
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
            (_percent(None if choice.aoi_cloud is None else 100 * choice.aoi_cloud) if aoi_cloud else "not read")
            if scene else "-",
            choice.reason,
        ]
        table.add_row(*(Text(cell) for cell in cells))
    if aoi_cloud:
        caption = "AOI cloud: share of the AOI's SCL pixels in imagery.cloud_classes"
        if aoi_cloud_candidates > 1:
            caption += f", the clearest of the best {aoi_cloud_candidates} scenes (as the fetch chooses)"
    else:
        caption = "AOI cloud comes from the scene's SCL pixels: --aoi-cloud reads them (SCL only), the fetch measures it"
        if aoi_cloud_candidates > 1:
            caption += f"; the fetch then takes the clearest AOI among the best {aoi_cloud_candidates} scenes"
    table.caption = Text(caption)
    return table
