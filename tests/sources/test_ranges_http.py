"""The range reader's HTTP as users' networks need it: the proxy variables (a CONNECT tunnel for
https, the proxy's credentials), NO_PROXY, certificates from ``SSL_CERT_FILE``, redirects, and
credentials or signed queries kept out of every message. All servers on loopback; the proxy
resolves a name (``cogs.test``) only it knows, as a proxy in front of a private network does."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import rasterio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rasterio.transform import Affine

from rsbuild.records import Grid
from rsbuild.sources import ranges, raster_io
from rsbuild.testing.servers import RangeHTTPServer

CRS, PIXEL_M, ORIGIN = "EPSG:32633", 10.0, (500000.0, 5000000.0)
PRIVATE_NAME = "cogs.test"  # resolved by the proxy only
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                   "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")
GRID = Grid(CRS, (PIXEL_M, 0.0, ORIGIN[0] + 100 * PIXEL_M, 0.0, -PIXEL_M, ORIGIN[1] - 50 * PIXEL_M), 300, 300)


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, certificate or GDAL HTTP setting from the machine running the tests."""
    for name in (*PROXY_VARIABLES, ranges.ENABLE, *ranges.GDAL_HTTP_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512 px uint16 COG of seeded noise."""
    root = tmp_path_factory.mktemp("cogs")
    data = np.random.default_rng(3).integers(1, 10000, size=(1, 512, 512), dtype=np.uint16)
    with rasterio.open(root / "band.tif", "w", driver="COG", width=512, height=512, count=1, dtype="uint16", crs=CRS,
                       transform=Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1]), blocksize=256,
                       compress="DEFLATE", overviews="NONE") as dst:
        dst.write(data)
    return root


@pytest.fixture(scope="module")
def expected(folder: Path) -> np.ndarray:
    return raster_io.read_on_grid(str(folder / "band.tif"), GRID)


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # what a client trusts
    server: ssl.SSLContext  # a leaf signed by that CA, for 127.0.0.1 and cogs.test


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and a server certificate it signed (valid for two days)."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("rsbuild test CA")).issuer_name(_name("rsbuild test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name(PRIVATE_NAME)).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(PRIVATE_NAME),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.key").write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    return Certificates(folder / "ca.pem", server)


# --------------------------------------------------------------------------- a forward proxy


@dataclass
class ProxyLog:
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, target, Proxy-Authorization
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ProxyHandler(BaseHTTPRequestHandler):
    """GET of an absolute http:// URL, forwarded; CONNECT host:port, tunnelled. ``cogs.test`` is 127.0.0.1."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return

    def setup(self) -> None:
        super().setup()
        with self.server.log.lock:
            self.server.log.connections += 1

    def _note(self) -> None:
        with self.server.log.lock:
            self.server.log.requests.append((self.command, self.path, self.headers.get("Proxy-Authorization")))

    def _known(self, host: str | None) -> bool:
        """Only ``cogs.test`` (127.0.0.1) is reachable; anything else is answered 502, never looked up."""
        if host == PRIVATE_NAME:
            return True
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        self._note()
        parts = urlsplit(self.path)
        if not self._known(parts.hostname):
            return
        upstream = http.client.HTTPConnection("127.0.0.1", parts.port or 80, timeout=5)
        upstream.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                         headers={k: v for k, v in self.headers.items() if k.lower() == "range"})
        answer = upstream.getresponse()
        body = answer.read()
        upstream.close()
        self.send_response(answer.status)
        for name in ("Content-Range", "Content-Type", "Location"):
            if answer.getheader(name):
                self.send_header(name, answer.getheader(name) or "")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self._note()
        host, _, port = self.path.rpartition(":")
        if not self._known(host):
            return
        upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        pair = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(pair, [], [], 5)
                if not readable:
                    return
                for sock in readable:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(chunk)
        except OSError:
            return
        finally:
            upstream.close()


