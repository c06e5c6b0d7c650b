"""Sentinel-2 L2A asset layouts -> canonical bands with their radiometric rules.

Catalogs name the same files differently (Earth Search v1 ``red``, Earth Search v0 and
Planetary Computer ``B04``, Copernicus Data Space ``B04_10m``). A layout is a row of
``LAYOUTS`` (data, not code): which asset key holds each canonical band, how to recognise
the layout from an item, and how to derive scale/offset when the item does not declare them.

Scale, offset and nodata come, first found wins, from:

1. the asset itself: ``raster:scale`` / ``raster:offset`` / ``nodata`` (STAC 1.1, raster v2,
   as CDSE publishes), ``raster:bands[0]`` (raster v1, as Earth Search v1 publishes), or the
   first entry of ``bands`` (STAC 1.1);
2. the item's properties (the same fields at item level);
3. the layout's rule for catalogs that declare nothing on the item (Planetary Computer, Earth
   Search v0, and Copernicus Data Space items that leave it to the collection's ``item_assets``):
   reflectance bands are DN / 10000, and from processing baseline 04.00 on the DN carry
   ``BOA_ADD_OFFSET = -1000``, i.e. offset -0.1 (unless the catalog says it already removed it);
4. defaults: scale 1, offset 0, the layout's nodata (0 for every Sentinel-2 L2A product).

One rule comes before all of these for the reflectance offset: where the DN carry no
``BOA_ADD_OFFSET`` the offset is 0 whatever the item declares. That is the case when the
catalog says it removed the offset itself (Earth Search v1 ``sentinel-2-l2a`` sets
``earthsearch:boa_offset_applied: true`` and still declares ``raster:bands`` offset -0.1: the
flag is the truth, Element84/earth-search#9), and for products of a baseline before 04.00
(ESA's DN are reflectance x 10000 there; the baseline, not the sensing date, decides, since
Collection 1 reprocessed 2016 scenes at 05.00). Known exceptions: some Earth Search v1
``sentinel-2-l2a`` items flagged ``false`` hold COGs whose offset was removed anyway
(cirrus-geo/cirrus-earth-search#33, Element84/earth-search#66 and #71); nothing in the item
tells them apart, so rsbuild applies the declared -0.1 there and the ``earth-search-c1`` preset
(Collection 1: ESA's DN unchanged, offsets declared per item, no flag) is the default.

Items may be plain dicts or ``pystac.Item``-like objects (anything with ``to_dict()``);
pystac itself is imported only in ``rsbuild.sources.stac``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rsbuild.records import BandAsset, Scene

CANONICAL_BANDS = ("red", "green", "blue", "visual", "scl")
REFLECTANCE_BANDS = frozenset({"red", "green", "blue"})
# Every Sentinel-2 L2A reflectance band (B10, cirrus, is not in L2A products) and its native pixel size
SPECTRAL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
SPECTRAL_RESOLUTION_M = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
                         "B8A": 20, "B09": 60, "B11": 20, "B12": 20}
QUANTIFICATION = 1e-4  # Sentinel-2 L2A BOA_QUANTIFICATION_VALUE = 10000
BOA_ADD_OFFSET = -0.1  # -1000 DN / 10000, in products of processing baseline >= 04.00
OFFSET_BASELINE = (4, 0)

_BASELINE_IN_PRODUCT_ID = re.compile(r"_N(\d{2})(\d{2})_")


@dataclass(frozen=True)
class Layout:
    """How one catalog publishes Sentinel-2 L2A assets."""

    name: str
    keys: Mapping[str, str]  # canonical band -> asset key
    detect_property_prefix: str | None = None  # tells apart layouts with the same keys
    derive_reflectance: bool = False  # catalog declares no scale/offset: derive from baseline
    baseline_properties: tuple[str, ...] = ()
    product_id_properties: tuple[str, ...] = ()  # baseline fallback: "_N0510_" in a product id
    offset_removed_property: str | None = None  # True = the catalog already removed BOA_ADD_OFFSET
    nodata: float | None = 0.0
    spectral_keys: Mapping[str, str] = field(default_factory=dict)  # S2 band id (B01 ... B12) -> asset key


_B_KEYS = {"red": "B04", "green": "B03", "blue": "B02", "visual": "visual", "scl": "SCL"}
_B_SPECTRAL = {band: band for band in SPECTRAL_BANDS}
_EARTH_SEARCH_SPECTRAL = dict(zip(SPECTRAL_BANDS, ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3",
                                                   "nir", "nir08", "nir09", "swir16", "swir22")))
_CDSE_SPECTRAL = {band: f"{band}_{SPECTRAL_RESOLUTION_M[band]}m" for band in SPECTRAL_BANDS}

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            name="earth-search-v1",
            keys={"red": "red", "green": "green", "blue": "blue", "visual": "visual", "scl": "scl"},
            baseline_properties=("s2:processing_baseline",),
            product_id_properties=("s2:product_uri",),
            offset_removed_property="earthsearch:boa_offset_applied",  # sentinel-2-l2a only; c1 has none
            spectral_keys=_EARTH_SEARCH_SPECTRAL,
        ),
        Layout(
            name="cdse",
            keys={"red": "B04_10m", "green": "B03_10m", "blue": "B02_10m", "visual": "TCI_10m", "scl": "SCL_20m"},
            derive_reflectance=True,  # items may leave raster:scale/offset to the collection's item_assets
            baseline_properties=("processing:version",),
            spectral_keys=_CDSE_SPECTRAL,
        ),
        Layout(
            name="planetary-computer",
            keys=_B_KEYS,
            detect_property_prefix="s2:",
            derive_reflectance=True,
            baseline_properties=("s2:processing_baseline",),
            product_id_properties=("s2:product_uri",),
            spectral_keys=_B_SPECTRAL,
        ),
        Layout(
            name="earth-search-v0",
            keys=_B_KEYS,
            detect_property_prefix="sentinel:",
            derive_reflectance=True,
            baseline_properties=("sentinel:processing_baseline",),
            product_id_properties=("sentinel:product_id",),
            offset_removed_property="sentinel:boa_offset_applied",
            spectral_keys=_B_SPECTRAL,
        ),
    )
}


def item_as_dict(item: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A STAC item as a plain dict, asset hrefs made absolute for pystac-like items."""
    if isinstance(item, Mapping):
        return dict(item)
    data = item.to_dict()
    for key, asset in getattr(item, "assets", {}).items():
        absolute = asset.get_absolute_href() if hasattr(asset, "get_absolute_href") else None
        if absolute and key in data.get("assets", {}):
            data["assets"][key]["href"] = absolute
    return data


