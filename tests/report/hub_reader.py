"""Read a published dataset back from a Hub the way a user does, in a fresh process.

``python -m tests.report.hub_reader REPO OUT`` runs with ``HF_ENDPOINT`` / ``HF_HOME`` set by the
caller (huggingface_hub and datasets read them once, at import) and writes to ``OUT``:
``snapshot.txt`` (the folder ``snapshot_download`` made), ``rows.json`` (``load_dataset``'s rows
without images, per split, and the image feature's type), ``pixels.npz`` (each row's image as RGB
pixels, key ``{split}/{row}``) and ``files.json`` (``HfFileSystem`` reads: a file's info and last commit
from ``paths-info``, byte ranges of an LFS and of a regular file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(repo_id: str, out: Path) -> None:
    import datasets
    from huggingface_hub import HfFileSystem, snapshot_download

    out.mkdir(parents=True, exist_ok=True)
    (out / "snapshot.txt").write_text(snapshot_download(repo_id, repo_type="dataset"))

    rows = datasets.load_dataset(repo_id)
    pixels: dict[str, np.ndarray] = {}
    doc: dict[str, object] = {"image_feature": {split: type(rows[split].features["image"]).__name__ for split in rows}}
    for split in rows:
        doc[split] = [{"messages": row["messages"], "meta": row["meta"]} for row in rows[split]]
        for i, row in enumerate(rows[split]):
            pixels[f"{split}/{i}"] = np.asarray(row["image"].convert("RGB"))
    (out / "rows.json").write_text(json.dumps(doc))
    np.savez(out / "pixels.npz", **pixels)

    fs = HfFileSystem()
    shard, text = f"datasets/{repo_id}/shards/train-000000.tar", f"datasets/{repo_id}/data/train.jsonl"
    info = fs.info(shard, refresh=True)  # paths-info
    expanded = fs.info(shard, expand_info=True)  # paths-info with expand: LFS details and the last commit
    with fs.open(shard, "rb") as handle:  # buffered: a ranged GET of a block, through the redirect to storage
        handle.seek(512)
        shard_range = handle.read(1000)
    with fs.open(text, "rb", block_size=16) as handle:  # small blocks: ranged GETs of a regular file
        handle.seek(10)
        text_range = handle.read(20)
    files = {"size": info["size"], "lfs_sha256": expanded["lfs"]["sha256"],
             "last_commit_title": expanded["last_commit"].title,
             "shard_512_1512": shard_range.hex(), "text_10_30": text_range.hex()}
    (out / "files.json").write_text(json.dumps(files))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
