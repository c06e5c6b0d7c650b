"""POI tables: every bad row kind is rejected with a reason, the rest are read."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rsbuild.config import PoisConfig
from rsbuild.errors import InputError
from rsbuild.sources.pois import PoiReader, sanitize_id, stable_poi_id, write_rejects

CSV = """id,lat,lon,name
a1,45.1,17.6,first
a2,nan,17.6,not finite
a3,95.0,17.6,lat out of range
a4,45.0,200,lon out of range
a1,45.2,17.7,duplicate id
,45.3,17.8,missing id
a.6,45.4,17.9,dotted id
a7,,17.9,missing lat
a8,abc,17.9,not a number
"""


def read_all(path, **kwargs):
    reader = PoiReader(PoisConfig(path=path, **kwargs))
    return reader, list(reader)


def test_csv_rejects_each_bad_row_kind_and_keeps_going(tmp_path):
    path = tmp_path / "pois.csv"
    path.write_text(CSV)
    reader, pois = read_all(path)
    assert [p.poi_id for p in pois] == ["a1", stable_poi_id(45.3, 17.8, 5), "a-6"]
    assert pois[0].lat == 45.1 and pois[0].lon == 17.6 and pois[0].row == 1
    reasons = {r.row: r.reason for r in reader.rejects}
    assert reasons == {
        2: "bad_coordinates",
        3: "out_of_range",
        4: "out_of_range",
        5: "duplicate_id",
        8: "missing_coordinates",
        9: "bad_coordinates",
    }
    assert reader.rows_read == 9
    out = tmp_path / "rejects.jsonl"
    write_rejects(reader.rejects, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reason"] for r in rows] == [reasons[r["row"]] for r in rows]
    assert rows[3]["raw"]["name"] == "duplicate id"


def test_missing_id_is_stable_and_safe():
    first = stable_poi_id(45.123456, 17.654321, 5)
    assert first == stable_poi_id(45.1234561, 17.6543209, 5)
    assert first != stable_poi_id(45.12356, 17.654321, 5)
    assert sanitize_id("a.b c/d") == "a-b-c-d"


def test_jsonl_and_parquet_with_custom_columns(tmp_path):
    rows = [{"poi": "x1", "latitude": 10.0, "longitude": 20.0}, {"poi": "x2", "latitude": 11.0, "longitude": 21.0},
            {"poi": "x3", "latitude": float("inf"), "longitude": 21.0}]
    jsonl = tmp_path / "pois.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n{broken\n" + json.dumps({"poi": "x3", "latitude": 1e9, "longitude": 0}) + "\n")
    reader, pois = read_all(jsonl, id_column="poi", lat_column="latitude", lon_column="longitude")
    assert [(p.poi_id, p.lat, p.lon) for p in pois] == [("x1", 10.0, 20.0), ("x2", 11.0, 21.0)]
    assert sorted(r.reason for r in reader.rejects) == ["out_of_range", "unreadable_row"]

    parquet = tmp_path / "pois.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    reader, pois = read_all(parquet, id_column="poi", lat_column="latitude", lon_column="longitude")
    assert [p.poi_id for p in pois] == ["x1", "x2"]
    assert [r.reason for r in reader.rejects] == ["bad_coordinates"]


def test_missing_column_and_missing_file_are_clear_errors(tmp_path):
    path = tmp_path / "pois.csv"
    path.write_text("id,y,x\na,1,2\n")
    with pytest.raises(InputError, match=r"pois.lat_column \('lat'\).*columns found: id, x, y"):
        read_all(path)
    with pytest.raises(InputError, match="does not exist"):
        PoiReader(PoisConfig(path=tmp_path / "nope.csv"))
    odd = tmp_path / "pois.txt"
    odd.write_text("x")
    with pytest.raises(InputError, match="pois.format"):
        PoiReader(PoisConfig(path=odd))


def test_scan_hashes_each_unit_so_an_edit_changes_only_its_unit(tmp_path):
    path = tmp_path / "pois.csv"
    path.write_text(CSV)
    scan = PoiReader(PoisConfig(path=path)).scan(unit_pois=4)
    assert scan.rows == 9 and len(scan.unit_sha256) == 3
    path.write_text(CSV.replace("a7,,17.9", "a7,45.5,17.9"))  # row 8: unit 1
    edited = PoiReader(PoisConfig(path=path)).scan(unit_pois=4)
    assert [a == b for a, b in zip(scan.unit_sha256, edited.unit_sha256, strict=True)] == [True, False, True]
    pq.write_table(pa.table({"id": ["a"], "lat": [45.0], "lon": [17.0]}), tmp_path / "p.parquet")
    assert PoiReader(PoisConfig(path=tmp_path / "p.parquet")).scan(unit_pois=4).rows == 1


@pytest.mark.parametrize(("name", "content", "words"), [
    ("latin1.csv", "id,lat,lon\nZ\xfcrich,47.4,8.5\n".encode("latin-1"), ("not UTF-8", "byte 0xfc", "pois.path")),
    ("bad.parquet", b"PAR1garbage", ("not a readable Parquet file", "pois.path")),
    ("cols.csv", b"id,y,x\na,1,2\n", ("pois.lat_column", "[pois] section")),
])
def test_scan_stops_on_an_unreadable_table_before_any_work(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        PoiReader(PoisConfig(path=path)).scan(unit_pois=10)
    assert all(word in str(info.value) for word in words)
