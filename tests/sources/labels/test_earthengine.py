"""Earth Engine labels through the real earthengine-api client, against a loopback endpoint.

The client is pointed at a local HTTP server (``ee.Initialize(url=...)``) that speaks the part of
the Earth Engine REST protocol the client uses: the discovery document and algorithm list
shipped inside the ``earthengine-api`` package, ``assets.get``, ``image:computePixels`` and an
OAuth token endpoint for service-account keys. computePixels answers NPY bytes rendered from the
request's own grid: each pixel's code is a function of the world x/y of its centre, so a wrong
transform, origin, size or CRS shows up as wrong pixels. Pixels east of a coverage edge are
"masked" and come back as the expression's unmask value (0 without one, like Earth Engine).

Nothing leaves 127.0.0.1: Earth Engine's fetch of its deprecated-assets list (storage.googleapis.com)
is replaced by an empty list, google-auth's GCE metadata probe is switched off, and a dead
loopback proxy catches any other outbound HTTP.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from rasterio.transform import Affine, xy

ee = pytest.importorskip("ee")
from google.oauth2.credentials import Credentials

from rsbuild.errors import ConfigError
from rsbuild.records import Grid, Scene
from rsbuild.schemes import get_scheme
from rsbuild.sources.labels.earthengine import EarthEngineLabelSource, date_window
from rsbuild.sources.raster_io import RasterReadError

EE_DIR = Path(ee.__file__).parent
GOOD_TOKEN = "ya29.loopback-good-token-7f3a9c"
PROJECT = "rsbuild-test"

# A 96 x 64 chip grid in UTM 33N whose origin is not a multiple of the class blocks below.
GRID = Grid("EPSG:32633", (10.0, 0.0, 412_340.0, 0.0, -10.0, 5_300_020.0), 96, 64)
COVER_EAST_EDGE = 412_340.0 + 700.0  # pixel centres at or east of this x are masked (columns >= 70)
SCENE = Scene("S2A_TEST", "sentinel-2-l2a", "2024-07-15T10:30:31Z", 3.0, "EPSG:32633", (14.0, 47.8, 14.1, 47.9))


def world_codes(x: np.ndarray, y: np.ndarray, codes: list[int]) -> np.ndarray:
    """Ground truth: 170 m x 130 m blocks of classes, a function of world coordinates only."""
    index = (np.floor(x / 170.0) + 3 * np.floor(y / 130.0)).astype(np.int64) % len(codes)
    return np.asarray(codes)[index]


def expected_codes(grid: Grid, codes: list[int], fill: int) -> np.ndarray:
    """What the labels must be on ``grid``: centres through rasterio's transform, fill east of the edge."""
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    x, y = (np.asarray(v).reshape(rows.shape) for v in xy(Affine(*grid.transform), rows, cols, offset="center"))
    return np.where(x >= COVER_EAST_EDGE, fill, world_codes(x, y, codes))


