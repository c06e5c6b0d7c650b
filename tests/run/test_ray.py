"""The Ray executor (local `ray.init` with the CPUs here) writes the same samples as the local one."""

from __future__ import annotations

import hashlib

import pytest

from rsbuild.config import load_config
from rsbuild.dataset.shards import list_shards
from rsbuild.run.pipeline import run_build
from tests.test_cli import write_config

ray = pytest.importorskip("ray")


def test_ray_executor_matches_local(tmp_path, fixture_data, stac_api_rustac, cog_server):
    from rsbuild.run.ray_executor import run_build_ray

    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url,
                          output={"unit_pois": 2}, captions={"tasks": ["area", "class"]})
    cfg = load_config(config)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    run_build(cfg, local, show_progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_build_ray(cfg, distributed, caption_actors=2)
    finally:
        ray.shutdown()
    assert summary.finalized and summary.units_done == 4
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert {p.name: digest(p) for p in list_shards(distributed)} == {p.name: digest(p) for p in list_shards(local)}
    for split in ("train", "validation", "test"):
        assert (distributed / "data" / f"{split}.jsonl").read_bytes() == (local / "data" / f"{split}.jsonl").read_bytes()
    assert (distributed / "failures.jsonl").read_bytes() == (local / "failures.jsonl").read_bytes()
