"""`rsbuild verify`: every caption re-checked against its statistics; wrong ones are reported."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from rsbuild.chips.stats import compute_stats
from rsbuild.cli import app
from rsbuild.config import CaptionsConfig, OutputConfig, SplitsConfig
from rsbuild.dataset.writer import DatasetWriter
from rsbuild.schemes import get_scheme
from tests.dataset.test_shards import make_sample

SCHEME = get_scheme("esa_worldcover")


def striped(key: str, annotations: list[dict]):
    """Tree cover on the left 62.5 %, water on the right, with real statistics."""
    sample = make_sample(key, annotations=annotations, size=64)
    labels = np.full((64, 64), SCHEME.index_of("tree cover"), np.uint8)
    labels[:, 40:] = SCHEME.index_of("water")
    sample.stats = compute_stats(labels, SCHEME)
    return sample


def ann(task: str, text: str, **extra) -> dict:
    return {"task": task, "text": text, "annotator": "someone", "verified": True, **extra}


def test_verify_reports_pass_rate_and_reasons(tmp_path):
    good = [ann("area", "Tree cover fills the western part of the tile and water the eastern part."),
            ann("class", "Water covers a bit more than a third of the tile, on its east side.", **{"class": "water"})]
    bad = [ann("area", "Tree cover lies in the east and water in the west."),  # left is not east
           ann("area", "Mostly built-up area with some water.")]  # absent class
    out = tmp_path / "ds"
    with DatasetWriter(out, OutputConfig(write_plots=False), SplitsConfig(), CaptionsConfig(), SCHEME) as w:
        w.write(striped("a_t0000", good))
        w.write(striped("b_t0000", bad))
    result = CliRunner().invoke(app, ["verify", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["samples"] == 2 and report["captions"] == 4
    assert report["by_task"]["area"] == {"generated": 3, "captions": 3, "passed": 1, "failed": 2, "pass_rate": 0.3333,
                                         "kept_pass_rate": 0.3333, "rejected_at_build": 0}
    assert report["by_task"]["class"]["pass_rate"] == 1.0
    reasons = " ".join(r["reason"] for r in report["top_reasons"])
    assert "built-up" in reasons and ("east" in reasons or "west" in reasons)
    assert CliRunner().invoke(app, ["verify", str(out), "--min-pass-rate", "0.9"]).exit_code == 1
