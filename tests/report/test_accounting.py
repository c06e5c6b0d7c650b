"""Honest caption accounting: every generated caption counts, kept or rejected, in verify, inspect,
summary.json and the card, on a run whose rejections are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsbuild.captions.scheduler import CaptionTelemetry, annotate
from rsbuild.cli import app
from rsbuild.config import OutputConfig, SplitsConfig
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.report.inspection import inspect_dataset
from rsbuild.report.verify import verify_dataset
from rsbuild.schemes import get_scheme
from tests.captions.test_scheduler import FlakyEngine, _cfg, _sample


class SlotFlakyEngine(FlakyEngine):
    """Wrong for the first ``bad`` asks of samples 0 and 1, right at once for 2, always wrong for 3."""

    def __init__(self) -> None:
        super().__init__(bad_attempts=0)

    def generate(self, requests):
        results = super().generate(requests)
        for result in results:
            index = int(result.request.key.removeprefix("poi").split("_")[0])
            slot = (result.request.key, result.request.task, result.request.subject)
            bad = {0: 1, 1: 2, 2: 0, 3: 99}[index]
            if self.asked[slot] <= bad:
                result.texts = ["Snow and ice cover the whole tile."] * len(result.texts)
        return results


@pytest.fixture(scope="module")
def known_run(tmp_path_factory) -> tuple[Path, CaptionTelemetry]:
    """Four area captions asked, three attempts each: 2 + 3 + 1 + 3 = 9 generated, 3 kept, 6 rejected."""
    out = tmp_path_factory.mktemp("accounting") / "ds"
    telemetry = CaptionTelemetry()
    cfg = _cfg(tasks=["area"], max_check_attempts=3)
    samples = list(annotate([_sample(i) for i in range(4)], SlotFlakyEngine(), cfg, telemetry=telemetry))
    with DatasetWriter(out, OutputConfig(write_plots=False), SplitsConfig(), cfg, get_scheme("esa_worldcover")) as writer:
        for sample in samples:
            writer.write(sample)
    return out, telemetry


def test_each_rejected_text_is_recorded_once_in_the_samples(known_run) -> None:
    _, telemetry = known_run
    assert (telemetry.captions_generated, telemetry.captions_kept, telemetry.captions_rejected) == (9, 3, 6)
    assert telemetry.to_json()["rejected_by_reason"] == {"check_failed": 6}


def test_verify_pass_rate_counts_rejected_captions(known_run) -> None:
    out, _ = known_run
    report = verify_dataset(out)
    assert (report["generated"], report["captions"], report["rejected_at_build"]) == (9, 3, 6)
    assert report["pass_rate"] == round(3 / 9, 4) and report["kept_pass_rate"] == 1.0
    assert report["by_task"]["area"]["pass_rate"] == round(3 / 9, 4)
    assert report["rejected_by_reason"] == {"check_failed": 6}
    runner = CliRunner()
    assert runner.invoke(app, ["verify", str(out), "--min-pass-rate", "0.5"]).exit_code == 1
    assert runner.invoke(app, ["verify", str(out), "--min-pass-rate", "0.3"]).exit_code == 0
    shown = runner.invoke(app, ["verify", str(out)]).output
    assert "9 generated" in shown and "check_failed 6" in shown


def test_inspect_summary_and_card_show_rejections_by_reason(known_run) -> None:
    out, _ = known_run
    captions = inspect_dataset(out).to_json()["captions"]
    assert captions["captions_generated"] == 9 and captions["captions_kept"] == 3
    assert captions["rejected_by_reason"] == {"check_failed": 6}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["captions"]["captions_rejected"] == 6 and summary["captions"]["pass_rate"] == round(3 / 9, 4)
    card = (out / "README.md").read_text()
    assert "Captions generated: 9; kept 3 (33%), rejected 6 (check_failed 6)" in card
    shown = CliRunner().invoke(app, ["inspect", str(out)]).output
    assert "captions rejected: check_failed" in shown and "captions generated (kept + rejected)" in shown
