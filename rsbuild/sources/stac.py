"""Scene search in a STAC API or a static catalog (pystac-client and pystac live only here).

``SceneSearcher`` picks one Sentinel-2 scene per POI; ``ItemFinder`` lists the items of a
collection under a bbox (the STAC label source). Both search through ``_Catalog``, which
opens the catalog once and decides whether it is an API or a static catalog.

``SceneSearcher.find(poi, aoi_half_m)`` returns the least cloudy scene whose footprint holds
the whole AOI square, or a ``Failure`` saying why there is none; ``rank`` returns the best few
(for a choice by the AOI's own clouds), ``candidates`` the same without the failure:

- ``no_scene``: nothing in the collection / interval / cloud limit touches the AOI;
- ``missing_asset``: every candidate lacks a required band (detail names band and scene);
- ``aoi_not_covered``: candidates touch the AOI but none holds all of it;
- ``search_error``: the server failed for this POI (the run goes on).

How the cloud limit reaches an API is decided once from its conformance classes: a CQL2
``filter`` (cql2-json), else the ``query`` extension, else filtering on the client. The
limit is checked on the client in every mode as well, so a server that ignores a filter
cannot let a cloudy scene through. An API that conforms to the ``sort`` extension is asked
for the least cloudy items first, so the ``max_items`` examined are the best ones even when
more scenes match; the ranking itself always happens here.

Hrefs are signed (``scenes.sign_hrefs`` / ``labels.sign_hrefs = "planetary-computer"``) only
in what is returned; signed hrefs carry a token, so nothing here logs or formats an href.

Network faults: pystac-client's own policy (``StacApiIO(max_retries=5)`` mounts urllib3's
``Retry(5)``) retries only failed connections, and reads only for idempotent methods: no 429 / 5xx
answer is ever retried, and POST searches (what rsbuild sends) not even on a dropped read. So that
policy is switched off and each search (all its pages) and the catalog's opening are retried here
(`rsbuild.retries`, edge ``stac``) on connection errors, timeouts, 408 / 429 / 5xx and truncated
or unparsable bodies, with bounded connect and read timeouts (``SEARCH_TIMEOUT_S``). A search that
still fails is a ``search_error`` Failure with ``transient=True``.

Thread safety: ``find``, ``rank``, ``candidates`` and ``asset_hrefs`` may run in many threads at once.
Shared between threads, and read-only after construction: the config, the opened
``pystac_client.Client`` (conformance, search URL), the static-catalog index and
``rsbuild.grid``'s transformer cache (pyproj >= 3.1 transformers are thread-safe). Each
thread gets its own HTTP session (``StacApiIO``), because a ``requests.Session`` is not
documented as thread-safe. An API search holds at most ``max_items`` items of one POI;
a static catalog (meant for small local collections) is indexed in memory once.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import pystac
from pystac_client import Client, ConformanceClasses, ItemSearch
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from rsbuild.config import ScenesConfig
from rsbuild.errors import ConfigError, InputError, SampleError, require
from rsbuild.grid import project, project_points, utm_crs_for
from rsbuild.records import Failure, Poi, Scene
from rsbuild.retries import Backoff, retry_call
from rsbuild.sources.assets import item_as_dict, item_bbox, scene_from_item, sign_scene

FilterMode = Literal["filter", "query", "client"]

SEARCH_TIMEOUT_S: tuple[float, float] = (10.0, 30.0)  # (connect, read) seconds of each request
SEARCH_BACKOFF = Backoff(attempts=5, base_s=0.25, cap_s=8.0)
PAGE_LIMIT = 100  # items per page asked of an API
AOI_EDGE_POINTS = 16  # vertices per AOI edge when reprojecting it to WGS84
_SEARCH_ERRORS = (APIError, OSError, ValueError)  # server / network / malformed JSON


@dataclass(frozen=True)
class _Candidate:
    """A scene with its WGS84 footprint, before the AOI and asset checks."""

    scene: Scene
    footprint: BaseGeometry


@dataclass(frozen=True)
class _Ranking:
    scenes: list[Scene]  # qualifying scenes, best first (unsigned)
    failure: Failure | None


class SceneSearcher:
    """Finds, for each POI, the best Sentinel-2 scene in ``cfg.catalog``.

    ``required`` names the canonical bands a scene must have (``red green blue visual scl``);
    ``signer`` rewrites the hrefs of returned scenes (defaults to Planetary Computer signing
    when ``cfg.sign_hrefs = "planetary-computer"``).
    """

    def __init__(
        self,
        cfg: ScenesConfig,
        *,
        required: tuple[str, ...] = ("red", "green", "blue"),
        signer: Callable[[str], str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.required = required
        self.signer = signer or href_signer(cfg.sign_hrefs, "scenes.sign_hrefs")
        interval = parse_interval(cfg.datetime)
        self._target = _parse_bound(cfg.target_date, end=False) if cfg.target_date else _midpoint(interval)
        self._catalog = _Catalog(cfg.catalog, "scenes.catalog")
        self.filter_mode: FilterMode = self._api_filter_mode() if self._catalog.is_api else self._static_filter_mode()

    # -- public API -------------------------------------------------------------------

    def find(self, poi: Poi, aoi_half_m: float) -> Scene | Failure:
        """The least cloudy scene holding the whole AOI (ties: nearest the target date)."""
        ranked = self.rank(poi, aoi_half_m, 1)
        return ranked if isinstance(ranked, Failure) else ranked[0]

    def rank(self, poi: Poi, aoi_half_m: float, limit: int) -> list[Scene] | Failure:
        """The best ``limit`` qualifying scenes (cloud limit, required bands, whole AOI), best
        first as ``find`` orders them, from one search; or the ``Failure`` saying why none
        qualifies. ``limit`` < 1 counts as 1."""
        ranking = self._rank(poi, aoi_half_m)
        if ranking.failure is not None:
            return ranking.failure
        return [self._signed(scene) for scene in ranking.scenes[: max(1, limit)]]

    def candidates(self, poi: Poi, aoi_half_m: float, limit: int) -> list[Scene]:
        """Up to ``limit`` qualifying scenes, best first (empty when none qualifies; see ``rank``)."""
        if limit < 1:
            return []
        ranked = self.rank(poi, aoi_half_m, limit)
        return [] if isinstance(ranked, Failure) else ranked

    # -- construction -----------------------------------------------------------------

    def _api_filter_mode(self) -> FilterMode:
        supported: dict[FilterMode, bool] = {
            "filter": self._catalog.conforms_to(ConformanceClasses.FILTER),
            "query": self._catalog.conforms_to(ConformanceClasses.QUERY),
            "client": True,
        }
        wanted = self.cfg.filter_mode
        if wanted == "auto":
            return next(mode for mode, ok in supported.items() if ok)
        if not supported[wanted]:
            extension = "filter (CQL2)" if wanted == "filter" else "query"
            raise ConfigError(
                f"scenes.filter_mode = {wanted!r}, but the STAC API at {self.cfg.catalog} does not "
                f"conform to the {extension} extension; set scenes.filter_mode to 'auto' "
                f"(uses what the server supports) or 'client'"
            )
        return wanted

    def _static_filter_mode(self) -> FilterMode:
        if self.cfg.filter_mode not in ("auto", "client"):
            raise ConfigError(
                f"scenes.filter_mode = {self.cfg.filter_mode!r}, but {self.cfg.catalog} is a static "
                f"catalog, which can only be filtered on the client; set scenes.filter_mode to 'auto' or 'client'"
            )
        return "client"

    # -- per POI ----------------------------------------------------------------------

    def _rank(self, poi: Poi, aoi_half_m: float) -> _Ranking:
        def fail(reason: str, detail: str) -> _Ranking:
            return _Ranking([], Failure(stage="search", reason=reason, poi_id=poi.poi_id, detail=detail))

        search_box = aoi_polygon(poi, aoi_half_m, None).bounds
        try:
            found = [c for c in self._search(search_box) if self._within_cloud_limit(c.scene)]
        except _SEARCH_ERRORS as exc:
            cause = transient_cause(exc)
            tries = f" (after {SEARCH_BACKOFF.attempts} tries)" if cause else ""
            detail = f"searching {self.cfg.catalog}: {type(exc).__name__}: {exc}{tries}"
            return _Ranking([], Failure("search", "search_error", poi.poi_id, detail=detail[:300], transient=cause is not None))
        if not found:
            return fail(
                "no_scene",
                f"no scene of {self.cfg.collection!r} in {self.cfg.datetime} with "
                f"{self.cfg.cloud_property} <= {self.cfg.max_cloud_cover} near ({poi.lat:.5f}, {poi.lon:.5f})",
            )
        complete = [c for c in found if not self._missing_bands(c.scene)]
        if not complete:
            detail = "; ".join(
                f"scene {c.scene.id} lacks asset(s) {', '.join(self._missing_bands(c.scene))}" for c in found
            )
            return fail("missing_asset", detail)
        covering = self._covering(poi, aoi_half_m, complete)
        if not covering:
            ids = ", ".join(c.scene.id for c in complete)
            return fail("aoi_not_covered", f"no scene holds the whole {2 * aoi_half_m:g} m AOI; touching it: {ids}")
        covering.sort(key=self._preference)
        return _Ranking(covering, None)

    def _missing_bands(self, scene: Scene) -> list[str]:
        return [band for band in self.required if band not in scene.assets]

    @staticmethod
    def _covering(poi: Poi, aoi_half_m: float, candidates: list[_Candidate]) -> list[Scene]:
        """Scenes whose footprint holds the AOI square built in the scene's own CRS."""
        aois: dict[str | None, Polygon] = {}
        covering = []
        for candidate in candidates:
            crs = candidate.scene.crs
            if crs not in aois:
                aois[crs] = aoi_polygon(poi, aoi_half_m, crs)
            if candidate.footprint.contains(aois[crs]):
                covering.append(candidate.scene)
        return covering

    def _search(self, search_box: tuple[float, float, float, float]) -> Iterator[_Candidate]:
        items = self._catalog.search(
            bbox=search_box,
            collection=self.cfg.collection,
            datetime=self.cfg.datetime,
            max_items=self.cfg.max_items,
            **self._cloud_parameters(),
        )
        for item in items:
            candidate = self._candidate(item)
            if candidate is not None:
                yield candidate

    def _cloud_parameters(self) -> dict[str, Any]:
        """The cloud limit in the form the server understands (nothing in client mode), and the
        least cloudy items first when the server can sort."""
        limit, prop = self.cfg.max_cloud_cover, self.cfg.cloud_property
        parameters: dict[str, Any] = {}
        if self.filter_mode == "filter":
            parameters = {"filter": {"op": "<=", "args": [{"property": prop}, limit]}, "filter_lang": "cql2-json"}
        elif self.filter_mode == "query":
            parameters = {"query": {prop: {"lte": limit}}}
        if self._catalog.conforms_to(ConformanceClasses.SORT):
            parameters["sortby"] = [{"field": f"properties.{prop}", "direction": "asc"}]
        return parameters

    def _candidate(self, item: dict[str, Any]) -> _Candidate | None:
        """Scene + footprint of one item; None for an item without usable geometry."""
        try:
            scene = scene_from_item(item, self.cfg.layout, cloud_property=self.cfg.cloud_property)
        except (ValueError, TypeError, KeyError):
            return None
        geometry = item.get("geometry")
        footprint = shape(geometry) if geometry else box(*scene.bbox)
        if footprint.is_empty or not footprint.is_valid:
            footprint = footprint.buffer(0)
        return _Candidate(scene=scene, footprint=footprint)

    def _within_cloud_limit(self, scene: Scene) -> bool:
        return scene.cloud_cover is None or scene.cloud_cover <= self.cfg.max_cloud_cover

    def _preference(self, scene: Scene) -> tuple[float, float, str]:
        """Sort key: least cloud (unknown last), then nearest the target date, then id."""
        cloud = math.inf if scene.cloud_cover is None else scene.cloud_cover
        when = _parse_instant(scene.datetime)
        distance = abs((when - self._target).total_seconds()) if when and self._target else math.inf
        return (cloud, distance, scene.id)

    def _signed(self, scene: Scene) -> Scene:
        return sign_scene(scene, self.signer) if self.signer else scene


