"""A corpus of bad inputs: each ends with a known exit code, a message naming the problem and
the fix, and never a traceback.

Exit codes: 2 = the run cannot start or read its input (a bad config, POI table, prompt, output
folder or dataset); 1 = the run went through but produced nothing, or more failures than
``output.max_failure_share`` allows. Cases that fail before any network access run without
servers (the catalog URL points at a closed port); the rest use the loopback fixture.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import tomli_w
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.testing.servers import RangeHTTPServer
from rsbuild.testing.synthetic import FixtureInfo

runner = CliRunner()
CLOSED_PORT_CATALOG = "http://127.0.0.1:9/stac"  # nothing listens: a case that gets this far fails loudly


@dataclass
class Env:
    """What a case builds on: the fixture, a scratch folder, servers (or dead URLs), a built dataset."""

    fixture: FixtureInfo
    tmp: Path
    stac_url: str = CLOSED_PORT_CATALOG
    label_url: str = ""
    cog_server: RangeHTTPServer | None = None
    dataset: Path | None = None
    stack: contextlib.ExitStack | None = None

    def config(self, pois: Path | None = None, **sections: dict[str, Any]) -> Path:
        """A config file; ``sections`` override single settings (a value of None deletes it)."""
        data: dict[str, Any] = {
            "pois": {"path": str(pois or self.fixture.pois_path)},
            "scenes": {"catalog": self.stac_url, "collection": "sentinel-2-l2a", "datetime": "2024-07-01/2024-07-31"},
            "imagery": {"aoi_size": 256, "tile_size": 128, "tile_stride": 128, "output_size": 64, "read_workers": 4,
                        "cpu_workers": 0},
            "labels": {"source": "cog", "url": self.label_url or str(self.fixture.label_4326_path)},
            "output": {"shard_max_samples": 5},
            "captions": {"engine": "template", "tasks": ["area", "class"]},
        }
        for section, values in sections.items():
            target = data.setdefault(section, {})
            for key, value in values.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        path = self.tmp / "rsbuild.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    def build(self, config: Path, *extra: str) -> list[str]:
        return ["build", "--config", str(config), "--out", str(self.tmp / "out"), "--quiet", *extra]

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def pois_csv(self, body: str, name: str = "pois.csv") -> Path:
        return self.file(name, body)

    def copy_dataset(self) -> Path:
        assert self.dataset is not None
        target = self.tmp / "dataset"
        shutil.copytree(self.dataset, target)
        return target


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Env], list[str]]  # the command line
    exit_code: int
    words: tuple[str, ...]  # all in the output (whitespace-normalised): the problem and the fix


def run_case(case: Case, env: Env) -> str:
    args = case.make(env)
    result = runner.invoke(app, args)
    output = " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{case.name}: uncaught {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == case.exit_code, f"{case.name}: exit {result.exit_code}\n{result.output}"
    for word in case.words:
        assert word in output, f"{case.name}: {word!r} not in\n{result.output}"
    return output


def header_only(env: Env) -> list[str]:
    return env.build(env.config(env.pois_csv("id,lat,lon\n")))


# -- cases that stop before any network access ---------------------------------------------------

def _prompts(env: Env, task: str, text: str) -> list[str]:
    from rsbuild.captions.prompts import default_prompts_dir

    folder = env.tmp / "prompts"
    folder.mkdir()
    for item in default_prompts_dir().iterdir():
        if item.name.endswith(".j2"):
            (folder / item.name).write_text(item.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / f"{task}.j2").write_text(text, encoding="utf-8")
    config = env.config(captions={"engine": "openai", "server_url": "http://127.0.0.1:9/v1", "models": ["m"]})
    return env.build(config, "--prompts", str(folder))


def _parquet(env: Env, columns: dict[str, list[Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = env.tmp / "pois.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def _out_is(env: Env, kind: str) -> list[str]:
    config = env.config()
    if kind == "file":
        out = env.file("out", "not a folder")
    elif kind == "under a file":
        out = env.file("plain", "x") / "out"
    else:  # not creatable: /proc takes no new folders
        out = Path("/proc/rsbuild-out/x")
    return ["build", "--config", str(config), "--out", str(out), "--quiet"]


def _read_only_out(env: Env) -> list[str]:
    """A read-only output folder: a bind of /proc/sys (writes refused even for root) stands in
    when chmod alone does not stop the user (root)."""
    out = env.tmp / "ro"
    out.mkdir()
    out.chmod(0o500)
    import os

    target = out if os.geteuid() != 0 else Path("/sys/rsbuild-out")
    return ["fetch", "--config", str(env.config()), "--out", str(target), "--quiet"]


def _out_with_other_files(env: Env) -> list[str]:
    out = env.tmp / "o"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    return ["fetch", "--config", str(env.config()), "--out", str(out), "--quiet"]


EARLY_CASES = [
    # config
    Case("config file missing", lambda e: e.build(e.tmp / "nope.toml"), 2, ("cannot read config file", "--config")),
    Case("config not TOML", lambda e: e.build(e.file("bad.toml", "[pois\npath=")), 2, ("not valid TOML",)),
    Case("unknown field", lambda e: e.build(e.config(scenes={"max_clouds": 5})), 2,
         ("scenes.max_clouds", "not a known setting")),
    Case("unknown section", lambda e: e.build(e.config(sceens={"x": 1})), 2, ("sceens", "not a known setting")),
    Case("bad type", lambda e: e.build(e.config(imagery={"aoi_size": "big"})), 2, ("imagery.aoi_size", "integer")),
    Case("missing required field", lambda e: e.build(e.config(scenes={"catalog": None})), 2, ("scenes.catalog", "required")),
    Case("impossible date", lambda e: e.build(e.config(scenes={"datetime": "2024-02-30/2024-03-31"})), 2,
         ("scenes.datetime", "2024-02-30", "YYYY-MM-DD")),
    Case("nonsense datetime", lambda e: e.build(e.config(scenes={"datetime": "last summer"})), 2,
         ("scenes.datetime", "YYYY-MM-DD")),
    Case("reversed datetimes", lambda e: e.build(e.config(scenes={"datetime": "2024-08-31/2024-06-01"})), 2,
         ("scenes.datetime", "after its end", "swap")),
    Case("nonsense target date", lambda e: e.build(e.config(scenes={"target_date": "soon"})), 2,
         ("scenes.target_date", "YYYY-MM-DD")),
    Case("nonsense label datetime", lambda e: e.build(e.config(labels={"datetime": "2021-13-01"})), 2,
         ("labels.datetime", "YYYY-MM-DD")),
    Case("missing local label file", lambda e: e.build(e.config(labels={"url": str(e.tmp / "nope.tif")})), 2,
         ("labels.url", "nope.tif", "does not exist")),
    Case("missing local catalog", lambda e: e.build(e.config(scenes={"catalog": str(e.tmp / "catalog.json")})), 2,
         ("scenes.catalog", "does not exist")),
    Case("bad catalog URL scheme", lambda e: e.build(e.config(scenes={"catalog": "htps://example.org/stac"})), 2,
         ("scenes.catalog", "htps", "http")),
    Case("catalog URL without host", lambda e: e.build(e.config(scenes={"catalog": "http://"})), 2,
         ("scenes.catalog", "host")),
    Case("bad label URL", lambda e: e.build(e.config(labels={"url": "http:/labels.tif"})), 2, ("labels.url",)),
    Case("fractions do not sum to 1", lambda e: e.build(e.config(splits={"fractions": [0.5, 0.1, 0.1]})), 2,
         ("splits.fractions", "summing to 1")),
    Case("max failure share out of range", lambda e: e.build(e.config(), "--max-failure-share", "1.5"), 2,
         ("--max-failure-share", "between 0 and 1")),
    Case("max failure share in config out of range", lambda e: e.build(e.config(output={"max_failure_share": -1})), 2,
         ("output.max_failure_share",)),
    Case("shard index outside the job array", lambda e: e.build(e.config(), "--num-shards", "2", "--shard-index", "2"), 2,
         ("--shard-index", "--num-shards")),
    Case("unknown executor", lambda e: e.build(e.config(), "--executor", "spark"), 2, ("--executor", "local", "ray")),
    # POI tables
    Case("POI file missing", lambda e: e.build(e.config(e.tmp / "none.csv")), 2, ("pois.path", "does not exist")),
    Case("POI path is a folder", lambda e: e.build(e.config(e.tmp)), 2, ("pois.path",)),
    Case("POI table not UTF-8", lambda e: e.build(e.config(e.pois_csv("id,lat,lon\nZ\xfcrich,47.37,8.54\n".encode("latin-1")))),
         2, ("pois.path", "UTF-8", "save")),
    Case("garbage Parquet", lambda e: e.build(e.config(e.file("pois.parquet", b"PAR1 this is not parquet"))), 2,
         ("Parquet", "pois.path")),
    Case("unknown extension", lambda e: e.build(e.config(e.file("pois.xlsx", "id,lat,lon\n"))), 2, ("pois.format",)),
    Case("empty POI table", lambda e: e.build(e.config(e.pois_csv(""))), 1, ("no rows", "pois.path")),
    Case("header-only POI table", header_only, 1, ("no rows", "pois.path")),
    Case("header-only Parquet", lambda e: e.build(e.config(_parquet(e, {"id": [], "lat": [], "lon": []}))), 1,
         ("no rows",)),
    Case("missing lat column", lambda e: e.build(e.config(e.pois_csv("id,latitude,lon\na,45,17\n"))), 2,
         ("pois.lat_column", "latitude")),
    # prompts
    Case("empty template", lambda e: _prompts(e, "area", ""), 2, ("area.j2", "empty", "--prompts")),
    Case("template syntax error", lambda e: _prompts(e, "area", "Describe {{ stats.classes | percent }"), 2,
         ("area.j2", "line 1", "--prompts")),
    Case("template unknown variable", lambda e: _prompts(e, "area", "Describe {{ weather }}."), 2,
         ("area.j2", "weather", "--prompts")),
    Case("prompts folder missing", lambda e: e.build(e.config(), "--prompts", str(e.tmp / "none")), 2,
         ("prompts folder", "--prompts")),
    # output folder
    Case("--out is a file", lambda e: _out_is(e, "file"), 2, ("--out", "is a file", "another output folder")),
    Case("--out under a file", lambda e: _out_is(e, "under a file"), 2, ("--out", "plain", "another output folder")),
    Case("--out not creatable", lambda e: _out_is(e, "not creatable"), 2, ("--out", "cannot be created")),
    Case("--out read-only", _read_only_out, 2, ("--out", "another output folder")),
    Case("--out holds other files", _out_with_other_files, 2, ("already holds", "--overwrite")),
]


@pytest.mark.parametrize("case", EARLY_CASES, ids=lambda c: c.name)
def test_bad_input_before_work(case: Case, fixture_data: FixtureInfo, tmp_path: Path) -> None:
    run_case(case, Env(fixture_data, tmp_path))


def test_messages_print_literally(fixture_data: FixtureInfo, tmp_path: Path) -> None:
    """Brackets in messages are text, not rich markup: `[pois]` and `rsbuild[pc]` survive."""
    env = Env(fixture_data, tmp_path)
    output = run_case(Case("missing column", lambda e: e.build(e.config(e.pois_csv("id,y,x\na,1,2\n"))), 2,
                           ("[pois] section",)), env)
    assert "Set the column names in the [pois] section" in output
    from rsbuild.cli import _friendly_errors
    from rsbuild.errors import MissingExtraError

    @_friendly_errors
    def needs_extra() -> None:
        raise MissingExtraError("planetary_computer", "pc", "signing hrefs")

    import typer

    probe = typer.Typer()
    probe.command()(needs_extra)
    result = runner.invoke(probe, [])
    assert result.exit_code == 2
    assert "pip install 'rsbuild[pc]'" in result.output and "Traceback" not in result.output


# -- cases on the loopback servers ---------------------------------------------------------------

def _mirror_without(env: Env, band: str) -> list[str]:
    """A COG server whose scene folders lack one band (HTTP 404 for that asset)."""
    assert env.stack is not None
    folder = env.tmp / "cogs"
    shutil.copytree(env.fixture.cog_dir, folder, ignore=lambda _, names: [n for n in names if n == f"{band}.tif"])
    server = env.stack.enter_context(RangeHTTPServer(folder))
    catalog = env.fixture.write_static_catalog(server.url, env.tmp / "catalog")
    return env.build(env.config(scenes={"catalog": str(catalog)}, labels={"url": f"{server.url}/worldcover_4326.tif"}))


def _label_raster(env: Env, crs: str | None) -> list[str]:
    """The fixture's label raster rewritten without a CRS, or with a wrong one (same numbers)."""
    with rasterio.open(env.fixture.label_4326_path) as src:
        profile, data = src.profile, src.read()
    profile.pop("crs", None)
    path = env.tmp / "labels.tif"
    with rasterio.open(path, "w", **profile, crs=crs) as dst:
        dst.write(data)
    return env.build(env.config(labels={"url": str(path)}))


