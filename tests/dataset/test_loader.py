"""The training loader: torch DataLoader with workers, caption policies, corrupt shards, HF datasets."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.loader import caption_dataset, load_hf, pick_index
from rsbuild.dataset.shards import list_shards
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.schemes import get_scheme
from tests.dataset.test_shards import make_sample

torch = pytest.importorskip("torch")


def annotations(i: int) -> list[dict]:
    return [
        {"task": "area", "text": f"area caption {i}", "annotator": "model-a", "verified": True},
        {"task": "area", "text": f"area paraphrase {i}", "annotator": "model-b", "verified": True},
        {"task": "class", "class": "water", "text": f"water caption {i}", "annotator": "model-a", "verified": True},
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loader") / "ds"
    cfg = OutputConfig(shard_max_samples=5, write_plots=False)
    with DatasetWriter(out, cfg, SplitsConfig(), CaptionsConfig(), get_scheme("esa_worldcover")) as writer:
        for i in range(24):
            writer.write(make_sample(f"poi{i:02d}_t0000", "train", size=32, seed=i, annotations=annotations(i)))
    return out


def test_dataloader_with_workers_yields_every_sample_once(dataset):
    ds = caption_dataset(dataset, split="train", tasks=["area"], image_format="rgb8",
                         transform=lambda r: (torch.from_numpy(np.ascontiguousarray(r["image"])), r["text"], r["__key__"]))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    items = list(loader)
    keys = [key for _, _, key in items]
    assert sorted(keys) == [f"poi{i:02d}_t0000" for i in range(24)]  # each sample exactly once across workers
    for image, text, key in items:
        i = int(key[3:5])
        assert image.shape == (32, 32, 3) and image.dtype == torch.uint8
        assert text in (f"area caption {i}", f"area paraphrase {i}")
        # the policy is seeded by the key: the same caption every epoch
        assert text == [f"area caption {i}", f"area paraphrase {i}"][pick_index(key, 2, 0)]


def test_policies_and_annotator_filter(dataset):
    all_rows = list(caption_dataset(dataset, split="train", policy="all"))
    assert len(all_rows) == 24 * 3
    only_b = list(caption_dataset(dataset, split="train", annotators=["model-b"], policy="first"))
    assert [r["text"] for r in only_b] == [f"area paraphrase {i}" for i in range(24)]
    assert isinstance(only_b[0]["image"], Image.Image) and only_b[0]["stats"]["classes"]


def test_corrupt_shard_is_skipped_with_a_warning(dataset, tmp_path):
    shards = list_shards(dataset)
    broken = tmp_path / "train-000099.tar"
    data = shards[1].read_bytes()
    broken.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 100)
    urls = [str(shards[0]), str(broken), str(shards[2])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = list(caption_dataset(urls, policy="first"))
    expected = {s for shard in (shards[0], shards[2]) for s in _keys(shard)}
    assert expected <= {r["__key__"] for r in rows}
    assert len(rows) < 15  # the broken shard did not yield all its samples
    assert caught, "a corrupt shard is reported"


def _keys(shard: Path) -> set[str]:
    import tarfile

    with tarfile.open(shard) as tar:
        return {m.name.split(".", 1)[0] for m in tar.getmembers()}


def test_hugging_face_datasets_helper(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    rows = load_hf(dataset, "train")
    assert rows.num_rows == 24
    first = rows[0]
    doc = first["json"] if isinstance(first["json"], dict) else json.loads(first["json"])
    assert doc["annotations"][0]["text"].startswith("area caption")
    image = first["png"]
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    assert image.size == (32, 32)