class SearchError(SampleError):
    """A catalog search failed for one request (a bad sample, not a bad run)."""


class ItemFinder:
    """Items of one collection under a bbox, e.g. the land-cover tiles of a label source.

    ``datetime`` (an RFC 3339 date or interval) keeps only the items it touches, e.g. one year
    of an annual land-cover product; ``signer`` rewrites the returned hrefs.
    """

    def __init__(
        self,
        catalog: str,
        collection: str,
        *,
        max_items: int = 20,
        field: str = "labels.catalog",
        datetime: str | None = None,
        signer: Callable[[str], str] | None = None,
    ) -> None:
        self.collection = collection
        self.max_items = max_items
        self.datetime = datetime
        self.signer = signer
        self._catalog = _Catalog(catalog, field)

    def asset_hrefs(self, bbox: tuple[float, float, float, float], asset: str) -> list[str]:
        """Hrefs of ``asset`` of the items intersecting ``bbox`` (WGS84), in catalog order.

        Raises ``SearchError`` when the server fails.
        """
        try:
            items = list(
                self._catalog.search(bbox=bbox, collection=self.collection, datetime=self.datetime, max_items=self.max_items)
            )
        except _SEARCH_ERRORS as exc:
            raise SearchError(f"searching {self._catalog.href} for {self.collection!r}: {type(exc).__name__}: {exc}",
                              transient=transient_cause(exc) is not None) from exc
        assets = (item.get("assets", {}).get(asset) or {} for item in items)
        hrefs = [entry["href"] for entry in assets if entry.get("href")]
        return [self.signer(href) for href in hrefs] if self.signer else hrefs


