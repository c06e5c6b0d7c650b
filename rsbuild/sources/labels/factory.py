"""Build the configured label source."""

from __future__ import annotations

from rsbuild.config import LabelsConfig
from rsbuild.schemes import get_scheme
from rsbuild.sources.labels.base import LabelSource
from rsbuild.sources.labels.cog import CogLabelSource
from rsbuild.sources.labels.earthengine import EarthEngineLabelSource
from rsbuild.sources.labels.stac import StacLabelSource
from rsbuild.sources.stac import href_signer


def make_label_source(cfg: LabelsConfig) -> LabelSource:
    """Build the configured label source (Earth Engine sources check their credentials here)."""
    if cfg.source == "earthengine":
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
    assert cfg.catalog is not None and cfg.collection is not None
    signer = href_signer(cfg.sign_hrefs, "labels.sign_hrefs")  # a missing extra stops before any search
    source = StacLabelSource(cfg.catalog, cfg.collection, cfg.asset, scheme, cfg.version)
    # StacLabelSource does not take these yet: its finder gets the item interval and the signer.
    source.finder.datetime = cfg.datetime
    source.finder.signer = signer
    return source
