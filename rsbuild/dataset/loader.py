"""Stream built shards into training loaders.

`caption_dataset` returns a webdataset pipeline that a torch ``DataLoader`` can run with workers:
each item is a decoded image with one caption picked by a task / annotator policy. A corrupt
shard is skipped with a warning. `load_hf` loads the same shards with Hugging Face ``datasets``.

    from torch.utils.data import DataLoader
    from rsbuild.dataset.loader import caption_dataset
    ds = caption_dataset("OUT/shards/train-{000000..000009}.tar", tasks=["area"], shuffle=1000)
    loader = DataLoader(ds, batch_size=None, num_workers=4)

With ``image_format="bands"`` (a build with ``output.bands = "all"``) each item's ``image`` is the
``KEY.bands.tif`` member instead of the PNG: a (12, H, W) float32 reflectance array on the 10 m
tile grid, band names in ``band_names`` (``B01`` ... ``B12``); samples without it are skipped.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import webdataset as wds

from rsbuild.chips.bands import BANDS_MEMBER, read_bands

Policy = Literal["random", "first", "all"]


def shard_urls(source: str | Path | Sequence[str], split: str | None = None) -> list[str] | str:
    """Shard URLs from a dataset folder (its ``shards/``), a glob, a brace pattern or a list."""
    if isinstance(source, (list, tuple)):
        return [str(s) for s in source]
    text = str(source)
    if "://" not in text and os.path.isdir(text):
        prefix = f"{split}-" if split else ""
        return sorted(glob.glob(os.path.join(text, "shards", f"{prefix}*.tar")))
    if "://" not in text and any(ch in text for ch in "*?["):
        return sorted(glob.glob(text))
    return text


def eligible_captions(
    doc: dict[str, Any], tasks: Sequence[str] | None = None, annotators: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Annotations that passed the check (or were not checked), filtered by task and annotator."""
    return [
        ann
        for ann in doc.get("annotations", [])
        if ann.get("verified") is not False
        and (tasks is None or ann.get("task") in tasks)
        and (annotators is None or ann.get("annotator") in annotators)
    ]