@dataclass(frozen=True)
class _StaticItem:
    """A static catalog's item with what searching it needs."""

    bbox: tuple[float, float, float, float]
    collection: str
    start: datetime | None
    end: datetime | None
    item: dict[str, Any]


class _Catalog:
    """An opened STAC API or static catalog, searched by bbox, datetime and collection.

    A URL whose landing page conforms to STAC API item search is an API (searched with
    POST); anything else (a local path, or a URL of a catalog.json) is read with pystac and
    its items are indexed once, with asset hrefs made absolute.
    """

    def __init__(self, href: str, field: str) -> None:
        self.href = href
        self._local = threading.local()
        self._static: tuple[_StaticItem, ...] = ()
        self._search_url = ""
        root = _open_catalog(href, field)
        self.client = root if isinstance(root, Client) and root.conforms_to(ConformanceClasses.ITEM_SEARCH) else None
        if self.client is not None:
            self._search_url = _search_url(self.client, href)
        else:
            self._static = tuple(_index_static(root, href, field))

    @property
    def is_api(self) -> bool:
        return self.client is not None

    def conforms_to(self, conformance: ConformanceClasses) -> bool:
        return self.client is not None and self.client.conforms_to(conformance)

    def search(
        self,
        *,
        bbox: tuple[float, float, float, float],
        collection: str,
        datetime: str | None,
        max_items: int,
        **server_parameters: Any,
    ) -> Iterator[dict[str, Any]]:
        """Item dicts intersecting ``bbox`` (WGS84) in ``collection`` and the ``datetime`` interval.

        An API search is read whole (at most ``max_items``) and retried whole on transient faults.
        """
        if self.client is None:
            start, end = parse_interval(datetime) if datetime else (None, None)
            matches = (
                entry.item
                for entry in self._static
                if entry.collection in ("", collection)
                and _bboxes_intersect(entry.bbox, bbox)
                and (start is None or entry.end is None or entry.end >= start)
                and (end is None or entry.start is None or entry.start <= end)
            )
            yield from islice(matches, max_items)
            return
        client = self.client

        def search() -> list[dict[str, Any]]:
            return list(ItemSearch(
                self._search_url,
                method="POST",  # rustac serve answers GET /search with 500
                max_items=max_items,
                limit=min(max_items, PAGE_LIMIT),
                stac_io=self._thread_io(),
                client=client,
                bbox=list(bbox),
                datetime=datetime,
                collections=[collection],
                **server_parameters,
            ).items_as_dicts())

        key = f"{self._search_url} {bbox} {collection}"
        yield from retry_call("stac", search, transient=transient_cause, key=key, backoff=SEARCH_BACKOFF)

    def _thread_io(self) -> StacApiIO:
        io = getattr(self._local, "io", None)
        if io is None:
            io = self._local.io = api_io()
        return io


