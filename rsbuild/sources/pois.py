"""Read points of interest from CSV, JSONL or Parquet tables.

Bad rows never crash the run: each is returned as a reject with its row number and reason.
An unreadable file or a missing column is a bad run (`InputError`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsbuild.config import PoisConfig
from rsbuild.errors import InputError
from rsbuild.records import Poi

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class PoiReject:
    """A row that could not become a POI."""

    row: int
    reason: str  # "bad_coordinates" | "out_of_range" | "duplicate_id" | "missing_coordinates"
    detail: str
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "reason": self.reason, "detail": self.detail, "raw": self.raw}


def stable_poi_id(lat: float, lon: float, precision: int) -> str:
    """A stable id from the rounded coordinates (sha256, 12 hex characters)."""
    text = f"{round(lat, precision):.{precision}f},{round(lon, precision):.{precision}f}"
    return "p" + hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def sanitize_id(raw: str) -> str:
    """Map an id to ``[A-Za-z0-9_-]`` (webdataset splits member names at the first dot)."""
    return _UNSAFE_ID_CHARS.sub("-", raw.strip()).strip("-")


def _detect_format(cfg: PoisConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    fmt = FORMATS.get(cfg.path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {cfg.path} from its extension; set pois.format to csv, jsonl or parquet"
        )
    return fmt


def _iter_csv(path: Path) -> Iterator[dict[str, Any]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from csv.DictReader(handle, delimiter=delimiter)


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield {"__error__": f"line {line_no} is not JSON: {exc.msg}"}
                continue
            yield record if isinstance(record, dict) else {"__error__": f"line {line_no} is not a JSON object"}


def _iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
        raise InputError(
            f"POI file {path} is not a readable Parquet file ({str(exc).splitlines()[0]}); "
            "write it again with pyarrow or pandas, or set pois.path to a CSV / JSONL table"
        ) from None


_READERS = {"csv": _iter_csv, "jsonl": _iter_jsonl, "parquet": _iter_parquet}


def _records(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """The raw records of a POI table; a file that is not UTF-8 text is an InputError."""
    try:
        yield from _READERS[fmt](path)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"POI file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 (spreadsheets: 'CSV UTF-8') and point pois.path at it"
        ) from None
    except csv.Error as exc:
        raise InputError(f"POI file {path} is not a readable CSV table ({exc}); fix the file or set pois.format") from None


@dataclass(frozen=True)
class TableScan:
    """One cheap pass over a POI table: its row count and a sha256 of each unit's rows (resume
    notices an edited table by them)."""

    rows: int
    unit_sha256: list[str]


def _to_float(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class PoiReader:
    """Iterate valid POIs lazily; rejects accumulate in ``rejects`` (rows are small)."""

    def __init__(self, cfg: PoisConfig) -> None:
        self.cfg = cfg
        if not cfg.path.is_file():
            what = "is a folder" if cfg.path.is_dir() else "does not exist"
            raise InputError(f"POI file {cfg.path} {what}; set pois.path to a CSV, JSONL or Parquet file")
        self.format = _detect_format(cfg)
        self.rejects: list[PoiReject] = []
        self.rows_read = 0

    def _check_columns(self, record: dict[str, Any]) -> None:
        missing = [c for c in (self.cfg.lat_column, self.cfg.lon_column) if c not in record]
        if missing:
            found = ", ".join(sorted(k for k in record if not k.startswith("__"))) or "none"
            field_names = {self.cfg.lat_column: "pois.lat_column", self.cfg.lon_column: "pois.lon_column"}
            fields = ", ".join(f"{field_names[c]} ({c!r})" for c in missing)
            raise InputError(
                f"POI file {self.cfg.path} has no column for {fields}; columns found: {found}. "
                "Set the column names in the [pois] section."
            )

    def scan(self, unit_pois: int) -> TableScan:
        """Read every row once (encoding, format and columns checked up front) and hash each
        group of ``unit_pois`` rows."""
        hashes: list[str] = []
        digest = hashlib.sha256()
        rows = 0
        for rows, record in enumerate(_records(self.cfg.path, self.format), start=1):
            if rows == 1 and "__error__" not in record:
                self._check_columns(record)
            digest.update(json.dumps(record, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8") + b"\n")
            if rows % unit_pois == 0:
                hashes.append(digest.hexdigest())
                digest = hashlib.sha256()
        if rows % unit_pois:
            hashes.append(digest.hexdigest())
        return TableScan(rows, hashes)

    def __iter__(self) -> Iterator[Poi]:
        seen: set[str] = set()
        for row, record in enumerate(_records(self.cfg.path, self.format), start=1):
            self.rows_read += 1
            if "__error__" in record:
                self.rejects.append(PoiReject(row, "unreadable_row", record["__error__"]))
                continue
            if row == 1:
                self._check_columns(record)
            poi_or_reject = self._parse(row, record, seen)
            if isinstance(poi_or_reject, PoiReject):
                self.rejects.append(poi_or_reject)
            else:
                yield poi_or_reject

    def _parse(self, row: int, record: dict[str, Any], seen: set[str]) -> Poi | PoiReject:
        raw = {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in record.items()}
        lat = _to_float(record.get(self.cfg.lat_column))
        lon = _to_float(record.get(self.cfg.lon_column))
        if lat is None or lon is None:
            return PoiReject(row, "missing_coordinates", "latitude or longitude is empty", raw)
        if not (math.isfinite(lat) and math.isfinite(lon)):
            return PoiReject(row, "bad_coordinates", f"latitude/longitude are not finite numbers: {lat!r}, {lon!r}", raw)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            return PoiReject(row, "out_of_range", f"lat {lat} must be in [-90, 90] and lon {lon} in [-180, 180]", raw)
        raw_id = record.get(self.cfg.id_column)
        poi_id = sanitize_id(str(raw_id)) if raw_id not in (None, "") else ""
        if not poi_id:
            poi_id = stable_poi_id(lat, lon, self.cfg.id_precision)
        if poi_id in seen:
            return PoiReject(row, "duplicate_id", f"id {poi_id!r} already used by an earlier row", raw)
        seen.add(poi_id)
        return Poi(poi_id=poi_id, lat=lat, lon=lon, row=row)


def write_rejects(rejects: list[PoiReject], path: Path) -> None:
    """Write rejected rows as JSONL (one object per row, with reason)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for reject in rejects:
            handle.write(json.dumps(reject.to_json(), sort_keys=True) + "\n")
