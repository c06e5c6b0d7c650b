"""A published dataset read back from the loopback Hub by the real clients a user runs: ``datasets``,
``huggingface_hub`` (``snapshot_download``, ``HfFileSystem``) and webdataset over resolve URLs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsbuild.dataset.shards import list_shards, read_shard
from rsbuild.report.publish import publish
from rsbuild.testing.hf_hub import HubServer
from tests.dataset.test_layout import SPLITS_OF, _build, _samples

REPO = "me/s2-demo"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _online(monkeypatch) -> None:
    """CI sets HF_HUB_OFFLINE=1 so no test reaches the real Hub; this one talks to the loopback Hub only,
    on the git LFS path (the Xet path is test_publish_xet.py's)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


def _published_files(out: Path) -> dict[str, bytes]:
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return {k: v for k, v in local.items() if not k.startswith(("units/", "data/parts/"))}


def _user_env(hub: HubServer, home: Path) -> dict[str, str]:
    """A user's fresh environment pointed at the loopback Hub: no token, an empty cache, and every other
    host sent to the loopback Hub as to a proxy (so a request for one is seen, never sent out). CI's offline
    switches go too: huggingface_hub also reads TRANSFORMERS_OFFLINE as HF_HUB_OFFLINE."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"))}
    proxy = dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"), hub.url)
    return env | proxy | {
        "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
        "HF_ENDPOINT": hub.url, "HF_HOME": str(home),
        "HF_HUB_DISABLE_XET": "1",  # the git LFS path: a HubServer without xet_cas speaks no Xet
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",  # datasets counts loads on an AWS bucket, not on the Hub
        "PYTHONPATH": str(ROOT),
    }


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_a_published_dataset_loads_downloads_and_streams_from_the_hub(tmp_path: Path, monkeypatch) -> None:
    import webdataset as wds

    out = tmp_path / "ds"
    _build(out, _samples(9))
    published = _published_files(out)
    chips = {s.key: s for shard in list_shards(out) for s in read_shard(shard)}
    monkeypatch.setenv("HF_HOME", str(tmp_path / "publisher-home"))
    monkeypatch.setenv("HF_TOKEN", "hf_publisher_token_0123456789")
    with HubServer() as hub:
        hub.tree_page_size, hub.tree_page_size_expanded = 7, 3  # the client follows the Link header across pages
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        publish(out, REPO)
        first_read = len(hub.requests)

        env = _user_env(hub, tmp_path / "user-home")
        result = subprocess.run([sys.executable, "-m", "tests.report.hub_reader", REPO, str(tmp_path / "read")],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        read = tmp_path / "read"

        # snapshot_download: a folder byte-identical to the published one
        snapshot = Path((read / "snapshot.txt").read_text())
        assert {str(p.relative_to(snapshot)): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == published

        # load_dataset: an Image() column whose pixels are the shard chips, texts equal to the SFT JSONL
        rows = json.loads((read / "rows.json").read_text())
        pixels = np.load(read / "pixels.npz")
        assert set(rows.pop("image_feature").values()) == {"Image"}
        assert set(rows) == set(SPLITS_OF)
        for split in SPLITS_OF:
            sft = [json.loads(line) for line in (out / "data" / f"{split}.jsonl").read_text().splitlines()]
            assert len(rows[split]) == len(sft) > 0
            for i, (row, original) in enumerate(zip(rows[split], sft, strict=True)):
                assert row["messages"][1]["content"][0]["text"] == original["messages"][1]["content"][0]["text"]
                assert row["meta"]["key"] == original["meta"]["key"]
                np.testing.assert_array_equal(pixels[f"{split}/{i}"], _pixels(chips[row["meta"]["key"]].image_png))

        # HfFileSystem: paths-info and byte ranges, of an LFS file (through the storage redirect) and of a regular one
        files = json.loads((read / "files.json").read_text())
        tar, jsonl = published["shards/train-000000.tar"], published["data/train.jsonl"]
        assert files["size"] == len(tar) and files["lfs_sha256"] == hashlib.sha256(tar).hexdigest()
        assert files["last_commit_title"] == f"rsbuild publish {out.name}"
        assert bytes.fromhex(files["shard_512_1512"]) == tar[512:1512]
        assert bytes.fromhex(files["text_10_30"]) == jsonl[10:30]

        # webdataset: every shard through the resolve URLs, with the brace pattern the card gives
        card = published["README.md"].decode()
        for split in SPLITS_OF:
            pattern = re.search(rf"{split} `(shards/{split}-\{{\d+\.\.\d+\}}\.tar)`", card)
            assert pattern, f"no brace pattern for {split} in the card"
            for name, value in env.items():
                if "proxy" in name.lower():
                    monkeypatch.setenv(name, value)  # curl, which webdataset runs, asks no other host either
            urls = f"{hub.url}/datasets/{REPO}/resolve/main/{pattern.group(1)}"
            streamed = {s["__key__"]: s["png"] for s in wds.WebDataset(urls, shardshuffle=False)}
            expected = {key: sample.image_png for key, sample in chips.items() if sample.split == split}
            assert streamed == expected

        reads = hub.requests[first_read:]
        assert hub.unknown == []
        assert {r.client for r in reads} == {"127.0.0.1"}
        # the one other host asked is the dataset viewer (datasets asks it for exported infos; none here)
        assert all(p.startswith(f"GET http://datasets-server.127.0.0.1:{hub.url.rsplit(':', 1)[1]}/") for p in hub.proxied)
        assert not any(r.authorized for r in reads) and not any(r.authorized for r in hub.requests if r.host == "storage")
        assert any(r.host == "storage" and r.method == "GET" for r in reads)  # LFS files came from the storage host
        assert any("cursor=" in r.target for r in reads)  # a listing longer than a page was followed to its end