def _swapped(env: Env) -> list[str]:
    lines = env.fixture.pois_path.read_text().splitlines()
    return env.build(env.config(env.pois_csv("\n".join(["id,lon,lat", *lines[1:]]) + "\n")))


def _only_outside(env: Env) -> list[str]:
    lines = env.fixture.pois_path.read_text().splitlines()
    return env.build(env.config(env.pois_csv("\n".join([lines[0], *(line for line in lines[1:] if line.startswith("outside"))]) + "\n")))


def _duplicates(env: Env) -> list[str]:
    lines = env.fixture.pois_path.read_text().splitlines()
    return env.build(env.config(env.pois_csv("\n".join([*lines, lines[1], lines[2]]) + "\n")))


def _damage(env: Env, what: str) -> Path:
    dataset = env.copy_dataset()
    shard = sorted((dataset / "shards").glob("*.tar"))[0]
    if what == "truncated shard":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    elif what == "non-JSON member":
        import io
        import tarfile

        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
        with tarfile.open(shard, "w") as tar:
            for info, data in members:
                if info.name.endswith(".json"):
                    data = b"{broken"
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    elif what == "non-JSON summary":
        (dataset / "summary.json").write_text("{not json")
    return dataset


def _on_damaged(command: str, what: str) -> Callable[[Env], list[str]]:
    def make(env: Env) -> list[str]:
        dataset = _damage(env, what)
        if command == "recaption":
            return ["recaption", str(dataset), "--out", str(env.tmp / "re"), "--quiet"]
        return [command, str(dataset)]

    return make