def calls(node: Any, name: str) -> list[dict[str, Any]]:
    """Arguments of every invocation of ``name`` in a serialised Earth Engine expression."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        invocation = node.get("functionInvocationValue")
        if isinstance(invocation, dict) and invocation.get("functionName") == name:
            found.append(invocation.get("arguments", {}))
        for value in node.values():
            found.extend(calls(value, name))
    elif isinstance(node, list):
        for value in node:
            found.extend(calls(value, name))
    return found


def constant(argument: dict[str, Any]) -> Any:
    if "constantValue" in argument:
        return argument["constantValue"]
    (inner,) = calls({"x": argument}, "Image.constant")
    return inner["value"]["constantValue"]


class FakeEarthEngine:
    """A loopback Earth Engine REST endpoint (see the module docstring)."""

    def __init__(self) -> None:
        self.accepted_tokens = {GOOD_TOKEN}
        self.forbidden_tokens: set[str] = set()  # valid tokens without Earth Engine access (403)
        self.issued_token = "ya29.issued-for-service-account-5d1e"
        self.token_status = 200
        self.compute_failures: list[int] = []  # statuses answered before computePixels succeeds
        self.compute_delay_s = 0.0
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.hold_until_in_flight = 0  # computePixels answers wait until this many were open at once (or 2 s)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.discovery = (EE_DIR / "tests" / "cloud_api_discovery_document.json").read_text().replace("v1alpha", "v1")
        self.algorithms = (EE_DIR / "tests" / "algorithms.json").read_bytes()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def compute_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("image:computePixels")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str) -> None:
                body = {"error": {"code": status, "message": message, "status": "ERROR"}}
                self._send(status, json.dumps(body).encode())

            def _record(self, body: bytes) -> str:
                path = urlsplit(self.path).path
                with fake._lock:
                    fake.requests.append({"method": self.command, "path": path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                return path

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                token = header.removeprefix("Bearer ")
                if token in fake.accepted_tokens:
                    return True
                if token in fake.forbidden_tokens:  # echoes the credential, as a careless upstream might
                    self._error(403, f"Caller does not have permission to use project {PROJECT} ({header}).")
                else:
                    self._error(401, "Request had invalid authentication credentials.")
                return False

            def do_GET(self) -> None:
                path = self._record(b"")
                if not self._authorised():
                    return
                if path == "/$discovery/rest":
                    self._send(200, fake.discovery.encode())
                elif path.endswith("/algorithms"):
                    self._send(200, fake.algorithms)
                elif path in ("/v1/projects/earthengine-public/assets/GOOGLE/DYNAMICWORLD/V1",
                              "/v1/projects/earthengine-public/assets/ESA/WorldCover/v200"):
                    self._send(200, json.dumps({"type": "IMAGE_COLLECTION", "name": path.removeprefix("/v1/")}).encode())
                else:
                    self._error(404, f"not found: {path}")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self._record(body)
                if path == "/token":
                    self._token(body)
                elif not self._authorised():
                    return
                elif path.endswith("image:computePixels"):
                    self._compute(json.loads(body))
                else:
                    self._error(404, f"not found: {path}")

            def _token(self, body: bytes) -> None:
                if fake.token_status != 200 or b"grant_type=urn" not in body:
                    self._send(400, json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode())
                    return
                fake.accepted_tokens.add(fake.issued_token)
                self._send(200, json.dumps({"access_token": fake.issued_token, "expires_in": 3600, "token_type": "Bearer"}).encode())

            def _compute(self, request: dict[str, Any]) -> None:
                with fake._changed:
                    fake.in_flight += 1
                    fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
                    status = fake.compute_failures.pop(0) if fake.compute_failures else 200
                    fake._changed.notify_all()
                    fake._changed.wait_for(lambda: fake.peak_in_flight >= fake.hold_until_in_flight, timeout=2.0)
                try:
                    time.sleep(fake.compute_delay_s)
                finally:  # no longer open once its answer starts: the client may send the next one then
                    with fake._lock:
                        fake.in_flight -= 1
                if status != 200:
                    self._error(status, f"simulated {status}")
                    return
                self._send(200, render(request), "application/octet-stream")

        return Handler


def render(request: dict[str, Any]) -> bytes:
    """NPY bytes of the requested image on the requested grid, as Earth Engine would compute them."""
    expression = request["expression"]
    (load,) = calls(expression, "ImageCollection.load")
    dataset = load["id"]["constantValue"]
    scheme = get_scheme("dynamic_world" if dataset == "GOOGLE/DYNAMICWORLD/V1" else "esa_worldcover")
    (select,) = calls(expression, "Image.select")
    band = select["bandSelectors"]["constantValue"][0]
    field = f"{band}_mode" if calls(expression, "reduce.mode") else band
    unmask = calls(expression, "Image.unmask")
    fill = constant(unmask[0]["value"]) if unmask else 0
    grid = request["grid"]
    width, height = grid["dimensions"]["width"], grid["dimensions"]["height"]
    t = grid["affineTransform"]
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = t["translateX"] + t["scaleX"] * cols + t["shearX"] * rows
    y = t["translateY"] + t["shearY"] * cols + t["scaleY"] * rows
    codes = world_codes(x, y, [c.code for c in scheme.classes])
    values = np.where(x >= COVER_EAST_EDGE, fill, codes)
    out = np.zeros((height, width), dtype=[(field, "<u2")])
    out[field] = values
    buffer = io.BytesIO()
    np.save(buffer, out)
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials from this machine, nothing past loopback."""
    from google.auth.compute_engine import _metadata

    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    dead_proxy = f"http://127.0.0.1:{_free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    monkeypatch.setattr(ee.deprecation, "_FetchDataCatalogStac", dict)


