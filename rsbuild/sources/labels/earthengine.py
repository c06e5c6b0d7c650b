"""Land-cover labels from Google Earth Engine, computed directly on the chip grid.

`EarthEngineLabelSource` asks ``ee.data.computePixels`` for Dynamic World (mode of ``label``
over a window around the scene date, so labels match the image's season) or ESA WorldCover
v200 (band ``Map``) with the chip grid itself as the output grid: the grid's CRS code, its affine
transform and its size. Earth Engine resamples each source pixel once, nearest neighbour, onto
exactly our pixels; the NPY answer needs no warping.

Authentication, in this order: an explicit credentials object or key file (``labels.ee_credentials``),
the ``GOOGLE_APPLICATION_CREDENTIALS`` key file, then Earth Engine's persistent credentials and
application default credentials. The project comes from ``labels.ee_project``, ``EE_PROJECT``,
the key file or the credentials' quota project. A missing or rejected credential raises
`ConfigError` at construction, before any sample is read; secrets never reach a message.

``earthengine-api`` (extra ``ee``) is imported here only, lazily. Its client state is
process-wide: one Earth Engine endpoint per process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from rsbuild.errors import ConfigError, require
from rsbuild.grid import bbox_wgs84
from rsbuild.records import Grid, Scene
from rsbuild.retries import Backoff, retry_call
from rsbuild.schemes import get_scheme
from rsbuild.sources.labels.base import LabelSource
from rsbuild.sources.raster_io import RasterReadError

if TYPE_CHECKING:  # pragma: no cover
    from google.auth.credentials import Credentials

log = logging.getLogger(__name__)

T = TypeVar("T")

CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
PROJECT_ENV = "EE_PROJECT"

AUTH_HELP = (
    "set labels.ee_credentials (or the GOOGLE_APPLICATION_CREDENTIALS environment variable) to a "
    "service-account JSON key file, or create application default credentials with "
    "`gcloud auth application-default login` (or `earthengine authenticate`); and set "
    "labels.ee_project (or the EE_PROJECT environment variable) to a Cloud project registered "
    "for Earth Engine"
)

_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL)
_SECRET_FIELDS = ("private_key", "private_key_id", "refresh_token", "client_secret")
_CRS_CODE = re.compile(r"^[A-Za-z]+:\d+$")


@dataclass(frozen=True)
class EeDataset:
    """An Earth Engine land-cover collection: asset id, band, scheme and how images combine."""

    collection: str
    band: str
    scheme: str
    version: str
    composite: Literal["mode", "mosaic"]  # mode over a date window, or the (static) mosaic

    @property
    def dated(self) -> bool:
        """Whether the labels depend on the scene date."""
        return self.composite == "mode"


EE_DATASETS: dict[str, EeDataset] = {
    "dynamic_world": EeDataset("GOOGLE/DYNAMICWORLD/V1", "label", "dynamic_world", "V1", "mode"),
    "esa_worldcover": EeDataset("ESA/WorldCover/v200", "Map", "esa_worldcover", "v200", "mosaic"),
}


def pixel_grid(grid: Grid) -> dict[str, Any]:
    """The computePixels ``grid`` for a chip grid: dimensions, affine transform and CRS.

    rasterio's transform (a, b, c, d, e, f) maps (col, row) to x = a*col + b*row + c and
    y = d*col + e*row + f, which is Earth Engine's (scaleX, shearX, translateX, shearY, scaleY,
    translateY); both count pixels from the top-left corner of the top-left pixel.
    """
    a, b, c, d, e, f = (float(v) for v in grid.transform)
    crs_key = "crsCode" if _CRS_CODE.match(grid.crs) else "crsWkt"
    return {
        "dimensions": {"width": int(grid.width), "height": int(grid.height)},
        "affineTransform": {"scaleX": a, "shearX": b, "translateX": c, "shearY": d, "scaleY": e, "translateY": f},
        crs_key: grid.crs,
    }


def date_window(scene_datetime: str, window_days: int) -> tuple[str, str]:
    """``(start, end)`` dates for ``filterDate``: the scene's UTC day +- ``window_days``, end exclusive."""
    try:
        day = datetime.fromisoformat(scene_datetime).date()
    except ValueError:
        day = date.fromisoformat(scene_datetime[:10])
    start = day - timedelta(days=window_days)
    end = day + timedelta(days=window_days + 1)
    return start.isoformat(), end.isoformat()


