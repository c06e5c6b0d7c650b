"""Overhead context stills from the Mapbox Static Images API, one per POI (plain httpx).

``GET {base}/styles/v1/{user}/{style}/static/{lon},{lat},{zoom},0/{w}x{h}{@2x}?access_token=...``
returns a PNG (styles with vector layers) or a JPEG (raster-only styles such as satellite).
The token is read from an environment variable and never leaves this module: not in messages,
failures, reprs or `describe()`, and the ``httpx`` logger (which logs request URLs) is filtered.
A rejected token (401 / 403) turns stills off with one message (`disabled_reason`, logged once);
later POIs are skipped without a request. 429 / 5xx / network errors are retried with backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Self
from urllib.parse import quote, quote_plus

import httpx

from rsbuild.errors import ConfigError
from rsbuild.records import Failure, Poi
from rsbuild.retries import RETRIES, jitter

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.mapbox.com"
DEFAULT_STYLE = "mapbox/satellite-v9"
MAX_SIDE = 1280  # the API's largest width / height
MAX_LATITUDE = 85.0511  # Web Mercator's limit
STAGE = "still"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_HTTP_LOGGERS = ("httpx",)  # httpx logs "HTTP Request: GET <url with query>" at INFO

def image_extension(data: bytes) -> str:
    """``.png`` or ``.jpg`` from the image's magic bytes; ValueError for anything else."""
    if data.startswith(_PNG_MAGIC):
        return ".png"
    if data.startswith(_JPEG_MAGIC):
        return ".jpg"
    raise ValueError("not a PNG or JPEG image")


def _number(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class _RedactSecret(logging.Filter):
    """Replaces a secret in log records of the logger it is attached to."""

    def __init__(self, redact: Any) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class MapboxStills:
    """Fetches one overhead still per POI. Thread-safe; call `close` when done (or use ``with``)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        style: str = DEFAULT_STYLE,
        zoom: float = 16.0,
        size: int | tuple[int, int] = 512,
        token_env: str = "MAPBOX_ACCESS_TOKEN",
        *,
        retina: bool = False,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout_s: float = 30.0,
    ) -> None:
        width, height = (size, size) if isinstance(size, int) else size
        if style.count("/") != 1 or not all(style.split("/")):
            raise ConfigError(f"stills.style must be 'user/style_id' (e.g. {DEFAULT_STYLE!r}), not {style!r}")
        if not 0 <= zoom <= 22:
            raise ConfigError(f"stills.zoom must be between 0 and 22, not {zoom}")
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ConfigError(f"stills.size must be 1..{MAX_SIDE} pixels per side, not {width}x{height}")
        self.base_url = base_url.rstrip("/")
        self.style = style
        self.zoom = round(float(zoom), 2)
        self.size = (width, height)
        self.retina = retina
        self.token_env = token_env
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._token = os.environ.get(token_env, "").strip()
        self._lock = threading.Lock()
        self.disabled_reason: str | None = None
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, follow_redirects=False)
        self._log_filter = _RedactSecret(self.redact)
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        if not self._token:
            self._disable(f"{token_env} is not set; no Mapbox stills will be fetched")

    @property
    def enabled(self) -> bool:
        """False once the token is missing or was rejected."""
        return self.disabled_reason is None

    def still_path(self, poi: Poi) -> str:
        """The request path for a POI (no token): style, centre, zoom, bearing 0, size."""
        suffix = "@2x" if self.retina else ""
        centre = f"{_number(poi.lon, 6)},{_number(poi.lat, 6)},{_number(self.zoom, 2)},0"
        return f"/styles/v1/{self.style}/static/{centre}/{self.size[0]}x{self.size[1]}{suffix}"

    def still_url(self, poi: Poi) -> str:
        """The full URL without the token, safe for messages and provenance."""
        return self.base_url + self.still_path(poi)

    def redact(self, text: str) -> str:
        """``text`` with the token (plain or URL-encoded) replaced by ``***``."""
        if self._token:
            for form in {self._token, quote(self._token, safe=""), quote_plus(self._token)}:
                text = text.replace(form, "***")
        return text

    def fetch(self, poi: Poi) -> bytes | Failure:
        """The still's PNG / JPEG bytes, or a Failure (skipped, rejected, HTTP or network error)."""
        if not self.enabled:
            return Failure(STAGE, "stills_disabled", poi.poi_id)
        if abs(poi.lat) > MAX_LATITUDE:
            return Failure(STAGE, "out_of_range", poi.poi_id, detail=f"latitude beyond Web Mercator's +-{MAX_LATITUDE}")
        problem, cause = "", ""
        for attempt in range(self.retries + 1):
            if attempt:
                RETRIES.retried("mapbox", cause)
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * jitter(poi.poi_id, attempt))
            if not self.enabled:
                return Failure(STAGE, "stills_disabled", poi.poi_id)
            try:
                response = self._client.get(self.still_path(poi), params={"access_token": self._token})
            except httpx.TransportError as exc:
                problem = f"network error: {self.redact(f'{type(exc).__name__}: {exc}')}"
                cause = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
                continue
            status = response.status_code
            if status == 200:
                return self._image(poi, response)
            if status in (401, 403):
                reason = (
                    f"Mapbox rejected the access token in {self.token_env} (HTTP {status}: "
                    f"{self._api_message(response)}); no more stills will be requested. "
                    "Check the token and that it has the styles:tiles scope."
                )
                self._disable(reason)
                return Failure(STAGE, "token_rejected", poi.poi_id, detail=self.disabled_reason or reason)
            problem, cause = f"HTTP {status}: {self._api_message(response)}", f"HTTP {status}"
            if status != 429 and status < 500:
                return Failure(STAGE, f"http_{status}", poi.poi_id, detail=f"{problem} for {self.still_url(poi)}")
        RETRIES.gave_up("mapbox", cause)
        return Failure(STAGE, "unavailable", poi.poi_id, transient=True,
                       detail=f"{problem} after {self.retries + 1} attempts for {self.still_url(poi)}")

    def _image(self, poi: Poi, response: httpx.Response) -> bytes | Failure:
        data = response.content
        try:
            image_extension(data)
        except ValueError:
            kind = response.headers.get("content-type", "unknown type")
            return Failure(STAGE, "not_an_image", poi.poi_id, detail=f"Mapbox answered {kind} for {self.still_url(poi)}")
        return data

    def _api_message(self, response: httpx.Response) -> str:
        try:
            message = str(response.json().get("message", ""))
        except (ValueError, AttributeError):
            message = response.text[:200]
        return self.redact(message.strip()) or response.reason_phrase

    def _disable(self, reason: str) -> None:
        with self._lock:
            if self.disabled_reason is not None:
                return
            self.disabled_reason = self.redact(reason)
        log.warning("%s", self.disabled_reason)

    def describe(self) -> dict[str, Any]:
        """Provenance for metadata and the dataset card (never the token)."""
        return {
            "provider": "mapbox",
            "base_url": self.base_url,
            "style": self.style,
            "zoom": self.zoom,
            "size": list(self.size),
            "retina": self.retina,
        }

    def close(self) -> None:
        """Close the HTTP client and detach the log filter."""
        self._client.close()
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"MapboxStills(base_url={self.base_url!r}, style={self.style!r}, zoom={self.zoom}, "
            f"size={self.size}, token_env={self.token_env!r}, enabled={self.enabled})"
        )
