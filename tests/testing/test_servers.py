"""The loopback servers: byte ranges, counters, latency, GDAL over HTTP, and both STAC APIs."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rsbuild.testing.servers import (
    RangeHTTPServer,
    RustacServer,
    StacFastapiStaticServer,
    free_port,
    parse_byte_range,
    wait_until_up,
)
from rsbuild.testing.synthetic import NOBLUE_COLLECTION, S2_COLLECTION, SCENES, FixtureInfo

JULY = "2024-07-01T00:00:00Z/2024-07-31T23:59:59Z"
ALL_SCENES = {spec.id for spec in SCENES}
PARTIAL_SCENE = next(spec.id for spec in SCENES if spec.west_half_only)


@pytest.fixture()
def blob_server(tmp_path: Path) -> tuple[RangeHTTPServer, bytes]:
    """A server over a folder holding one 1000-byte file of distinct bytes."""
    payload = bytes(range(256)) * 3 + bytes(range(232))
    (tmp_path / "blob.bin").write_bytes(payload)
    with RangeHTTPServer(tmp_path) as server:
        yield server, payload


def _poi_bbox(info: FixtureInfo, poi_id: str, half_deg: float = 0.002) -> list[float]:
    poi = next(p for p in info.pois if p.poi_id == poi_id)
    return [poi.lon - half_deg, poi.lat - half_deg, poi.lon + half_deg, poi.lat + half_deg]


def _search_ids(url: str, body: dict) -> set[str]:
    response = httpx.post(f"{url}/search", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {feature["id"] for feature in response.json()["features"]}


# --------------------------------------------------------------------------- RangeHTTPServer


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-7", 993, 999),
        ("bytes=995-5000", 995, 999),
        ("bytes=-5000", 0, 999),
    ],
)
def test_range_requests_return_exact_bytes(blob_server, header: str, first: int, last: int) -> None:
    server, payload = blob_server
    response = httpx.get(f"{server.url}/blob.bin", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == payload[first : last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(payload)}"
    assert int(response.headers["Content-Length"]) == last - first + 1


def test_full_get_and_head(blob_server) -> None:
    server, payload = blob_server
    full = httpx.get(f"{server.url}/blob.bin")
    assert full.status_code == 200 and full.content == payload
    assert full.headers["Accept-Ranges"] == "bytes"
    head = httpx.head(f"{server.url}/blob.bin")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(payload)
    assert server.requests_by_method == {"GET": 1, "HEAD": 1}
    assert server.bytes_sent == len(payload)


def test_unsatisfiable_range_is_416(blob_server) -> None:
    server, payload = blob_server
    response = httpx.get(f"{server.url}/blob.bin", headers={"Range": "bytes=1000-1010"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(payload)}"


def test_several_ranges_get_the_full_body(blob_server) -> None:
    server, payload = blob_server
    response = httpx.get(f"{server.url}/blob.bin", headers={"Range": "bytes=0-1,5-6"})
    assert response.status_code == 200 and response.content == payload


def test_missing_files_and_escapes_are_404(blob_server) -> None:
    server, _ = blob_server
    assert httpx.get(f"{server.url}/nope.bin").status_code == 404
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/../../etc/passwd")
    assert conn.getresponse().status == 404
    conn.close()


def test_keep_alive_serves_several_requests_on_one_connection(blob_server) -> None:
    server, payload = blob_server
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    bodies = []
    for header in ("bytes=0-3", "bytes=4-7"):
        conn.request("GET", "/blob.bin", headers={"Range": header})
        bodies.append(conn.getresponse().read())
    sock_after_two = conn.sock
    conn.close()
    assert bodies == [payload[0:4], payload[4:8]]
    assert sock_after_two is not None  # the server did not close the connection


def test_client_hanging_up_mid_body_is_quiet_and_harmless(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import socket
    import struct

    (tmp_path / "big.bin").write_bytes(bytes(8 << 20))
    with RangeHTTPServer(tmp_path) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, do not drain
        sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/big.bin", headers={"Range": "bytes=0-9"}).content == bytes(10)
        assert 0 < server.bytes_sent < (8 << 20) + 10
    assert "Traceback" not in capfd.readouterr().err


def test_counters_log_and_reset(blob_server) -> None:
    server, _ = blob_server
    httpx.get(f"{server.url}/blob.bin", headers={"Range": "bytes=0-99"})
    httpx.head(f"{server.url}/blob.bin")
    assert server.requests == 2
    assert server.bytes_sent == 100
    assert [(r.method, r.path, r.range) for r in server.request_log] == [
        ("GET", "/blob.bin", "bytes=0-99"),
        ("HEAD", "/blob.bin", None),
    ]
    server.reset_stats()
    assert (server.requests, server.bytes_sent, server.request_log, server.requests_by_method) == (0, 0, [], {})


def test_latency_delays_every_request(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 10)
    with (
        RangeHTTPServer(tmp_path, latency_s=0.0) as fast,
        RangeHTTPServer(tmp_path, latency_s=0.25) as slow,
        httpx.Client() as client,
    ):
        client.get(f"{fast.url}/f.bin")  # connect once so only the request is timed
        client.get(f"{slow.url}/f.bin")
        start = time.perf_counter()
        client.get(f"{fast.url}/f.bin")
        fast_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(2):
            client.get(f"{slow.url}/f.bin", headers={"Range": "bytes=0-1"})
        slow_s = time.perf_counter() - start
    assert fast_s < 0.2
    assert slow_s >= 2 * 0.25


def test_parse_byte_range_ignores_what_it_cannot_serve() -> None:
    assert parse_byte_range("bytes=5-2", 10) is None
    assert parse_byte_range("items=0-1", 10) is None
    assert parse_byte_range("bytes=-", 10) is None
    with pytest.raises(ValueError):
        parse_byte_range("bytes=-0", 10)


def test_rasterio_reads_a_cog_window_through_the_server(fixture_data: FixtureInfo) -> None:
    scene = SCENES[0].id
    local = fixture_data.scene_path(scene, "B04")
    window = Window(100, 60, 200, 150)
    with rasterio.open(local) as src:
        expected = src.read(1, window=window)
    with RangeHTTPServer(fixture_data.cog_dir) as server:
        url = fixture_data.href(server.url, local)
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(url) as src:
            got = src.read(1, window=window)
            assert src.crs.to_string() == "EPSG:32633"
        log = server.request_log
    np.testing.assert_array_equal(got, expected)
    assert any(r.range for r in log if r.method == "GET"), "GDAL should read byte ranges"


# --------------------------------------------------------------------------- helpers


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_until_up_times_out_on_a_silent_port() -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="did not answer"):
        wait_until_up(f"http://127.0.0.1:{free_port()}/", timeout=0.5)
    assert time.monotonic() - start < 5


# --------------------------------------------------------------------------- STAC APIs


def test_rustac_search_by_bbox_and_datetime(stac_api_rustac: RustacServer, fixture_data: FixtureInfo) -> None:
    west = _search_ids(
        stac_api_rustac.url,
        {"collections": [S2_COLLECTION], "bbox": _poi_bbox(fixture_data, "west1"), "datetime": JULY},
    )
    east = _search_ids(
        stac_api_rustac.url,
        {"collections": [S2_COLLECTION], "bbox": _poi_bbox(fixture_data, "east1"), "datetime": JULY},
    )
    mid_july = _search_ids(
        stac_api_rustac.url,
        {
            "collections": [S2_COLLECTION],
            "bbox": _poi_bbox(fixture_data, "east1"),
            "datetime": "2024-07-11T00:00:00Z/2024-07-16T00:00:00Z",
        },
    )
    nowhere = _search_ids(
        stac_api_rustac.url, {"collections": [S2_COLLECTION], "bbox": [9.9, 9.9, 10.1, 10.1], "datetime": JULY}
    )
    assert west == ALL_SCENES
    assert east == ALL_SCENES - {PARTIAL_SCENE}  # the partial swath covers only the west half
    assert mid_july == {"S2B_33TXL_20240712_0_L2A", "S2B_33TXL_20240715_0_L2A"}
    assert nowhere == set()


def test_rustac_serves_the_variant_without_blue(stac_api_rustac: RustacServer, fixture_data: FixtureInfo) -> None:
    body = {"collections": [NOBLUE_COLLECTION], "bbox": _poi_bbox(fixture_data, "west1"), "datetime": JULY}
    features = httpx.post(f"{stac_api_rustac.url}/search", json=body, timeout=30).json()["features"]
    assert {f["id"] for f in features} == ALL_SCENES
    assert all("blue" not in f["assets"] and "red" in f["assets"] for f in features)


def test_stac_fastapi_static_search_by_bbox_and_datetime(
    stac_api_fastapi: StacFastapiStaticServer, fixture_data: FixtureInfo
) -> None:
    east = _search_ids(
        stac_api_fastapi.url,
        {"collections": [S2_COLLECTION], "bbox": _poi_bbox(fixture_data, "east1"), "datetime": JULY},
    )
    assert east == ALL_SCENES - {PARTIAL_SCENE}


def test_stac_fastapi_static_applies_a_cql2_filter(
    stac_api_fastapi: StacFastapiStaticServer, fixture_data: FixtureInfo
) -> None:
    body = {
        "collections": [S2_COLLECTION],
        "bbox": _poi_bbox(fixture_data, "west1"),
        "datetime": JULY,
        "filter-lang": "cql2-json",
        "filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 10]},
    }
    expected = {spec.id for spec in SCENES if spec.cloud_cover <= 10}
    assert _search_ids(stac_api_fastapi.url, body) == expected
    assert expected and expected != ALL_SCENES


def test_subprocess_server_is_gone_after_exit(stac_api_files: list[Path]) -> None:
    with RustacServer(stac_api_files) as server:
        process = server._process
        url = server.url
        assert httpx.get(f"{url}/conformance").status_code == 200
    assert process is not None and process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/conformance", timeout=2)


def test_subprocess_server_that_cannot_start_raises(tmp_path: Path) -> None:
    server = RustacServer([tmp_path / "missing.json"])
    server.start_attempts = 1
    with pytest.raises(RuntimeError, match="did not start"), server:
        pass
    assert server._process is None


def test_stac_fastapi_static_accepts_a_file_uri(static_catalog: Path) -> None:
    server = StacFastapiStaticServer(static_catalog.as_uri())
    assert server.catalog_href == static_catalog.as_uri()
    assert StacFastapiStaticServer(static_catalog).catalog_href == static_catalog.resolve().as_uri()