def detect_layout(item: Mapping[str, Any] | Any) -> Layout | None:
    """The layout whose red-band key is among the item's assets (property prefix breaks ties)."""
    data = item_as_dict(item)
    assets = data.get("assets") or {}
    matches = [layout for layout in LAYOUTS.values() if layout.keys["red"] in assets]
    if len(matches) > 1:
        properties = data.get("properties") or {}
        preferred = [
            layout
            for layout in matches
            if layout.detect_property_prefix
            and any(name.startswith(layout.detect_property_prefix) for name in properties)
        ]
        matches = preferred or matches
    return matches[0] if matches else None


def get_layout(name: str) -> Layout:
    """A layout by its config name (``scenes.layout``)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown asset layout {name!r}; choose one of {', '.join(LAYOUTS)} or 'auto'") from None


def resolve_assets(item: Mapping[str, Any] | Any, layout: str = "auto") -> dict[str, BandAsset]:
    """Map canonical band names (``red green blue visual scl``) to the item's assets.

    Bands the item does not have are absent from the result; an item no layout
    recognises (with ``layout="auto"``) resolves to ``{}``.
    """
    return _resolve(item_as_dict(item), layout)[1]


def resolve_spectral(item: Mapping[str, Any] | Any, layout: str = "auto") -> dict[str, BandAsset]:
    """Map Sentinel-2 band ids (``B01`` ... ``B12``) to the item's assets, with the same scale /
    offset rules as the RGB bands (every one is a reflectance band). Absent bands are left out."""
    data = item_as_dict(item)
    chosen = detect_layout(data) if layout == "auto" else get_layout(layout)
    if chosen is None:
        return {}
    return _band_assets(data, chosen, chosen.spectral_keys, _always)


def _always(band: str) -> bool:
    return True


def _band_assets(
    data: Mapping[str, Any], layout: Layout, keys: Mapping[str, str], is_reflectance: Callable[[str], bool]
) -> dict[str, BandAsset]:
    assets = data.get("assets") or {}
    properties = data.get("properties") or {}
    resolved: dict[str, BandAsset] = {}
    for band, key in keys.items():
        asset = assets.get(key)
        if not asset or not asset.get("href"):
            continue
        scale, offset, nodata = _radiometry(is_reflectance(band), asset, properties, layout)
        resolved[band] = BandAsset(key=key, href=asset["href"], scale=scale, offset=offset, nodata=nodata)
    return resolved


def _resolve(data: Mapping[str, Any], layout: str) -> tuple[Layout | None, dict[str, BandAsset]]:
    chosen = detect_layout(data) if layout == "auto" else get_layout(layout)
    if chosen is None:
        return None, {}
    keys = {band: chosen.keys[band] for band in CANONICAL_BANDS}
    return chosen, _band_assets(data, chosen, keys, REFLECTANCE_BANDS.__contains__)


def _radiometry(
    reflectance: bool, asset: Mapping[str, Any], properties: Mapping[str, Any], layout: Layout
) -> tuple[float, float, float | None]:
    declared = [_declared(asset), _declared(properties)]
    if reflectance and not _dn_carry_boa_offset(properties, layout):
        declared.insert(0, {"offset": 0.0})
    if layout.derive_reflectance and reflectance:
        declared.append({"scale": QUANTIFICATION, "offset": _derived_offset(properties, layout)})
    declared.append({"scale": 1.0, "offset": 0.0, "nodata": layout.nodata})
    scale = next(source["scale"] for source in declared if source.get("scale") is not None)
    offset = next(source["offset"] for source in declared if source.get("offset") is not None)
    nodata = next((source["nodata"] for source in declared if source.get("nodata") is not None), None)
    return float(scale), float(offset), None if nodata is None else float(nodata)


def _declared(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Scale / offset / nodata an asset (or item properties) declares, in any raster flavour."""
    found: dict[str, Any] = {
        "scale": obj.get("raster:scale"),
        "offset": obj.get("raster:offset"),
        "nodata": obj.get("nodata", obj.get("raster:nodata")),
    }
    for band_list, prefix in (("raster:bands", ""), ("bands", "raster:")):
        bands = obj.get(band_list)
        if isinstance(bands, list) and bands and isinstance(bands[0], Mapping):
            first = bands[0]
            for field in ("scale", "offset"):
                if found[field] is None:
                    found[field] = first.get(prefix + field)
            if found["nodata"] is None:
                found["nodata"] = first.get("nodata", first.get("raster:nodata"))
    if isinstance(found["nodata"], str):  # "nan", "inf": not a usable integer nodata here
        found["nodata"] = None
    return found


