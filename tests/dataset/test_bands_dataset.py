"""A build with ``output.bands = "all"``: KEY.bands.tif in every shard sample, read by webdataset, the
loader API (``image_format="bands"``) and HF ``datasets``; derived rows still verify; same bytes twice."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from rsbuild.chips.bands import INDEX_TOLERANCE, read_bands
from rsbuild.cli import app
from rsbuild.config import load_config
from rsbuild.dataset.loader import caption_dataset, load_hf
from rsbuild.dataset.shards import list_shards
from rsbuild.report.inspection import inspect_dataset
from rsbuild.report.verify import verify_dataset
from rsbuild.run.pipeline import run_build
from rsbuild.sources.assets import SPECTRAL_BANDS
from rsbuild.sources.raster_io import geotiff_bytes, read_geotiff_bytes
from rsbuild.testing.synthetic import FixtureInfo
from tests.report import test_preview
from tests.test_cli import write_config

TILE = 128  # native tile side of write_config's imagery
browser = test_preview.browser  # the headless chromium fixture


def build(tmp_path: Path, fixture: FixtureInfo, stac_url: str, name: str) -> Path:
    pois = tmp_path / "pois.csv"
    pois.write_text("\n".join(fixture.pois_path.read_text().splitlines()[:3]) + "\n")  # two POIs
    config = write_config(tmp_path, fixture, stac_url, str(fixture.truth_path), pois=pois,
                          imagery={"cpu_workers": 1},  # tiles in a worker process: the arrays pickle
                          output={"bands": "all", "shard_max_samples": 5, "folder_file_cap": 7},
                          captions={"engine": "template", "tasks": ["area", "class", "vqa", "referring", "masks"]})
    out = tmp_path / name
    summary = run_build(load_config(config), out, show_progress=False)
    assert summary.finalized
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, fixture_data: FixtureInfo, stac_api_rustac) -> Path:
    return build(tmp_path_factory.mktemp("bands"), fixture_data, stac_api_rustac.url, "ds")


def shard_paths(out: Path) -> list[str]:
    return [str(path) for path in list_shards(out)]


def test_every_sample_carries_its_bands_and_indices(dataset: Path) -> None:
    count = 0
    for sample in wds.WebDataset(shard_paths(dataset), shardshuffle=False, empty_check=False):
        count += 1
        array, names = read_bands(sample["bands.tif"])
        assert array.shape == (12, TILE, TILE) and array.dtype == np.float32 and names == list(SPECTRAL_BANDS)
        assert np.isfinite(array).all() and float(array.min()) > -0.01 and float(array.max()) < 1  # noise: water near 0
        doc = json.loads(sample["json"])
        assert doc["metadata"]["bands"]["member"] == "bands.tif"
        assert set(doc["stats"]["indices"]) == {"ndvi", "ndwi", "nbr", "pixels"}
        assert all(-1 <= c["indices"]["ndvi"] <= 1 for c in doc["stats"]["classes"] if c["indices"]["pixels"])
    assert count >= 4


def test_loader_api_yields_reflectance_arrays(dataset: Path) -> None:
    items = list(caption_dataset(dataset, split="train", tasks=["area"], image_format="bands", with_masks=True))
    assert items
    for item in items:
        assert item["image"].shape == (12, TILE, TILE) and item["image"].dtype == np.float32
        assert item["band_names"][7] == "B08" and item["text"]
        assert item["mask"].size == (64, 64)  # the label mask of the 64 px chip, decoded
    rgb = next(iter(caption_dataset(dataset, split="train", tasks=["area"], image_format="rgb8")))
    assert rgb["image"].shape == (64, 64, 3)  # other formats are unchanged


def test_hf_datasets_loads_the_bands_member(dataset: Path) -> None:
    table = load_hf(dataset, "train")
    assert "bands.tif" in table.column_names
    array, _ = read_bands(table[0]["bands.tif"])
    assert array.shape == (12, TILE, TILE)


def test_derived_rows_and_the_dataset_still_check_out(dataset: Path) -> None:
    report = verify_dataset(dataset)
    assert report["derived"]["rows"] > 0 and report["derived"]["failures"] == 0
    assert not inspect_dataset(dataset).problems


def test_verify_re_derives_every_tiles_indices_from_its_bands_and_mask(dataset: Path) -> None:
    indices = verify_dataset(dataset)["derived"]["indices"]
    samples = sum(1 for _ in wds.WebDataset(shard_paths(dataset), shardshuffle=False, empty_check=False))
    assert indices == {"tiles": samples, "not_rederivable": 0, "failures": 0, "problems": []}


def damaged_copy(dataset: Path, tmp_path: Path, change: Callable[[str, dict[str, bytes]], None]) -> tuple[Path, str]:
    """A copy of ``dataset`` whose first sample's members went through ``change(key, members)``
    (the shard is rewritten and its stats sidecar's byte count updated, so only the change is wrong)."""
    copy = tmp_path / "damaged"
    shutil.copytree(dataset, copy)
    shard = list_shards(copy)[0]
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]  # type: ignore[union-attr]
    key = members[0][0].name.split(".", 1)[0]
    sample = {info.name.split(".", 1)[1]: data for info, data in members if info.name.startswith(key + ".")}
    change(key, sample)
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            name = info.name.split(".", 1)
            if name[0] == key:
                data = sample[name[1]]
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sidecar = shard.with_name(shard.name.removesuffix(".tar") + ".stats.json")
    doc = json.loads(sidecar.read_text(encoding="utf-8"))
    doc["bytes"] = shard.stat().st_size
    sidecar.write_text(json.dumps(doc), encoding="utf-8")
    return copy, key


