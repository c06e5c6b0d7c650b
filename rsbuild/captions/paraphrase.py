"""LLM paraphrases of the templated VQA questions (``captions.vqa_paraphrase = true``).

One caption request per tile (task ``vqa_paraphrase``) carries the tile's templated questions,
numbered one per line, as its ``subject``; the reply is read line by line (`parse_reply`: ``N. text`` lines,
or the lines in order). Only the question changes: the answer stays the one `derive_answer` gives.
Each paraphrase is checked (`paraphrase_problem`) and a failing one leaves the template question
in the row, counted by its reason:

- ``missing``: no line for the question in the reply;
- ``not_a_question``: no ``?`` (nor a request such as "Count ..." / "Name ..."), or several questions;
- ``wrong_class``: a class of the question is not named (scheme synonyms count), or another is;
- ``leaks_answer``: the answer is in the question (the class of a "largest" question, the compass
  word of a "position" question, the number of a "count" question, the direction of an
  "orientation" question);
- ``lost_constraint``: the kind's constraint words are gone (yes/no questions start with an
  auxiliary verb such as "Is"/"Does"; "position" still asks for a compass direction; "share_bin"
  still lists every bin; "count"/"num_classes" still ask how many, no other kind does; "largest",
  "compare" and "orientation" keep a word of their kind: "most" / "more" / "run" ...).

Kept paraphrases are marked ``meta.detail.paraphrased`` in the row; `rsbuild verify` checks them again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from rsbuild.captions.check import Verdict, check_caption
from rsbuild.captions.check.vocabulary import Vocabulary, vocabulary_for
from rsbuild.captions.vqa import SHARE_BINS, TILE_IMAGE, VqaPair, vqa_pairs

PARAPHRASE_TASK = "vqa_paraphrase"
REASONS = ("missing", "not_a_question", "wrong_class", "leaks_answer", "lost_constraint")
MIN_WORDS = 3
TOKENS_PER_QUESTION = 40  # a reply's max_tokens: at least this per question (captions.max_tokens is for one caption)
_MARKER = re.compile(r"(?:^|(?<=\s))(?:q(?:uestion)?\s*)?(\d{1,2})[.)]\s+", re.IGNORECASE)
_AUXILIARIES = ("is", "are", "does", "do", "can", "could", "has", "have", "will", "would", "was", "were", "may")
_REQUESTS = ("count", "name", "tell", "give", "state", "say", "identify")
_YES_NO = ("presence", "compare")
_KIND_CUES = {  # a rewording must still ask this kind's question: one of its words
    "largest": {"most", "largest", "dominant", "dominates", "biggest", "main", "majority", "predominant", "greatest"},
    "compare": {"more", "larger", "bigger", "greater", "less", "smaller", "exceed", "exceeds"},
    "orientation": {"direction", "oriented", "orientation", "run", "runs", "running", "aligned", "stretch", "stretches", "extend", "extends"},
}
_NORTH_UP = re.compile(r"north is (?:at )?(?:the )?(?:up|top)")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def paraphrase_subject(pairs: Sequence[VqaPair]) -> str:
    """The request's subject: the templated questions numbered, one per line (``1. …``)."""
    return "\n".join(f"{number}. {pair.question}" for number, pair in enumerate(pairs, start=1))


def parse_reply(text: str, count: int) -> list[str | None]:
    """The paraphrase of each of ``count`` questions in a reply (None where it has none): the text
    after each number marker ``N.`` / ``N)`` (at a line start or after a space, as small models
    write them on one line), else the non-empty lines in order."""
    numbered: dict[int, str] = {}
    markers = [m for m in _MARKER.finditer(text) if 1 <= int(m.group(1)) <= count]
    for marker, following in zip(markers, [*markers[1:], None], strict=False):
        end = following.start() if following is not None else len(text)
        numbered.setdefault(int(marker.group(1)), " ".join(text[marker.end():end].split()))
    if numbered:
        return [numbered.get(number) or None for number in range(1, count + 1)]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [*lines[:count], *([None] * max(0, count - len(lines)))]


@lru_cache(maxsize=16)
def _vocabulary(scheme: str, classes: tuple[str, ...]) -> Vocabulary:
    return vocabulary_for(scheme, classes)


def named_classes(text: str, stats: Mapping[str, Any]) -> set[str]:
    """The classes a text names, by the check's vocabulary (scheme names and their synonyms)."""
    names = tuple(str(c["name"]) for c in stats.get("classes", []))
    found = _vocabulary(str(stats.get("scheme", "")), names).find(text)
    return {owner for _, _, owner in found if owner}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9%]+(?:-[a-z0-9%]+)*", text.lower())


