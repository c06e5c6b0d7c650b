"""The faithfulness check: does a caption agree with the tile's label statistics?

``check_caption(text, stats)`` reads free text the way a careful reader would and compares
every claim it can pin to a class with the ``stats`` document (ARCHITECTURE.md):

* **class** - a named class (name or alias, e.g. "river" for water) must be present with at
  least ``min_share`` of the valid pixels; negated mentions ("no water is visible") do not name
  a class, and a strong negation of a class that covers a real share fails instead.
* **share** - percentages ("about 40%", "forty per cent", "30-40%"), fractions ("a third",
  "half", "three quarters") and share words ("most of the tile", "the majority", "nearly
  all", "a small part", "dominates", "the second-largest class") must be near the true share.
* **position** - "in the north-east", "upper left corner", "along the western edge", "the
  southern half", "in the centre", "north of the river": the class must have pixels there
  (north is the top of the image, east is the right; left is west).
* **direction** - "runs north-south", "flows from east to west", "diagonally from the top left
  to the bottom right" must match the orientation of one of the class's elongated components.
* **rank** - "the largest class", "water is the largest (part)", "the smallest part" must fit
  the ranking of the shares.
* **text faults** seen in small models' captions: a compass word glossed with the opposite
  image side ("east (left)", "west-right"), an invented "-land" class ("rushland"), and
  degenerate repetition (a sentence three times, or most 4-word phrases repeated), text mostly
  about the world rather than the image ("mangroves are a key ecosystem"), proper names
  ("Serbia's built-up areas"), sizes in metres or feet, single objects ("a tree stands in the
  centre"), one class said to be another ("the built-up area is filled with trees").
* **task facts** - a class caption must state a fact about its class, a linear caption a
  direction or place of one of the tile's elongated classes; otherwise it fails as ``no_fact``.

Parsing is deliberately simple and lenient: phrases are found with regular expressions, each
claim is attached to the nearest class mention in its clause, and a claim that cannot be
attached or checked is ignored. A check that is unsure passes; it fails only on a clear
contradiction, and every failure comes with a short reason naming the class and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rsbuild.captions.check.clauses import attach, split_sentences
from rsbuild.captions.check.compare import (
    DEFAULT_MIN_SHARE,
    Checker,
    check_claim,
    check_class_count,
    check_comparisons,
    check_denials,
    check_filled_centre,
    present_class_count,
)
from rsbuild.captions.check.compare import MIN_ELONGATION_FOR_DIRECTION as MIN_ELONGATION_FOR_DIRECTION
from rsbuild.captions.check.compare import NEGATED_PRESENT_SHARE as NEGATED_PRESENT_SHARE
from rsbuild.captions.check.compare import ORIENTATION_TOLERANCE_DEG as ORIENTATION_TOLERANCE_DEG
from rsbuild.captions.check.compare import REASON_CODES as REASON_CODES
from rsbuild.captions.check.compare import THIN_ELONGATION as THIN_ELONGATION
from rsbuild.captions.check.compare import TRACE_MAX_PERCENT as TRACE_MAX_PERCENT
from rsbuild.captions.check.faults import MIN_WORDS_FOR_NGRAMS as MIN_WORDS_FOR_NGRAMS
from rsbuild.captions.check.faults import REPEATED_NGRAM_SHARE as REPEATED_NGRAM_SHARE
from rsbuild.captions.check.faults import REPEATED_SENTENCE_LIMIT as REPEATED_SENTENCE_LIMIT
from rsbuild.captions.check.faults import (
    class_is_class,
    contradictory_directions,
    copied_example,
    degenerate,
    impossible_directions,
    invented_classes,
    invented_names,
    nonsense_phrases,
    off_topic,
    remainder_claims,
    shape_claims,
    vegetation_claims,
    worked_examples,
)
from rsbuild.captions.check.negation import apply_negation
from rsbuild.captions.check.spans import Span, scan
from rsbuild.captions.check.text import normalise
from rsbuild.captions.check.vocabulary import unknown_class_names, vocabulary_for

_NUMBER = re.compile(r"\d")

__all__ = ["Verdict", "check_caption", "present_class_count", "DEFAULT_MIN_SHARE", "REASON_CODES"]


@dataclass
class Verdict:
    """Result of the check: ``ok``, one short human-readable reason per contradiction, and per
    reason its code (``REASON_CODES``: class, share, count, position, direction, rank, relative,
    copied_example, no_fact, text) for counting rejections by kind."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), "codes": list(self.codes)}