def rewrite_bands(data: bytes, edit: Callable[[np.ndarray], np.ndarray], names: list[str] | None = None) -> bytes:
    tif = read_geotiff_bytes(data)
    return geotiff_bytes(edit(tif.array), tif.grid, nodata=float("nan"), descriptions=names or tif.descriptions, tags=tif.tags)


def test_verify_catches_a_bands_member_whose_near_infrared_was_altered(dataset: Path, tmp_path: Path) -> None:
    def darker_nir(key: str, sample: dict[str, bytes]) -> None:
        def edit(array: np.ndarray) -> np.ndarray:
            array[SPECTRAL_BANDS.index("B08")] *= 0.8
            return array
        sample["bands.tif"] = rewrite_bands(sample["bands.tif"], edit)

    copy, key = damaged_copy(dataset, tmp_path, darker_nir)
    indices = verify_dataset(copy)["derived"]["indices"]
    assert indices["failures"] >= 3 and all(problem.startswith(f"{key}: ") for problem in indices["problems"])
    assert any(f"{key}: ndvi of the tile is" in problem for problem in indices["problems"])
    assert any(f"{key}: nbr of " in problem for problem in indices["problems"])
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and f"{key}: ndvi of the tile is" in result.output
    assert not inspect_dataset(copy).problems  # the file itself is still a valid 12-band GeoTIFF


def test_verify_catches_an_index_altered_in_the_json(dataset: Path, tmp_path: Path) -> None:
    def shifted(key: str, sample: dict[str, bytes]) -> None:
        doc = json.loads(sample["json"])
        doc["stats"]["classes"][0]["indices"]["ndwi"] += 10 * INDEX_TOLERANCE
        sample["json"] = json.dumps(doc).encode("utf-8")

    copy, key = damaged_copy(dataset, tmp_path, shifted)
    indices = verify_dataset(copy)["derived"]["indices"]
    first_class = json.loads(next(iter(wds.WebDataset(shard_paths(dataset), shardshuffle=False)))["json"])["stats"]["classes"][0]
    assert indices["failures"] == 1
    assert indices["problems"][0].startswith(f"{key}: ndwi of {first_class['name']} is ")


@pytest.mark.parametrize(
    ("edit", "names", "expected"),
    [
        (lambda a: a.astype(np.float64), None, "is float64, not float32 reflectance"),
        (lambda a: a, [f"band{i}" for i in range(1, 13)], "has bands band1 band2"),
        (lambda a: a[:11], list(SPECTRAL_BANDS[:11]), "not the 12 L2A bands"),
        (lambda a: a[:, :-1, :-1], None, "has shape"),
    ],
)
def test_inspect_validates_the_bands_member(dataset: Path, tmp_path: Path, edit, names, expected: str) -> None:
    def damage(key: str, sample: dict[str, bytes]) -> None:
        tif = read_geotiff_bytes(sample["bands.tif"])
        array = edit(tif.array)
        grid = tif.grid if array.shape[1:] == tif.array.shape[1:] else type(tif.grid)(
            tif.grid.crs, tif.grid.transform, array.shape[2], array.shape[1])
        sample["bands.tif"] = geotiff_bytes(array, grid, nodata=float("nan"), descriptions=names or tif.descriptions, tags=tif.tags)

    copy, key = damaged_copy(dataset, tmp_path, damage)
    problems = inspect_dataset(copy).problems
    assert len(problems) == 1 and f": {key}.bands.tif " in problems[0] and expected in problems[0], problems


def test_inspect_catches_a_bands_member_that_does_not_open(dataset: Path, tmp_path: Path) -> None:
    def truncate(key: str, sample: dict[str, bytes]) -> None:
        sample["bands.tif"] = sample["bands.tif"][:200]

    copy, key = damaged_copy(dataset, tmp_path, truncate)
    problems = inspect_dataset(copy).problems
    assert len(problems) == 1 and f"{key}.bands.tif does not open as a GeoTIFF" in problems[0], problems
    assert verify_dataset(copy)["derived"]["indices"]["problems"][0].startswith(f"{key}: KEY.bands.tif")


def test_same_inputs_same_bytes(dataset: Path, tmp_path: Path, fixture_data: FixtureInfo, stac_api_rustac) -> None:
    again = build(tmp_path, fixture_data, stac_api_rustac.url, "again")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert {p.name: digest(p) for p in list_shards(again)} == {p.name: digest(p) for p in list_shards(dataset)}


