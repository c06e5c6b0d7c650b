"""`caption` and `recaption`: image bytes copied unchanged, unchanged templates not re-asked,
fetch + caption equal to build, remote source and target through fsspec."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import fsspec
import pytest
from PIL import Image
from typer.testing import CliRunner

from rsbuild.captions.base import CaptionEngine, CaptionRequest, CaptionResult
from rsbuild.captions.engines.template import TemplateEngine
from rsbuild.captions.prompts import PromptSet
from rsbuild.cli import app
from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.run.recaption import run_recaption
from rsbuild.testing.servers import RangeHTTPServer
from tests.test_cli import write_config

runner = CliRunner()
REPO_PROMPTS = Path(__file__).resolve().parents[2] / "rsbuild" / "captions" / "templates"


class PromptedTemplateEngine(CaptionEngine):
    """Writes the template engine's (correct) captions but, like an LLM engine, from prompt
    templates, and counts what it is asked: a stand-in for a model that is always right."""

    needs_prompts = True

    def __init__(self) -> None:
        self.inner = TemplateEngine()
        self.name = "stand-in-llm"
        self.asked: Counter[str] = Counter()

    def generate(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        self.asked.update(r.task for r in requests)
        results = self.inner.generate(requests)
        return [CaptionResult(r.request, r.texts, self.name, r.error) for r in results]


def samples_by_key(out: Path) -> dict:
    return {s.key: s for shard in list_shards(out) for s in read_shard(shard)}


@pytest.fixture(scope="module")
def built(tmp_path_factory, fixture_data, stac_api_rustac, cog_server) -> Path:
    tmp = tmp_path_factory.mktemp("recaption")
    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    config = write_config(tmp, fixture_data, stac_api_rustac.url, label_url,
                          output={"unit_pois": 2}, captions={"tasks": ["area"]})
    out = tmp / "built"
    result = runner.invoke(app, ["build", "--config", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_recaption_copies_pixels_and_keeps_unchanged_templates(built, tmp_path):
    first = PromptedTemplateEngine()
    a = tmp_path / "a"
    run_recaption(str(built), str(a), {"tasks": ["area", "class"]}, engines=[first], show_progress=False)
    before, after = samples_by_key(built), samples_by_key(a)
    assert before.keys() == after.keys() and before
    for key, sample in after.items():
        assert sample.image_png == before[key].image_png and sample.mask_png == before[key].mask_png
        assert {ann["task"] for ann in sample.annotations} >= {"area"}
    assert first.asked["area"] == len(after) and first.asked["class"] > 0

    # same prompts again: nothing is asked; a changed class template: only class captions are
    second = PromptedTemplateEngine()
    run_recaption(str(a), str(tmp_path / "b"), {"tasks": ["area", "class"]}, engines=[second], show_progress=False)
    assert sum(second.asked.values()) == 0
    assert samples_by_key(tmp_path / "b").keys() == after.keys()

    prompts = tmp_path / "prompts"
    shutil.copytree(REPO_PROMPTS, prompts)
    (prompts / "class.j2").write_text((prompts / "class.j2").read_text() + "\nKeep it short.\n")
    third = PromptedTemplateEngine()
    run_recaption(str(a), str(tmp_path / "c"), {"tasks": ["area", "class"], "prompts_dir": str(prompts)},
                  engines=[third], show_progress=False)
    assert third.asked["area"] == 0 and third.asked["class"] == first.asked["class"]
    new_sha = PromptSet.load(prompts).sha256("class")
    for sample in samples_by_key(tmp_path / "c").values():
        assert all(a["prompt_sha256"] == new_sha for a in sample.annotations if a["task"] == "class")


def test_fetch_then_caption_equals_build(built, tmp_path, fixture_data, stac_api_rustac, cog_server):
    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url,
                          output={"unit_pois": 2}, captions={"tasks": ["area"]})
    chips, captioned = tmp_path / "chips", tmp_path / "captioned"
    assert runner.invoke(app, ["fetch", "--config", str(config), "--out", str(chips), "--quiet"]).exit_code == 0
    result = runner.invoke(app, ["caption", str(chips), "--out", str(captioned), "--quiet"])
    assert result.exit_code == 0, result.output
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert {p.name: digest(p) for p in list_shards(captioned)} == {p.name: digest(p) for p in list_shards(built)}
    for split in ("train", "validation", "test"):
        assert (captioned / "data" / f"{split}.jsonl").read_bytes() == (built / "data" / f"{split}.jsonl").read_bytes()
    assert (captioned / "failures.jsonl").read_bytes() == (built / "failures.jsonl").read_bytes()


def test_remote_source_and_target_through_fsspec(built):
    target = "memory://rsbuild-recaption/out"
    with RangeHTTPServer(built) as http:
        summary = run_recaption(http.url, target, {"tasks": ["area"]}, show_progress=False)
    fs = fsspec.filesystem("memory")
    shards = sorted(fs.glob("/rsbuild-recaption/out/shards/*.tar"))
    assert [Path(p).name for p in shards] == [p.name for p in list_shards(built)]
    assert summary.tiles_written == len(samples_by_key(built))
    assert fs.exists("/rsbuild-recaption/out/data/train.jsonl") and fs.exists("/rsbuild-recaption/out/README.md")
    local = {p.name: p.read_bytes() for p in list_shards(built)}
    for path in shards:  # template captions are deterministic: same bytes as the source
        assert fs.cat_file(path) == local[Path(path).name]


def test_a_local_recaption_copies_member_blocks_without_decoding_them(built, tmp_path, monkeypatch):
    """From a local folder, image and mask members go to the new shards as the tar blocks they
    were read from: no PNG decoded, no member extracted through tarfile, and the same bytes as
    a recaption of the same dataset read over HTTP (member by member)."""
    with RangeHTTPServer(built) as http:
        run_recaption(http.url, str(tmp_path / "over-http"), {"tasks": ["area"]}, show_progress=False)
    opened: Counter[str] = Counter()
    image_open, extract = Image.open, tarfile.TarFile.extractfile

    def counting_open(*args, **kwargs):
        opened["png decoded"] += 1
        return image_open(*args, **kwargs)

    def counting_extract(self, member):
        opened["member extracted"] += 1
        return extract(self, member)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(tarfile.TarFile, "extractfile", counting_extract)
    run_recaption(str(built), str(tmp_path / "local"), {"tasks": ["area"]}, show_progress=False)
    monkeypatch.undo()
    assert opened == {}
    local, over_http = list_shards(tmp_path / "local"), list_shards(tmp_path / "over-http")
    assert [p.name for p in local] == [p.name for p in over_http] and local
    for ours, theirs in zip(local, over_http):
        assert ours.read_bytes() == theirs.read_bytes()