def check_caption(text: str, stats: Mapping[str, Any], *, subject: str | None = None, task: str | None = None,
                  min_share: float = DEFAULT_MIN_SHARE, examples: Sequence[str] | None = None) -> Verdict:
    """Check a caption against a tile's ``stats`` (ARCHITECTURE.md schema).

    Fails when the caption names a class that is absent or below ``min_share`` of the valid
    pixels, states a share far from the true one, places a class where it is not, or gives a
    wrong direction for an elongated feature. ``subject`` (a class name) is the class a
    single-class caption is about; sentences that name no class ("It lies in the south.") are
    then read as being about it. ``task`` names what the caption was asked for (its facts are
    then required). A caption that repeats one of ``examples`` (default: the worked examples of
    the shipped prompts) fails as a copy; one that states no checkable fact fails too. Returns
    ``Verdict(ok, reasons, codes)``.
    """
    if not isinstance(text, str) or not text.strip():
        return Verdict(False, ["caption is empty"], ["no_fact"])
    vocab = vocabulary_for(str(stats.get("scheme", "")), unknown_class_names(stats))
    normalised = normalise(text)
    spans = scan(normalised, vocab)
    denials = apply_negation(normalised, spans)
    sentences = split_sentences(normalised, spans)
    subject_span = Span(-1, -1, "subject", subject, subject or "") if subject else None
    pairs = attach(normalised, sentences, subject_span)
    if subject_span is not None:  # a class caption's parts are its class's ("a few large patches that cover ... area")
        pairs = [(attr, subject_span if attr.kind == "count" and mention.kind == "sink" else mention)
                 for attr, mention in pairs]

    asked_about = {subject} if subject else set()
    if task == "linear":  # the linear prompt names the elongated features, however small
        asked_about |= {str(c.get("class")) for c in stats.get("components", []) or [] if c.get("elongated")}
    checker = Checker(normalised, stats, min_share, asked_about, task)
    if task == "linear":  # the linear prompt states each elongated part's own share ("a 30% strip of crops")
        for comp in stats.get("components", []) or []:
            if comp.get("elongated"):
                checker.part_shares.setdefault(str(comp.get("class")), []).append(float(comp.get("share", 0.0)))
    claims_by_mention: dict[int, list[Span]] = {}
    mention_by_id: dict[int, Span] = {}
    for attr, mention in pairs:
        if mention.kind in ("class", "subject") and mention.value:
            claims_by_mention.setdefault(id(mention), []).append(attr)
            mention_by_id[id(mention)] = mention
    checkable: set[int] = set()
    for sp in spans:
        if sp.kind == "class" and not sp.negated and checker.check_named(sp, claims_by_mention.get(id(sp), [])):
            checkable.add(id(sp))
    if subject_span is not None and subject in checker.facts.classes:
        checkable.add(id(subject_span))
    clause_of = {id(a): c for sentence in sentences for c in sentence.clauses for a in c.attributes}
    for mention_id, claims in claims_by_mention.items():
        if mention_id in checkable:
            if any(c.kind == "share" for c in claims):  # a stated share outranks a vague "largely X"
                claims = [c for c in claims if c.kind != "dominant" or c.value != "follow"]
            if any(c.kind == "share" and _NUMBER.search(c.text) for c in claims):  # ... and "a considerable amount"
                claims = [c for c in claims if c.kind != "share" or not c.judged]
            for claim in claims:
                check_claim(checker, mention_by_id[mention_id], claim, clause_of.get(id(claim)), spans)
    check_denials(checker, sentences, denials)
    check_comparisons(checker, sentences)
    check_filled_centre(checker, spans)
    check_class_count(checker)
    for reason in invented_classes(normalised, spans):
        checker.fail(reason, "class")
    for reason in contradictory_directions(normalised):
        checker.fail(reason, "position")
    for reason in impossible_directions(normalised):
        checker.fail(reason, "direction")
    for reason in degenerate(normalised, sentences):
        checker.fail(reason, "text")
    for reason in copied_example(text, worked_examples() if examples is None else examples, vocab):
        checker.fail(reason, "copied_example")
    if not any(sp.kind == "class" for sp in spans) and not (subject_span and id(subject_span) in claims_by_mention):
        checker.fail("states no checkable fact (names no land-cover class of the tile's scheme)", "no_fact")
    elif task == "class" and not claims_by_mention and not denials:
        checker.fail("states no checkable fact about the class (no share, place, count or shape)", "no_fact")
    elif task == "linear" and checker.asked_about and not _states_a_feature(claims_by_mention, mention_by_id, checker):
        checker.fail("states no direction or place of a long, narrow feature of the tile", "no_fact")
    for reason in off_topic(normalised, sentences):
        checker.fail(reason, "text")
    for reason in invented_names(text, spans):
        checker.fail(reason, "class")
    for reason in class_is_class(normalised, spans):
        checker.fail(reason, "class")
    for reason in nonsense_phrases(normalised, text, spans):
        checker.fail(reason, "text")
    for reason in remainder_claims(normalised, spans, checker.facts):
        checker.fail(reason, "share")
    for reason in shape_claims(normalised, spans, checker.facts):
        checker.fail(reason, "text")
    for reason in vegetation_claims(normalised, spans, stats):
        checker.fail(reason, "vegetation")
    return Verdict(not checker.reasons, checker.reasons, checker.codes)


def _states_a_feature(claims_by_mention: Mapping[int, list[Span]], mention_by_id: Mapping[int, Span],
                      checker: Checker) -> bool:
    """Whether a linear caption gives a direction or a place for one of the tile's elongated classes."""
    return any(mention_by_id[m].value in checker.asked_about and any(c.kind in ("orient", "position") for c in claims)
               for m, claims in claims_by_mention.items())