def paraphrase_problem(pair: VqaPair, text: str | None, stats: Mapping[str, Any]) -> str | None:
    """Why ``text`` may not replace the question of ``pair`` (one of `REASONS`), or None."""
    if not text or not text.strip():
        return "missing"
    lower = " ".join(text.lower().split())
    words = _words(lower)
    if len(words) < MIN_WORDS or lower.count("?") > 1 or ("?" not in lower and words[0] not in _REQUESTS):
        return "not_a_question"  # one question, or one request
    named = named_classes(text, stats)
    if pair.kind == "largest" and pair.answer in named:
        return "leaks_answer"
    if named != set(pair.subjects):
        return "wrong_class"
    leak = _leak(pair, lower, words)
    return leak or _constraint_problem(pair, lower, words)


def _leak(pair: VqaPair, lower: str, words: list[str]) -> str | None:
    answer = pair.answer.lower()
    lower = _NORTH_UP.sub(" ", lower)  # "north is up" states the frame, not the answer
    if pair.kind == "position" and re.search(rf"\b{re.escape(answer)}\b", lower):
        return "leaks_answer"
    if pair.kind in ("count", "num_classes"):
        number = int(answer)
        if answer in words or (number < len(_NUMBER_WORDS) and _NUMBER_WORDS[number] in words):
            return "leaks_answer"
    if pair.kind == "orientation" and answer in lower:
        return "leaks_answer"
    return None


def _constraint_problem(pair: VqaPair, lower: str, words: list[str]) -> str | None:
    kind = pair.kind
    if kind not in ("count", "num_classes") and ("how many" in lower or "percentage" in words):
        return "lost_constraint"  # now asks for a number: another kind of question
    if kind in _KIND_CUES and not _KIND_CUES[kind] & set(words):
        return "lost_constraint"
    if kind in _YES_NO and words[0] not in _AUXILIARIES:
        return "lost_constraint"
    if kind == "position" and not ("compass" in words or "direction" in words):
        return "lost_constraint"
    if kind == "share_bin" and not all(label in lower for _, _, label in SHARE_BINS):
        return "lost_constraint"
    if kind in ("count", "num_classes") and not ("how many" in lower or "number" in words or words[0] == "count"):
        return "lost_constraint"
    return None


def chosen_questions(pairs: Sequence[VqaPair], reply: str | None, stats: Mapping[str, Any]
                     ) -> tuple[list[VqaPair], dict[str, int]]:
    """The pairs with each checked paraphrase of ``reply`` in place of its template question
    (``reply`` None: no paraphrase request was answered) and the count of each outcome
    (``kept`` and the `REASONS` of the ones left as templated)."""
    if reply is None:
        return list(pairs), {}
    counts: dict[str, int] = {}
    out = []
    for pair, text in zip(pairs, parse_reply(reply, len(pairs)), strict=True):
        problem = paraphrase_problem(pair, text, stats)
        counts[problem or "kept"] = counts.get(problem or "kept", 0) + 1
        out.append(pair if problem or text is None else VqaPair(pair.kind, pair.subjects, " ".join(text.split()),
                                                               pair.answer, paraphrased=True))
    return out, counts


def request_subject(stats: Mapping[str, Any], key: str) -> str | None:
    """The ``vqa_paraphrase`` request's subject for a tile (None: the tile gets no VQA question)."""
    pairs = vqa_pairs(stats, key, TILE_IMAGE)
    return paraphrase_subject(pairs) if pairs else None


def reply_sampling(subject: str | None, sampling: Mapping[str, Any]) -> dict[str, Any]:
    """The request's sampling with ``max_tokens`` raised to cover one line per question."""
    questions = len((subject or "").splitlines())
    out = dict(sampling)
    if "max_tokens" in out:
        out["max_tokens"] = max(int(out["max_tokens"]), TOKENS_PER_QUESTION * questions)
    return out


def reply_verdict(text: str, stats: Mapping[str, Any], key: str) -> Verdict:
    """A reply is kept when at least one of its paraphrases passes (the others fall back, counted);
    otherwise the caption stage asks again with the next seed."""
    _, counts = chosen_questions(vqa_pairs(stats, key, TILE_IMAGE), text, stats)
    if counts.get("kept"):
        return Verdict(True)
    reasons = [f"no question paraphrased acceptably ({', '.join(f'{r} {n}' for r, n in sorted(counts.items()))})"]
    return Verdict(False, reasons, ["text"])


def check_text(task: str | None, text: str, stats: Mapping[str, Any], key: str, subject: str | None = None) -> Verdict:
    """The one check a generated text of ``task`` must pass (the caption stage and `rsbuild verify`):
    a VQA paraphrase reply's (`reply_verdict`), else the caption check."""
    if task == PARAPHRASE_TASK:
        return reply_verdict(text, stats, key)
    return check_caption(text, stats, subject=subject, task=task)
