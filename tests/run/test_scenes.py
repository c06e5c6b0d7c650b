"""`rsbuild scenes`: the dry run finds each POI's scene through the real STAC API and reads no pixels."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rsbuild.cli import app
from tests.test_cli import write_config


def test_scenes_lists_each_pois_scene_without_reading_pixels(tmp_path: Path, fixture_data, stac_api_rustac, cog_server) -> None:
    pois = tmp_path / "pois.csv"
    rows = fixture_data.pois_path.read_text().splitlines()[:3] + ["far_away,-33.9,151.2"]
    pois.write_text("\n".join(rows) + "\n")
    label_url = f"{cog_server.url}/{fixture_data.label_4326_path.relative_to(fixture_data.cog_dir).as_posix()}"
    config = write_config(tmp_path, fixture_data, stac_api_rustac.url, label_url, pois=pois)
    cog_server.reset_stats()
    result = CliRunner().invoke(app, ["scenes", "-c", str(config)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert cog_server.requests == 0  # no COG, SCL or label byte was asked for
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 6}
    for row in rows[1:3]:
        poi = row.split(",")[0]
        assert "2024-07-" in lines[poi] and " %" in lines[poi], result.output
    assert "no_scene" in lines["far_away"], result.output
    assert "2 of 3 POIs have a scene" in result.output
