"""The dataset folder: ``images/ overlays/ metadata/ mapbox_stills/`` in ``sNNNNN/`` segments.

```
OUT/shards/{split}-NNNNNN.tar (+ .stats.json)   rsbuild.dataset.shards (NNNNNN = 0, 1, 2 … per split)
OUT/shards/names.json                           unit shard name -> final name (finalize renumbers)
OUT/data/{train,validation,test}.jsonl          rsbuild.dataset.sft rows
OUT/data/{split}.shards.txt                     the split's shard paths, one a line
OUT/{split}.metadata.jsonl                      the SFT rows + `file_name` (the card's `datasets` config)
OUT/images/sNNNNN/KEY.png                       the chip PNG bytes, as in the shard
OUT/overlays/sNNNNN/KEY_RR_TASK.png             one per JSONL row (output.write_bbox_overlays)
OUT/metadata/sNNNNN/KEY.json                    per-tile sidecar: metadata + label counts/shapes
OUT/mapbox_stills/                              filled by the Mapbox stage
OUT/failures.jsonl, OUT/summary.json, OUT/README.md
```

Leaf folders are chosen from a slot number (file in slot ``n`` goes to ``s{n // cap:05d}``): the
writer derives slots from (POI row, tile), so paths do not depend on the order units run in, and
no leaf folder holds more than ``cap`` files. `rsbuild.dataset.units` fills the folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rsbuild.records import Sample
from rsbuild.schemes import NODATA_INDEX

STILLS_FOLDER = "mapbox_stills"
FOLDERS = ("images", "overlays", "metadata", STILLS_FOLDER)
SHARDS_DIR = "shards"  # {split}-NNNNNN.tar + .stats.json
UNITS_DIR = "units"  # {unit}.json markers (written last) + {unit}.failures.jsonl
PARTS_DIR = "parts"  # data/parts/{split}-{unit}.jsonl, concatenated at finalize
PLOTS_DIR = "plots"
DATA_DIR = "data"
SUMMARY_FILE = "summary.json"
CARD_FILE = "README.md"
FAILURES_FILE = "failures.jsonl"
RUN_FILE = "run.json"  # the run's config fingerprint
LOCK_FILE = "lock"  # units/lock: held while shards are renamed (finalize, a redone unit's cleanup)
SHARD_NAMES_FILE = "names.json"  # shards/names.json: unit shard name -> contiguous name (finalize)
SHARD_LIST_SUFFIX = ".shards.txt"  # data/{split}.shards.txt
IMAGEFOLDER_SUFFIX = ".metadata.jsonl"  # OUT/{split}.metadata.jsonl: rows of the card's imagefolder config
CONFIG_FILE = "config.resolved.json"  # the resolved config of the run (recaption reads it)
RUN_SUMMARY_FILE = "run_summary.json"
REJECTS_FILE = "rejects.jsonl"  # POI rows that were not read, with the reason
TMP_SUFFIX = ".tmp"  # what a file is called until it is complete


class FolderLayout:
    """Files under ``OUT/{folder}/sNNNNN/`` with at most ``file_cap`` files per leaf folder."""

    def __init__(self, out_dir: Path, file_cap: int) -> None:
        if file_cap < 1:
            raise ValueError("file_cap must be at least 1")
        self.out_dir = Path(out_dir)
        self.file_cap = file_cap
        self._counts = dict.fromkeys(FOLDERS, 0)  # folders appear with their first file (no empty mapbox_stills/)
        self._made: set[Path] = set()  # segment folders write_at made

    def allocate(self, folder: str, filename: str) -> str:
        """The next path (relative to OUT, ``/``-separated) for ``filename`` in ``folder``."""
        n = self._counts[folder]
        self._counts[folder] = n + 1
        segment = f"s{n // self.file_cap:05d}"
        if n % self.file_cap == 0:
            (self.out_dir / folder / segment).mkdir(parents=True, exist_ok=True)
        return f"{folder}/{segment}/{filename}"

    def write(self, folder: str, filename: str, data: bytes) -> str:
        """Write ``data`` to the next slot of ``folder``; returns its path relative to OUT."""
        rel = self.allocate(folder, filename)
        (self.out_dir / rel).write_bytes(data)
        return rel

    def write_at(self, folder: str, filename: str, data: bytes, slot: int) -> str:
        """Write ``data`` into the segment of ``slot`` (``s{slot // cap}``): a slot-based layout
        lets units of work write in any order and still keep every leaf folder under the cap."""
        segment = self.out_dir / folder / f"s{slot // self.file_cap:05d}"
        if segment not in self._made:  # one mkdir per segment, not per file
            segment.mkdir(parents=True, exist_ok=True)
            self._made.add(segment)
        (segment / filename).write_bytes(data)
        self._counts[folder] += 1
        return f"{folder}/{segment.name}/{filename}"

    def counts(self) -> dict[str, int]:
        """Files written per folder."""
        return dict(self._counts)


def metadata_sidecar(sample: Sample, shard: str, image: str | None, mask_in_shard: bool) -> dict[str, Any]:
    """The ``metadata/…/KEY.json`` document: provenance plus label counts and shapes (no pixels).

    ``unit_shard`` is the name the unit wrote the sample's shard under; finalize renumbers shards
    and ``shards/names.json`` maps that name to the final one."""
    return {
        "key": sample.key,
        "split": sample.split,
        "unit_shard": f"{SHARDS_DIR}/{shard}.tar",
        "image": image,
        "metadata": sample.metadata,
        "label": {
            "stats": sample.stats,
            "mask": {"in_shard": mask_in_shard, "member": f"{sample.key}.mask.png" if mask_in_shard else None,
                     "size": sample.stats.get("size"), "nodata": NODATA_INDEX},
        },
    }


def canonical_json(doc: Any, *, allow_nan: bool = True) -> str:
    """The package's one canonical JSON text: sorted keys, no spaces, non-ASCII characters kept
    (not ``\\u``-escaped). Shard members and metadata sidecars are written with it (and
    `rsbuild.chips.stats.stats_sha256` hashes the same text). ``allow_nan=False`` refuses NaN and
    infinities instead of writing them."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)


def compact_json(doc: Any) -> bytes:
    """`canonical_json` as UTF-8 bytes with a final newline (Python's C encoder: ~5x faster than indented)."""
    return (canonical_json(doc) + "\n").encode("utf-8")


def pretty_json(doc: Any) -> bytes:
    """Indented, key-sorted UTF-8 JSON with a final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
