"""A plain resume judges the finished dataset, not only the units it ran: earlier failures above
`--max-failure-share` still exit 1, and a dataset within the limit exits 0."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rsbuild.cli import app
from tests.test_cli import write_config


def _fetch(config: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["fetch", "-c", str(config), "-o", str(out), "-q", *extra], env={"COLUMNS": "300"})


def test_a_resume_reports_the_failures_of_earlier_units(tmp_path: Path, fixture_data, stac_api_rustac, cog_server) -> None:
    rows = fixture_data.pois_path.read_text().splitlines()
    pois = tmp_path / "pois.csv"  # one POI with a scene, three without: 3 of 4 rows give no tile
    pois.write_text("\n".join([rows[0], rows[1], "far1,-33.9,151.2", "far2,-33.8,151.3", "far3,-33.7,151.1"]) + "\n")
    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url, pois=pois, output={"unit_pois": 1})
    out = tmp_path / "chips"

    first = _fetch(config, out)
    assert first.exit_code == 1 and "3 of 4 POIs gave no tile" in first.output, first.output

    resumed = _fetch(config, out)  # every unit is done: nothing runs, the dataset is judged
    assert resumed.exit_code == 1, resumed.output
    assert "the finished dataset (4 units from earlier runs included): 3 of 4 POIs gave no tile" in resumed.output
    assert "no_scene" in resumed.output and "Traceback" not in resumed.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pois_with_tiles"] == 1 and summary["pois_failed"] == {"search/no_scene": 3} and summary["pois_failed_transient"] == 0

    accepted = _fetch(config, out, "--max-failure-share", "0.8")
    assert accepted.exit_code == 0, accepted.output
