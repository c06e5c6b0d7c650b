"""``s3://bucket/prefix`` as the output of build / fetch / caption and as the source of recaption,
on a loopback S3 server (moto's server mode).

Keys and the endpoint reach fsspec's S3 file system (s3fs) through the environment, as a user
would set them: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``; every
other AWS setting of the machine running the tests (profiles, session tokens, config files) is
taken away so that only these reach botocore. The subject here is what is stored and resumed, so
the server accepts any signature; signed requests against a server that checks them are the
subject of ``tests/sources/test_cdse_s3.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.dataset.remote import RemoteOutput, staged_output
from rsbuild.testing.servers import MotoS3Server
from rsbuild.testing.synthetic import FixtureInfo
from tests.test_cli import write_config

runner = CliRunner()
BUCKET = "datasets"
VARYING = {"run_summary.json"}  # timings and the staging folder's name


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3Server]:
    with MotoS3Server(check_signatures=False) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def s3_environment(s3: MotoS3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoS3Server:
    for name in [name for name in os.environ if name.startswith("AWS_") and name != "AWS_CA_BUNDLE"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fsspec.get_filesystem_class("s3").clear_instance_cache()  # s3fs instances remember the endpoint and credentials they were made with
    return s3


@pytest.fixture(scope="module")
def label_url(fixture_data: FixtureInfo, cog_server: Any) -> str:
    return f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"


def remote_files(s3: MotoS3Server, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        for entry in page.get("Contents", []):
            found[entry["Key"][len(prefix) + 1 :]] = client.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()
    return found


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def same_dataset(remote: dict[str, bytes], local: dict[str, bytes]) -> None:
    names = sorted(name for name in local if name not in VARYING and not name.startswith("cache/"))
    assert sorted(name for name in remote if name not in VARYING and not name.startswith("cache/")) == names
    for name in names:
        if name.endswith(".stats.json") or name == "summary.json":  # these hold timings: compare the rest
            assert _untimed(remote[name]) == _untimed(local[name]), name
        else:
            assert remote[name] == local[name], name


def _untimed(sidecar: bytes) -> dict[str, Any]:
    return {key: value for key, value in json.loads(sidecar).items() if not key.endswith("seconds")}


def build(config: Path, out: str) -> None:
    result = runner.invoke(app, ["build", "--config", str(config), "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output


def test_build_to_s3_matches_a_local_build_and_resumes(
    tmp_path: Path, fixture_data: FixtureInfo, stac_api_rustac: Any, label_url: str, s3_environment: MotoS3Server
) -> None:
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url, output={"unit_pois": 2})
    build(config, str(tmp_path / "local"))
    build(config, f"s3://{BUCKET}/run")
    local, remote = local_files(tmp_path / "local"), remote_files(s3_environment, "run")
    markers = sorted(name for name in remote if name.startswith("units/0"))
    assert len([m for m in markers if m.endswith(".json") and ".failures" not in m]) >= 2  # several units
    assert any(name.startswith("shards/") and name.endswith(".tar") for name in remote)
    assert "README.md" in remote and "data/train.jsonl" in remote
    same_dataset(remote, local)

    # a unit lost remotely (marker gone, as after a crash before its upload) is redone on the rerun
    client = s3_environment.client()
    client.delete_object(Bucket=BUCKET, Key="run/units/000001.json")
    client.delete_object(Bucket=BUCKET, Key="run/README.md")
    build(config, f"s3://{BUCKET}/run")
    again = remote_files(s3_environment, "run")
    same_dataset(again, local)
    summary = json.loads(again["run_summary.json"])
    unit_markers = [m for m in markers if m.endswith(".json") and m[6:12].isdigit()]
    assert summary["units_skipped"] == len(unit_markers) - 1  # only the lost unit was fetched again

    # --overwrite starts afresh: what the prefix held before is gone, the dataset is whole again
    client.put_object(Bucket=BUCKET, Key="run/shards/train-999999.tar", Body=b"stale")
    result = runner.invoke(app, ["build", "--config", str(config), "--out", f"s3://{BUCKET}/run", "--quiet", "--overwrite"])
    assert result.exit_code == 0, result.output
    fresh = remote_files(s3_environment, "run")
    assert "shards/train-999999.tar" not in fresh and json.loads(fresh["run_summary.json"])["units_skipped"] == 0
    same_dataset(fresh, local)


def test_recaption_reads_s3_and_writes_s3(
    tmp_path: Path, fixture_data: FixtureInfo, stac_api_rustac: Any, label_url: str, s3_environment: MotoS3Server
) -> None:
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url, output={"unit_pois": 2})
    result = runner.invoke(app, ["fetch", "--config", str(config), "--out", f"s3://{BUCKET}/chips", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["fetch", "--config", str(config), "--out", str(tmp_path / "chips"), "--quiet"])
    assert result.exit_code == 0, result.output
    same_dataset(remote_files(s3_environment, "chips"), local_files(tmp_path / "chips"))

    for source, out in ((f"s3://{BUCKET}/chips", f"s3://{BUCKET}/captioned"), (str(tmp_path / "chips"), str(tmp_path / "captioned"))):
        result = runner.invoke(app, ["caption", source, "--out", out, "--engine", "template", "--quiet"])
        assert result.exit_code == 0, result.output
    captioned = remote_files(s3_environment, "captioned")
    same_dataset(captioned, local_files(tmp_path / "captioned"))
    assert any(name.startswith("data/") for name in captioned)


def test_a_failed_run_keeps_the_units_it_finished(tmp_path: Path, s3_environment: MotoS3Server) -> None:
    with pytest.raises(RuntimeError, match="engine died"), staged_output(f"s3://{BUCKET}/failed", interval_s=60) as folder:
        (folder / "units").mkdir()
        (folder / "shards").mkdir()
        (folder / "shards" / "train-000000.tar").write_bytes(b"tar bytes")
        (folder / "units" / "000000.json").write_text("{}")
        (folder / "shards" / "train-000100.tar.tmp").write_bytes(b"half written")
        raise RuntimeError("engine died")
    assert remote_files(s3_environment, "failed") == {"shards/train-000000.tar": b"tar bytes", "units/000000.json": b"{}"}


def test_markers_are_uploaded_after_the_files_they_name(tmp_path: Path, s3_environment: MotoS3Server) -> None:
    staging = tmp_path / "staging"
    (staging / "units").mkdir(parents=True)
    (staging / "units" / "000003.json").write_text("{}")
    (staging / "units" / "000003.failures.jsonl").write_text("")
    (staging / "shards").mkdir()
    (staging / "shards" / "train-000300.tar").write_bytes(b"x")
    order: list[str] = []
    remote = RemoteOutput(f"s3://{BUCKET}/ordered", staging)
    put = remote.fs.put_file
    remote.fs.put_file = lambda local, target, **kw: (order.append(target.rsplit("/ordered/", 1)[1]), put(local, target, **kw))  # type: ignore[method-assign]
    assert remote.push() == 3 and order[-1] == "units/000003.json"
    assert remote.push() == 0  # nothing changed: nothing sent again
