"""Label sources: land-cover rasters brought onto the chip grid with nearest-neighbour.

A `LabelSource` returns raw class codes on a `Grid`; `schemes.Scheme.encode` turns them into
class indices (unknown codes become nodata and are counted). Sources differ only in where the
raster comes from: one COG (`CogLabelSource`) or the items of a STAC collection
(`StacLabelSource`, mosaicked in item order, first valid pixel wins).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from rsbuild import raster_io
from rsbuild.config import LabelsConfig
from rsbuild.grid import bbox_wgs84
from rsbuild.schemes import Scheme, get_scheme
from rsbuild.types import Grid, Scene


def read_codes(href: str, grid: Grid, fill: int) -> np.ndarray:
    """Class codes of one raster on ``grid`` (nearest); its own nodata and outside become ``fill``."""
    codes = raster_io.read_on_grid(href, grid, resampling="nearest", fill=fill)
    nodata = raster_io.raster_info(href).nodata
    if nodata is not None and nodata != fill:
        codes[codes == nodata] = fill
    return codes


class LabelSource(ABC):
    """Where land-cover codes come from. Implementations must be thread-safe."""

    scheme: Scheme
    name: str
    version: str

    @property
    def fill_code(self) -> int:
        """The code written where the source has no data."""
        return int(self.scheme.nodata_codes[0]) if self.scheme.nodata_codes else 255

    @abstractmethod
    def read(self, grid: Grid, scene: Scene | None = None) -> np.ndarray:
        """Raw class codes on ``grid`` (H, W); raises raster_io.RasterReadError."""

    def describe(self) -> dict[str, Any]:
        """Provenance recorded in every sample's metadata."""
        return {"source": self.name, "scheme": self.scheme.name, "version": self.version}


class CogLabelSource(LabelSource):
    """One land-cover COG (any CRS), path or URL."""

    def __init__(self, url: str, scheme: Scheme, version: str = "") -> None:
        self.url = url
        self.scheme = scheme
        self.name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        self.version = version

    def read(self, grid: Grid, scene: Scene | None = None) -> np.ndarray:
        return read_codes(self.url, grid, self.fill_code)


class StacLabelSource(LabelSource):
    """Land-cover COGs found in a STAC collection, mosaicked onto the grid."""

    def __init__(self, catalog: str, collection: str, asset: str, scheme: Scheme, version: str = "") -> None:
        from rsbuild.stac import ItemFinder

        self.finder = ItemFinder(catalog, collection)
        self.asset = asset
        self.scheme = scheme
        self.name = collection
        self.version = version

    def read(self, grid: Grid, scene: Scene | None = None) -> np.ndarray:
        from rsbuild.stac import SearchError

        try:
            hrefs = self.finder.asset_hrefs(bbox_wgs84(grid), self.asset)
        except SearchError as exc:
            raise raster_io.RasterReadError(f"label search in {self.name!r} failed: {exc}") from None
        if not hrefs:
            raise raster_io.RasterReadError(f"no item of label collection {self.name!r} covers the AOI")
        fill = self.fill_code
        mosaic = np.full((grid.height, grid.width), fill, dtype=np.uint16)
        for href in hrefs:
            codes = read_codes(href, grid, fill)
            empty = mosaic == fill
            mosaic[empty] = codes[empty]
            if not (mosaic == fill).any():
                break
        return mosaic


def make_label_source(cfg: LabelsConfig) -> LabelSource:
    """Build the configured label source (Earth Engine sources check their credentials here)."""
    if cfg.source == "earthengine":
        from rsbuild.earthengine import EarthEngineLabelSource

        assert cfg.ee_dataset is not None  # derived by LabelsConfig
        return EarthEngineLabelSource(
            cfg.ee_dataset,
            window_days=cfg.ee_window_days,
            project=cfg.ee_project,
            credentials=cfg.ee_credentials,
            url=cfg.ee_url,
            max_in_flight=cfg.ee_max_in_flight,
            version=cfg.version,
        )
    scheme = get_scheme(cfg.scheme)
    if cfg.source == "cog":
        assert cfg.url is not None  # validated by LabelsConfig
        return CogLabelSource(cfg.url, scheme, cfg.version)
    from rsbuild.stac import href_signer

    assert cfg.catalog is not None and cfg.collection is not None
    signer = href_signer(cfg.sign_hrefs, "labels.sign_hrefs")  # a missing extra stops before any search
    source = StacLabelSource(cfg.catalog, cfg.collection, cfg.asset, scheme, cfg.version)
    # StacLabelSource does not take these yet: its finder gets the item interval and the signer.
    source.finder.datetime = cfg.datetime
    source.finder.signer = signer
    return source
