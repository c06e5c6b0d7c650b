"""The loopback servers: byte ranges, counters, latency, GDAL over HTTP, both STAC APIs, the
subprocess helper (errors, restart, dying with the parent) and the real vLLM server."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rsbuild.testing.processes import ServerProcess, ServerStartError
from rsbuild.testing.servers import (
    RangeHTTPServer,
    RustacServer,
    StacFastapiStaticServer,
    free_port,
    parse_byte_range,
    wait_until_up,
)
from rsbuild.testing.synthetic import NOBLUE_COLLECTION, S2_COLLECTION, SCENES, FixtureInfo
from rsbuild.testing.vllm_server import (
    VllmServer,
    parse_prometheus_text,
    vllm_available,
    vllm_model_dir,
    vllm_python,
)

JULY = "2024-07-01T00:00:00Z/2024-07-31T23:59:59Z"
ALL_SCENES = {spec.id for spec in SCENES}
PARTIAL_SCENE = next(spec.id for spec in SCENES if spec.west_half_only)


@pytest.fixture()
def blob_server(tmp_path: Path) -> Iterator[tuple[RangeHTTPServer, bytes]]:
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

    size = 64 << 20  # more than loopback's socket buffers can hold, whatever the scheduling
    (tmp_path / "big.bin").write_bytes(bytes(size))
    with RangeHTTPServer(tmp_path) as server:
        before = set(threading.enumerate())  # other servers' handlers (keep-alive clients of other tests) may live on

        def handlers() -> list[threading.Thread]:
            return [t for t in threading.enumerate() if t not in before and "process_request" in t.name]

        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, do not drain
        sock.close()
        assert httpx.get(f"{server.url}/big.bin", headers={"Range": "bytes=0-9"}, timeout=60).content == bytes(10)
        deadline = time.monotonic() + 60
        while handlers() and time.monotonic() < deadline:
            time.sleep(0.05)  # the hung-up request's handler stops sending when the reset reaches it
        assert not handlers()
        assert server.bytes_sent < size  # it stopped: the body was not sent in full
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
    nowhere = _search_ids(stac_api_rustac.url, {"collections": [S2_COLLECTION], "bbox": [9.9, 9.9, 10.1, 10.1], "datetime": JULY})
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


def test_stac_fastapi_static_applies_a_cql2_filter(stac_api_fastapi: StacFastapiStaticServer, fixture_data: FixtureInfo) -> None:
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


# --------------------------------------------------------------------------- ServerProcess

# A trivial HTTP server on argv[1] that also starts a grandchild (a sleeper) and prints its pid,
# like vLLM's API server and engine processes.
TRIVIAL_SERVER = """
import http.server, subprocess, sys
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("grandchild", sleeper.pid, flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _trivial_server(tmp_path: Path, **kwargs: Any) -> ServerProcess:
    return ServerProcess([sys.executable, "-c", TRIVIAL_SERVER, "{port}"], ready_url="/", name="trivial", cwd=tmp_path, **kwargs)


def _grandchild_pid(server: ServerProcess) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        match = re.search(r"^grandchild (\d+)$", server.output(), re.MULTILINE)
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no grandchild pid in the log:\n{server.output()}")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in {"Z", "X"}


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def test_server_process_that_exits_at_once_shows_its_log_tail(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('boom: cannot open the model', flush=True); sys.exit(3)"]
    server = ServerProcess(command, ready_url="/health", name="boomer", log_path=tmp_path / "boom.log")
    start = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "boomer did not start: the process exited with code 3" in message
    assert f"http://127.0.0.1:{server.port}/health" in message
    assert "boom: cannot open the model" in message  # the log tail
    assert str(tmp_path / "boom.log") in message
    assert isinstance(info.value, RuntimeError)
    assert server.process is None and not server.running
    assert "boom: cannot open the model" in (tmp_path / "boom.log").read_text()  # a given log is kept


def test_server_process_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('loading weights', flush=True); time.sleep(60)"]
    server = ServerProcess(command, ready_url="/", startup_timeout_s=1.0)
    with pytest.raises(ServerStartError, match=r"did not answer within 1 s") as info:
        server.start()
    assert "loading weights" in str(info.value)
    assert server.process is None
    log = server.log_path
    assert log is not None and log.exists()
    server.close()
    assert not log.exists()  # a temporary log goes with close()


def test_server_process_that_cannot_be_run(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="cannot run"), ServerProcess([str(tmp_path / "no-such-program")]):
        pass


def test_server_process_restarts_on_the_same_port(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello")
    with _trivial_server(tmp_path) as server:
        port, pid = server.port, server.pid
        assert httpx.get(f"{server.url}/hello.txt").text == "hello"
        server.restart()
        assert server.port == port and server.pid != pid
        assert httpx.get(f"{server.url}/hello.txt").text == "hello"
        server.stop()
        assert not server.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/hello.txt", timeout=2)
        server.start()
        assert server.port == port
        assert httpx.get(f"{server.url}/hello.txt").text == "hello"
    assert server.log_path is None


def test_server_process_stop_kills_the_whole_group(tmp_path: Path) -> None:
    with _trivial_server(tmp_path) as server:
        child = server.pid
        assert child is not None
        grandchild = _grandchild_pid(server)
        assert os.getpgid(grandchild) == child  # its own process group, led by the child
        assert os.getpgid(child) != os.getpgid(0)
    assert _wait_gone([child, grandchild]) == []


def test_server_process_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG follows the forking thread: a thread that ends must not take the server along."""
    server = _trivial_server(tmp_path)
    thread = threading.Thread(target=server.start)
    thread.start()
    thread.join()
    try:
        time.sleep(0.5)
        assert server.running
        assert httpx.get(f"{server.url}/").status_code == 200
    finally:
        server.close()


PARENT_SCRIPT = """
import sys, threading, time
from pathlib import Path
from rsbuild.testing.processes import ServerProcess

TRIVIAL_SERVER = {trivial!r}
server = ServerProcess([sys.executable, "-c", TRIVIAL_SERVER, "{{port}}"], ready_url="/", cwd=sys.argv[1])
if sys.argv[2] == "thread":  # started from a worker thread that has ended by the time we are killed
    thread = threading.Thread(target=server.start)
    thread.start()
    thread.join()
else:
    server.start()
print("child", server.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_server_dies_when_its_parent_is_sigkilled(tmp_path: Path, started_from: str) -> None:
    script = PARENT_SCRIPT.format(trivial=TRIVIAL_SERVER)
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), started_from],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.startswith("child "), f"{line!r} {parent.stderr.read() if parent.stderr else ''}"
        child = int(line.split()[1])
        assert _alive(child)
        grandchild = -1
        deadline = time.monotonic() + 10
        while grandchild < 0 and time.monotonic() < deadline:  # the sleeper is in the child's group
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and int(entry.name) != child:
                    try:
                        if os.getpgid(int(entry.name)) == child:
                            grandchild = int(entry.name)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
        assert grandchild > 0 and _alive(grandchild)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone([child, grandchild], timeout_s=5.0) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_rustac_server_dies_when_its_parent_is_sigkilled(stac_api_files: list[Path]) -> None:
    script = (
        "import sys, time\n"
        "from rsbuild.testing.servers import RustacServer\n"
        "server = RustacServer(sys.argv[1:]).start()\n"
        "print('child', server._process.pid, server.url, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, *map(str, stac_api_files)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        _, pid_text, url = parent.stdout.readline().split()
        child = int(pid_text)
        assert httpx.get(f"{url}/conformance").status_code == 200
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone([child], timeout_s=5.0) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_subprocess_server_error_names_the_server_and_the_log(tmp_path: Path) -> None:
    server = RustacServer([tmp_path / "missing.json"])
    server.start_attempts = 1
    with pytest.raises(ServerStartError, match=r"rustac serve did not start: the process exited with code") as info:
        server.start()
    assert "missing.json" in str(info.value)  # rustac's own complaint, from the log tail


# --------------------------------------------------------------------------- vLLM

PROMETHEUS_TEXT = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 222.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 0.0
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 6.0
vllm:cache_config_info{block_size="128",hash="a,b",note="say \\"hi\\""} 1.0
process_start_time_seconds 1.7e+09
broken line
vllm:not_a_number{engine="0"} abc
"""


def test_parse_prometheus_text() -> None:
    samples = parse_prometheus_text(PROMETHEUS_TEXT)
    assert samples["vllm:prefix_cache_queries_total"] == 222.0
    assert samples["vllm:prefix_cache_hits_total"] == 0.0
    assert samples["vllm:num_requests_running"] == 3.0  # summed over engines
    assert samples['vllm:e2e_request_latency_seconds_bucket{le="+Inf"}'] == 6.0
    assert samples['vllm:cache_config_info{block_size="128",hash="a,b",note="say "hi""}'] == 1.0
    assert samples["process_start_time_seconds"] == 1.7e9
    assert not any("not_a_number" in key or "broken" in key for key in samples)


def test_vllm_available_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSBUILD_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    monkeypatch.setenv("RSBUILD_VLLM_MODEL", str(tmp_path / "no-model"))
    assert vllm_python() == tmp_path / "nope" / "python"
    assert vllm_model_dir() == tmp_path / "no-model"
    message = vllm_available()
    assert message is not None
    assert str(tmp_path / "nope" / "python") in message and str(tmp_path / "no-model") in message
    assert "scripts/setup_vllm_cpu.sh" in message
    with pytest.raises(RuntimeError, match="setup_vllm_cpu.sh"):
        VllmServer().start()
    monkeypatch.delenv("RSBUILD_VLLM_PYTHON")
    monkeypatch.delenv("RSBUILD_VLLM_MODEL")
    repo = Path(__file__).resolve().parents[2]
    assert vllm_python() == repo / ".venv-vllm" / "bin" / "python"
    assert vllm_model_dir() == repo / ".cache" / "smollm2-135m-hf"


def test_vllm_server_command_line() -> None:
    server = VllmServer(model_dir="/models/m", served_model_name="m", port=4321, python="/venv/bin/python")
    command = server.command()
    assert command[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    for flag in ("--enforce-eager", "--no-enable-chunked-prefill", "--enable-prefix-caching",
                 "--enable-prompt-tokens-details"):  # fmt: skip
        assert flag in command
    pairs = dict(zip(command[3::], command[4::], strict=False))
    assert pairs["--model"] == "/models/m" and pairs["--served-model-name"] == "m"
    assert pairs["--port"] == "4321" and pairs["--dtype"] == "float32" and pairs["--seed"] == "0"
    assert pairs["--max-model-len"] == "2048" and pairs["--kv-cache-memory-bytes"] == "1G"
    assert server.base_url == "http://127.0.0.1:4321/v1" and server.model_id == "m"
    assert server.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and server.env["HF_HUB_OFFLINE"] == "1"


# A system prompt longer than one KV block (128 tokens on CPU), so a repeat hits the prefix cache.
VLLM_SYSTEM = "You describe satellite images. " + " ".join(
    f"Rule {i}: name land cover, water, roads and buildings briefly." for i in range(20)
)


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.loopback
@pytest.mark.timeout(1200)
def test_vllm_server_n_seed_and_metrics() -> None:
    problem = vllm_available()
    if problem:
        if os.environ.get("RSBUILD_REQUIRE_VLLM"):
            pytest.fail(problem)
        pytest.skip(problem)
    started = time.monotonic()
    with VllmServer() as server:
        print(f"vLLM server ready in {time.monotonic() - started:.1f} s")
        body = {
            "model": server.model_id,
            "messages": [
                {"role": "system", "content": VLLM_SYSTEM},
                {"role": "user", "content": "Describe a river delta with farmland in one sentence."},
            ],
            "n": 3,
            "seed": 1234,
            "temperature": 0.8,
            "max_tokens": 16,
        }
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            assert client.get("/models").json()["data"][0]["id"] == server.model_id
            first = client.post("/chat/completions", json=body)
            assert first.status_code == 200, first.text
            again = client.post("/chat/completions", json=body)
        texts = [choice["message"]["content"] for choice in first.json()["choices"]]
        assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
        assert [choice["message"]["content"] for choice in again.json()["choices"]] == texts
        usage = again.json()["usage"]
        assert usage["prompt_tokens"] > 128
        assert usage["prompt_tokens_details"]["cached_tokens"] > 0  # --enable-prompt-tokens-details + prefix cache
        metrics = server.metrics()
        assert metrics["vllm:prefix_cache_queries_total"] > 0
        assert metrics["vllm:prefix_cache_hits_total"] > 0
        assert metrics["vllm:generation_tokens_total"] > 0
        assert metrics["vllm:num_requests_running"] == 0
        pid = server.pid
    assert pid is not None and _wait_gone([pid]) == []
