"""CLI conventions: --version, boolean flags as --flag/--no-flag, examples in every --help,
build's caption options, and hints that name options the command has."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsbuild.cli import app
from rsbuild.version import __version__

COMMANDS = ("init", "fetch", "scenes", "build", "recaption", "caption", "inspect", "verify", "demo", "preview", "publish")


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"rsbuild {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_examples(command: str) -> None:
    text = _help(command)
    assert "Examples:" in text
    assert re.search(rf"^\s+rsbuild {command}\b", text, re.MULTILINE), text


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_boolean_flags_show_no_value(command: str) -> None:
    text = _help(*([command] if command else []))
    assert "<bool>" not in text and "BOOLEAN" not in text, text  # --help and --version too
    assert re.search(r"--help\s+Show this message and exit", text), text


def test_flags_have_negative_forms_that_work(tmp_path) -> None:
    text = _help("build")
    for flag in ("--quiet", "--overwrite", "--write-bbox-overlays"):
        assert f"--no-{flag[2:]}" in text
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--no-json"])
    assert "No such option" not in result.output


def test_build_takes_the_caption_options() -> None:
    text = _help("build")
    for option in ("--tasks", "--server-url", "--model", "--engine", "--prompts"):
        assert option in text


def test_build_caption_options_reach_the_config(tmp_path) -> None:
    config = tmp_path / "rsbuild.toml"
    assert CliRunner().invoke(app, ["init", str(config)]).exit_code == 0
    result = CliRunner().invoke(app, ["build", "-c", str(config), "-o", str(tmp_path / "out"), "--tasks", "area,nonsense", "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "captions.tasks.1" in result.output  # --tasks went into the config and was validated there


def test_overlap_hint_names_options_the_demo_user_can_use() -> None:
    from rsbuild.run.pipeline import RunSummary

    summary = RunSummary(out_dir="out")
    summary.writer = {"overlap": {"overlapping_pairs": 3, "tiles": 10}}
    summary.finalized = True
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(summary.table())
    text = console.export_text()
    assert "splits.by" in text and "use --split-by cell" not in text


def test_readme_imports_name_what_the_package_has() -> None:
    """Every ``from rsbuild… import …`` line a user copies from the README imports."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = re.findall(r"^from (rsbuild[\w.]*) import ([\w, ]+)$", readme, re.MULTILINE)
    assert lines, "the README shows the loader API"
    for module_name, names in lines:
        module = importlib.import_module(module_name)
        for name in names.split(","):
            assert hasattr(module, name.strip()), f"README: {module_name} has no {name.strip()}"


def test_readme_tells_a_new_user_what_to_install_and_which_credentials_each_source_needs() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    install = readme.split("## Prerequisites and install time", 1)[1].split("\n## ", 1)[0]
    assert "Python ≥ 3.11" in install and "CMake" in install and "17 minutes" in install
    credentials = readme.split("### Credentials", 1)[1].split("\n### ", 1)[0]
    for source, secret in [("Planetary Computer", "sign_hrefs"), ("Copernicus Data Space", "AWS_SECRET_ACCESS_KEY"),
                           ("Earth Engine", "GOOGLE_APPLICATION_CREDENTIALS"), ("Hugging Face Hub", "HF_TOKEN")]:
        assert re.search(rf"^\| {source}.*{secret}", credentials, re.MULTILINE), source
    performance = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    assert "| figure | measured | target | load |" in performance  # a table of ratios, not a log
    assert "### Download from the Hub" in readme and "resolve/main/shards/train-{" in readme
