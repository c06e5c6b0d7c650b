"""Mapbox stills against a loopback Static Images endpoint.

The server checks the token, answers a PNG of the requested size (doubled for ``@2x``) and can be
told to answer errors first. Its error messages echo the full request URL, token included, as a
careless upstream might, so the tests show the token is scrubbed from everything rsbuild keeps.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from rsbuild.dataset.sft import still_overview_row
from rsbuild.errors import ConfigError
from rsbuild.records import Failure, Poi
from rsbuild.sources.mapbox import MapboxStills, image_extension

TOKEN = "pk.eyJ1IjoicnNidWlsZCJ9.loopback-secret-token_42"
SIZE_PATTERN = re.compile(r"/(\d+)x(\d+)(@2x)?$")


class FakeMapbox:
    """Static Images API double: 401 for other tokens, PNG otherwise, queued errors first."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.queued: list[int] = []
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, text: str) -> None:
                message = f"{text} (request {self.path})"  # echoes the URL, token and all
                self._send(status, json.dumps({"message": message}).encode(), "application/json")

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                fake.requests.append((parts.path, query))
                if fake.queued:
                    self._error(fake.queued.pop(0), "simulated failure")
                elif query.get("access_token") != [fake.token]:
                    self._error(401, "Not Authorized - Invalid Token")
                elif not (size := SIZE_PATTERN.search(parts.path)):
                    self._error(422, "Invalid size")
                else:
                    scale = 2 if size.group(3) else 1
                    image = Image.new("RGB", (int(size.group(1)) * scale, int(size.group(2)) * scale), (40, 90, 50))
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                    self._send(200, buffer.getvalue(), "image/png")

        return Handler


@pytest.fixture
def fake() -> Iterator[FakeMapbox]:
    server = FakeMapbox()
    yield server
    server.close()


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MAPBOX_ACCESS_TOKEN", TOKEN)
    return TOKEN


POIS = [Poi("eiffel", 48.85837, 2.294481), Poi("sydney", -33.856784, 151.215297), Poi("quito", -0.180653, -78.467834)]


def test_url_shape_and_image(fake: FakeMapbox, token_env: str) -> None:
    with MapboxStills(fake.url, "mapbox/satellite-v9", zoom=15.5, size=(300, 200), retina=True) as stills:
        data = stills.fetch(POIS[0])

    assert isinstance(data, bytes) and image_extension(data) == ".png"
    assert Image.open(io.BytesIO(data)).size == (600, 400)
    ((path, query),) = fake.requests
    assert path == "/styles/v1/mapbox/satellite-v9/static/2.294481,48.85837,15.5,0/300x200@2x"
    assert query == {"access_token": [TOKEN]}


