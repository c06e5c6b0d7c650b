"""Network timeouts are config fields (defaults: STAC 10/30 s, GDAL 10/30 s, LLM connect 10 s),
validated with a message naming the field, documented in `rsbuild init`, and what the clients use."""

from __future__ import annotations

import os
import socket
import threading
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.config import EXAMPLE_CONFIG, CaptionsConfig, config_from_dict
from rsbuild.errors import ConfigError
from tests.test_presets import example

FIELDS = {("scenes", "connect_timeout_s"): 10.0, ("scenes", "read_timeout_s"): 30.0,
          ("imagery", "http_connect_timeout_s"): 10.0, ("imagery", "http_timeout_s"): 30.0,
          ("captions", "connect_timeout_s"): 10.0, ("captions", "timeout_s"): 120.0}


def test_defaults_are_documented_in_the_init_example() -> None:
    documented = tomllib.loads(EXAMPLE_CONFIG)
    cfg = config_from_dict(example())
    for (section, key), default in FIELDS.items():
        assert documented[section][key] == default and getattr(getattr(cfg, section), key) == default


@pytest.mark.parametrize(("section", "key"), sorted(FIELDS))
def test_a_bad_timeout_names_its_field(section: str, key: str) -> None:
    data = example()
    data[section] = {**data[section], key: 0}
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: Input should be greater than 0"):
        config_from_dict(data)


def test_gdal_timeouts_reach_gdals_environment(monkeypatch) -> None:
    from rsbuild.run.pipeline import make_searcher
    from rsbuild.sources import stac

    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "30")
    monkeypatch.setenv("GDAL_HTTP_CONNECTTIMEOUT", "10")
    monkeypatch.setattr(stac, "SEARCH_TIMEOUT_S", stac.SEARCH_TIMEOUT_S)
    data = example(imagery={**example()["imagery"], "http_timeout_s": 7.5, "http_connect_timeout_s": 2})
    data["scenes"] = {**data["scenes"], "preset": "custom", "catalog": str(Path(__file__).parent / "missing-catalog.json")}
    cfg = config_from_dict(data)
    with pytest.raises(Exception):  # noqa: B017 - the catalog is missing; the options are set before it is opened
        make_searcher(cfg)
    assert os.environ["GDAL_HTTP_TIMEOUT"] == "7.5" and os.environ["GDAL_HTTP_CONNECTTIMEOUT"] == "2"


def test_the_llm_engine_gets_the_connect_timeout() -> None:
    from rsbuild.captions.engines.factory import make_engines

    cfg = CaptionsConfig(engine="openai", server_url="http://127.0.0.1:9/v1", models=["m"], connect_timeout_s=3.0, timeout_s=50.0)
    (engine,) = make_engines(cfg, None)
    assert (engine.connect_timeout_s, engine.timeout_s) == (3.0, 50.0)  # type: ignore[attr-defined]


def test_a_stalled_stac_server_times_out_after_the_configured_read_timeout(tmp_path: Path, fixture_data, monkeypatch) -> None:
    from rsbuild.sources import stac

    monkeypatch.setattr(stac, "SEARCH_TIMEOUT_S", stac.SEARCH_TIMEOUT_S)  # restored after the test
    stalled = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(iter(lambda: stalled.accept()[0], None)), daemon=True).start()
    from tests.test_cli import write_config

    url = f"http://127.0.0.1:{stalled.getsockname()[1]}"
    config = write_config(tmp_path, fixture_data, url, "labels.tif", scenes={"read_timeout_s": 0.3})
    try:
        result = CliRunner().invoke(app, ["scenes", "-c", str(config), "--limit", "1"], env={"COLUMNS": "300"})
    finally:
        stalled.close()
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "read timeout=0.3" in " ".join(result.output.split()), result.output  # the client waited what the config says
