"""Negation: which class mentions are denied ("no water"), which are traces, and which attributes are denied."""

from __future__ import annotations

import re

from rsbuild.captions.check.spans import ATTRIBUTE_KINDS, BOUNDARY, HARD_STOP, Span

# between two denied classes: the first one's head noun, a separator, an adjective ("no wooded terrain or open marsh")
_LIST_GAP = re.compile(r"^(?:\s+[a-z-]+){0,2}?\s*(?:,\s*(?:or|nor)?|\bor\b|\bnor\b|and/or)\s*(?:[a-z-]+\s+)?$")
_BACK_LIST_GAP = re.compile(r"^(?:\s+[a-z-]+){0,2}?\s*(?:,\s*(?:or|and|nor)?|\band\b|\bor\b|\bnor\b)\s*"
                            r"(?:[a-z-]+\s+)?$")
_FILLER_GAP = re.compile(r"^\s*(?:[\w'-]+\s+){0,4}$")


def _words_between(text: str, a: int, b: int) -> str:
    return text[a:b] if a <= b else ""


def apply_negation(text: str, spans: list[Span]) -> list[tuple[Span, bool]]:
    """Mark negated / trace mentions and negated attributes; return (mention, strong) denials."""
    mentions = [sp for sp in spans if sp.kind in ("class", "sink")]
    attributes = [sp for sp in spans if sp.kind in ATTRIBUTE_KINDS]
    denials: list[tuple[Span, bool]] = []
    for sp in spans:
        if sp.kind in ("neg_pre", "trace"):
            for attr in attributes:  # "not in the north", "not the dominant class"
                gap = _words_between(text, sp.end, attr.start)
                if sp.kind == "neg_pre" and attr.start >= sp.end and re.fullmatch(r"\s*(?:\w+\s+){0,1}", gap):
                    attr.negated = True
            following = [m for m in mentions if m.start >= sp.end]
            if not following:
                continue
            first = following[0]
            gap = _words_between(text, sp.end, first.start)
            if not _FILLER_GAP.match(gap) or HARD_STOP.search(gap) or BOUNDARY.search(gap.replace(",", "")):
                continue
            chain = [first]
            for nxt in following[1:]:
                if _LIST_GAP.match(text[chain[-1].end:nxt.start]):
                    chain.append(nxt)
                else:
                    break
            for m in chain:
                if sp.kind == "trace":
                    m.trace, m.trace_asserts = True, sp.value == "asserts"
                else:
                    m.negated = True
                    denials.append((m, sp.value == "strong"))
        elif sp.kind == "neg_post":
            preceding = [m for m in mentions if m.end <= sp.start]
            if not preceding:
                continue
            last = preceding[-1]
            if not _FILLER_GAP.match(text[last.end:sp.start]) or HARD_STOP.search(text[last.end:sp.start]):
                continue
            chain = [last]
            for prev in reversed(preceding[:-1]):
                if _BACK_LIST_GAP.match(text[prev.end:chain[-1].start]):
                    chain.append(prev)
                else:
                    break
            for m in chain:
                m.negated = True
                denials.append((m, True))
    return denials
