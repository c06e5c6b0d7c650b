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


def test_a_lost_caption_actor_costs_only_its_unfinished_units(tmp_path, fixture_data, stac_api_rustac, cog_server):
    import threading
    import time

    from rsbuild.run.ray_executor import ACTOR_NAME, run_build_ray

    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url,
                          output={"unit_pois": 1}, captions={"tasks": ["area", "class"]})
    cfg = load_config(config)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    run_build(cfg, local, show_progress=False)
    killed: list[str] = []

    def kill_an_actor() -> None:  # once the first unit is captioned, kill the actor (it restarts)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list((distributed / "units").glob("*.json")):
                for i in range(2):
                    try:
                        ray.kill(ray.get_actor(f"{ACTOR_NAME}-{i}"), no_restart=False)
                        killed.append(f"{ACTOR_NAME}-{i}")
                        break
                    except ValueError:
                        continue
            time.sleep(0.05)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        killer = threading.Thread(target=kill_an_actor, daemon=True)
        killer.start()
        summary = run_build_ray(cfg, distributed, caption_actors=2)
        killer.join(5)
    finally:
        ray.shutdown()
    assert killed and summary.finalized
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert {p.name: digest(p) for p in list_shards(distributed)} == {p.name: digest(p) for p in list_shards(local)}
    for split in ("train", "validation", "test"):
        assert (distributed / "data" / f"{split}.jsonl").read_bytes() == (local / "data" / f"{split}.jsonl").read_bytes()