def pick_index(key: str, count: int, seed: int) -> int:
    """A caption index chosen from the sample key and seed with sha256 (same every run)."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def _choose(
    tasks: Sequence[str] | None, annotators: Sequence[str] | None, policy: Policy, seed: int, image: str = "png"
) -> Callable[[Iterator[dict[str, Any]]], Iterator[dict[str, Any]]]:
    def stage(samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in samples:
            doc = sample["json"]
            captions = eligible_captions(doc, tasks, annotators)
            if not captions:
                continue
            if policy == "random":
                captions = [captions[pick_index(sample["__key__"], len(captions), seed)]]
            elif policy == "first":
                captions = captions[:1]
            for ann in captions:
                record = {
                    "__key__": sample["__key__"],
                    "image": sample[image],
                    "text": ann["text"],
                    "task": ann.get("task"),
                    "annotator": ann.get("annotator"),
                    "metadata": doc.get("metadata", {}),
                    "stats": doc.get("stats", {}),
                }
                if "mask.png" in sample:
                    record["mask"] = sample["mask.png"]
                if "band_names" in sample:
                    record["band_names"] = sample["band_names"]
                yield record

    return stage


def caption_dataset(
    urls: str | Path | Sequence[str],
    *,
    split: str | None = None,
    tasks: Sequence[str] | None = None,
    annotators: Sequence[str] | None = None,
    policy: Policy = "random",
    seed: int = 0,
    shuffle: int = 0,
    image_format: str = "pil",
    with_masks: bool = False,
    transform: Callable[[dict[str, Any]], Any] | None = None,
    resampled: bool = False,
) -> wds.WebDataset:
    """A webdataset pipeline of ``{"image", "text", "task", "annotator", "metadata", "stats"}``.

    ``urls``: a dataset folder (with ``split``), shard paths/URLs, a glob or a brace pattern;
    remote URLs (http, s3 via ``pipe:``) work as in webdataset. ``policy``: one seeded random
    caption per sample, the first, or ``all`` (one item per caption). ``shuffle``: buffer size.
    ``image_format``: a webdataset decoder name ("pil", "rgb8", "torchrgb", ...), or "bands" for
    the multispectral member (module doc).
    ``transform`` maps each item (e.g. to tensors) inside the workers.
    Corrupt shards and samples are skipped with a warning.
    """
    resolved = shard_urls(urls, split)
    dataset = wds.WebDataset(
        resolved,
        handler=wds.warn_and_continue,
        shardshuffle=100 if shuffle else False,
        resampled=resampled,
        nodesplitter=wds.split_by_node,
        empty_check=False,
        seed=seed,
    )
    if not with_masks:
        dataset = dataset.map(_drop_mask)
    if image_format == "bands":
        dataset = dataset.map(_decode_bands, handler=wds.warn_and_continue)
    elif image_format == "pil":  # direct decoding: webdataset's handler chain costs ~0.35 ms a sample
        dataset = dataset.map(_drop_bands).map(_decode_pil, handler=wds.warn_and_continue)
    else:
        dataset = dataset.map(_drop_bands).decode(image_format, handler=wds.warn_and_continue)
    if shuffle:
        dataset = dataset.shuffle(shuffle)
    dataset = dataset.compose(_choose(tasks, annotators, policy, seed, BANDS_MEMBER if image_format == "bands" else "png"))
    if transform is not None:
        dataset = dataset.map(transform, handler=wds.warn_and_continue)
    return dataset


def _decode_pil(sample: dict[str, Any]) -> dict[str, Any]:
    """PNG members to loaded PIL images, ``json`` to a dict."""
    from PIL import Image

    for name in ("png", "mask.png"):
        if name in sample:
            image = Image.open(io.BytesIO(sample[name]))
            image.load()
            sample[name] = image
    sample["json"] = json.loads(sample["json"])
    return sample


def _decode_bands(sample: dict[str, Any]) -> dict[str, Any]:
    """``bands.tif`` to a (12, H, W) float32 array (and ``band_names``), the rest as `_decode_pil`;
    a sample without it raises (skipped with a warning)."""
    if BANDS_MEMBER not in sample:
        raise ValueError(f"sample {sample.get('__key__')!r} has no {BANDS_MEMBER} member (build with output.bands = \"all\")")
    sample[BANDS_MEMBER], sample["band_names"] = read_bands(sample[BANDS_MEMBER])
    sample.pop("png", None)
    return _decode_pil(sample)  # the mask (with_masks) and json


def _drop_mask(sample: dict[str, Any]) -> dict[str, Any]:
    sample.pop("mask.png", None)
    return sample


def _drop_bands(sample: dict[str, Any]) -> dict[str, Any]:
    sample.pop(BANDS_MEMBER, None)
    return sample


def load_hf(dataset_dir: str | Path, split: str = "train", streaming: bool = False) -> Any:
    """Load a split with Hugging Face ``datasets`` (its ``webdataset`` builder)."""
    import datasets

    files = shard_urls(dataset_dir, split)
    # KEY.json fields vary between tiles (class captions, caption failures), and datasets infers a
    # schema from the first few samples: declare json as free-form Json instead.
    columns = {
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "json": datasets.Json(),
        "png": datasets.Image(),
    }
    members = _first_sample_members(files[0] if isinstance(files, list) else files) if files else set()
    if "mask.png" in members:
        columns["mask.png"] = datasets.Image()
    if BANDS_MEMBER in members:
        columns[BANDS_MEMBER] = datasets.Value("binary")  # GeoTIFF bytes: rsbuild.chips.bands.read_bands
    features = datasets.Features(columns)
    return datasets.load_dataset("webdataset", data_files={split: files}, split=split, streaming=streaming, features=features)


def _first_sample_members(url: str) -> set[str]:
    """The member extensions (``png``, ``mask.png``, ``bands.tif`` ...) of a shard's first sample."""
    import tarfile

    import fsspec

    found: set[str] = set()
    with fsspec.open(url, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        first = None
        for member in tar:
            key, _, extension = member.name.partition(".")
            if first is not None and key != first:
                break
            first = key
            found.add(extension)
    return found