@pytest.fixture
def fake_ee() -> Any:
    server = FakeEarthEngine()
    yield server
    server.close()


def _source(fake: FakeEarthEngine, dataset: str = "dynamic_world", **kwargs: Any) -> EarthEngineLabelSource:
    kwargs.setdefault("credentials", Credentials(token=GOOD_TOKEN))
    kwargs.setdefault("project", PROJECT)
    return EarthEngineLabelSource(dataset, url=fake.url, backoff_s=0.01, **kwargs)


def test_dynamic_world_labels_land_on_the_chip_grid(fake_ee: FakeEarthEngine) -> None:
    source = _source(fake_ee, window_days=30)
    codes = source.read(GRID, SCENE)

    scheme = get_scheme("dynamic_world")
    expected = expected_codes(GRID, [c.code for c in scheme.classes], source.fill_code)
    assert codes.shape == (GRID.height, GRID.width)
    np.testing.assert_array_equal(codes, expected)
    assert (codes[:, 70:] == source.fill_code).all() and source.fill_code not in [c.code for c in scheme.classes]

    (request,) = fake_ee.compute_requests()
    body = json.loads(request["body"])
    assert body["grid"]["crsCode"] == "EPSG:32633"
    assert body["fileFormat"] == "NPY"
    (window,) = calls(body["expression"], "DateRange")
    assert (window["start"]["constantValue"], window["end"]["constantValue"]) == ("2024-06-15", "2024-08-15")
    assert calls(body["expression"], "reduce.mode"), "Dynamic World must be the mode over the window"
    assert request["headers"]["authorization"] == f"Bearer {GOOD_TOKEN}"
    assert request["headers"]["x-goog-user-project"] == PROJECT
    assert source.describe()["window_days"] == 30
    with pytest.raises(RasterReadError, match="scene date"):
        source.read(GRID, None)  # the season is unknown without a scene: a bad sample, no request
    assert len(fake_ee.compute_requests()) == 1


def test_worldcover_is_static_and_uses_its_own_codes(fake_ee: FakeEarthEngine) -> None:
    source = _source(fake_ee, "esa_worldcover")
    grid = Grid("EPSG:32633", (10.0, 0.0, 411_010.0, 0.0, -10.0, 5_299_350.0), 50, 80)
    codes = source.read(grid, None)

    scheme = get_scheme("esa_worldcover")
    np.testing.assert_array_equal(codes, expected_codes(grid, [c.code for c in scheme.classes], 0))
    body = json.loads(fake_ee.compute_requests()[0]["body"])
    assert not calls(body["expression"], "DateRange")
    assert source.name == "ESA/WorldCover/v200" and source.version == "v200"


def test_date_window_is_centred_on_the_scene_day() -> None:
    assert date_window("2024-03-01T23:59:59Z", 1) == ("2024-02-29", "2024-03-03")
    assert date_window("2024-03-01", 0) == ("2024-03-01", "2024-03-02")


def test_throttling_and_server_errors_are_retried(fake_ee: FakeEarthEngine) -> None:
    source = _source(fake_ee, retries=3)
    fake_ee.compute_failures = [503, 429]
    codes = source.read(GRID, SCENE)

    assert len(fake_ee.compute_requests()) == 3
    np.testing.assert_array_equal(codes, expected_codes(GRID, list(range(9)), source.fill_code))


def test_a_persistent_failure_is_one_bad_sample(fake_ee: FakeEarthEngine) -> None:
    source = _source(fake_ee, retries=2)
    fake_ee.compute_failures = [500] * 10
    with pytest.raises(RasterReadError, match="HTTP 500"):
        source.read(GRID, SCENE)
    assert len(fake_ee.compute_requests()) == 3  # first try + 2 retries, then give up


