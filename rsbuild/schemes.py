"""Land-cover class schemes as data: codes, caption-friendly names, colours, caption aliases.

A `Scheme` turns raw label codes into class indices (``encode``): index ``i`` means
``scheme.classes[i]``; ``NODATA_INDEX`` (255) marks nodata and codes the scheme does not know.
Class names are lowercase words a caption can use ("tree cover", "built-up area"); ``aliases``
are other words people write for the class ("forest", "city"). Within one scheme every term
(name or alias) belongs to exactly one class; terms may nest ("mangrove forest" contains
"forest"), so a matcher should prefer the longest term that matches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsbuild.errors import ConfigError

NODATA_INDEX = 255

_CODE_LIMIT = 65536  # lookup tables cover codes 0..65535 (uint8 / uint16 label rasters)


@dataclass(frozen=True)
class ClassInfo:
    """One land-cover class: raw code, caption-friendly name, display colour, caption aliases."""

    code: int
    name: str
    color: tuple[int, int, int]
    aliases: tuple[str, ...] = ()

    @property
    def terms(self) -> tuple[str, ...]:
        """The name followed by its aliases: every word that refers to this class."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Scheme:
    """A land-cover legend: ordered classes (index = position) and the codes meaning nodata."""

    name: str
    title: str
    version: str
    license: str
    classes: tuple[ClassInfo, ...]
    nodata_codes: tuple[int, ...] = ()
    _class_lut: np.ndarray = field(init=False, repr=False, compare=False)
    _unknown_lut: np.ndarray = field(init=False, repr=False, compare=False)
    _term_map: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < len(self.classes) < NODATA_INDEX:
            raise ValueError(f"scheme {self.name!r} needs 1..{NODATA_INDEX - 1} classes")
        codes = [c.code for c in self.classes]
        if len(set(codes)) != len(codes) or set(codes) & set(self.nodata_codes):
            raise ValueError(f"scheme {self.name!r} repeats a code or declares a class code as nodata")
        if any(not 0 <= code < _CODE_LIMIT for code in (*codes, *self.nodata_codes)):
            raise ValueError(f"scheme {self.name!r} has a code outside 0..{_CODE_LIMIT - 1}")
        object.__setattr__(self, "_term_map", _build_term_map(self.name, self.classes))
        class_lut, unknown_lut = _build_luts(self.classes, self.nodata_codes)
        object.__setattr__(self, "_class_lut", class_lut)
        object.__setattr__(self, "_unknown_lut", unknown_lut)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in index order."""
        return tuple(c.name for c in self.classes)

    def index_of(self, name: str) -> int:
        """Index of the class called ``name`` (exact name); ValueError when there is none."""
        for i, info in enumerate(self.classes):
            if info.name == name:
                return i
        raise ValueError(f"scheme {self.name!r} has no class {name!r}; its classes are {', '.join(self.names)}")

    def class_for_term(self, term: str) -> str | None:
        """Class name a caption word refers to (name or alias, case-insensitive), or None."""
        return self._term_map.get(" ".join(term.lower().split()))

    def terms(self) -> dict[str, str]:
        """Every lowercase term (names and aliases) mapped to its class name."""
        return dict(self._term_map)

    def encode(self, codes: np.ndarray, extra_nodata: Iterable[float] = ()) -> tuple[np.ndarray, int]:
        """Map raw label codes to class indices (uint8, ``NODATA_INDEX`` for nodata / unknown).

        ``extra_nodata`` adds nodata values of a particular raster (e.g. its GeoTIFF nodata tag).
        NaN counts as nodata. Returns the index array and the number of unknown-code pixels:
        codes that are neither a class nor a nodata value (they also become ``NODATA_INDEX``).
        """
        index, unknown = self.classify(codes, extra_nodata)
        return index, int(np.count_nonzero(unknown))

    def classify(self, codes: np.ndarray, extra_nodata: Iterable[float] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Like ``encode``, but returns the per-pixel boolean mask of unknown codes instead of a count."""
        arr = np.asarray(codes)
        extra = [v for v in extra_nodata if v is not None and not (isinstance(v, float) and math.isnan(v))]
        ignore = np.isin(arr, extra) if extra else None
        if arr.dtype.kind == "f":
            nan = np.isnan(arr)
            ignore = nan if ignore is None else ignore | nan
            integral = ~nan & (arr == np.floor(np.where(nan, 0, arr)))
            arr = np.where(integral, arr, -1)
        elif arr.dtype.kind not in "iu":
            raise ValueError(f"label codes must be numbers, got dtype {arr.dtype}")
        if arr.dtype == np.uint8 or arr.dtype == np.uint16:
            lookup = arr
            in_range = None
        else:
            in_range = (arr >= 0) & (arr < _CODE_LIMIT)
            lookup = np.where(in_range, arr, 0).astype(np.int64)
        index = self._class_lut[lookup]
        unknown = self._unknown_lut[lookup]
        if in_range is not None:
            index[~in_range] = NODATA_INDEX
            unknown |= ~in_range
        if ignore is not None:
            index[ignore] = NODATA_INDEX
            unknown &= ~ignore
        return index, unknown

    def colormap(self) -> np.ndarray:
        """(256, 3) uint8 RGB lookup table from class index to colour; nodata and unused are black."""
        table = np.zeros((256, 3), dtype=np.uint8)
        for i, info in enumerate(self.classes):
            table[i] = info.color
        return table

    def to_json(self) -> dict:
        """JSON-able legend (for metadata files and dataset cards)."""
        return {
            "name": self.name,
            "title": self.title,
            "version": self.version,
            "license": self.license,
            "nodata_codes": list(self.nodata_codes),
            "classes": [
                {"index": i, "code": c.code, "name": c.name, "color": list(c.color), "aliases": list(c.aliases)}
                for i, c in enumerate(self.classes)
            ],
        }


