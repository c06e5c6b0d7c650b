"""Shared, session-scoped fixtures: the synthetic data set and real loopback servers.

Small defaults keep tests fast: the scene is 512 px and POIs fit an AOI of 256 px
(tests use aoi 256 / tile 128 / stride 64 / output 64). ``fixture_data_full`` (2048 px,
AOI 1024, a few seconds) is generated only when a test asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rsbuild.testing.servers import RangeHTTPServer, RustacServer, StacFastapiStaticServer
from rsbuild.testing.synthetic import FixtureInfo, generate

TEST_SCENE_SIZE = 512
TEST_AOI_SIZE = 256
FULL_SCENE_SIZE = 2048
FULL_AOI_SIZE = 1024


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> FixtureInfo:
    """The synthetic fixture (seed 0, 512 px scene, POIs fit a 256 px AOI)."""
    return generate(tmp_path_factory.mktemp("fixture"), seed=0, size=TEST_SCENE_SIZE, aoi_size=TEST_AOI_SIZE)


@pytest.fixture(scope="session")
def fixture_data_unknown_codes(tmp_path_factory: pytest.TempPathFactory) -> FixtureInfo:
    """Like ``fixture_data`` but the label COGs carry a few unknown codes (254)."""
    return generate(
        tmp_path_factory.mktemp("fixture-unknown"),
        seed=0,
        size=TEST_SCENE_SIZE,
        aoi_size=TEST_AOI_SIZE,
        unknown_codes=True,
    )


@pytest.fixture(scope="session")
def fixture_data_full(tmp_path_factory: pytest.TempPathFactory) -> FixtureInfo:
    """The full-size fixture (2048 px scene, POIs fit the default 1024 px AOI)."""
    return generate(tmp_path_factory.mktemp("fixture-full"), seed=0, size=FULL_SCENE_SIZE, aoi_size=FULL_AOI_SIZE)


@pytest.fixture(scope="session")
def cog_server(fixture_data: FixtureInfo) -> Iterator[RangeHTTPServer]:
    """Range-capable HTTP server over ``fixture_data.cog_dir`` (shared: reset its stats before counting)."""
    with RangeHTTPServer(fixture_data.cog_dir) as server:
        yield server


@pytest.fixture(scope="session")
def stac_api_files(
    fixture_data: FixtureInfo, cog_server: RangeHTTPServer, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """Collection and item-collection JSON files (hrefs on ``cog_server``), in load order."""
    return fixture_data.write_stac_api_files(cog_server.url, tmp_path_factory.mktemp("stac-api"))


@pytest.fixture(scope="session")
def stac_api_rustac(stac_api_files: list[Path]) -> Iterator[RustacServer]:
    """``rustac serve`` with collections sentinel-2-l2a, sentinel-2-l2a-noblue and esa-worldcover."""
    with RustacServer(stac_api_files) as server:
        yield server


@pytest.fixture(scope="session")
def static_catalog(
    fixture_data: FixtureInfo, cog_server: RangeHTTPServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Path of a static ``catalog.json`` (relative links; asset hrefs on ``cog_server``)."""
    return fixture_data.write_static_catalog(cog_server.url, tmp_path_factory.mktemp("static-catalog"))


@pytest.fixture(scope="session")
def stac_api_fastapi(static_catalog: Path) -> Iterator[StacFastapiStaticServer]:
    """stac-fastapi-static over ``static_catalog`` (supports CQL2 ``filter``)."""
    with StacFastapiStaticServer(static_catalog) as server:
        yield server


# Fixtures that start real servers on 127.0.0.1 (or a big fixture): tests using them are marked
# `loopback` and `slow`, so `pytest -m "not slow"` runs the fast half in seconds.
LOOPBACK_FIXTURES = frozenset({
    "cog_server", "stac_api_rustac", "stac_api_fastapi", "llama_server", "server", "fake_ee", "mapbox",
    "fixture_data_full",
})
SLOW_MODULES = ("test_ray", "test_resume", "test_preview", "test_local_engine", "test_vllm", "test_openai_vllm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        uses = set(getattr(item, "fixturenames", ())) & LOOPBACK_FIXTURES
        if uses:
            item.add_marker(pytest.mark.loopback)
        if uses or item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
