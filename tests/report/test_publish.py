"""`rsbuild publish` through the real huggingface_hub client against a loopback Hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.report.publish import publish
from rsbuild.schemes import get_scheme
from rsbuild.testing.hf_hub import HubServer
from tests.dataset.test_shards import make_sample

TOKEN = "hf_test_secret_token_0123456789"


def _dataset(out: Path) -> None:
    with DatasetWriter(out, OutputConfig(shard_max_samples=2), SplitsConfig(), CaptionsConfig(), get_scheme("esa_worldcover")) as writer:
        for i in range(5):
            writer.write(make_sample(f"p{i}_t0000", seed=i))


@pytest.fixture(autouse=True)
def _online(monkeypatch) -> None:
    """CI sets HF_HUB_OFFLINE=1 so no test reaches the real Hub; these tests talk to the loopback Hub only.
    They take the git LFS path (a client without hf_xet); the Xet path is test_publish_xet.py's."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


def _local_files(out: Path) -> dict[str, bytes]:
    """What a publish of ``out`` must put on the Hub: everything but the run bookkeeping."""
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return {k: v for k, v in local.items() if not k.startswith(("units/", "data/parts/"))}


def test_publish_uploads_the_dataset_once_and_keeps_the_token_secret(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "ds"
    _dataset(out)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token file of the machine's user
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        result = CliRunner().invoke(app, ["publish", str(out), "me/s2-demo"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (result.output, hub.unknown)
        assert hub.unknown == [] and hub.tokens == {TOKEN} and TOKEN not in result.output
        files = hub.repos["me/s2-demo"]
        assert files == _local_files(out) and "shards/train-000000.tar" in files and "README.md" in files
        assert not any(k.startswith("units/") for k in files)

        (out / "README.md").write_text((out / "README.md").read_text() + "\nA note.\n")
        publish(out, "me/s2-demo")  # again: only what changed is sent
        assert len(hub.commits) == 2 and hub.commits[1]["paths"] == ["README.md"]
        assert hub.repos["me/s2-demo"]["README.md"].endswith(b"A note.\n")
    assert TOKEN not in "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.stat().st_size < 10**6)


def test_publish_without_a_token_says_how_to_get_one(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "ds"
    _dataset(out)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["publish", str(out), "me/s2-demo"])
    assert result.exit_code == 2 and "HF_TOKEN" in result.output and "Traceback" not in result.output


def test_publish_refuses_an_unfinished_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["publish", str(tmp_path), "me/x"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "not a finished dataset" in result.output


def test_publish_in_offline_mode_says_which_variable_stops_it(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    out = tmp_path / "ds"
    _dataset(out)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = CliRunner().invoke(app, ["publish", str(out), "me/s2-demo"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "HF_HUB_OFFLINE" in result.output and "Traceback" not in result.output
    assert TOKEN not in result.output


def test_binary_files_go_through_lfs_and_a_rerun_after_an_interruption_sends_only_what_is_missing(
    tmp_path: Path, monkeypatch
) -> None:
    import hashlib

    out = tmp_path / "ds"
    _dataset(out)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    expected = _local_files(out)
    binary = {path: hashlib.sha256(data).hexdigest() for path, data in expected.items() if path.endswith((".tar", ".png"))}
    assert len(binary) >= 8  # 3 shards, 5 chip PNGs, plots
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        lost = binary["shards/train-000001.tar"]
        hub.refuse_uploads = {lost}  # the connection drops while this shard is sent
        result = CliRunner().invoke(app, ["publish", str(out), "me/s2-demo"], env={"COLUMNS": "300"})
        assert result.exit_code == 1 and "Run the same command again" in result.output, result.output
        assert "Traceback" not in result.output and TOKEN not in result.output
        assert hub.commits == [] and set(hub.uploads) == set(binary.values()) - {lost}  # the other objects arrived

        first = len(hub.uploads)
        publish(out, "me/s2-demo")
        assert hub.uploads[first:] == [lost]  # the rerun sends the one missing object, nothing else twice
        assert hub.unknown == [] and hub.repos["me/s2-demo"] == expected  # shards byte-identical on the Hub
        assert {hub.objects[oid] for oid in binary.values()} == {expected[path] for path in binary}

        publish(out, "me/s2-demo")  # unchanged: no upload, no commit
        assert len(hub.uploads) == len(binary) and len(hub.commits) == 1
