"""Config: the example is valid, bad values name the field and the fix."""

from __future__ import annotations

import tomllib

import pytest

from rsbuild.config import EXAMPLE_CONFIG, config_from_dict, load_config, write_example
from rsbuild.errors import ConfigError


def test_example_config_is_valid_and_resolves_paths(tmp_path):
    path = tmp_path / "rsbuild.toml"
    write_example(path)
    cfg = load_config(path)
    assert cfg.pois.path == tmp_path / "pois.csv"
    assert cfg.labels.url == str(tmp_path / "worldcover.tif")
    assert cfg.scenes.catalog.startswith("https://")
    assert (cfg.imagery.aoi_size, cfg.imagery.tile_size, cfg.imagery.tile_stride, cfg.imagery.output_size) == (1024, 512, 256, 224)
    with pytest.raises(ConfigError, match="already exists"):
        write_example(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("scenes", "max_cloud_cover", 150), r"scenes.max_cloud_cover: Input should be less than or equal to 100"),
        (("imagery", "tile_size", 4096), r"imagery.tile_size \(4096\) must not exceed imagery.aoi_size"),
        (("splits", "fractions", [0.5, 0.5, 0.5]), r"splits.fractions must be three non-negative numbers summing to 1"),
        (("labels", "url", None), r"labels.url is required when labels.source = 'cog'"),
        (("output", "shard_max_samplez", 3), r"output.shard_max_samplez: is not a known setting"),
        (("scenes", "datetime", "2024-01-01/"), r"scenes.datetime: use 'YYYY-MM-DD/YYYY-MM-DD'"),
    ],
)
def test_bad_values_name_the_field(change, message):
    data = tomllib.loads(EXAMPLE_CONFIG)
    section, key, value = change
    if value is None:
        data[section].pop(key)
    else:
        data[section][key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_missing_section_and_bad_toml(tmp_path):
    data = tomllib.loads(EXAMPLE_CONFIG)
    del data["scenes"]
    with pytest.raises(ConfigError, match=r"scenes: is required but missing"):
        config_from_dict(data)
    bad = tmp_path / "bad.toml"
    bad.write_text("[pois\npath = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")
