"""The structure of a TIFF's header (IFDs, block offsets), and compact copies of a remote TIFF
that hold only the header and the blocks a read fetched, for GDAL to decode from memory.

A compact copy is the header's bytes, then the fetched spans one after another. Every block
offset (of every IFD: overviews and masks too) is rewritten: a block inside a fetched span points
at its copy, any other block at an offset past the end of the copy (a read error in GDAL, never
other bytes). So a copy decodes to the same pixels as the whole file, or GDAL fails and the
caller reads the file another way.

Headers this module does not understand (an IFD or tag value outside the fetched header,
sub-IFDs, EXIF / GPS directories, old-style JPEG) raise `Unsupported`; `NeedBytes` asks for a
longer header first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# value sizes of the TIFF field types (TIFF 6 + BigTIFF)
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
OFFSET_TYPES = {3: "u2", 4: "u4", 13: "u4", 16: "u8", 18: "u8"}
IMAGE_WIDTH, IMAGE_LENGTH, ROWS_PER_STRIP, SAMPLES_PER_PIXEL, PLANAR_CONFIG = 256, 257, 278, 277, 284
STRIP_OFFSETS, STRIP_BYTE_COUNTS, TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTE_COUNTS = 273, 279, 322, 323, 324, 325
# tags whose values point at other places of the file this module does not follow
FOREIGN_POINTERS = {330: "sub-IFDs", 34665: "an EXIF directory", 34853: "a GPS directory", 40965: "an interoperability directory",
                    513: "old-style JPEG data"}
MAX_IFDS = 64


class Unsupported(Exception):
    """A header this module cannot make compact copies of (read the file another way)."""


class NeedBytes(Exception):
    """The header's structure reaches past the bytes given: fetch ``size`` bytes from the start."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the TIFF header needs its first {size} bytes")
        self.size = size


@dataclass(frozen=True)
class Blocks:
    """One IFD's block offsets and byte counts, and where in the header their values lie."""

    offsets: np.ndarray  # int64
    counts: np.ndarray  # int64
    position: int  # byte position of the offset values in the header
    dtype: str  # their numpy dtype, with byte order