def test_token_stays_out_of_files_logs_and_errors(fake: FakeMapbox, token_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.queued = [404]  # the first POI fails, with the URL (and token) echoed in the error body
    out = tmp_path / "dataset"
    (out / "mapbox_stills").mkdir(parents=True)
    rows, failures = [], []
    with MapboxStills(fake.url, size=64) as stills:
        for poi in POIS:
            result = stills.fetch(poi)
            if isinstance(result, Failure):
                failures.append(result.to_json())
                continue
            rel = f"mapbox_stills/{poi.poi_id}{image_extension(result)}"
            (out / rel).write_bytes(result)
            rows.append(still_overview_row(rel, poi, "The tile around it is mostly built-up area."))
        provenance = {"stills": stills.describe(), "repr": repr(stills)}
    with MapboxStills("http://127.0.0.1:9", size=64, retries=1, backoff_s=0.01) as offline:
        failures.append(offline.fetch(POIS[0]).to_json())  # network error path
    (out / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out / "failures.json").write_text(json.dumps(failures))
    (out / "provenance.json").write_text(json.dumps(provenance))

    assert [f["reason"] for f in failures] == ["http_404", "unavailable"]
    assert "/styles/v1/mapbox/satellite-v9/static/2.294481,48.85837,16,0/64x64" in failures[0]["detail"]
    assert len(list((out / "mapbox_stills").iterdir())) == 2
    assert "HTTP Request" in caplog.text  # httpx did log the request URLs...
    secret_forms = [TOKEN, TOKEN.encode().hex(), "loopback-secret-token_42"]
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(form.encode() in content for form in secret_forms), path
    assert not any(form in caplog.text for form in secret_forms)  # ...with the token scrubbed


def test_rejected_token_gives_one_message_and_stops_requests(
    fake: FakeMapbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "pk.wrong-token-never-to-be-printed"
    monkeypatch.setenv("MAPBOX_ACCESS_TOKEN", wrong)
    caplog.set_level(logging.WARNING, logger="rsbuild.sources.mapbox")
    with MapboxStills(fake.url, size=32) as stills:
        results = [stills.fetch(poi) for poi in POIS * 3]

    assert len(fake.requests) == 1
    assert all(isinstance(r, Failure) for r in results)
    assert [r.reason for r in results] == ["token_rejected"] + ["stills_disabled"] * (len(results) - 1)  # type: ignore[union-attr]
    assert not stills.enabled and "MAPBOX_ACCESS_TOKEN" in (stills.disabled_reason or "")
    assert "HTTP 401" in (stills.disabled_reason or "")
    mapbox_warnings = [r for r in caplog.records if r.name == "rsbuild.sources.mapbox"]
    assert len(mapbox_warnings) == 1
    texts = [stills.disabled_reason or "", caplog.text, *(json.dumps(r.to_json()) for r in results)]  # type: ignore[union-attr]
    assert not any(wrong in text for text in texts)


def test_unavailable_service_is_retried(fake: FakeMapbox, token_env: str) -> None:
    fake.queued = [503, 429]
    with MapboxStills(fake.url, size=32, retries=3, backoff_s=0.01) as stills:
        data = stills.fetch(POIS[1])
        assert isinstance(data, bytes) and Image.open(io.BytesIO(data)).size == (32, 32)
        assert len(fake.requests) == 3

        fake.queued = [503] * 5
        failure = stills.fetch(POIS[2])
    assert isinstance(failure, Failure) and failure.reason == "unavailable" and "HTTP 503" in failure.detail
    assert len(fake.requests) == 3 + 4  # first try + 3 retries
    assert stills.enabled  # server trouble does not turn stills off


def test_without_a_token_nothing_is_requested(fake: FakeMapbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAPBOX_ACCESS_TOKEN", raising=False)
    with MapboxStills(fake.url) as stills:
        result = stills.fetch(POIS[0])
    assert isinstance(result, Failure) and result.reason == "stills_disabled"
    assert "MAPBOX_ACCESS_TOKEN is not set" in (stills.disabled_reason or "")
    assert not fake.requests


def test_overview_row_says_it_is_context_not_the_chip() -> None:
    row = still_overview_row("mapbox_stills/s00000/sydney.jpg", POIS[1], "Mostly water (61%) with built-up area.")
    user, assistant = row["messages"]
    assert user["content"][0] == {"type": "image", "image": "mapbox_stills/s00000/sydney.jpg"}
    prompt = user["content"][1]["text"]
    assert "overhead context image" in prompt and "not the Sentinel-2 satellite chip" in prompt
    answer = assistant["content"][0]["text"]
    assert "33.85678° S" in answer and "151.21530° E" in answer and answer.endswith("Mostly water (61%) with built-up area.")
    assert row["meta"]["key"] == "sydney" and row["meta"]["task"] == "still_overview"
    with pytest.raises(ValueError):
        still_overview_row("/abs/sydney.png", POIS[1])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"style": "satellite-v9"}, "stills.style"), ({"zoom": 23}, "stills.zoom"), ({"size": 2000}, "stills.size")],
)
def test_bad_settings_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        MapboxStills("http://127.0.0.1:9", **kwargs)