def processing_baseline(properties: Mapping[str, Any], layout: Layout) -> tuple[int, int] | None:
    """The item's processing baseline as (major, minor), from its properties or product id."""
    for name in layout.baseline_properties:
        value = properties.get(name)
        if value is not None:
            match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(value))
            if match:
                return int(match.group(1)), int(match.group(2))
    for name in layout.product_id_properties:
        match = _BASELINE_IN_PRODUCT_ID.search(str(properties.get(name, "")))
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def _dn_carry_boa_offset(properties: Mapping[str, Any], layout: Layout) -> bool:
    """False when the DN surely hold no BOA_ADD_OFFSET: the catalog removed it, or baseline < 04.00."""
    if layout.offset_removed_property and properties.get(layout.offset_removed_property) is True:
        return False
    baseline = processing_baseline(properties, layout)
    return baseline is None or baseline >= OFFSET_BASELINE


def _derived_offset(properties: Mapping[str, Any], layout: Layout) -> float:
    baseline = processing_baseline(properties, layout)
    known_new = baseline is not None and baseline >= OFFSET_BASELINE
    return BOA_ADD_OFFSET if known_new and _dn_carry_boa_offset(properties, layout) else 0.0


def scene_from_item(
    item: Mapping[str, Any] | Any,
    layout: str = "auto",
    signer: Callable[[str], str] | None = None,
    *,
    cloud_property: str = "eo:cloud_cover",
) -> Scene:
    """A ``Scene`` from a STAC item: canonical assets, CRS, grid of the red band, bbox, date, cloud.

    The CRS comes from ``proj:code`` (or a raw ``proj:epsg``), at item level or else on the
    red asset (CDSE puts it there). ``signer`` rewrites every asset href (e.g. Planetary
    Computer SAS signing).
    """
    data = item_as_dict(item)
    properties = data.get("properties") or {}
    chosen, assets = _resolve(data, layout)
    red_key = chosen.keys["red"] if chosen else None
    red_asset = (data.get("assets") or {}).get(red_key) or {}
    transform = red_asset.get("proj:transform", properties.get("proj:transform"))
    shape = red_asset.get("proj:shape", properties.get("proj:shape"))
    cloud = properties.get(cloud_property)
    scene = Scene(
        id=str(data.get("id", "")),
        collection=str(data.get("collection") or ""),
        datetime=str(properties.get("datetime") or properties.get("start_datetime") or ""),
        cloud_cover=None if cloud is None else float(cloud),
        crs=crs_of(properties) or crs_of(red_asset),
        bbox=item_bbox(data),
        assets=assets,
        transform=tuple(float(v) for v in transform[:6]) if transform else None,
        shape=(int(shape[0]), int(shape[1])) if shape else None,
        properties=dict(properties),
        spectral=_band_assets(data, chosen, chosen.spectral_keys, _always) if chosen else {},
    )
    return sign_scene(scene, signer) if signer else scene


