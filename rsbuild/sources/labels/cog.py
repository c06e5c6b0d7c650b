"""One land-cover COG (any CRS) as a label source."""

from __future__ import annotations

import numpy as np

from rsbuild.records import Grid, Scene
from rsbuild.schemes import Scheme
from rsbuild.sources.labels.base import LabelSource, read_codes


class CogLabelSource(LabelSource):
    """One land-cover COG (any CRS), path or URL."""

    def __init__(self, url: str, scheme: Scheme, version: str = "") -> None:
        self.url = url
        self.scheme = scheme
        self.name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        self.version = version

    def read(self, grid: Grid, scene: Scene | None = None) -> np.ndarray:
        return read_codes(self.url, grid, self.fill_code)