SERVER_CASES = [
    Case("every POI rejected", lambda e: e.build(e.config(e.pois_csv("id,lat,lon\na,91,17\nb,nan,17\nc,,17\n"))), 1,
         ("all 3 POI rows were rejected", "out_of_range: 1", "missing_coordinates: 1", "rejects.jsonl", "[pois]")),
    Case("JSONL that is not JSON", lambda e: e.build(e.config(e.file("pois.jsonl", "{not json}\n[1, 2]\n"))), 1,
         ("all 2 POI rows were rejected", "unreadable_row: 2", "line 1 is not JSON")),
    Case("404 scene asset", lambda e: _mirror_without(e, "B04"), 1, ("no tile was written", "6 POIs failed to read", "404", "B04.tif", "labels.url")),
    Case("404 label file", lambda e: e.build(e.config(labels={"url": f"{e.label_url.rsplit('/', 1)[0]}/missing.tif"})), 1,
         ("failed to read", "missing.tif", "labels.url")),
    Case("corrupt label file", lambda e: e.build(e.config(labels={"url": str(e.file("labels.tif", b"II*\x00garbage"))})), 2,
         ("labels.url", "labels.tif", "not a readable raster", "GeoTIFF")),
    Case("label raster without CRS", lambda e: _label_raster(e, None), 2, ("labels.url", "labels.tif", "no CRS", "-a_srs")),
    Case("label raster with wrong CRS", lambda e: _label_raster(e, "EPSG:32631"), 1,
         ("no tile was written", "all_nodata", "CRS")),
    Case("swapped lat/lon", _swapped, 1, ("all 7 POIs failed at scene search", "no_scene", "lat_column")),
    Case("only POIs outside every scene", _only_outside, 1, ("all 1 POI failed at scene search", "no_scene")),
    Case("duplicate ids are rejected, the rest built", _duplicates, 0, ("duplicate_id: 2",)),
    Case("failures above the allowed share", lambda e: e.build(e.config(), "--max-failure-share", "0.1"), 1,
         ("1 of 7 POIs gave no tile", "above --max-failure-share 0.1", "1 POI failed at scene search (no_scene: 1")),
    Case("every caption request fails",
         lambda e: e.build(e.config(captions={"engine": "openai", "server_url": "http://127.0.0.1:9/v1", "models": ["m"],
                                              "retries": 0, "timeout_s": 2})), 1,
         ("no caption was kept", "engine_error", "captions.server_url")),
    *(Case(f"{command} on a {what}", _on_damaged(command, what), 2, (words, "damaged"))
      for command in ("recaption", "verify", "preview")
      for what, words in (("truncated shard", "000000.tar"), ("non-JSON member", "000000.tar"))),
    Case("inspect on a truncated shard", _on_damaged("inspect", "truncated shard"), 1, ("000000.tar",)),
    Case("inspect on a non-JSON member", _on_damaged("inspect", "non-JSON member"), 1, ("000000.tar",)),
    Case("inspect on a non-JSON summary", _on_damaged("inspect", "non-JSON summary"), 1, ("summary.json",)),
    Case("recaption on a non-JSON summary", _on_damaged("recaption", "non-JSON summary"), 2, ("summary.json", "damaged")),
    Case("recaption on a folder that is no dataset", lambda e: ["recaption", str(e.tmp), "--out", str(e.tmp / "re")], 2,
         ("rsbuild build",)),
    Case("verify on a folder that is no dataset", lambda e: ["verify", str(e.tmp)], 2, ("no shards", "rsbuild build")),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory, fixture_data, stac_api_rustac, cog_server) -> tuple[str, str, Path]:
    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    tmp = tmp_path_factory.mktemp("built")
    env = Env(fixture_data, tmp, stac_api_rustac.url, label_url)
    result = runner.invoke(app, env.build(env.config()))
    assert result.exit_code == 0, result.output
    return stac_api_rustac.url, label_url, tmp / "out"


@pytest.fixture
def server_env(fixture_data, built, cog_server, tmp_path) -> Iterator[Env]:
    stac_url, label_url, dataset = built
    with contextlib.ExitStack() as stack:
        yield Env(fixture_data, tmp_path, stac_url, label_url, cog_server, dataset, stack)


@pytest.mark.parametrize("case", SERVER_CASES, ids=lambda c: c.name)
def test_bad_input_on_servers(case: Case, server_env: Env) -> None:
    run_case(case, server_env)


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_rerun_leaves_the_dataset_intact(server_env: Env) -> None:
    """A rerun into a finished dataset with a damaged POI table or config changes no byte of it."""
    out = server_env.copy_dataset()
    before = tree(out)
    env = server_env
    for config in (env.config(env.pois_csv(b"id,lat,lon\n\xff\xfe,1,2\n".decode("latin-1").encode("latin-1"))),
                   env.config(scenes={"datetime": "2024-02-30"}), env.config(imagery={"aoi_size": 512})):
        result = runner.invoke(app, ["build", "--config", str(config), "--out", str(out), "--quiet"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert tree(out) == before
    assert not np.any([p.name.endswith(".tmp") for p in out.rglob("*")])