def set_timeouts(connect_s: float, read_s: float) -> None:
    """The (connect, read) seconds of every STAC request from now on (``scenes.*_timeout_s``)."""
    global SEARCH_TIMEOUT_S
    SEARCH_TIMEOUT_S = (connect_s, read_s)


def api_io() -> StacApiIO:
    """An HTTP session for a STAC API: bounded timeouts, no urllib3 retries (they happen in `retry_call`)."""
    return StacApiIO(timeout=SEARCH_TIMEOUT_S, max_retries=None)


def transient_cause(exc: BaseException) -> str | None:
    """What transient fault a search error shows (``HTTP 503``, ``timeout``, ``connection``,
    ``bad body``), or None for an answer that will not change (4xx other than 408 / 429)."""
    if isinstance(exc, APIError):
        status = getattr(exc, "status_code", None)
        if status is not None:
            return f"HTTP {status}" if status in (408, 429) or status >= 500 else None
        text = str(exc).lower()
        if "timed out" in text or "timeout" in text:
            return "timeout"
        if "incompleteread" in text or "incomplete" in text or "chunked" in text:
            return "truncated"
        return "connection"  # pystac-client wraps every failure of a request without an answer
    if isinstance(exc, json.JSONDecodeError):
        return "bad body"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "connection"
    return None


