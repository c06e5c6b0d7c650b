"""Text-level faults: invented land-cover words, self-contradicting directions, degenerate text."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rsbuild.captions.check.spans import DIR, Span, vector

# a "-land" compound ("rushland", "rough-land") that the vocabulary does not know: an invented class
_INVENTED_LAND = re.compile(r"\b(?:[a-z]{3,}-?lands?)\b")
_DIRECTION_GLOSS = re.compile(
    rf"\b(?P<compass>{DIR})(?:ern)?(?:\s*\(|-)(?P<side>(?:top|upper|bottom|lower)(?:[- ](?:left|right))?|left|right)"
    r"(?:[- ](?:side|corner|edge|half))?(?:\)|\b)")
REPEATED_SENTENCE_LIMIT = 3  # the same sentence this many times is degenerate text
REPEATED_NGRAM_SHARE = 0.5  # ... as is text where this share of its word 4-grams repeat earlier ones
MIN_WORDS_FOR_NGRAMS = 24


def invented_classes(text: str, spans: Sequence[Span]) -> list[str]:
    """Reasons for land-cover nouns of the "-land" kind that name no class ("rushland covers a fifth")."""
    covered = bytearray(len(text))
    for sp in spans:
        covered[sp.start:sp.end] = b"\x01" * (sp.end - sp.start)
    reasons = []
    for match in _INVENTED_LAND.finditer(text):
        if not any(covered[match.start():match.end()]):
            reasons.append(f"names '{match.group(0)}', which is no land-cover class")
    return reasons


def contradictory_directions(text: str) -> list[str]:
    """Reasons for a compass word glossed with the opposite image side ("east (left)")."""
    reasons = []
    for match in _DIRECTION_GLOSS.finditer(text):
        (cx, cy), (sx, sy) = vector(match.group("compass")), vector(match.group("side"))
        if cx * sx < 0 or cy * sy < 0 or (cx and not cy and sy and not sx) or (cy and not cx and sx and not sy):
            reasons.append(f"contradicts itself: '{match.group(0)}' (north is the top, east the right)")
    return reasons


def degenerate(text: str) -> list[str]:
    """A reason when the text repeats itself: one sentence again and again, or mostly repeated phrases."""
    sentences = [re.sub(r"\W+", " ", s).strip() for s in re.split(r"[.!?;\n]+", text)]
    counts: dict[str, int] = {}
    for sentence in filter(None, sentences):
        counts[sentence] = counts.get(sentence, 0) + 1
    if counts and max(counts.values()) >= REPEATED_SENTENCE_LIMIT:
        return ["repetitive text (a sentence repeats)"]
    words = re.findall(r"[a-z0-9%]+", text)
    if len(words) >= MIN_WORDS_FOR_NGRAMS:
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        seen: set[tuple[str, ...]] = set()
        repeats = 0
        for gram in grams:
            repeats += gram in seen
            seen.add(gram)
        if repeats / len(grams) >= REPEATED_NGRAM_SHARE:
            return ["repetitive text (most phrases repeat)"]
    return []
