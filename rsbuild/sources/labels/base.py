"""The label-source interface: land-cover codes brought onto the chip grid with nearest-neighbour.

A `LabelSource` returns raw class codes on a `Grid`; `schemes.Scheme.encode` turns them into
class indices (unknown codes become nodata and are counted). Sources differ only in where the
raster comes from: one COG (`cog`), the items of a STAC collection (`stac`), Earth Engine
(`earthengine`); `factory.make_label_source` builds the configured one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from rsbuild.records import Grid, Scene
from rsbuild.schemes import Scheme
from rsbuild.sources import raster_io


def read_codes(href: str, grid: Grid, fill: int) -> np.ndarray:
    """Class codes of one raster on ``grid`` (nearest); its own nodata and outside become ``fill``."""
    codes = raster_io.read_on_grid(href, grid, resampling="nearest", fill=fill, edge="labels")
    nodata = raster_io.raster_info(href, edge="labels").nodata
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