def test_requests_in_flight_are_capped(fake_ee: FakeEarthEngine) -> None:
    source = _source(fake_ee, max_in_flight=2)
    fake_ee.compute_delay_s, fake_ee.hold_until_in_flight = 0.15, 2  # the peak does not depend on the load
    grids = [Grid(GRID.crs, (10.0, 0.0, 412_340.0 + 40 * i, 0.0, -10.0, 5_300_020.0), 32, 32) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda g: source.read(g, SCENE), grids))

    assert fake_ee.peak_in_flight == 2
    for grid, codes in zip(grids, results):
        np.testing.assert_array_equal(codes, expected_codes(grid, list(range(9)), source.fill_code))


def _service_account_key(tmp_path: Path, token_uri: str) -> tuple[Path, dict[str, str]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account",
        "project_id": "sa-project-42",
        "private_key_id": "9c1f0e2d3b4a59687766554433221100aabbccdd",
        "private_key": pem.decode(),
        "client_email": "labels@sa-project-42.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path = tmp_path / "key.json"
    path.write_text(json.dumps(info))
    return path, info


def _key_fragments(info: dict[str, str]) -> list[str]:
    """Pieces of the key that must never be printed: its id and each base64 line of the PEM body."""
    body = [line for line in info["private_key"].splitlines() if line and "PRIVATE KEY" not in line]
    return [info["private_key_id"], *body]


def test_service_account_key_from_environment(fake_ee: FakeEarthEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _service_account_key(tmp_path, f"{fake_ee.url}/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    source = EarthEngineLabelSource("dynamic_world", url=fake_ee.url)
    codes = source.read(GRID, SCENE)

    assert any(r["path"] == "/token" for r in fake_ee.requests)
    (request,) = fake_ee.compute_requests()
    assert request["headers"]["authorization"] == f"Bearer {fake_ee.issued_token}"
    assert request["headers"]["x-goog-user-project"] == "sa-project-42"  # project from the key file
    np.testing.assert_array_equal(codes, expected_codes(GRID, list(range(9)), source.fill_code))


def test_rejected_service_account_stops_before_any_work(
    fake_ee: FakeEarthEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, info = _service_account_key(tmp_path, f"{fake_ee.url}/token")
    fake_ee.token_status = 400
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as err:
        EarthEngineLabelSource("dynamic_world", url=fake_ee.url, credentials=path)

    message = str(err.value)
    assert "rejected the credentials" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message and "EE_PROJECT" in message
    assert not fake_ee.compute_requests()
    for fragment in _key_fragments(info):
        assert fragment not in message and fragment not in caplog.text


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_token_stops_before_any_work(fake_ee: FakeEarthEngine, caplog: pytest.LogCaptureFixture, status: int) -> None:
    token = "ya29.revoked-token-that-must-stay-secret-0b7e"
    if status == 403:
        fake_ee.forbidden_tokens.add(token)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as err:
        _source(fake_ee, credentials=Credentials(token=token))

    message = str(err.value)
    assert "rejected the credentials" in message and "labels.ee_credentials" in message
    assert token not in message and token not in caplog.text
    assert not fake_ee.compute_requests()


def test_missing_credentials_say_what_to_set() -> None:
    with pytest.raises(ConfigError) as err:
        EarthEngineLabelSource("dynamic_world", url="http://127.0.0.1:9")
    message = str(err.value)
    for hint in ("labels.ee_credentials", "GOOGLE_APPLICATION_CREDENTIALS", "gcloud auth application-default login", "EE_PROJECT"):
        assert hint in message


def test_user_credentials_without_project_say_what_to_set(fake_ee: FakeEarthEngine) -> None:
    with pytest.raises(ConfigError, match="EE_PROJECT"):
        EarthEngineLabelSource("dynamic_world", url=fake_ee.url, credentials=Credentials(token=GOOD_TOKEN))
    assert not fake_ee.requests


def test_project_from_environment(fake_ee: FakeEarthEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EE_PROJECT", "env-project-7")
    source = EarthEngineLabelSource("esa_worldcover", url=fake_ee.url, credentials=Credentials(token=GOOD_TOKEN))
    source.read(GRID, None)
    assert fake_ee.compute_requests()[0]["headers"]["x-goog-user-project"] == "env-project-7"


def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA')
    with pytest.raises(ConfigError, match="not a JSON key file") as err:
        EarthEngineLabelSource("dynamic_world", credentials=broken, url="http://127.0.0.1:9")
    assert "AAAA" not in str(err.value)
