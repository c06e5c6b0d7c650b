"""Named presets for the public catalogs users point rsbuild at (data, not code).

A scene preset (``scenes.preset``) names one public Sentinel-2 L2A catalog: its STAC API root,
collection, asset layout (a row of ``rsbuild.sources.assets.LAYOUTS``, which holds the asset keys and the
scale / offset rules), cloud-cover property and how its hrefs are signed. A label preset
(``labels.preset``) names where a land-cover map comes from: a STAC collection (asset key, scheme,
signing, which year) or an Earth Engine dataset.

A preset only fills settings the config leaves out; whatever the config says wins, so
``preset = "planetary-computer"`` with ``catalog = "http://127.0.0.1:8080"`` searches a local
mirror that keeps Planetary Computer's layout. ``custom`` fills nothing.

This module imports nothing from rsbuild: ``config`` reads it while validating.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

CUSTOM = "custom"

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
CDSE_URL = "https://stac.dataspace.copernicus.eu/v1"
CDSE_S3_ENDPOINT = "https://eodata.dataspace.copernicus.eu"  # path-style; keys from the CDSE S3 keys manager

# Earth Engine datasets ``labels.ee_dataset`` may name, and the class scheme of each
# (rsbuild.sources.labels.earthengine.EE_DATASETS holds the rest: asset id, band, composite).
EE_DATASET_SCHEMES: dict[str, str] = {"dynamic_world": "dynamic_world", "esa_worldcover": "esa_worldcover"}


@dataclass(frozen=True)
class ScenePreset:
    """A public Sentinel-2 L2A catalog; ``None`` fields are left to the config's defaults."""

    description: str
    catalog: str | None = None
    collection: str | None = None
    layout: str | None = None  # key of rsbuild.sources.assets.LAYOUTS
    cloud_property: str | None = None
    sign_hrefs: str | None = None
    s3: Mapping[str, Any] | None = None  # rsbuild.config.S3Config fields, for s3:// hrefs


@dataclass(frozen=True)
class LabelPreset:
    """A land-cover source; ``None`` fields are left to the config's defaults."""

    description: str
    source: str | None = None
    catalog: str | None = None
    collection: str | None = None
    asset: str | None = None
    scheme: str | None = None
    sign_hrefs: str | None = None
    datetime: str | None = None  # which label items (a mid-year day picks one annual map)
    version: str | None = None
    ee_dataset: str | None = None


SCENE_PRESETS: dict[str, ScenePreset] = {
    CUSTOM: ScenePreset("any catalog: set scenes.catalog (and collection / layout when they differ from the defaults)"),
    "earth-search-v1": ScenePreset(
        "Element 84 Earth Search v1, collection sentinel-2-l2a (older; earthsearch:boa_offset_applied honoured, "
        "some scenes flagged false had the offset removed anyway: prefer earth-search-c1)",
        catalog=EARTH_SEARCH_URL,
        collection="sentinel-2-l2a",
        layout="earth-search-v1",
        cloud_property="eo:cloud_cover",
        sign_hrefs="none",
    ),
    "earth-search-c1": ScenePreset(
        "Element 84 Earth Search v1, Sentinel-2 Collection 1 (sentinel-2-c1-l2a: maintained, reprocessed to "
        "baseline >= 05.00, ESA's DN with scale/offset declared per item; the example config's default)",
        catalog=EARTH_SEARCH_URL,
        collection="sentinel-2-c1-l2a",
        layout="earth-search-v1",
        cloud_property="eo:cloud_cover",
        sign_hrefs="none",
    ),
    "planetary-computer": ScenePreset(
        "Microsoft Planetary Computer, collection sentinel-2-l2a (B0x keys, SAS-signed hrefs; extra 'pc')",
        catalog=PLANETARY_COMPUTER_URL,
        collection="sentinel-2-l2a",
        layout="planetary-computer",
        cloud_property="eo:cloud_cover",
        sign_hrefs="planetary-computer",
    ),
    "cdse": ScenePreset(
        "Copernicus Data Space Ecosystem, collection sentinel-2-l2a (B0x_10m keys, s3://eodata hrefs on CDSE's S3: keys needed)",
        catalog=CDSE_URL,
        collection="sentinel-2-l2a",
        layout="cdse",
        cloud_property="eo:cloud_cover",
        sign_hrefs="none",
        s3={"endpoint": CDSE_S3_ENDPOINT, "virtual_hosting": False},
    ),
}

LABEL_PRESETS: dict[str, LabelPreset] = {
    CUSTOM: LabelPreset("any source: set labels.source and its settings"),
    "esa-worldcover-pc": LabelPreset(
        "ESA WorldCover 2021 (v200) on Planetary Computer: collection esa-worldcover, asset map",
        source="stac",
        catalog=PLANETARY_COMPUTER_URL,
        collection="esa-worldcover",
        asset="map",
        scheme="esa_worldcover",
        sign_hrefs="planetary-computer",
        datetime="2021-07-01",  # the 2021 (v200) items, not the 2020 (v100) ones
        version="v200",
    ),
    "io-lulc-pc": LabelPreset(
        "Impact Observatory annual land cover v02 on Planetary Computer: collection io-lulc-annual-v02, asset data",
        source="stac",
        catalog=PLANETARY_COMPUTER_URL,
        collection="io-lulc-annual-v02",
        asset="data",
        scheme="io_lulc",
        sign_hrefs="planetary-computer",
        datetime="2023-07-01",  # one annual map (2023); set labels.datetime for another year
        version="v02",
    ),
    "dynamic-world-ee": LabelPreset(
        "Dynamic World V1 on Earth Engine: mode of 'label' over a window around the scene date",
        source="earthengine",
        scheme="dynamic_world",
        ee_dataset="dynamic_world",
    ),
    "esa-worldcover-ee": LabelPreset(
        "ESA WorldCover v200 on Earth Engine (band 'Map')",
        source="earthengine",
        scheme="esa_worldcover",
        ee_dataset="esa_worldcover",
    ),
}


def scene_preset_values(name: str) -> dict[str, Any]:
    """The settings scene preset ``name`` fills (ValueError naming ``scenes.preset`` if unknown)."""
    return _values(SCENE_PRESETS, name, "scenes.preset")


def label_preset_values(name: str) -> dict[str, Any]:
    """The settings label preset ``name`` fills (ValueError naming ``labels.preset`` if unknown)."""
    return _values(LABEL_PRESETS, name, "labels.preset")


def _values(table: Mapping[str, ScenePreset | LabelPreset], name: str, field: str) -> dict[str, Any]:
    try:
        preset = table[name]
    except KeyError:
        raise ValueError(f"{field} = {name!r} is not a known preset; choose one of {', '.join(table)}") from None
    return {f.name: getattr(preset, f.name) for f in fields(preset) if f.name != "description" and getattr(preset, f.name) is not None}


__all__ = [
    "CUSTOM",
    "EE_DATASET_SCHEMES",
    "LABEL_PRESETS",
    "SCENE_PRESETS",
    "LabelPreset",
    "ScenePreset",
    "label_preset_values",
    "scene_preset_values",
]
