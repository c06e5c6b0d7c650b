"""Land-cover COGs found in a STAC collection, mosaicked in item order (first valid pixel wins)."""

from __future__ import annotations

import numpy as np

from rsbuild.grid import bbox_wgs84
from rsbuild.records import Grid, Scene
from rsbuild.schemes import Scheme
from rsbuild.sources import raster_io
from rsbuild.sources.labels.base import LabelSource, read_codes
from rsbuild.sources.stac import ItemFinder, SearchError


class StacLabelSource(LabelSource):
    """Land-cover COGs found in a STAC collection, mosaicked onto the grid."""

    def __init__(self, catalog: str, collection: str, asset: str, scheme: Scheme, version: str = "") -> None:
        self.finder = ItemFinder(catalog, collection)
        self.asset = asset
        self.scheme = scheme
        self.name = collection
        self.version = version

    def read(self, grid: Grid, scene: Scene | None = None) -> np.ndarray:
        try:
            hrefs = self.finder.asset_hrefs(bbox_wgs84(grid), self.asset)
        except SearchError as exc:
            raise raster_io.RasterReadError(f"label search in {self.name!r} failed: {exc}", transient=exc.transient) from None
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