@pytest.fixture()
def proxy() -> Iterator[tuple[str, ProxyLog]]:
    """A forward proxy on loopback: its address (``127.0.0.1:PORT``) and its log."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    httpd.daemon_threads = True
    httpd.log = ProxyLog()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}", httpd.log  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------------- tests


def test_http_reads_go_through_the_proxy_with_its_credentials_on_one_connection(
    folder: Path, expected: np.ndarray, proxy: tuple[str, ProxyLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, log = proxy
    monkeypatch.setenv("HTTP_PROXY", f"http://reader:p%40ss@{address}")
    with RangeHTTPServer(folder) as server:
        url = f"http://{PRIVATE_NAME}:{server.port}/band.tif"
        np.testing.assert_array_equal(raster_io.read_on_grid(url, GRID), expected)
    assert [(method, target) for method, target, _auth in log.requests] == [("GET", url), ("GET", url)]  # header, data
    assert {auth for _method, _target, auth in log.requests} == {basic("reader", "p@ss")}
    assert log.connections == 1  # kept alive between the header and the data


def test_https_reads_tunnel_through_the_proxy_and_trust_ssl_cert_file(
    folder: Path, expected: np.ndarray, certificates: Certificates, proxy: tuple[str, ProxyLog],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    address, log = proxy
    monkeypatch.setenv("HTTPS_PROXY", f"http://reader:secret@{address}")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    with RangeHTTPServer(folder, tls=certificates.server) as server:
        url = f"https://{PRIVATE_NAME}:{server.port}/band.tif?X-Signature=abc"
        np.testing.assert_array_equal(raster_io.read_on_grid(url, GRID), expected)
        assert [record.path for record in server.request_log] == ["/band.tif?X-Signature=abc"] * 2
    assert log.requests == [("CONNECT", f"{PRIVATE_NAME}:{server.port}", basic("reader", "secret"))]


def test_loopback_hosts_skip_the_proxy(
    folder: Path, expected: np.ndarray, proxy: tuple[str, ProxyLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy cannot reach this machine's loopback: loopback URLs are read directly whatever the variables say."""
    address, log = proxy
    monkeypatch.setenv("http_proxy", f"http://{address}")
    monkeypatch.setenv("ALL_PROXY", f"http://{address}")
    with RangeHTTPServer(folder) as server:
        np.testing.assert_array_equal(raster_io.read_on_grid(f"{server.url}/band.tif", GRID), expected)
        np.testing.assert_array_equal(raster_io.read_on_grid(f"http://localhost:{server.port}/band.tif", GRID), expected)
    assert log.requests == []


def test_no_proxy_hosts_are_asked_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a request goes, from the variables alone (a direct request to a remote name would leave loopback)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("all_proxy", "http://127.0.0.1:3129")
    monkeypatch.setenv("NO_PROXY", "example.org, .internal")
    assert ranges._route("https://data.example.org/a.tif")[0].proxy is None
    assert ranges._route("https://cogs.internal/a.tif")[0].proxy is None
    assert ranges._route("https://data.example.com/a.tif")[0].proxy == ("127.0.0.1", 3128)
    assert ranges._route("http://data.example.com/a.tif")[0].proxy == ("127.0.0.1", 3129)  # ALL_PROXY for http


@pytest.mark.parametrize(("host", "port", "entries", "bypassed"), [
    ("a.example.com", 443, "example.com", True),
    ("example.com", 443, ".example.com", False),
    ("notexample.com", 443, "example.com", False),
    ("10.1.2.3", 80, "10.0.0.0/8", True),
    ("10.1.2.3", 80, "10.1.2.3:8080", False),
    ("data.example.com", 8080, "data.example.com:8080", True),
    ("anything", 80, " , *", True),
])
def test_no_proxy_entries_read_like_curl(host: str, port: int, entries: str, bypassed: bool) -> None:
    assert ranges._no_proxy(host, port, entries) is bypassed


def test_an_untrusted_certificate_is_named_and_not_retried(folder: Path, certificates: Certificates) -> None:
    with RangeHTTPServer(folder, tls=certificates.server) as server, pytest.raises(raster_io.RasterReadError) as info:
        raster_io.read_on_grid(f"{server.url}/band.tif", GRID)
    assert "certificate is not trusted" in str(info.value) and "SSL_CERT_FILE" in str(info.value)
    assert not info.value.transient


class _Redirector(BaseHTTPRequestHandler):
    """``/old/NAME`` → ``/new/NAME`` (a relative Location) → the file server's ``/NAME``."""

    protocol_version = "HTTP/1.1"
    target = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[1]
        self.send_response(302 if self.path.startswith("/old/") else 307)
        self.send_header("Location", f"/new/{name}" if self.path.startswith("/old/") else f"{self.target}/{name}")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_redirects_are_followed_relative_and_absolute(folder: Path, expected: np.ndarray) -> None:
    with RangeHTTPServer(folder) as server:
        handler = type("Redirector", (_Redirector,), {"target": server.url})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            pixels = raster_io.read_on_grid(f"http://127.0.0.1:{httpd.server_address[1]}/old/band.tif", GRID)
        finally:
            httpd.shutdown()
            httpd.server_close()
        assert [record.path for record in server.request_log] == ["/band.tif", "/band.tif"]
    np.testing.assert_array_equal(pixels, expected)


def test_credentials_and_signed_queries_stay_out_of_messages(folder: Path) -> None:
    with RangeHTTPServer(folder) as server, pytest.raises(raster_io.RasterReadError) as info:
        raster_io.read_on_grid(f"http://reader:hunter2@{server.host}:{server.port}/nope.tif?sig=TOKEN", GRID)
    message = str(info.value)
    assert "HTTP 404" in message and f"{server.url}/nope.tif" in message
    assert "hunter2" not in message and "reader" not in message and "TOKEN" not in message


def test_a_proxy_that_is_not_http_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:secret@proxy.example:1080")
    with pytest.raises(raster_io.RasterReadError) as info:
        raster_io.read_on_grid("https://data.example/band.tif", GRID)
    message = str(info.value)
    assert "socks5://proxy.example:1080" in message and f"{ranges.ENABLE}=NO" in message and "secret" not in message