def crs_of(obj: Mapping[str, Any]) -> str | None:
    """``proj:code`` of an item's properties or an asset, or ``EPSG:<proj:epsg>`` from raw dicts."""
    code = obj.get("proj:code")
    if code:
        return str(code)
    epsg = obj.get("proj:epsg")
    return f"EPSG:{int(epsg)}" if epsg else None


def sign_scene(scene: Scene, signer: Callable[[str], str]) -> Scene:
    """The scene with every asset href passed through ``signer``."""
    signed = {band: replace(asset, href=signer(asset.href)) for band, asset in scene.assets.items()}
    spectral = {band: replace(asset, href=signer(asset.href)) for band, asset in scene.spectral.items()}
    return replace(scene, assets=signed, spectral=spectral)


def item_bbox(data: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """An item's WGS84 (west, south, east, north): its bbox (2D or 3D) or its geometry's bounds."""
    bbox = data.get("bbox")
    if bbox and len(bbox) >= 4:
        if len(bbox) == 6:  # 3D bbox: (minx, miny, minz, maxx, maxy, maxz)
            return (float(bbox[0]), float(bbox[1]), float(bbox[3]), float(bbox[4]))
        return (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    points = list(_coordinates((data.get("geometry") or {}).get("coordinates", [])))
    if not points:
        raise ValueError(f"STAC item {data.get('id')!r} has neither bbox nor geometry")
    xs, ys = zip(*points)
    return (min(xs), min(ys), max(xs), max(ys))


def _coordinates(nested: Any):
    """Every (x, y) pair in a GeoJSON coordinates array of any depth."""
    if nested and isinstance(nested[0], (int, float)):
        yield (float(nested[0]), float(nested[1]))
        return
    for part in nested:
        yield from _coordinates(part)
