"""WebDataset shards: atomic, size-capped, byte-reproducible writing; reading back as Samples.

Layout: ``OUT/shards/{split}-{NNNNNN}.tar`` (numbered 0, 1, 2 … per split) with members ``KEY.json``, ``KEY.mask.png`` (optional)
and ``KEY.png``. A shard is written as ``{name}.tar.tmp`` (never matching ``*.tar``), renamed when
complete, and only then gets its ``{name}.stats.json`` sidecar, itself written atomically: a
shard without a sidecar was not finished. Members carry a fixed mtime, owner and mode, so the
same samples in the same order give byte-identical shards (the bytes webdataset's ``TarWriter``
writes; `read_local_shard` keeps a local shard's member blocks so recaption writes unchanged
image, mask and band members again verbatim).

A unit of work writes its shards under unit names (``{split}-u{unit:06d}-{part:02d}.tar``, see
`unit_shard_name`); `renumber_shards` gives the done units' shards contiguous numbers per split at
finalize (unit order, then part order), so brace patterns like ``train-{000000..000239}.tar``
name every shard. The renaming is recorded before it starts and can be redone or undone at any
point, so finalize may run again (more units done, a resumed run) and always ends with the same
names for the same units.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import tarfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rsbuild.config import OutputConfig
from rsbuild.dataset.layout import SHARDS_DIR, TMP_SUFFIX, canonical_json
from rsbuild.errors import InputError
from rsbuild.records import KEY_PATTERN, SPLITS, Sample

SHARD_MTIME = 946684800  # 2000-01-01T00:00:00Z, the mtime of every member (reproducible tars)
SHARD_OWNER = "rsbuild"
SHARD_MODE = 0o444
MAX_MEMBER_NAME = 100  # ustar name field; keys need no slash so no prefix field is available

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class AtomicJsonl:
    """A JSONL file streamed under ``{name}.tmp`` and renamed into place by ``close``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp_path = self.path.with_name(self.path.name + TMP_SUFFIX)
        self.rows = 0
        self._file = open(self.tmp_path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - lives until close/abort

    def write(self, doc: Any) -> None:
        """Append one row (compact JSON, UTF-8, key order kept)."""
        self._file.write(json.dumps(doc, ensure_ascii=False) + "\n")
        self.rows += 1

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        """Drop the partial file; nothing appears under the final name."""
        if not self._file.closed:
            self._file.close()
        self.tmp_path.unlink(missing_ok=True)


def shard_name(split: str, index: int) -> str:
    """``{split}-{index:06d}`` (the file is that plus ``.tar``)."""
    return f"{split}-{index:06d}"


def unit_shard_name(split: str, unit: int, part: int) -> str:
    """The name a unit of work gives its ``part``-th shard of ``split`` until finalize renumbers it."""
    return f"{split}-u{unit:06d}-{part:02d}"


_UNIT_SHARD = re.compile(r"^[a-z]+-u(\d{6})-\d{2}(\.tar)?$")


def unit_of_shard_name(name: str) -> int | None:
    """The unit in a unit shard name (``train-u000003-01.tar`` → 3), None for a renumbered name."""
    match = _UNIT_SHARD.match(name)
    return int(match.group(1)) if match else None


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name shard members, or None when it can."""
    if not KEY_PATTERN.match(key):
        return f"key {key!r} has characters outside [A-Za-z0-9_-]"
    if len(key) + len(".mask.png") > MAX_MEMBER_NAME:
        return f"key {key!r} is longer than {MAX_MEMBER_NAME - len('.mask.png')} characters"
    return None


def sample_members(sample: Sample, write_mask: bool = True) -> dict[str, bytes]:
    """The tar members of one sample, by extension (``png``, ``json`` in `canonical_json`, ``mask.png``, ``bands.tif``)."""
    members = {"png": sample.image_png, "json": canonical_json(sample.json_payload()).encode("utf-8")}
    if write_mask and sample.mask_png is not None:
        members["mask.png"] = sample.mask_png
    if sample.bands_tif is not None:
        members["bands.tif"] = sample.bands_tif
    return members


def member_header(name: str, size: int) -> bytes:
    """The 512-byte header of a shard member (fixed mtime, owner and mode; tarfile's default
    format), the bytes webdataset's ``TarWriter`` wrote for it."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, SHARD_MTIME, SHARD_MODE, SHARD_OWNER, SHARD_OWNER
    return info.tobuf(tarfile.DEFAULT_FORMAT, tarfile.ENCODING, "surrogateescape")


class TarStream:
    """A shard's tar stream: members as header + data + NUL padding, then two NUL blocks and
    padding to a whole record, byte for byte what ``tarfile`` (under webdataset) writes. A
    member whose source blocks are given and still hold its header and data is written from
    them verbatim (compared in place, never copied or re-encoded)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.offset = 0

    def add(self, name: str, data: bytes, source_blocks: bytes | None = None) -> None:
        size, padded = len(data), _padded(len(data))
        header = member_header(name, size)
        view = memoryview(source_blocks) if source_blocks is not None else None  # slices without copies
        if (view is not None and len(view) == _BLOCK + padded and view[:_BLOCK] == header
                and view[_BLOCK : _BLOCK + size] == data and not any(view[_BLOCK + size :])):
            self.file.write(view)
        else:
            self.file.write(header + data + bytes(padded - size))
        self.offset += _BLOCK + padded

    def close(self) -> None:
        end = self.offset + 2 * _BLOCK
        self.file.write(bytes(2 * _BLOCK + (-end % _RECORD)))
        self.offset = 0


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def tar_bytes(member_sizes: list[int] | tuple[int, ...]) -> int:
    """Bytes the members take in a ustar archive: one header block each plus padded data."""
    return sum(_BLOCK + _padded(size) for size in member_sizes)


def finished_tar_size(members_bytes: int) -> int:
    """Final file size of a tar whose members take ``members_bytes``: end blocks, record padding."""
    return -(-(members_bytes + 2 * _BLOCK) // _RECORD) * _RECORD


@dataclass
class ShardStats:
    """What one finished shard holds; written as ``{name}.stats.json``."""

    name: str
    split: str
    samples: int = 0
    bytes: int = 0
    first_key: str | None = None
    last_key: str | None = None
    failures_by_reason: Counter = field(default_factory=Counter)
    class_pixels: Counter = field(default_factory=Counter)
    class_tiles: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def count(self, sample: Sample) -> None:
        """Add one sample: its key, caption failures and class histogram."""
        self.samples += 1
        self.first_key = self.first_key or sample.key
        self.last_key = sample.key
        for failure in sample.failures:
            self.failures_by_reason[str(failure.get("reason", "unknown"))] += 1
        for cls in sample.stats.get("classes", []):
            self.class_pixels[cls["name"]] += int(cls.get("pixels", 0))
            self.class_tiles[cls["name"]] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": f"{self.name}.tar",
            "split": self.split,
            "samples": self.samples,
            "bytes": self.bytes,
            "first_key": self.first_key,
            "last_key": self.last_key,
            "failures_by_reason": dict(sorted(self.failures_by_reason.items())),
            "class_pixels": dict(sorted(self.class_pixels.items())),
            "class_tiles": dict(sorted(self.class_tiles.items())),
            "seconds": round(self.seconds, 3),
        }


def _stats_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


class _OpenShard:
    """One shard being written under its temporary name."""

    def __init__(self, shards_dir: Path, name: str, split: str) -> None:
        self.final_path = shards_dir / f"{name}.tar"
        self.tmp_path = shards_dir / f"{name}.tar{TMP_SUFFIX}"
        self.stats = ShardStats(name=name, split=split)
        self.members_bytes = 0
        self.started = time.perf_counter()
        self._file = open(self.tmp_path, "wb")  # noqa: SIM115 - lives until finish/abort
        self._writer = TarStream(self._file)

    def write(self, sample: Sample, members: dict[str, bytes]) -> None:
        for extension in sorted(members):  # webdataset's member order
            self._writer.add(f"{sample.key}.{extension}", members[extension], sample.source_blocks.get(extension))
        self.members_bytes += tar_bytes([len(v) for v in members.values()])
        self.stats.count(sample)

    def finish(self) -> ShardStats:
        """Close, fsync, rename to ``.tar``, then write the stats sidecar last."""
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.final_path)
        self.stats.bytes = self.final_path.stat().st_size
        self.stats.seconds = time.perf_counter() - self.started
        sidecar = self.final_path.with_name(f"{self.stats.name}.stats.json")
        write_atomic(sidecar, _stats_bytes(self.stats.to_json()))
        return self.stats

    def abort(self) -> None:
        """Drop the unfinished shard: nothing appears under the final name."""
        try:
            self._writer.close()  # lets tarfile flush into the doomed temp file, not at garbage collection
            self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


class ShardSink:
    """Rolling shard writer for one split, capped by sample count and bytes."""

    def __init__(
        self,
        shards_dir: Path,
        split: str,
        max_samples: int,
        max_bytes: int,
        write_masks: bool = True,
        *,
        first_index: int = 0,
        max_shards: int | None = None,
        unit: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.shards_dir = Path(shards_dir)
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.write_masks = write_masks
        self.finished: list[ShardStats] = []
        self._open: _OpenShard | None = None
        self._first_index = first_index
        self._next_index = first_index
        self._max_shards = max_shards
        self._unit = unit

    def _name(self, index: int) -> str:
        if self._unit is None:
            return shard_name(self.split, index)
        return unit_shard_name(self.split, self._unit, index - self._first_index)

    def write(self, sample: Sample) -> str:
        """Append a sample; returns the name (``{split}-NNNNNN``) of the shard it went to."""
        problem = key_problem(sample.key)
        if problem:
            raise ValueError(problem)
        members = sample_members(sample, self.write_masks)
        size = tar_bytes([len(v) for v in members.values()])
        shard = self._open
        if shard is not None and (
            shard.stats.samples >= self.max_samples
            or finished_tar_size(shard.members_bytes + size) > self.max_bytes
        ):
            self.finished.append(shard.finish())
            shard = self._open = None
        if shard is None:
            if self._max_shards is not None and self._next_index - self._first_index >= self._max_shards:
                raise RuntimeError(
                    f"more than {self._max_shards} {self.split} shards in one unit of work; "
                    "lower output.unit_pois or raise output.shard_max_samples / shard_max_bytes"
                )
            shard = self._open = _OpenShard(self.shards_dir, self._name(self._next_index), self.split)
            self._next_index += 1
        shard.write(sample, members)
        return shard.stats.name

    def close(self) -> list[ShardStats]:
        """Finish the open shard; returns the stats of every shard written."""
        if self._open is not None:
            self.finished.append(self._open.finish())
            self._open = None
        return self.finished

    def abort(self) -> None:
        """Remove the unfinished shard (finished ones stay, with their sidecars)."""
        if self._open is not None:
            self._open.abort()
            self._open = None


class ShardSinks:
    """One `ShardSink` per split, opened on first use; routes samples by ``sample.split``."""

    def __init__(
        self, shards_dir: Path, output_cfg: OutputConfig, *, first_index: int = 0, max_shards: int | None = None,
        unit: int | None = None,
    ) -> None:
        self.shards_dir = Path(shards_dir)
        self.output_cfg = output_cfg
        self.first_index, self.max_shards, self.unit = first_index, max_shards, unit
        self._sinks: dict[str, ShardSink] = {}

    def write(self, sample: Sample) -> str:
        """Write a sample to its split's current shard; returns the shard name."""
        sink = self._sinks.get(sample.split)
        if sink is None:
            cfg = self.output_cfg
            sink = ShardSink(
                self.shards_dir, sample.split, cfg.shard_max_samples, cfg.shard_max_bytes, cfg.write_masks,
                first_index=self.first_index, max_shards=self.max_shards, unit=self.unit,
            )
            self._sinks[sample.split] = sink
        return sink.write(sample)

    def close(self) -> list[ShardStats]:
        """Finish every split; stats of all shards, split order then shard order."""
        return [stats for split in SPLITS if split in self._sinks for stats in self._sinks[split].close()]

    def abort(self) -> None:
        for sink in self._sinks.values():
            sink.abort()


def _move_shard(shards_dir: Path, src: str, dst: str) -> None:
    """Rename shard ``src`` to ``dst`` (names without ``.tar``) with its stats sidecar. Each file
    moves only when it is still under ``src``, so an interrupted move can simply be run again."""
    tar = shards_dir / f"{src}.tar"
    if tar.exists():
        os.replace(tar, shards_dir / f"{dst}.tar")
    sidecar = shards_dir / f"{src}.stats.json"
    if sidecar.exists():
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
        doc["shard"] = f"{dst}.tar"
        write_atomic(shards_dir / f"{dst}.stats.json", _stats_bytes(doc))
        sidecar.unlink()


def contiguous_names(unit_shards: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Unit shard name → ``{split}-NNNNNN`` numbered from 0 per split, in the order given."""
    counters: Counter[str] = Counter()
    names: dict[str, str] = {}
    for split, name in unit_shards:
        names[name] = shard_name(split, counters[split])
        counters[split] += 1
    return names


def renumber_shards(shards_dir: Path, unit_shards: Sequence[tuple[str, str]], state_file: Path) -> dict[str, str]:
    """Give the shards ``(split, unit shard name)`` contiguous names per split, in the order given.

    ``state_file`` records the renaming before any file moves: a later call first moves the files
    of the recorded renaming back (when the names change, e.g. more units are done), so an
    interrupted or repeated call always ends with the same names. Returns unit name → new name.
    """
    shards_dir = Path(shards_dir)
    shards_dir.mkdir(parents=True, exist_ok=True)
    names = contiguous_names(unit_shards)
    previous = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else None
    if previous == names and all((shards_dir / f"{new}.tar").exists() for new in names.values()):
        return names
    for unit_name, new in (previous or {}).items():
        _move_shard(shards_dir, new, unit_name)
    write_atomic(state_file, _stats_bytes(names))
    for unit_name, new in names.items():
        _move_shard(shards_dir, unit_name, new)
    return names


def restore_unit_shard_names(shards_dir: Path, state_file: Path) -> None:
    """Undo the renumbering recorded in ``state_file``: every shard back under its unit name, the
    record removed. Done before a finished unit is redone, so its old shards are found (and
    removed) by their unit names, and the next finalize renumbers afresh."""
    if not state_file.exists():
        return
    for unit_name, new in json.loads(state_file.read_text(encoding="utf-8")).items():
        _move_shard(Path(shards_dir), new, unit_name)
    state_file.unlink()


def brace_pattern(split: str, count: int) -> str:
    """The webdataset / braceexpand pattern of a split's ``count`` shards, relative to OUT."""
    if count <= 1:
        return f"{SHARDS_DIR}/{shard_name(split, 0)}.tar"
    return f"{SHARDS_DIR}/{split}-{{{0:06d}..{count - 1:06d}}}.tar"


def list_shards(out_dir: Path) -> list[Path]:
    """Finished shards (``*.tar``) under ``OUT/shards`` (or in ``out_dir`` itself), sorted by name."""
    out_dir = Path(out_dir)
    folder = out_dir / SHARDS_DIR if (out_dir / SHARDS_DIR).is_dir() else out_dir
    return sorted(folder.glob("*.tar"))


def stats_path(shard: Path) -> Path:
    """The ``{name}.stats.json`` sidecar of a shard."""
    return shard.with_name(shard.name.removesuffix(".tar") + ".stats.json")


def _split_of(shard: Path) -> str:
    prefix = shard.name.split("-", 1)[0]
    return prefix if prefix in SPLITS else ""


def _sample_from_members(key: str, members: dict[str, bytes], default_split: str,
                         source_blocks: dict[str, bytes] | None = None) -> Sample:
    if "png" not in members or "json" not in members:
        raise ValueError(f"sample {key!r} lacks {'KEY.png' if 'png' not in members else 'KEY.json'}")
    doc = json.loads(members["json"].decode("utf-8"))
    metadata = doc.get("metadata", {})
    return Sample(
        key=key,
        split=metadata.get("split") or default_split,
        image_png=members["png"],
        mask_png=members.get("mask.png"),
        metadata=metadata,
        stats=doc.get("stats", {}),
        annotations=doc.get("annotations", []),
        failures=doc.get("caption_failures", []),
        masks=doc.get("masks", []),
        bands_tif=members.get("bands.tif"),
        source_blocks=source_blocks or {},
    )


class DamagedShardError(InputError, ValueError):
    """A shard that cannot be read (truncated, not a tar, a member missing or not JSON)."""


def read_shard(path: Path) -> Iterator[Sample]:
    """Stream the Samples of one shard in order (webdataset grouping: key = name up to the first dot).

    Raises `DamagedShardError` (an InputError and a ValueError) for a damaged archive, a sample
    missing its ``.png`` or ``.json`` member or with unreadable JSON.
    """
    with open(path, "rb") as handle:
        yield from read_shard_stream(handle, Path(path).name)


def _member_spans(view: mmap.mmap, size: int) -> list[tuple[str, int, int]] | None:
    """``(name, header offset, data size)`` of every member of a plain tar (regular files, no
    extended headers), or None for anything else (`read_shard` then reads, or names the damage)."""
    spans: list[tuple[str, int, int]] = []
    position = 0
    while position + _BLOCK <= size:
        block = view[position : position + _BLOCK]
        if not any(block):
            return spans
        try:
            info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
        except tarfile.TarError:
            return None
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or position + _BLOCK + info.size > size:
            return None
        spans.append((info.name, position, info.size))
        position += _BLOCK + _padded(info.size)
    return None


def read_local_shard(path: Path) -> Iterator[Sample]:
    """`read_shard` for a local file, member bytes sliced from a memory map (no tarfile); each
    sample keeps its image, mask and band members' blocks (`Sample.source_blocks`) so a writer
    copies them verbatim while they are unchanged."""
    path = Path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < _BLOCK:
            yield from read_shard(path)
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            spans = _member_spans(view, size)
            if spans is None:
                yield from read_shard(path)
                return
            default_split = _split_of(path)
            key: str | None = None
            members: dict[str, bytes] = {}
            blocks: dict[str, bytes] = {}
            for name, offset, length in spans:
                member_key, _, extension = name.partition(".")
                if member_key != key:
                    if key is not None:
                        yield _local_sample(path, key, members, default_split, blocks)
                    key, members, blocks = member_key, {}, {}
                if extension in members:
                    raise _damaged(path.name, f"{path.name}: duplicate member {name!r}")
                start = offset + _BLOCK
                if extension == "json":
                    members[extension] = view[start : start + length]
                else:
                    blocks[extension] = view[offset : start + _padded(length)]
                    members[extension] = blocks[extension][_BLOCK : _BLOCK + length]
            if key is not None:
                yield _local_sample(path, key, members, default_split, blocks)


def _local_sample(path: Path, key: str, members: dict[str, bytes], default_split: str, blocks: dict[str, bytes]) -> Sample:
    try:
        return _sample_from_members(key, members, default_split, blocks)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(path.name, exc) from None


def _damaged(name: str, problem: object) -> DamagedShardError:
    return DamagedShardError(
        f"shard {name} is damaged ({problem}); restore it from a copy, or rebuild it: delete the marker of its unit "
        "(units/NNNNNN.json, NNNNNN = shard number // 100) and rerun the same build"
    )


def read_shard_stream(handle: BinaryIO, name: str) -> Iterator[Sample]:
    """Like `read_shard` for an open binary stream (a local file, an fsspec file, a socket)."""
    path = Path(name)
    default_split = _split_of(path)
    key: str | None = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=handle, mode="r|") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                member_key, _, extension = info.name.partition(".")
                member = archive.extractfile(info)
                data = member.read() if member is not None else b""
                if member_key != key:
                    if key is not None:
                        yield _sample_from_members(key, members, default_split)
                    key, members = member_key, {}
                if extension in members:
                    raise ValueError(f"{path.name}: duplicate member {info.name!r}")
                members[extension] = data
        if key is not None:
            yield _sample_from_members(key, members, default_split)
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise _damaged(name, exc) from None


def read_shard_stats(shard: Path) -> dict[str, Any] | None:
    """The parsed stats sidecar of a shard, or None when it is missing."""
    sidecar = stats_path(shard)
    if not sidecar.exists():
        return None
    return json.loads(sidecar.read_text(encoding="utf-8"))


__all__ = [
    "SHARD_MTIME",
    "AtomicJsonl",
    "ShardSink",
    "ShardSinks",
    "ShardStats",
    "brace_pattern",
    "list_shards",
    "read_local_shard",
    "read_shard",
    "read_shard_stats",
    "renumber_shards",
    "sample_members",
    "shard_name",
    "stats_path",
    "unit_of_shard_name",
    "unit_shard_name",
    "write_atomic",
]
