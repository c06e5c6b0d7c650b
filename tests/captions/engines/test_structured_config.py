"""`captions.constrained` / `captions.varied`: validated once, passed to every LLM engine, named in the annotator."""

from __future__ import annotations

import tomllib

import pytest

from rsbuild.captions.engines.factory import make_engines
from rsbuild.captions.engines.openai import OpenAIEngine
from rsbuild.config import EXAMPLE_CONFIG, CaptionsConfig, config_from_dict
from rsbuild.errors import ConfigError


@pytest.mark.parametrize(("settings", "message"), [
    ({"engine": "template", "constrained": True}, r"captions.constrained = true .* set captions.engine to local, vllm or openai"),
    ({"engine": "openai", "varied": True}, r"captions.varied = true .* set captions.constrained = true"),
])
def test_a_grammar_setting_without_its_engine_names_the_field_and_the_fix(settings: dict, message: str) -> None:
    data = tomllib.loads(EXAMPLE_CONFIG)
    data["captions"].update({"server_url": "http://127.0.0.1:9/v1", **settings})
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_the_example_config_documents_both_settings() -> None:
    captions = tomllib.loads(EXAMPLE_CONFIG)["captions"]
    assert captions["constrained"] is False and captions["varied"] is False
    assert "engines local, vllm, openai" in EXAMPLE_CONFIG


@pytest.mark.parametrize(("varied", "suffix"), [(False, "+grammar"), (True, "+varied-grammar")])
def test_the_openai_engine_is_built_constrained_and_says_so(varied: bool, suffix: str) -> None:
    cfg = CaptionsConfig(engine="openai", server_url="http://127.0.0.1:9/v1", models=["smollm2"], constrained=True,
                         varied=varied)
    (engine,) = make_engines(cfg, None)
    assert isinstance(engine, OpenAIEngine)
    try:
        assert engine.name == "smollm2" + suffix
        assert engine.model == "smollm2"  # the server is still asked for its own model name
    finally:
        engine.close()