def decode_pixels(pixels: Any, grid: Grid) -> np.ndarray:
    """Class codes (H, W) uint16 from a computePixels NUMPY_NDARRAY answer for ``grid``.

    Earth Engine returns a structured array with one field per band; a single band is expected.
    """
    array = np.asarray(pixels)
    names = array.dtype.names
    if names:
        if len(names) != 1:
            raise RasterReadError(f"Earth Engine returned bands {list(names)}; expected one label band")
        array = array[names[0]]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != (grid.height, grid.width):
        raise RasterReadError(
            f"Earth Engine returned pixels of shape {array.shape} for a {grid.height}x{grid.width} grid"
        )
    return array.astype(np.uint16, copy=False)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an Earth Engine client error, if any.

    ``ee`` re-raises googleapiclient's ``HttpError`` (which carries ``resp.status``) as an
    ``EEException``; the original stays reachable through the exception chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = getattr(getattr(current, "resp", None), "status", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return None


def is_transient(exc: BaseException) -> bool:
    """429, 5xx, timeouts and dropped connections are worth another try."""
    return transient_cause(exc) is not None


def transient_cause(exc: BaseException) -> str | None:
    """``HTTP 429`` / ``HTTP 5xx`` / ``timeout`` / ``connection``, or None for an error a retry will not fix."""
    status = http_status(exc)
    if status is not None:
        return f"HTTP {status}" if status == 429 or status >= 500 else None
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "connection" if isinstance(exc, ConnectionError) else None


class _Secrets:
    """Strings that must never appear in a message: key material, tokens."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self.credentials: Any = None

    def add(self, values: Iterable[Any]) -> None:
        self._values.update(v for v in values if isinstance(v, str) and len(v) >= 6)

    def scrub(self, text: str) -> str:
        """``text`` with every known secret (and any PEM private key) replaced by ``***``."""
        text = _PEM_BLOCK.sub("***", text)
        token = getattr(self.credentials, "token", None)
        for secret in sorted({*self._values, *([token] if isinstance(token, str) and token else [])}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def _first_line(exc: BaseException, secrets: _Secrets, limit: int = 300) -> str:
    text = secrets.scrub(str(exc)).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:limit]


@dataclass(frozen=True)
class ResolvedAuth:
    """Credentials, project and a human description of where they came from (no secrets)."""

    credentials: Any
    project: str | None
    origin: str


def resolve_auth(
    credentials: Credentials | str | os.PathLike[str] | None,
    project: str | None,
    secrets: _Secrets,
) -> ResolvedAuth:
    """Find credentials and project the usual ways; ConfigError (with what to set) when missing."""
    google_auth = require("google.auth", "ee", "Earth Engine labels")
    ee = require("ee", "ee", "Earth Engine labels")
    project = project or os.environ.get(PROJECT_ENV) or None
    file_project: str | None = None
    if credentials is not None and not isinstance(credentials, (str, os.PathLike)):
        creds, origin = credentials, "the credentials object passed in"
    else:
        path = credentials or os.environ.get(CREDENTIALS_ENV) or None
        if path is not None:
            origin = "labels.ee_credentials" if credentials else CREDENTIALS_ENV
            creds, file_project = _load_key_file(Path(path), origin, google_auth, ee.oauth.SCOPES, secrets)
            origin = f"the key file {path} ({origin})"
        else:
            try:
                creds = ee.data.get_persistent_credentials()
            except ee.EEException:
                raise ConfigError(f"no Earth Engine credentials were found: {AUTH_HELP}.") from None
            origin = "application default credentials"
    secrets.credentials = creds
    project = project or file_project or getattr(creds, "quota_project_id", None)
    service_account = require("google.oauth2.service_account", "ee", "Earth Engine labels")
    if not project and not isinstance(creds, service_account.Credentials):
        raise ConfigError(f"no Cloud project for Earth Engine (credentials: {origin}): {AUTH_HELP}.")
    return ResolvedAuth(creds, project, origin)


def _load_key_file(path: Path, origin: str, google_auth: Any, scopes: list[str], secrets: _Secrets) -> tuple[Any, str | None]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read the key file {path} ({exc.strerror}); {AUTH_HELP}.") from None
    except ValueError:
        raise ConfigError(f"{origin}: {path} is not a JSON key file; {AUTH_HELP}.") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{origin}: {path} is not a JSON key file; {AUTH_HELP}.")
    secrets.add(info.get(field) for field in _SECRET_FIELDS)
    kind = info.get("type")
    try:
        if kind == "service_account":
            service_account = require("google.oauth2.service_account", "ee", "Earth Engine labels")
            creds = service_account.Credentials.from_service_account_info(info, scopes=scopes)
        elif kind == "authorized_user":
            user = require("google.oauth2.credentials", "ee", "Earth Engine labels")
            creds = user.Credentials.from_authorized_user_info(info, scopes=scopes)
        else:
            raise ConfigError(
                f"{origin}: {path} holds credentials of type {kind!r}; use a 'service_account' key "
                f"(or 'authorized_user' application default credentials); {AUTH_HELP}."
            )
    except (ValueError, google_auth.exceptions.GoogleAuthError) as exc:
        detail = _first_line(exc, secrets)
        raise ConfigError(f"{origin}: {path} is not a usable credentials file ({detail}); {AUTH_HELP}.") from None
    return creds, info.get("project_id") or info.get("quota_project_id")


class EarthEngineLabelSource(LabelSource):
    """Dynamic World or ESA WorldCover codes from Earth Engine, computed on the chip grid.

    Thread-safe: the fetch stage calls `read` from several threads; at most ``max_in_flight``
    computePixels requests run at once. 429 / 5xx / dropped connections are retried with
    exponential backoff (``backoff_s * 2**attempt``, capped at ``max_backoff_s``, ``retries`` times).
    """

    def __init__(
        self,
        dataset: Literal["dynamic_world", "esa_worldcover"] = "dynamic_world",
        *,
        window_days: int = 30,
        project: str | None = None,
        credentials: Credentials | str | os.PathLike[str] | None = None,
        url: str | None = None,
        max_in_flight: int = 8,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 120.0,
        version: str = "",
    ) -> None:
        if dataset not in EE_DATASETS:
            raise ConfigError(f"labels.ee_dataset must be one of {', '.join(EE_DATASETS)}, not {dataset!r}")
        if window_days < 0:
            raise ConfigError("labels.ee_window_days must be >= 0")
        if max_in_flight < 1:
            raise ConfigError("labels.ee_max_in_flight must be >= 1")
        self.dataset = EE_DATASETS[dataset]
        self.scheme = get_scheme(self.dataset.scheme)
        self.name = self.dataset.collection
        self.version = version or self.dataset.version
        self.window_days = window_days
        self.url = url.rstrip("/") if url else None
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._secrets = _Secrets()
        self._ee = require("ee", "ee", "Earth Engine labels (labels.source = 'earthengine')")
        auth = resolve_auth(credentials, project, self._secrets)
        self.project = auth.project
        self._initialize(auth, timeout_s)

    # -- start-up ------------------------------------------------------------------------------

    def _initialize(self, auth: ResolvedAuth, timeout_s: float) -> None:
        """Point the client at the endpoint and check the credentials on the dataset's asset."""
        ee = self._ee
        with _INIT_LOCK:
            ee.data.setMaxRetries(0)  # retries happen here, with our backoff, not twice
            try:
                ee.Initialize(credentials=auth.credentials, url=self.url, project=auth.project)
                ee.data.setDeadline(int(timeout_s * 1000))  # rebuilds the client with a request timeout
                self._with_retries(lambda: ee.data.getAsset(self.dataset.collection))
            except Exception as exc:
                raise self._startup_error(exc, auth.origin) from None

    def _startup_error(self, exc: Exception, origin: str) -> ConfigError:
        where = self.url or "the default Earth Engine endpoint"
        detail = _first_line(exc, self._secrets)
        status = http_status(exc)
        google_auth = require("google.auth", "ee", "Earth Engine labels")
        if status in (401, 403) or isinstance(exc, google_auth.exceptions.GoogleAuthError):
            code = f"HTTP {status}" if status else type(exc).__name__
            return ConfigError(f"Earth Engine rejected the credentials from {origin} ({code}: {detail}); {AUTH_HELP}.")
        if status == 404:
            return ConfigError(f"Earth Engine at {where} has no asset {self.dataset.collection!r} ({detail})")
        if status is None and isinstance(exc, self._ee.EEException) and "project" in detail.lower():
            return ConfigError(f"Earth Engine needs a Cloud project ({detail}); {AUTH_HELP}.")
        return ConfigError(f"cannot start the Earth Engine client at {where}: {detail}")

    # -- reading -------------------------------------------------------------------------------

    def read(self, grid: Grid, scene: Scene | None = None) -> np.ndarray:
        """Class codes on ``grid`` (H, W) uint16; ``fill_code`` where the dataset has no data."""
        image = self.label_image(grid, scene)
        request = {"expression": image, "fileFormat": "NUMPY_NDARRAY", "grid": pixel_grid(grid)}
        try:
            with self._slots:
                pixels = self._with_retries(lambda: self._ee.data.computePixels(request), json.dumps(request["grid"]))
        except Exception as exc:
            status = http_status(exc)
            code = f" (HTTP {status})" if status else ""
            raise RasterReadError(
                f"Earth Engine computePixels on {self.dataset.collection} failed{code}: {_first_line(exc, self._secrets)}",
                transient=is_transient(exc),
            ) from None
        return decode_pixels(pixels, grid)

    def label_image(self, grid: Grid, scene: Scene | None) -> Any:
        """The ``ee.Image`` of codes for a grid: filtered to its footprint, masked pixels -> fill."""
        ee = self._ee
        dataset = self.dataset
        footprint = ee.Geometry.Rectangle(list(bbox_wgs84(grid)))
        collection = ee.ImageCollection(dataset.collection).filterBounds(footprint)
        if dataset.dated:
            if scene is None or not scene.datetime:
                raise RasterReadError(f"{dataset.collection} labels need the scene date; no scene was given")
            collection = collection.filterDate(*date_window(scene.datetime, self.window_days))
            image = collection.select(dataset.band).mode()
        else:
            image = collection.select(dataset.band).mosaic()
        return image.unmask(self.fill_code, False).toUint16()

    def _with_retries(self, call: Callable[[], T], key: str = "") -> T:
        """``call()`` retried on transient errors (edge ``earthengine`` of `rsbuild.retries`)."""
        backoff = Backoff(attempts=self.retries + 1, base_s=self.backoff_s, cap_s=self.max_backoff_s)
        return retry_call("earthengine", call, transient=transient_cause, key=key or self.dataset.collection,
                          backoff=backoff, sleep=lambda seconds: time.sleep(seconds))

    def describe(self) -> dict[str, Any]:
        """Provenance: dataset, band, composite and date window (no credentials)."""
        info = super().describe()
        info.update({"provider": "earthengine", "band": self.dataset.band, "composite": self.dataset.composite})
        if self.dataset.dated:
            info["window_days"] = self.window_days
        return info


_INIT_LOCK = threading.Lock()