def _index_static(root: pystac.Catalog, href: str, field: str) -> Iterator[_StaticItem]:
    """Every item of a static catalog, with its bbox, collection and time range."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystac-client warns that it falls back to pystac
        try:
            for item in root.get_items(recursive=True):
                data = item_as_dict(item)
                properties = data.get("properties") or {}
                when = _parse_instant(properties.get("datetime"))
                yield _StaticItem(
                    bbox=item_bbox(data),
                    collection=str(data.get("collection") or ""),
                    start=when or _parse_instant(properties.get("start_datetime")),
                    end=when or _parse_instant(properties.get("end_datetime")),
                    item=data,
                )
        except (OSError, pystac.STACError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read the items of static catalog {href} ({field}): {exc}") from None


# -- AOI geometry -------------------------------------------------------------------------


def aoi_polygon(poi: Poi, aoi_half_m: float, crs: str | None) -> Polygon:
    """The AOI square (side ``2 * aoi_half_m``, centred on the POI, axis-aligned in ``crs``)
    as a densified WGS84 polygon. ``crs=None`` uses the POI's own UTM zone."""
    crs = crs or utm_crs_for(poi.lat, poi.lon)
    x, y = project("EPSG:4326", crs, poi.lon, poi.lat)
    steps = [-aoi_half_m + 2 * aoi_half_m * i / AOI_EDGE_POINTS for i in range(AOI_EDGE_POINTS)]
    ring = (
        [(x + s, y - aoi_half_m) for s in steps]
        + [(x + aoi_half_m, y + s) for s in steps]
        + [(x - s, y + aoi_half_m) for s in steps]
        + [(x - aoi_half_m, y - s) for s in steps]
    )
    return Polygon(project_points(crs, "EPSG:4326", ring))


