"""The fact-binding grammars: every text they allow passes the faithfulness check."""

from __future__ import annotations

import json
import re
from itertools import product

import numpy as np
import pytest

from rsbuild.captions.check import check_caption
from rsbuild.captions.constraints import caption_grammar
from rsbuild.chips.stats import compute_stats
from rsbuild.schemes import get_scheme

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[()|?]')


def _expand(tokens: list[str], rules: dict[str, list[str]]) -> list[str]:
    """Every string a GBNF right-hand side of literals, rule names, groups, ``|`` and ``?`` allows."""
    alternatives: list[list[str]] = [[""]]  # each alternative: a list of partial strings
    groups: list[list[list[str]]] = []
    stack: list[tuple[list[list[str]], list[list[str]]]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "(":
            stack.append((alternatives, groups))
            alternatives, groups = [[""]], []
        elif token == ")":
            done = [s for alt in alternatives for s in alt]
            alternatives, groups = stack.pop()
            alternatives[-1] = [a + b for a, b in product(alternatives[-1], done)]
            groups.append(done)
        elif token == "|":
            alternatives.append([""])
        elif token == "?":
            last = groups[-1] if groups else []
            base = {a[: len(a) - len(b)] for a in alternatives[-1] for b in last if a.endswith(b)}
            alternatives[-1] = sorted(set(alternatives[-1]) | base)
        else:
            options = [json.loads(token)] if token.startswith('"') else _expand(rules[token], rules)
            alternatives[-1] = [a + b for a, b in product(alternatives[-1], options)]
            groups.append(options)
        i += 1
    return sorted({s for alt in alternatives for s in alt})


def texts_of(grammar: str, rule: str) -> list[str]:
    rules = {}
    for line in grammar.strip().splitlines():
        name, body = line.split(" ::= ", 1)
        rules[name] = _TOKEN.findall(body)
    return _expand(rules[rule], rules)


def sentence_rules(grammar: str) -> list[str]:
    """The sentence rules (``s0``, ``s1``, ...) of a caption grammar, in order."""
    return [line.split(" ::= ", 1)[0] for line in grammar.strip().splitlines() if re.match(r"s\d+ ::= ", line)]


def follows_grammar(grammar: str, text: str) -> bool:
    """True when ``text`` is one the caption grammar allows: sentences joined by one space, each one its
    grammar allows for a class, no class twice (the root's orders of distinct sentence rules)."""
    allowed = {rule: set(texts_of(grammar, rule)) for rule in sentence_rules(grammar)}
    pieces = [p if p.endswith(".") else p + "." for p in text.split(". ")]
    used: list[str] = []
    for piece in pieces:
        rule = next((r for r, texts in allowed.items() if piece in texts and r not in used), None)
        if rule is None:
            return False
        used.append(rule)
    return bool(used)


def test_follows_grammar_accepts_the_grammars_texts_and_nothing_else(stats: dict) -> None:
    grammar = caption_grammar("area", stats, varied=True)
    assert grammar is not None
    first, second = texts_of(grammar, "s0")[0], texts_of(grammar, "s1")[-1]
    assert follows_grammar(grammar, first) and follows_grammar(grammar, f"{second} {first}")
    assert not follows_grammar(grammar, f"{first} {first}")  # one class twice
    assert not follows_grammar(grammar, first.replace("%", " %")) and not follows_grammar(grammar, first + " Nice.")


@pytest.fixture(scope="module")
def stats() -> dict:
    """Cropland over most of the tile, a tree block in the north-west, a river in the east."""
    scheme = get_scheme("esa_worldcover")
    grid = np.full((90, 90), scheme.index_of("cropland"), dtype=np.uint8)
    grid[:30, :30] = scheme.index_of("tree cover")
    grid[:, 75:80] = scheme.index_of("water")
    return compute_stats(grid, scheme)


@pytest.mark.parametrize("varied", [False, True])
def test_every_sentence_the_grammar_allows_passes_the_check(stats: dict, varied: bool) -> None:
    grammar = caption_grammar("area", stats, varied=varied)
    assert grammar is not None
    sentences = [t for i in range(3) for t in texts_of(grammar, f"s{i}")]
    assert len(sentences) >= (30 if varied else 12)
    for text in sentences:
        verdict = check_caption(text, stats, task="area")
        assert verdict.ok, (text, verdict.reasons)
    subject = caption_grammar("class", stats, "water", varied=varied)
    assert subject is not None
    for text in texts_of(subject, "s0"):
        assert text.startswith(("Water ", "About ", "Roughly ", "Around ", "6%")) and "6%" in text, text
        assert check_caption(text, stats, subject="water", task="class").ok, text


def test_the_varied_grammar_has_more_words(stats: dict) -> None:
    plain, varied = (caption_grammar("area", stats, varied=v) for v in (False, True))
    assert plain is not None and varied is not None
    words = [{w for t in texts_of(g, "s0") for w in t.split()} for g in (plain, varied)]
    assert len(words[1]) >= len(words[0]) + 8
    assert any(t.startswith("About ") and " of the image is cropland" in t for t in texts_of(varied, "s0"))


@pytest.mark.parametrize("varied", [False, True])
def test_plural_class_names_take_plural_verbs(varied: bool) -> None:
    scheme = get_scheme("dynamic_world")
    grid = np.full((60, 60), scheme.index_of("crops"), dtype=np.uint8)
    grid[:20, :20] = scheme.index_of("trees")
    grammar = caption_grammar("area", compute_stats(grid, scheme), varied=varied)
    assert grammar is not None
    texts = [t for i in range(2) for t in texts_of(grammar, f"s{i}")]
    assert any(t.startswith("Crops cover ") for t in texts) and any(t.startswith("Trees take up ") for t in texts)
    assert not any(t.startswith(("Crops covers", "Trees takes", "Crops makes")) for t in texts)