def test_card_embeds_the_derived_rows_plot_with_the_yes_no_balance(dataset: Path) -> None:
    from PIL import Image

    summary = json.loads((dataset / "summary.json").read_text(encoding="utf-8"))
    assert "![" in (card := (dataset / "README.md").read_text(encoding="utf-8")) and "plots/derived_rows.png" in card
    image = np.asarray(Image.open(dataset / "plots" / "derived_rows.png").convert("RGB")).reshape(-1, 3)
    green = int((image == (0x2E, 0x7D, 0x32)).all(axis=1).sum())  # "yes" segments
    red = int((image == (0xC6, 0x28, 0x28)).all(axis=1).sum())  # "no" segments
    answers = summary["derived"]["vqa_answers"]
    yes = sum(counts.get("yes", 0) / sum(counts.values()) for counts in answers.values())
    no = sum(counts.get("no", 0) / sum(counts.values()) for counts in answers.values())
    assert yes > 0 and no > 0
    assert green / red == pytest.approx(yes / no, rel=0.1)  # bar lengths are the answer shares


def test_preview_lists_each_tiles_derived_rows_and_draws_referring_boxes(dataset: Path, tmp_path: Path) -> None:
    import re

    from rsbuild.report.preview import write_preview

    page = tmp_path / "preview.html"
    write_preview(dataset, page, inline_images=True)
    text = page.read_text(encoding="utf-8")
    records = json.loads(re.search(r'<script type="application/json" id="rsb-records">(.*?)</script>', text, re.S).group(1))
    jsonl: dict[str, list[dict]] = {}
    for split in ("train", "validation", "test"):
        for line in (dataset / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["meta"]["task"] in ("vqa", "referring", "region_caption", "mask_grounding"):
                jsonl.setdefault(row["meta"]["key"], []).append(row)
    assert set(jsonl) == {r["key"] for r in records if r["derived"]}
    for record in records:
        rows = jsonl.get(record["key"], [])
        assert [r["task"] for r in record["derived"]] == [row["meta"]["task"] for row in rows]
        for shown, row in zip(record["derived"], rows, strict=True):
            assert shown["prompt"] == row["messages"][0]["content"][1]["text"]
            if shown["task"] in ("vqa", "referring", "region_caption"):
                assert shown["answer"] == row["messages"][1]["content"][0]["text"]
            else:
                assert re.fullmatch(r"COCO RLE mask of \d+ pixels", shown["answer"])
            if shown["task"] == "referring":  # the box drawn is the one the row answers with
                assert shown["boxes"][0]["bbox"] == json.loads(row["messages"][1]["content"][0]["text"])[0]["bbox"]
    assert "referring boxes" in text


def test_preview_page_shows_derived_rows_in_chromium(dataset: Path, tmp_path: Path, browser) -> None:
    from rsbuild.report.preview import write_preview

    page = tmp_path / "site" / "preview.html"
    write_preview(dataset, page, page_size=48)
    browser.navigate(page.as_uri())
    cards = browser.evaluate("""[...document.querySelectorAll('#rsb-grid .card')].map(c => [c.dataset.key,
        c.querySelectorAll('.derived .row').length, c.querySelectorAll('.box.ref').length,
        [...c.querySelectorAll('.derived .row.task-vqa .a')].map(a => a.textContent)])""")
    vqa: dict[str, list[str]] = {}
    referring: dict[str, int] = {}
    derived: dict[str, int] = {}
    for split in ("train", "validation", "test"):
        for line in (dataset / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            task, key = row["meta"]["task"], row["meta"]["key"]
            if task in ("vqa", "referring", "region_caption", "mask_grounding"):
                derived[key] = derived.get(key, 0) + 1
            if task == "vqa":
                vqa.setdefault(key, []).append(row["messages"][1]["content"][0]["text"])
            if task == "referring":
                referring[key] = referring.get(key, 0) + 1
    assert cards and any(refs for _, _, refs, _ in cards)
    for key, rows, refs, answers in cards:
        assert (rows, refs, answers) == (derived.get(key, 0), referring.get(key, 0), vqa.get(key, []))
    browser.click("#rsb-refs")  # "referring boxes" off hides them, the component boxes stay
    shown = browser.evaluate("[...document.querySelectorAll('.card .box')].map(b => [b.classList.contains('ref'), getComputedStyle(b).display])")
    assert {display for ref, display in shown if ref} == {"none"} and "none" not in {display for ref, display in shown if not ref}
    assert browser.errors() == []


def test_recaption_keeps_the_bands_member_byte_for_byte(dataset: Path, tmp_path: Path) -> None:
    from rsbuild.run.recaption import run_recaption

    again = tmp_path / "recaptioned"
    run_recaption(str(dataset), str(again), {"tasks": ["area", "vqa"]}, show_progress=False)
    def members(out: Path) -> dict[str, bytes]:
        return {s["__key__"]: s["bands.tif"] for s in wds.WebDataset(shard_paths(out), shardshuffle=False, empty_check=False)}
    before, after = members(dataset), members(again)
    assert after and after == before