def _bboxes_intersect(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


# -- dates --------------------------------------------------------------------------------


def parse_interval(text: str) -> tuple[datetime | None, datetime | None]:
    """An RFC 3339 interval ``start/end`` (``..`` open) as UTC datetimes; dates cover whole days."""
    parts = text.split("/")
    start, end = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return _parse_bound(start, end=False), _parse_bound(end, end=True)


def _parse_bound(text: str, *, end: bool) -> datetime | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    if len(text) in (4, 7, 10):  # YYYY, YYYY-MM, YYYY-MM-DD
        parts = [int(p) for p in text.split("-")] + [1, 1]
        start = datetime(parts[0], parts[1], parts[2], tzinfo=UTC)
        if not end:
            return start
        if len(text) == 4:
            following = start.replace(year=start.year + 1)
        elif len(text) == 7:
            following = (start + timedelta(days=32)).replace(day=1)
        else:
            following = start + timedelta(days=1)
        return following - timedelta(microseconds=1)
    return _parse_instant(text)


def _parse_instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)  # Python >= 3.11 reads a trailing "Z"
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _midpoint(interval: tuple[datetime | None, datetime | None]) -> datetime | None:
    start, end = interval
    return start + (end - start) / 2 if start and end else None


# -- opening catalogs ---------------------------------------------------------------------


def _open_catalog(href: str, field: str) -> Client | pystac.Catalog:
    """A STAC API (as a ``Client``) or a static catalog / collection (as a pystac object)."""
    is_url = urlparse(href).scheme in ("http", "https")
    try:
        if is_url:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a static catalog has no conformsTo: that is fine
                # open() passes its own timeout (default None: no timeout) to the stac_io: give it ours
                return retry_call("stac", lambda: Client.open(href, stac_io=api_io(), timeout=SEARCH_TIMEOUT_S),
                                  transient=transient_cause,
                                  key=href, backoff=SEARCH_BACKOFF)
        root = pystac.read_file(str(Path(href.removeprefix("file://"))))
    except (APIError, OSError, pystac.STACError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot open the STAC catalog {href} ({field}): {exc}; "
            "give the root URL of a running STAC API or the path / URL of a catalog.json"
        ) from None
    if not isinstance(root, pystac.Catalog):
        raise InputError(
            f"{href} ({field}) is a STAC {type(root).__name__}, not a catalog or collection; "
            f"point {field} at the catalog.json that links to the items"
        )
    return root


def _search_url(client: Client, root_href: str) -> str:
    """The href of the API's search link (a POST one when advertised), else ``<root>/search``."""
    links = client.get_links("search")
    links.sort(key=lambda link: (link.extra_fields.get("method") or "GET") != "POST")
    if links:
        return links[0].get_absolute_href() or links[0].href
    return root_href.rstrip("/") + "/search"


def href_signer(sign_hrefs: str, field: str) -> Callable[[str], str] | None:
    """The href signer a ``sign_hrefs`` setting names (``none`` -> None).

    ``planetary-computer`` signs with the ``planetary-computer`` package (extra ``pc``), which
    appends a short-lived SAS token to Azure blob hrefs and caches tokens per container.
    """
    if sign_hrefs == "planetary-computer":
        planetary_computer = require("planetary_computer", "pc", f"{field} = 'planetary-computer'")
        return planetary_computer.sign
    if sign_hrefs != "none":
        raise ConfigError(f"{field} = {sign_hrefs!r} is not a known signer; use 'none' or 'planetary-computer'")
    return None


__all__ = ["ItemFinder", "SceneSearcher", "SearchError", "aoi_polygon", "href_signer", "parse_interval"]