@dataclass(frozen=True)
class Layout:
    """The blocks of a TIFF: its first IFD's block grid (full resolution) and every IFD's offsets."""

    width: int
    height: int
    block_width: int
    block_height: int
    bands: int
    planar: bool  # one plane per band (PlanarConfiguration 2)
    ifds: tuple[Blocks, ...]
    header_size: int  # bytes of the header the structure lies in

    def block_ranges(self, bands: list[int], col_off: int, row_off: int, width: int, height: int) -> set[tuple[int, int]]:
        """Byte ranges ``[start, stop)`` of the full-resolution blocks of ``bands`` (1-based) that
        the window touches; sparse blocks (offset 0) have none."""
        across = -(-self.width // self.block_width)
        down = -(-self.height // self.block_height)
        rows = range(max(0, row_off // self.block_height), min(down - 1, (row_off + height - 1) // self.block_height) + 1)
        cols = range(max(0, col_off // self.block_width), min(across - 1, (col_off + width - 1) // self.block_width) + 1)
        planes = sorted({band - 1 for band in bands}) if self.planar else [0]
        first = self.ifds[0]
        found: set[tuple[int, int]] = set()
        for plane in planes:
            for row in rows:
                for col in cols:
                    index = plane * across * down + row * across + col
                    if index < len(first.offsets) and first.offsets[index] and first.counts[index]:
                        found.add((int(first.offsets[index]), int(first.offsets[index] + first.counts[index])))
        return found

    def compact(self, header: bytes, spans: list[tuple[int, bytes]]) -> bytes:
        """The header, then ``spans`` (start in the file, bytes), with every block offset pointing
        at its copy or past the end (see the module's docstring)."""
        patched = bytearray(header[: self.header_size])
        base = len(patched)
        starts = []
        for start, data in spans:
            starts.append((start, start + len(data), base))
            base += len(data)
        for blocks in self.ifds:
            far = min(int(np.iinfo(np.dtype(blocks.dtype)).max), 1 << 62)  # past the end of any copy
            if base >= far:
                raise Unsupported(f"a copy of {base} bytes does not fit {blocks.dtype} block offsets")
            new = np.full(len(blocks.offsets), far, dtype=np.int64)
            new[(blocks.offsets == 0) & (blocks.counts == 0)] = 0  # sparse blocks stay sparse
            for start, stop, at in starts:
                inside = (blocks.offsets >= start) & (blocks.offsets + blocks.counts <= stop) & (blocks.counts > 0)
                new[inside] = at + blocks.offsets[inside] - start
            values = new.astype(blocks.dtype).tobytes()
            patched[blocks.position : blocks.position + len(values)] = values
        return bytes(patched) + b"".join(data for _start, data in spans)


def read_layout(header: bytes, file_size: int) -> Layout:
    """The `Layout` of a TIFF from its first bytes (``NeedBytes`` when they are too few)."""
    if len(header) < 16:
        raise NeedBytes(min(file_size, 16))
    order = {b"II": "<", b"MM": ">"}.get(bytes(header[:2]))
    if order is None:
        raise Unsupported("not a TIFF")
    magic = struct.unpack(order + "H", header[2:4])[0]
    if magic == 42:
        big, first = False, struct.unpack(order + "I", header[4:8])[0]
    elif magic == 43:
        big, first = True, struct.unpack(order + "Q", header[8:16])[0]
    else:
        raise Unsupported("not a TIFF")
    reader = _IfdReader(header, file_size, order, big)
    ifds: list[dict[int, tuple[int, int, int]]] = []
    offset = first
    while offset and len(ifds) < MAX_IFDS:
        entries, offset = reader.ifd(offset)
        ifds.append(entries)
    if not ifds:
        raise Unsupported("a TIFF without images")
    blocks = tuple(reader.blocks(entries) for entries in ifds)
    main = ifds[0]
    width, height = reader.number(main, IMAGE_WIDTH), reader.number(main, IMAGE_LENGTH)
    if TILE_OFFSETS in main:
        block_width, block_height = reader.number(main, TILE_WIDTH), reader.number(main, TILE_LENGTH)
    else:
        block_width, block_height = width, reader.number(main, ROWS_PER_STRIP, height)
    planar = reader.number(main, PLANAR_CONFIG, 1) == 2
    return Layout(width, height, block_width, min(block_height, height) or height, reader.number(main, SAMPLES_PER_PIXEL, 1),
                  planar, blocks, reader.needed)


class _IfdReader:
    """Reads IFD entries from header bytes, tracking how far into the header the structure reaches."""

    def __init__(self, header: bytes, file_size: int, order: str, big: bool) -> None:
        self.header, self.file_size, self.order, self.big = header, file_size, order, big
        self.needed = 16 if big else 8

    def _reach(self, stop: int) -> None:
        if stop > self.file_size:
            raise Unsupported("a TIFF structure past the end of the file")
        if stop > len(self.header):
            raise NeedBytes(stop)
        self.needed = max(self.needed, stop)

    def ifd(self, offset: int) -> tuple[dict[int, tuple[int, int, int]], int]:
        """Entries ``{tag: (type, count, value position)}`` of the IFD at ``offset``, and the next IFD's offset."""
        count_format, entry_size, head = ("Q", 20, 8) if self.big else ("H", 12, 2)
        self._reach(offset + head)
        (count,) = struct.unpack_from(self.order + count_format, self.header, offset)
        pointer = 8 if self.big else 4
        stop = offset + head + count * entry_size + pointer
        self._reach(stop)
        entries: dict[int, tuple[int, int, int]] = {}
        for index in range(count):
            at = offset + head + index * entry_size
            if self.big:
                tag, kind, values = struct.unpack_from(self.order + "HHQ", self.header, at)
                field = at + 12
            else:
                tag, kind, values = struct.unpack_from(self.order + "HHI", self.header, at)
                field = at + 8
            if tag in FOREIGN_POINTERS:
                raise Unsupported(f"a TIFF with {FOREIGN_POINTERS[tag]}")
            size = TYPE_SIZES.get(kind)
            if size is None:
                raise Unsupported(f"TIFF field type {kind}")
            if size * values > pointer:
                field = struct.unpack_from(self.order + ("Q" if self.big else "I"), self.header, field)[0]
                self._reach(field + size * values)
            entries[tag] = (kind, values, field)
        (next_offset,) = struct.unpack_from(self.order + ("Q" if self.big else "I"), self.header, stop - pointer)
        return entries, next_offset

    def array(self, entries: dict[int, tuple[int, int, int]], tag: int) -> tuple[np.ndarray, int, str]:
        kind, count, position = entries[tag]
        if kind not in OFFSET_TYPES:
            raise Unsupported(f"TIFF tag {tag} of type {kind}")
        dtype = self.order + OFFSET_TYPES[kind]
        values = np.frombuffer(self.header, dtype=dtype, count=count, offset=position).astype(np.int64)
        return values, position, dtype

    def number(self, entries: dict[int, tuple[int, int, int]], tag: int, default: int | None = None) -> int:
        if tag not in entries:
            if default is None:
                raise Unsupported(f"a TIFF without tag {tag}")
            return default
        return int(self.array(entries, tag)[0][0])

    def blocks(self, entries: dict[int, tuple[int, int, int]]) -> Blocks:
        tags = (TILE_OFFSETS, TILE_BYTE_COUNTS) if TILE_OFFSETS in entries else (STRIP_OFFSETS, STRIP_BYTE_COUNTS)
        if tags[0] not in entries or tags[1] not in entries:
            raise Unsupported("a TIFF image without block offsets")
        offsets, position, dtype = self.array(entries, tags[0])
        counts = self.array(entries, tags[1])[0]
        if len(counts) != len(offsets):
            raise Unsupported("a TIFF whose block offsets and byte counts differ in number")
        return Blocks(offsets, counts, position, dtype)