def _build_term_map(scheme_name: str, classes: Iterable[ClassInfo]) -> dict[str, str]:
    terms: dict[str, str] = {}
    for info in classes:
        for term in info.terms:
            if term != term.lower() or term != " ".join(term.split()):
                raise ValueError(f"scheme {scheme_name!r}: term {term!r} must be lowercase with single spaces")
            owner = terms.setdefault(term, info.name)
            if owner != info.name:
                raise ValueError(f"scheme {scheme_name!r}: term {term!r} names both {owner!r} and {info.name!r}")
    return terms


def _build_luts(classes: tuple[ClassInfo, ...], nodata_codes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    class_lut = np.full(_CODE_LIMIT, NODATA_INDEX, dtype=np.uint8)
    unknown_lut = np.ones(_CODE_LIMIT, dtype=bool)
    for i, info in enumerate(classes):
        class_lut[info.code] = i
        unknown_lut[info.code] = False
    unknown_lut[list(nodata_codes)] = False
    return class_lut, unknown_lut


def _hex(color: str) -> tuple[int, int, int]:
    value = int(color.lstrip("#"), 16)
    return (value >> 16 & 255, value >> 8 & 255, value & 255)


# Words people use for a kind of land cover, shared by the schemes that have such a class.
_WATER = ("river", "rivers", "lake", "lakes", "pond", "ponds", "reservoir", "reservoirs", "stream", "streams",
          "canal", "canals", "creek", "sea", "ocean", "bay", "lagoon", "estuary", "waterway", "water body",
          "water bodies", "open water", "surface water")
_TREES = ("forest", "forests", "forested area", "woodland", "woodlands", "woods", "wooded area", "trees",
          "tree", "tree canopy")
_SHRUBS = ("shrubland", "shrubs", "shrub", "scrub", "scrubland", "bushes", "bushland", "brushland", "thicket",
           "heathland")
_GRASS = ("grassland", "grasslands", "grass", "meadow", "meadows", "pasture", "pastures", "prairie", "savanna",
          "steppe", "lawn", "lawns")
_CROPS = ("cropland", "crops", "crop", "fields", "field", "farmland", "farmlands", "farm", "farms",
          "agricultural land", "agricultural fields", "agriculture", "arable land", "cultivated land",
          "crop fields", "cropfields")
_BUILT = ("built-up area", "built-up areas", "built-up", "built up area", "built area", "urban", "urban area",
          "urban areas", "buildings", "building", "settlement", "settlements", "town", "towns", "city",
          "cities", "village", "villages", "houses", "residential area", "suburbs", "developed land")
_BARE = ("bare ground", "bare soil", "bare land", "bare", "barren land", "barren", "bare rock", "rock", "rocks",
         "rocky", "sand", "sandy", "desert", "dunes", "exposed soil")
_SPARSE = ("sparse vegetation", "sparsely vegetated")
_SNOW = ("snow and ice", "snow", "ice", "glacier", "glaciers", "snowfield", "snowfields", "ice sheet",
         "snow cover", "snow-covered")
_WETLAND = ("wetland", "wetlands", "marsh", "marshes", "marshland", "swamp", "swamps", "bog", "bogs", "fen",
            "fens", "reeds", "reed beds", "peatland", "mire")
_PADDIES = ("rice paddies", "rice paddy", "paddies", "paddy fields")
_FLOODED = ("flooded vegetation", "flooded", "inundated vegetation", *_PADDIES)
_MANGROVES = ("mangroves", "mangrove", "mangrove forest", "mangrove forests")


def _aliases(name: str, *groups: tuple[str, ...]) -> tuple[str, ...]:
    """Merge alias groups in order, dropping duplicates and the class name itself."""
    seen: dict[str, None] = {}
    for group in groups:
        for term in group:
            if term != name:
                seen.setdefault(term, None)
    return tuple(seen)


def _cls(code: int, name: str, color: str, *groups: tuple[str, ...]) -> ClassInfo:
    return ClassInfo(code=code, name=name, color=_hex(color), aliases=_aliases(name, *groups))


ESA_WORLDCOVER = Scheme(
    name="esa_worldcover",
    title="ESA WorldCover 10 m",
    version="v200",
    license="CC-BY-4.0",
    classes=(
        _cls(10, "tree cover", "#006400", _TREES),
        _cls(20, "shrubland", "#ffbb22", _SHRUBS),
        _cls(30, "grassland", "#ffff4c", _GRASS),
        _cls(40, "cropland", "#f096ff", _CROPS, _PADDIES),
        _cls(50, "built-up area", "#fa0000", _BUILT),
        _cls(60, "bare or sparse vegetation", "#b4b4b4", _BARE, _SPARSE),
        _cls(70, "snow and ice", "#f0f0f0", _SNOW),
        _cls(80, "water", "#0064c8", _WATER, ("permanent water bodies",)),
        _cls(90, "herbaceous wetland", "#0096a0", _WETLAND),
        _cls(95, "mangroves", "#00cf75", _MANGROVES),
        _cls(100, "moss and lichen", "#fae6a0", ("moss", "mosses", "lichen", "lichens", "tundra")),
    ),
    nodata_codes=(0,),
)

DYNAMIC_WORLD = Scheme(
    name="dynamic_world",
    title="Google Dynamic World V1 (label band)",
    version="V1",
    license="CC-BY-4.0",
    classes=(
        _cls(0, "water", "#419bdf", _WATER),
        _cls(1, "trees", "#397d49", ("tree cover",), _TREES, _MANGROVES),
        _cls(2, "grass", "#88b053", _GRASS),
        _cls(3, "flooded vegetation", "#7a87c6", _FLOODED, _WETLAND),
        _cls(4, "crops", "#e49635", _CROPS),
        _cls(5, "shrub and scrub", "#dfc35a", _SHRUBS),
        _cls(6, "built-up area", "#c4281b", _BUILT),
        _cls(7, "bare ground", "#a59b8f", _BARE),
        _cls(8, "snow and ice", "#b39fe1", _SNOW),
    ),
    nodata_codes=(),
)

IO_LULC = Scheme(
    name="io_lulc",
    title="Impact Observatory / Esri 10 m Annual Land Use Land Cover (9-class)",
    version="v02",
    license="CC-BY-4.0",
    classes=(
        _cls(1, "water", "#419bdf", _WATER),
        _cls(2, "trees", "#397d49", ("tree cover",), _TREES, _MANGROVES),
        _cls(4, "flooded vegetation", "#7a87c6", _FLOODED, _WETLAND),
        _cls(5, "crops", "#e49635", _CROPS),
        _cls(7, "built-up area", "#c4281b", _BUILT),
        _cls(8, "bare ground", "#a59b8f", _BARE),
        _cls(9, "snow and ice", "#a8ebff", _SNOW),
        _cls(10, "clouds", "#616161", ("cloud", "cloud cover", "cloudy")),
        _cls(11, "rangeland", "#e3e2c3", _GRASS, _SHRUBS),
    ),
    nodata_codes=(0,),
)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (ESA_WORLDCOVER, DYNAMIC_WORLD, IO_LULC)}


def get_scheme(name: str) -> Scheme:
    """The scheme called ``name`` (``esa_worldcover``, ``dynamic_world`` or ``io_lulc``)."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ConfigError(
            f"unknown land-cover scheme {name!r}; set labels.scheme to one of {', '.join(sorted(SCHEMES))}"
        ) from None


def class_colors(scheme: Scheme | None) -> dict[str, tuple[int, int, int]]:
    """Class name → RGB colour of a scheme (empty for an unknown scheme)."""
    return {c.name: c.color for c in scheme.classes} if scheme else {}


def scheme_or_none(name: Any) -> Scheme | None:
    """The scheme called ``name``, or None for a name rsbuild does not know."""
    try:
        return get_scheme(str(name))
    except ConfigError:
        return None
