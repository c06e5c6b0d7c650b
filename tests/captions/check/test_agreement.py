"""Agreement of the check with labelled captions (tests/data/captions/, README there).

Each set holds captions with real tile statistics, each labelled correct or wrong by reading the
stats, with the kind of claim it makes. Per kind of claim the check must catch >= 95 % of the
wrong captions and reject <= 2 % of the correct ones. Kinds where the check cannot reach that
on real model output are listed with what it does reach, so a regression still fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rsbuild.captions.check import Verdict, check_caption

EVIDENCE = Path(__file__).parents[2] / "data" / "captions"
MIN_CAUGHT = 0.95
MAX_REJECTED = 0.02
# kinds of wrong captions the check does not reach 95 % on: what it reaches instead (a regression
# still fails). Held out (round 2): "the largest patch" for a 9 % class (a rank of parts it does not read),
# "crop ... is a result of the land-cover data" (an area caption that names a class and states nothing).
# Round 4 lifted garbage, position and count to >= 95 % on every set, with rules written after reading the
# misses of model_set.jsonl and heldout_r3.jsonl (so neither is held out for them; see the README there).
# heldout_r4.jsonl (round 4's fresh slice, first and only run, no rule written after reading it): garbage
# 16/20 ("a single crumb ... built up", "a rectangular building extends across the image", "this type of grass
# is almost always found"), class 11/12 ("a few small trees" for a tile without trees, read as a count); of 9
# correct captions 2 rejected ("built-up area covers about 5%" for 8.4 %, "the large patch being the largest"
# read as a rank of the class).
# heldout_r5.jsonl (frozen before any rule was written from r4, first run): count 6/9 ("the large and small
# water patches", "the small patches a bit smaller", "a small patch of it" for classes with no small patch),
# garbage 13/19, position 15/16, share 12/13; of 48 correct captions 4 rejected, none of the 35 written under
# the caption grammar ("freshwater wetlands" read as water, "a considerable amount" for 8.6 %, "south of the
# top (bottom)", "from north to south along its northeast-southwest corner" read as the prompt's example).
# Round 5 (tests/captions/check/test_claims_r5.py), written from heldout_r4.jsonl's misses only (so r4 is no
# longer held out): r4 92.9 % / 2 of 9 -> 99.0 % / 0 of 9; r5 85.7 % / 4 of 48 -> 87.0 % / 4 of 48 (garbage 14/19).
# Round 6 (tests/captions/check/test_claims_r6.py), mechanisms written from heldout_r5.jsonl's misses (so r5 is no
# longer held out): r5 87.0 % / 4 of 48 -> 100 % / 0 of 48, every other set unchanged.
# heldout_r6.jsonl (round 6's fresh slice, frozen before the check first ran on it; first and only run, no rule
# written after reading it): 87.7 % of 81 wrong caught, 1 of 54 correct rejected (none of the 44 grammar captions).
# Per kind caught: class 6/6, copy 1/1, count 3/4, direction 1/1, garbage 14/16, position 17/21, relative 0/1, share
# 29/31; the one rejection is the slice's only correct direction caption (so rejections are bounded over all kinds).
# The check before round 6 (32752e8) gives every r6 caption the same verdict: round 6 neither helped nor hurt there.
REACHED = {"model_set.jsonl:heldout": {"no_fact": 0.93, "relative": 0.0},
           "heldout_r6.jsonl": {"count": 0.75, "garbage": 0.87, "position": 0.80, "relative": 0.0, "share": 0.93}}
MAX_REJECTED_ALL: dict[str, float] = {"heldout_r6.jsonl": 0.02}


# the held-out slices: captions made after a round of the check was written, on new tiles, reported
# apart: rows of model_set.jsonl marked "heldout" (round 2, `make_model_captions.py --seed-base 7000`),
# heldout_r3.jsonl (round 3, `--seed-base 9100`, frozen before that round's rules were written) and
# heldout_r4.jsonl (round 4, `--seed-base 12400`, labelled and committed before the check first ran on it),
# heldout_r5.jsonl (`--seed-base 15000`, free and grammar-constrained vLLM captions, the same way), heldout_r6.jsonl
# (`--seed-base 18000`, the same way, after round 6)
HELDOUT = ":heldout"
EVIDENCE_SETS = ("outside_set.jsonl", "model_set.jsonl", "model_set.jsonl" + HELDOUT, "heldout_r3.jsonl", "heldout_r4.jsonl",
                 "heldout_r5.jsonl", "heldout_r6.jsonl")


def rows_of(name: str) -> list[dict[str, Any]]:
    """The labelled rows of one evidence set; ``model_set.jsonl:heldout`` is its held-out slice, which
    ``model_set.jsonl`` leaves out."""
    file, heldout = name.removesuffix(HELDOUT), name.endswith(HELDOUT)
    rows = [json.loads(line) for line in (EVIDENCE / file).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if bool(r.get("heldout")) == heldout]


def kind_table(rows: list[dict[str, Any]],
               disagreement: Callable[[dict[str, Any], Verdict], None] | None = None) -> dict[str, dict[str, int]]:
    """Per kind of claim: wrong captions and how many the check caught, correct ones and how many it
    rejected (``scripts/check_agreement.py`` prints this table). ``disagreement`` sees each miss."""
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        verdict = check_caption(row["text"], row["stats"], subject=row.get("subject"), task=row.get("task"))
        entry = table.setdefault(row["kind"], {"wrong": 0, "caught": 0, "correct": 0, "rejected": 0})
        if row["label"] == "wrong":
            entry["wrong"] += 1
            entry["caught"] += not verdict.ok
        else:
            entry["correct"] += 1
            entry["rejected"] += not verdict.ok
        if disagreement is not None and verdict.ok == (row["label"] == "wrong"):
            disagreement(row, verdict)
    return dict(sorted(table.items()))


@pytest.mark.parametrize("name, size", [("outside_set.jsonl", 300), ("model_set.jsonl", 480),
                                        ("model_set.jsonl" + HELDOUT, 150), ("heldout_r3.jsonl", 140),
                                        ("heldout_r4.jsonl", 100), ("heldout_r5.jsonl", 120)])
def test_evidence_sets_are_labelled(name: str, size: int) -> None:
    rows = rows_of(name)
    assert len(rows) >= size
    assert {r["label"] for r in rows} == {"correct", "wrong"}
    assert all(r["text"].strip() and r["why"] and r["kind"] and r["stats"]["classes"] for r in rows)
    correct = sum(r["label"] == "correct" for r in rows) / len(rows)
    if name == "outside_set.jsonl":  # written to be roughly 60 / 40
        assert 0.5 <= correct <= 0.65


def test_the_model_set_holds_each_engine() -> None:
    sources = {r["source"] for r in rows_of("model_set.jsonl")}
    assert {"vllm", "llama.cpp", "template"} <= sources
    assert sum(r["source"] == "vllm" for r in rows_of("model_set.jsonl")) >= 300
    assert {"vllm", "llama.cpp", "template"} <= {r["source"] for r in rows_of("heldout_r3.jsonl")}


@pytest.mark.parametrize("name", EVIDENCE_SETS)
def test_per_kind_agreement(name: str) -> None:
    table = kind_table(rows_of(name))
    floors = REACHED.get(name, {})
    for kind, entry in table.items():
        if entry["wrong"]:
            caught = entry["caught"] / entry["wrong"]
            assert caught >= floors.get(kind, MIN_CAUGHT), (kind, entry)
        if entry["correct"] and name not in MAX_REJECTED_ALL:
            assert entry["rejected"] / entry["correct"] <= MAX_REJECTED, (kind, entry)
    correct = sum(e["correct"] for e in table.values())
    assert sum(e["rejected"] for e in table.values()) / correct <= MAX_REJECTED_ALL.get(name, MAX_REJECTED)
