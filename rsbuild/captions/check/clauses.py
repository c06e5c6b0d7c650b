"""Clauses and attachment: sentences split into clauses, and each attribute attached to a class mention."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rsbuild.captions.check.spans import (
    ATTRIBUTE_KINDS,
    BOUNDARY,
    NEW_CLAUSE_LOCATIVE,
    PRONOUN_START,
    RESPECTIVELY,
    SENTENCE,
    Span,
)


@dataclass
class Clause:
    start: int
    end: int
    mentions: list[Span]
    attributes: list[Span]


@dataclass
class Sentence:
    start: int
    end: int
    clauses: list[Clause]

    @property
    def mentions(self) -> list[Span]:
        return [m for c in self.clauses for m in c.mentions]


def split_sentences(text: str, spans: list[Span]) -> list[Sentence]:
    within = bytearray(len(text) + 1)  # 1 at positions strictly inside a span (sentence cuts skip them) ...
    covered = bytearray(len(text) + 1)  # ... and at positions a span covers (clause boundaries skip them)
    for sp in spans:
        within[sp.start + 1:sp.end] = b"\x01" * max(0, sp.end - sp.start - 1)
        covered[sp.start:sp.end] = b"\x01" * max(0, sp.end - sp.start)
    cuts = [0]
    for match in SENTENCE.finditer(text):
        if not within[match.start()]:
            cuts.append(match.end())
    cuts.append(len(text))
    sentences = []
    for a, b in zip(cuts, cuts[1:]):
        if b <= a:
            continue
        inner = [sp for sp in spans if a <= sp.start < b]
        bounds = [a]
        for match in BOUNDARY.finditer(text, a, b):
            if not covered[match.start()] or not any(sp.start <= match.start() < sp.end for sp in inner):
                bounds.append(match.start())
        bounds.append(b)
        clauses = []
        for c0, c1 in zip(bounds, bounds[1:]):
            members = [sp for sp in inner if c0 <= sp.start < c1]
            clauses.append(Clause(
                c0, c1,
                mentions=[m for m in members if m.kind in ("class", "sink") and not m.negated and not m.frame],
                attributes=[m for m in members if m.kind in ATTRIBUTE_KINDS and not m.negated],
            ))
        sentences.append(Sentence(a, b, clauses))
    return sentences


def _nearest(attr: Span, mentions: list[Span]) -> Span | None:
    def distance(m: Span) -> tuple[int, int]:
        gap = attr.start - m.end if m.end <= attr.start else m.start - attr.end
        return max(gap, 0), 0 if m.end <= attr.start else 1

    return min(mentions, key=distance) if mentions else None


def attach(text: str, sentences: list[Sentence], subject: Span | None) -> list[tuple[Span, Span]]:
    """(attribute, mention) pairs: each attribute goes to the class mention it most likely describes.

    Within a clause the nearest mention wins; a clause without one borrows from its sentence
    (forward for a leading "In the north, ..."); a sentence without one is about the first class
    of the previous sentence when it starts with a pronoun ("It lies ..."), else about ``subject``.
    """
    pairs: list[tuple[Span, Span]] = []
    previous_first: Span | None = None
    for sentence in sentences:
        paired = _respectively(text, sentence)
        pairs.extend(paired)
        done = {id(a) for a, _ in paired}
        pronoun = PRONOUN_START.match(text[sentence.start:sentence.end]) is not None
        fallback = previous_first if (pronoun and previous_first is not None) else subject
        for ci, clause in enumerate(sentence.clauses):
            for attr in clause.attributes:
                if id(attr) in done:
                    continue
                target = _target(text, sentence, ci, attr, fallback)
                if target is not None:
                    pairs.append((attr, target))
                    if attr.kind == "position" and target.end <= attr.start:
                        pairs.extend((attr, m) for m in _listed_before(text, sentence, target))
        if sentence.mentions:
            previous_first = sentence.mentions[0]
    return pairs


_LOCATIVE = re.compile(r"\b(?:near|beside|by|next to|close to|adjacent to|around|among|amid|between|surrounded by|"
                       r"along|alongside)\s+(?:the\s+|a\s+|an\s+|some\s+)?$")
_FOLLOW_GAP = re.compile(r"\s*(?:(?:covered|dominated|occupied|taken up) (?:by|with|in) |made up of |composed of |"
                         r"consisting of |of |(?:an? )?)?(?:[a-z-]+ )?")


_LIST_JOIN = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|&\s*|/\s*)(?:some\s+|the\s+)?(?:[a-z-]+\s+)?")


def _target(text: str, sentence: Sentence, ci: int, attr: Span, fallback: Span | None) -> Span | None:
    clause = sentence.clauses[ci]
    if attr.kind == "dominant" and attr.value == "follow":  # "mostly cropland", "mainly covered by trees"
        following = [m for c in sentence.clauses[ci:] for m in c.mentions if m.start >= attr.end]
        if following and _FOLLOW_GAP.fullmatch(text[attr.end:following[0].start]):
            rest = following[1:]
            if rest and _LIST_JOIN.fullmatch(text[following[0].end:rest[0].start]):
                return None  # "mostly marsh and shrubland": the two together, not each
            return following[0]
        return None
    if attr.kind == "relative":  # "X lies north of Y": the subject comes before
        earlier = [m for c in sentence.clauses[:ci + 1] for m in c.mentions if m.end <= attr.start]
        return earlier[-1] if earlier else None
    if clause.mentions:
        owners = clause.mentions
        if attr.kind == "count":  # "a small patch near a river": the river is where, not whose
            owners = [m for m in owners if not _LOCATIVE.search(text, max(0, m.start - 24), m.start)]
        if owners:
            return _nearest(attr, owners)
    before = [m for c in sentence.clauses[:ci] for m in c.mentions]
    after = [m for c in sentence.clauses[ci + 1:] for m in c.mentions]
    if after:
        nxt = next(c for c in sentence.clauses[ci + 1:] if c.mentions)
        lead = text[nxt.start:nxt.mentions[0].start]
        has_own = any(a.kind == attr.kind for a in nxt.attributes)
        leading = NEW_CLAUSE_LOCATIVE.match(text[clause.start:clause.end]) is not None
        if not before or (leading and len(lead.split()) <= 3 and not has_own):
            return after[0]
    if before:
        return before[-1]
    return fallback


_LIST_COMMA = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or|&)\s+")


def _listed_before(text: str, sentence: Sentence, last: Span) -> list[Span]:
    """Mentions listed before ``last`` ("crops, built-up area and shrubs fill the corner"): the
    place is claimed for each, unless one of them has its own attributes."""
    mentions = [m for m in sentence.mentions if m.end <= last.start]
    listed: list[Span] = []
    current = last
    for m in reversed(mentions):
        if not _LIST_COMMA.fullmatch(text[m.end:current.start]):
            break
        listed.append(m)
        current = m
    starts = [a.start for c in sentence.clauses for a in c.attributes]
    if listed and any(listed[-1].start <= start < last.start for start in starts):
        return []
    return listed


def _respectively(text: str, sentence: Sentence) -> list[tuple[Span, Span]]:
    if not RESPECTIVELY.search(text, sentence.start, sentence.end):
        return []
    mentions = sentence.mentions
    pairs: list[tuple[Span, Span]] = []
    for kind in ("share", "position"):
        attrs = [a for c in sentence.clauses for a in c.attributes if a.kind == kind]
        if len(attrs) >= 2 and len(attrs) == len(mentions):
            pairs.extend(zip(attrs, mentions))
    return pairs
