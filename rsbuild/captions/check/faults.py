"""Text-level faults: invented land-cover words, self-contradicting directions, degenerate text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from rsbuild.captions.check.clauses import Sentence
from rsbuild.captions.check.compare import THIN_ELONGATION, _Facts
from rsbuild.captions.check.spans import ATTRIBUTE_KINDS, DIR, FUSING_ADJECTIVE, Span, vector
from rsbuild.captions.check.text import normalise
from rsbuild.captions.check.vocabulary import Vocabulary, vocabulary_for
from rsbuild.chips.bands import vegetation_density

# a "-land" compound ("rushland", "rough-land") that the vocabulary does not know: an invented class
_INVENTED_LAND = re.compile(r"\b(?:[a-z]{3,}-?lands?)\b")
# a place glossed with another in brackets or after a hyphen: "east (left)", "west-right", "the center (top)", "the
# left edge (right)"; "south of the top (bottom)" glosses the south
_PLACE = rf"(?:{DIR}|(?:top|upper|bottom|lower)(?:[- ](?:left|right))?|left|right|center|middle)"
_PART = r"(?:[- ](?:side|corner|edge|half|part))?"
_DIRECTION_GLOSS = re.compile(
    rf"\b(?:(?P<outer>{DIR})(?:ern)?(?: part)? of the )?(?P<compass>{_PLACE})(?:ern)?{_PART}"
    rf"(?:\s*\(\s*(?P<gloss>{_PLACE}){_PART}\s*\)|-(?P<side>(?:top|upper|bottom|lower)(?:[- ](?:left|right))?|left|right)"
    rf"{_PART}\b)")
# the start of a sentence or list line, past a discourse opener ("In this image, ", "Overall, ", "- ", '"')
_OPENER = (r"(?:[\"'(*\u2022-]\s*|(?:in (?:this|the) (?:image|tile|scene|picture|view)|overall|here|we (?:can )?see(?: that)?|"
           r"the (?:image|tile|scene) shows(?: that)?|caption:|answer:|description:)[, ]\s*)")
_START = rf"(?:^|(?<=[.!?\n])\s*|(?<=[.!?]) )(?:{_OPENER})*"
# the subject of a share at the start of a sentence or list line: "X covers about 24%", "X: 19%"
_SHARE_SUBJECT = re.compile(
    rf"{_START}(?P<noun>[a-z][a-z'-]+(?: [a-z'-]+)?)(?:\s*:\s*~?|\s+(?:covers?|takes? up|"
    r"occupies|occupy|fills?|makes? up|accounts? for|spans?|ha[sv]e?|holds?|comprises?)\s+(?:about |roughly |around |nearly |almost |"
    r"approximately |some |only |just )?)\d+(?:\.\d+)?\s*(?:%|percent|per cent)")
# ... or of any stated share: "Crows provide a large area of built-up land", "Sovereignty fills most of the image"
_CLAIM_SUBJECT = re.compile(
    rf"{_START}(?P<noun>[a-z][a-z'-]+(?: [a-z'-]+)?)\s+(?:covers?|takes? up|occupies|occupy|"
    r"fills?|makes? up|accounts? for|spans?|provides?|forms?|dominates?|constitutes?|comprises?)\s+")
_NOT_A_CLASS = re.compile(
    r"(?:(?:the |these |those |its |their |both |all |two |three |other )?(?:patch(?:es)?|parts?|areas?|pieces?|strips?|"
    r"bands?|features?|regions?|zones?|sections?|portions?|ones|classes|together|combined|alone))|"
    r"(?:it|its|this|that|which|what|each|one|they|these|those|everything|nothing|total|the total|share|coverage|"
    r"area|the area|land|the land|the rest|rest|remainder|the remainder|the image|image|the tile|tile|the scene|"
    r"scene|the picture|the class|this class|class|cover|land cover|it also|and|but|while|with|about|roughly|"
    r"around|nearly|almost|approximately|some|only|just|facts?|share|the share|percentage|the percentage|"
    r"caption|answer|description|summary|note|output|response)")  # "Caption: 3% of the image is town"
# a subject with a pronoun or function word in it ("together they", "both of") is no invented class
_FUNCTION_WORD = re.compile(r"\b(?:they|them|it|its|both|all|each|together|combined|which|who|"
                            r"and|or|but|of|in|on|at|so|then|also|still|here|there|overall)\b")
REPEATED_SENTENCE_LIMIT = 3  # the same sentence this many times is degenerate text
REPEATED_SENTENCE_WORDS = 4  # ... and a sentence of this many words, with no checkable claim, twice
REPEATED_NGRAM_SHARE = 0.5  # ... as is text where this share of its word 4-grams repeat earlier ones
MIN_WORDS_FOR_NGRAMS = 24
COPIED_RUN_MIN_WORDS = 8  # a copy repeats at least this many words of a worked example in a row ...
COPIED_EXAMPLE_SHARE = 0.55  # ... that are this share of the example's words ...
COPIED_SENTENCE_SHARE = 0.8  # ... or this share of the caption sentence they are in


def invented_classes(text: str, spans: Sequence[Span]) -> list[str]:
    """Reasons for land-cover nouns that name no class: "-land" words ("rushland covers a fifth"),
    and the subject of a share that is no class word ("Sovereignty takes up about 24%", "Sphinx: 19%",
    "Crows provide a large area of built-up land")."""
    covered = bytearray(len(text))
    for sp in spans:
        covered[sp.start:sp.end] = b"\x01" * (sp.end - sp.start)
    reasons = []
    for match in _INVENTED_LAND.finditer(text):
        if not any(covered[match.start():match.end()]):
            reasons.append(f"names '{match.group(0)}', which is no land-cover class")
    share_starts = {sp.start for sp in spans if sp.kind == "share"}
    subjects = [*_SHARE_SUBJECT.finditer(text), *(m for m in _CLAIM_SUBJECT.finditer(text) if m.end() in share_starts)]
    for match in subjects:
        noun = match.group("noun")
        reason = f"names '{noun}', which is no land-cover class"
        if (not any(covered[match.start("noun"):match.end("noun")]) and not _NOT_A_CLASS.fullmatch(noun)
                and not _FUNCTION_WORD.search(noun) and reason not in reasons):
            reasons.append(reason)
    return reasons


def contradictory_directions(text: str) -> list[str]:
    """Reasons for a place glossed with another side ("east (left)", "the center (top)", "the left edge (right)")."""
    reasons = []
    for match in _DIRECTION_GLOSS.finditer(text):
        place, gloss = match.group("outer") or match.group("compass"), match.group("gloss") or match.group("side")
        if match.group("side") and not re.fullmatch(DIR, place):
            continue  # "top-left", "left-right": no gloss
        (cx, cy), (sx, sy) = vector(place), vector(gloss)
        centred = (place in ("center", "middle")) != (gloss in ("center", "middle"))
        if (centred or cx * sx < 0 or cy * sy < 0 or (cx and not cy and sy and not sx)
                or (cy and not cx and sx and not sy)):
            reasons.append(f"contradicts itself: '{match.group(0)}' (north is the top, east the right)")
    return reasons


# an axis named by two diagonal directions that are not opposite ends ("runs north-west-south-west")
_DIAGONAL_PAIR = re.compile(
    r"\b(?:runs?|running|flows?|flowing|stretch(?:es|ing)?|extends?|extending|heads?|heading|oriented|aligned)\s+"
    r"(?:in\s+|from\s+)?(?:the\s+|a\s+)?(?P<a>(?:north|south)-(?:east|west))\s*(?:-|/|to|-to-)\s*(?P<b>(?:north|south)-"
    r"(?:east|west))\b")


def impossible_directions(text: str) -> list[str]:
    """Reasons for an axis whose two ends are not opposite ("flows south-west-south-east")."""
    reasons = []
    for match in _DIAGONAL_PAIR.finditer(text):
        (ax, ay), (bx, by) = vector(match.group("a")), vector(match.group("b"))
        if (ax, ay) != (-bx, -by):
            reasons.append(f"names no direction: '{match.group(0)}' (an axis runs between opposite sides)")
    return reasons


def degenerate(text: str, sentences: Sequence[Sentence] = ()) -> list[str]:
    """A reason when the text repeats itself: one sentence again and again (or, when it states no
    checkable claim, twice), or mostly repeated phrases."""
    counts: dict[str, int] = {}
    for body in filter(None, (re.sub(r"\W+", " ", s).strip() for s in re.split(r"[.!?;\n]+", text))):
        counts[body] = counts.get(body, 0) + 1
    if counts and max(counts.values()) >= REPEATED_SENTENCE_LIMIT:
        return ["repetitive text (a sentence repeats)"]
    for sentence in sentences:
        body = re.sub(r"\W+", " ", text[sentence.start:sentence.end]).strip()
        claims = any(a.kind in ATTRIBUTE_KINDS for c in sentence.clauses for a in c.attributes)
        if counts.get(body, 0) >= 2 and len(body.split()) >= REPEATED_SENTENCE_WORDS and not claims:
            return ["repetitive text (a sentence without a fact, twice)"]
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


@lru_cache(maxsize=1)
def worked_examples() -> tuple[str, ...]:
    """The [assistant] turns of the shipped prompt templates: the answers the prompts show as examples."""
    from rsbuild.captions.prompts import TURN_LINE, default_prompts_dir

    examples = []
    for entry in sorted(default_prompts_dir().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".j2"):
            continue
        role, body = "", list[str]()
        for line in [*entry.read_text(encoding="utf-8").splitlines(), "[user]"]:
            marker = TURN_LINE.match(line.strip())
            if marker:
                if role == "assistant" and "".join(body).strip():
                    examples.append(" ".join(" ".join(body).split()))
                role, body = marker.group(1), []
            else:
                body.append(line)
    return tuple(examples)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9%]+", normalise(text))


@lru_cache(maxsize=64)
def _example_words(example: str) -> tuple[list[str], frozenset[tuple[str, ...]]]:
    words = _words(example)
    return words, frozenset(zip(words, words[1:], words[2:]))


def _longest_run(a: Sequence[str], b: Sequence[str]) -> tuple[int, int]:
    """Length of the longest run of words that ``a`` and ``b`` share, and where it ends in ``b``."""
    best = end = 0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, 1):
            if word == other:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best, end = current[j], j
        previous = current
    return best, end


def copied_example(text: str, examples: Iterable[str], vocab: Vocabulary | None = None) -> list[str]:
    """A reason when the caption repeats a prompt's worked example: a run of words that is most of
    the example, or most of one of the caption's sentences (a copied example sentence), and that
    carries a class word of the example (its frame alone, "crosses the image from north to south
    along its", with the caption's own class and place, is no copy)."""
    sentences = [_words(s) for s in re.split(r"[.!?;\n]+", text)]
    grams = {g for sentence in sentences for g in zip(sentence, sentence[1:], sentence[2:])}
    vocab = vocab or vocabulary_for("", ())
    for example in examples:
        words, example_grams = _example_words(example)
        if len(grams & example_grams) < COPIED_RUN_MIN_WORDS - 2:  # no run of that length is possible
            continue
        for sentence in sentences:
            run, end = _longest_run(sentence, words)
            if run >= COPIED_RUN_MIN_WORDS and (run >= COPIED_EXAMPLE_SHARE * len(words)
                                               or run >= COPIED_SENTENCE_SHARE * len(sentence)) and any(
                    owner is not None for _, _, owner in vocab.find(" ".join(words[end - run:end]))):
                return [f"copies the prompt's worked example ('{' '.join(example.split()[:8])} ...')"]
    return []


# words of text about the world rather than about the image: encyclopedic or story-like sentences.
# A sentence with a strong one and no word for the image is off topic whatever it claims ("flooded
# vegetation occurs in many parts of the world"); one with a weak one only when it claims nothing.
_WORLD_STRONG = re.compile(
    r"\b(?:world|global|globe|ecosystems?|habitats?|species|biodiversity|wildlife|animals?|dataset|climate|"
    r"history|historic(?:al)?|countr(?:y|ies)|people|humans?|market|architecture|century|tourists?|"
    r"mediterranean|arctic|tropic(?:s|al)?|means|(?:types?|kinds?|species) of plants?|(?:is|are) (?:a |the )?(?:term|"
    r"word|name)s?|(?:this|that|these|those) (?:types?|kinds?|sorts?) of|(?:almost|nearly) always)\b")
_WORLD_WEAK = re.compile(
    r"\b(?:plants?|roofs?|stor(?:y|ey)|mountains?|bridges?|essential|crucial|important|vital|testament|known|"
    r"often|commonly|typically|usually|naturally|occurs?|grows?|found in|types? of|kinds? of)\b")
_IMAGE_WORDS = re.compile(r"\b(?:image|tile|scene|picture|frame|view)\b|%")
OFF_TOPIC_WORD_SHARE = 0.5  # a caption whose words are mostly in sentences about the world, not the image
# a size in units a label map does not hold ("a 30-foot-long building", "4 units west", "2-meter-tall")
_MEASURE = re.compile(r"\b\d+(?:\.\d+)?[- ](?:meters?|metres?|feet|foot|units?|miles?|km|kilomet(?:er|re)s?|"
                      r"inch(?:es)?|yards?)\b")
# one object that a land-cover map at 10 m cannot show: "a tree stands in the center", "a building is built"
_OBJECT = re.compile(r"\b(?:a|an)\s+(?:(?:single|small|large|tall|big|lone|old|new|two-stor(?:e)?y|high-rise|long|thin|"
                     r"narrow|tiny|huge|giant|lonely|isolated|rectangular|square|round|circular|\d+(?:st|nd|rd|th)[- ]floor),?\s+){0,2}"
                     r"(?:tree|building|house|bridge|mountain|tower|roof|ditch|hut|barn|church|factory|crumb|apartment|"
                     r"skyscraper|car)\b(?![- ]?(?:cover|line|"
                     r"canopy|covered|land|top|s\b))")
# a capitalised word inside a sentence: a name ("Serbia", "Sibellus", "the Mediterranean")
_NAME = re.compile(rf"(?<=[a-z,;(] )(?P<word>[A-Z][a-z]{{2,}})\b|^(?i:{_OPENER})*(?P<owner>[A-Z][a-z]{{2,}})'s\b", re.M)
_NOT_A_NAME = re.compile(rf"(?:{DIR}|i|sentinel|earth|left|right|top|bottom|upper|lower|centre|center|middle)")


def off_topic(text: str, sentences: Sequence[Sentence]) -> list[str]:
    """A reason when most of the caption's words are in sentences that speak of the world instead of
    the image (encyclopedic or story text), gives sizes in metres, feet or "units", or describes one
    object (a tree, a building) that a land-cover map does not show."""
    total = off = 0
    for sentence in sentences:
        body = text[sentence.start:sentence.end]
        n = len(re.findall(r"[a-z]+", body))
        total += n
        claims = any(a.kind in ATTRIBUTE_KINDS for c in sentence.clauses for a in c.attributes)
        if not _IMAGE_WORDS.search(body) and (_WORLD_STRONG.search(body) or (not claims and _WORLD_WEAK.search(body))):
            off += n
    reasons = []
    if total and off / total >= OFF_TOPIC_WORD_SHARE:
        reasons.append("mostly not about the image (general or invented text, no fact of the tile)")
    return reasons + _found(text, ((_MEASURE, "gives a size in units a land-cover map does not hold ('{}')"),
                                   (_OBJECT, "describes one object ('{}'), which a land-cover map does not show")))


def _found(text: str, faults: Iterable[tuple[re.Pattern[str], str]]) -> list[str]:
    """One reason per pattern that occurs in ``text``, its first match put into the message."""
    return [message.format(match.group(0)) for pattern, message in faults if (match := pattern.search(text))]


def invented_names(original: str, spans: Sequence[Span]) -> list[str]:
    """Reasons for proper names ("Serbia's built-up areas", "Sibellus grows", "the Mediterranean"):
    a land-cover caption of a tile names no places, people or species."""
    class_words = {w for sp in spans if sp.kind in ("class", "sink") for w in re.findall(r"[a-z]+", sp.text)}
    for match in _NAME.finditer(original):
        word = (match.group("word") or match.group("owner")).lower()
        if word not in class_words and not _NOT_A_NAME.fullmatch(word):
            return [f"names '{match.group('word') or match.group('owner')}', which is no land cover of the tile"]
    return []


# one class said to be another, or made of another: "trees are built-up", "the built-up area is
# filled with trees", "tree cover is also part of the built-up area", "a forest covered in sparse vegetation"
_CLASS_IS_CLASS = re.compile(r"\s*(?:,\s*which\s+)?(?:is|are)\s+(?:also\s+|all\s+|mostly\s+)?(?:(?:covered|filled|"
                             r"overgrown)\s+(?:by|with|in)\s+|(?:a\s+)?part\s+of\s+|made\s+(?:up\s+)?of\s+|"
                             r"composed\s+of\s+)?(?:the\s+|a\s+)?$")


# one class's share stated as a share of another class: "water accounts for 3% of cropland"
_SHARE_OF_CLASS = re.compile(r"\s+(?:is|are|accounts?\s+for|covers?|makes?\s+up|occupies|occupy|takes?\s+up|"
                             r"fills?|contains?)\s+(?:about\s+|roughly\s+|around\s+|only\s+|just\s+|nearly\s+|"
                             r"almost\s+|approximately\s+)?\d+(?:\.\d+)?\s*(?:%|percent|per cent)\s+of\s+"
                             r"(?:the\s+|its\s+|all\s+)?$")


# one class said to contain another: "grassland covers about 89% of the image, including the water"
_INCLUDES = re.compile(r"[^.;:\n]*?\b(?:including|includes?|which includes?|incorporating|encompassing)\s+"
                       r"(?:the\s+|some\s+|its\s+)?$")


def class_is_class(text: str, spans: Sequence[Span]) -> list[str]:
    """Reasons for a class that the caption says is, is made of or includes another class, or whose
    share it states as a share of another class."""
    mentions = sorted((sp for sp in spans if sp.kind == "class" and not sp.negated and sp.value), key=lambda sp: sp.start)
    for a, b in zip(mentions, mentions[1:]):
        if a.value == b.value or b.start - a.end > 60:
            continue
        if b.start - a.end <= 40 and _CLASS_IS_CLASS.match(text, a.end, b.start):
            return [f"says {a.value} is {b.value} ('{text[a.start:b.end]}'): two different classes"]
        if _INCLUDES.match(text, a.end, b.start):
            return [f"says {a.value} includes {b.value} ('{text[a.start:b.end]}'): two different classes"]
        if _SHARE_OF_CLASS.match(text, a.end, b.start):
            return [f"states a share of {a.value} as a share of {b.value} ('{text[a.start:b.end]}')"]
    return []


# --- nonsense that reads like a claim ----------------------------------------------------------------
# a word that qualifies "vegetation" without naming a class ("dense vegetation", "natural vegetation")
_VEGETATION_QUALIFIER = re.compile(
    r"(?:dense|denser|densest|sparse|sparser|thick|thin|lush|green|greener|natural|native|low|tall|mixed|healthy|"
    r"vigorous|stressed|dry|patchy|scattered|woody|riparian|aquatic|emergent|remaining|other|surrounding|existing|"
    r"some|any|no|little|much|more|less|most|all|the|of|and|or|with|by|in|its|their|this|that|a|an|open|rich|poor)")
_HEAD = r"(?:vegetation|plants?|greenery)"
# "Influshed vegetation covers about 35%", "Glass-frost vegetation covers ...": an unknown word makes a class
_QUALIFIED_SUBJECT = re.compile(
    rf"{_START}(?P<mod>[a-z][a-z'-]+) {_HEAD}\s+(?:covers?|takes? up|occupies|occupy|fills?|"
    r"makes? up|accounts? for|spans?|is|are)\b")
# "filled with built-up vegetation", "a snowy and ice-covered crop": a non-vegetated class's adjective on another class
_SPECIES = re.compile(r"\((?P<genus>[A-Z][a-z]{3,}) (?P<epithet>[a-z]{3,}(?:ensis|ii|ae|us|um|is|ata|ica|ina|oides|iana))\)")
_BOTH_EXTREMES = re.compile(r"\b(?:largest|biggest)\s+and\s+(?:the\s+)?smallest\b|\bsmallest\s+and\s+(?:the\s+)?"
                            r"(?:largest|biggest)\b")
# what "west of the ..." may point at besides a class: parts and shapes of the image
_REFERENCE_NOUN = re.compile(
    r"(?:strips?|bands?|lines?|patch(?:es)?|areas?|regions?|zones?|parts?|portions?|sections?|boundary|border|edges?|"
    r"features?|divide|belts?|blocks?|clusters?|rest|remainder|others?|ones?|first|second|main|large|larger|small|"
    r"smaller|big|narrow|long|wide|central|dividing|green|dark|light|white|blue|brown|this|that|these|those|it|them|"
    r"its|their|point|axis|diagonal|half|corner|side|each|both|two|2|\d+%?)")
_AFTER_RELATIVE = re.compile(r"\s*(?:the\s+|a\s+|an\s+|some\s+)?(?P<word>[a-z0-9%'-]+)")
_REST_IS = re.compile(r"\b(?:the\s+)?(?:remaining\s+(?:area|part|portion|land|surface|space)|rest(?:\s+of\s+the\s+"
                      r"(?:image|tile|area|scene))?|remainder)\s+(?:is|are)\s+(?:comprised\s+of\s+|made\s+up\s+of\s+|"
                      r"covered\s+(?:by|with|in)\s+|occupied\s+by\s+|taken\s+up\s+by\s+|mostly\s+|mainly\s+|largely\s+)?"
                      r"(?:the\s+|by\s+)?(?:(?!(?:not|no|mix|mixture|variety|combination|split|shared|divided|such|like|including|various|several|"
                      r"other|others|different|smaller|minor)\b)"
                      r"[a-z]+\s+){0,4}$")  # "the rest is land that is built-up", "the rest is mostly open X"
REST_MIN_SHARE = 0.2  # "the rest is X" is read when the shares the caption states leave this much
REST_HELD_SHARE = 0.5  # ... and X must hold this share of the rest
SHAPE_WORDS = re.compile(r"\b(?:circular|round|rounded|oval|square|squarish|roughly circular|compact|blob[- ]?like)\b")


def _uncovered(spans: Sequence[Span], start: int, end: int) -> bool:
    """Whether no class or sink word overlaps text[start:end]."""
    return not any(sp.start < end and start < sp.end for sp in spans if sp.kind in ("class", "sink"))


# counts attached to nonsense: a part made of parts of the other size ("a small patch of 2 large"), a number glued to a size ("a
# 4th-large patch"), parts marked on a map the caption does not have ("the three highlighted areas"), zero parts
# spoken of as things ("the 0 small patches are all the same")
_PART_UNIT = r"(?:patch(?:es)?|areas?|parts?|pieces?|blocks?|clusters?|strips?|regions?|zones?|sections?|spots?|ones)"
_NONSENSE_COUNTS = (
    (re.compile(rf"\b(?:a|an|one|the|each)\s+(?:small|tiny|little)\s+{_PART_UNIT}\s+of\s+\d+\s+(?:large|big)\b"
                rf"|\b(?:a|an|one|the|each)\s+(?:large|big)\s+{_PART_UNIT}\s+of\s+\d+\s+(?:small|tiny)\b"),
     "makes one part of parts of the other size ('{}')"),
    (re.compile(r"\b\d+(?:(?:st|nd|rd|th)[- ]|-)(?:large|small|big|tiny)\b"), "glues a number to a size ('{}')"),
    (re.compile(rf"\b(?:highlighted|marked|outlined|labell?ed|circled|numbered|annotated|colou?r[- ]coded|shaded|"
                rf"boxed|selected|indicated)\s+{_PART_UNIT}\b"), "speaks of marks the image does not have ('{}')"),
    (re.compile(rf"\bthe\s+0\s+(?:[a-z]+\s+)?{_PART_UNIT}\b"), "speaks of zero parts as things ('{}')"),
)
_PART_OF_IT = re.compile(r"\s+of\s+(?:it|them|which|this|that)\s+(?:being|is|are|was|were)\s+(?:the\s+)?")


def nonsense_phrases(text: str, original: str, spans: Sequence[Span]) -> list[str]:
    """Reasons for phrases that state no fact of any tile: an unknown word made into a kind of vegetation,
    a non-vegetated class's adjective on another class, a species name, "the largest and smallest", a place relative to a thing that is no class ("west of the
    marina"), a class's share stated as a share of itself ("trees cover 8 out of 10 trees"), a class stated as a
    part of another ("with 43% of it being moss and lichen") and counts attached to nonsense (``_NONSENSE_COUNTS``)."""
    reasons: list[str] = []
    classes = sorted((sp for sp in spans if sp.kind == "class" and sp.value), key=lambda sp: sp.start)
    for match in _QUALIFIED_SUBJECT.finditer(text):
        mod = match.group("mod")
        if _uncovered(spans, match.start("mod"), match.end("mod")) and not _VEGETATION_QUALIFIER.fullmatch(mod):
            reasons.append(f"names '{mod} {text[match.end('mod') + 1:match.end()].split()[0]}', which is no land-cover class")
    for a, b in zip(classes, classes[1:]):
        gap = text[a.end:b.start]
        if a.value != b.value and FUSING_ADJECTIVE.fullmatch(a.text) and re.fullmatch(r"\s+", gap):
            reasons.append(f"makes one class of two ('{text[a.start:b.end]}': {a.value} and {b.value})")
    for sp in spans:
        if sp.kind == "sink" and sp.text == "vegetation":
            before = next((c for c in reversed(classes) if c.end <= sp.start), None)
            if before and re.fullmatch(r"\s+", text[before.end:sp.start]) and FUSING_ADJECTIVE.fullmatch(before.text):
                reasons.append(f"names '{text[before.start:sp.end]}', which is no land-cover class")
    reasons += _found(original, ((_SPECIES, "names a species ('{}'), which a land-cover map does not show"),))
    reasons += _found(text, ((_BOTH_EXTREMES, "contradicts itself: '{}'"), *_NONSENSE_COUNTS))
    for sp in spans:
        if sp.kind != "relative" or sp.text.split()[0] in ("above", "below", "beneath"):
            continue
        after = _AFTER_RELATIVE.match(text, sp.end)
        if after and _uncovered(spans, after.start("word"), after.end("word")) and not _REFERENCE_NOUN.fullmatch(
                after.group("word")):
            reasons.append(f"places a class relative to '{after.group('word')}', which is no class of the tile")
    shares = [sp for sp in spans if sp.kind == "share"]
    for share in shares:
        nxt = next((c for c in classes if c.start >= share.end), None)
        owner = next((c for c in reversed(classes) if c.end <= share.start), None)
        if (nxt and owner and nxt.value == owner.value
                and re.fullmatch(r" +(?:of +)?(?:the +|all +)?", text[share.end:nxt.start])
                and not re.search(r"[.!?;\n]", text[owner.end:share.start])):
            reasons.append(f"states a share of {owner.value} as a share of itself ('{text[owner.start:nxt.end]}')")
        part = _PART_OF_IT.match(text, share.end)
        if part and nxt and nxt.start == part.end():  # "cropland covers 48%, with 43% of it being moss and lichen"
            reasons.append(f"states {nxt.value} as a part of another class ('{text[share.start:nxt.end]}')")
    return reasons


def remainder_claims(text: str, spans: Sequence[Span], facts: _Facts) -> list[str]:
    """"The remaining area is X": X must hold a good part of what the caption's stated shares leave."""
    shares = [sp for sp in spans if sp.kind == "share"]
    stated = sum(0.5 * (float(sp.value[0]) + float(sp.value[1])) for sp in shares) / 100.0
    rest = 1.0 - stated
    if not shares or rest < REST_MIN_SHARE:
        return []
    reasons = []
    for sp in spans:
        if (sp.kind == "class" and not sp.negated and sp.value in facts.classes
                and _REST_IS.search(text, max(0, sp.start - 60), sp.start)):
            after = text[sp.end:sp.end + 30]
            if re.match(r"\s*(?:,|and|or|&)\s", after) or re.search(r"\b(?:mix|mixture|variety|combination)\b",
                                                                  text[max(0, sp.start - 60):sp.start]):
                continue  # the rest is several classes
            if facts.share(str(sp.value)) < REST_HELD_SHARE * rest:
                reasons.append(f"says the rest of the tile (about {100 * rest:.0f}%) is {sp.value}, but it covers "
                               f"{100 * facts.share(str(sp.value)):.0f}%")
    return reasons


def shape_claims(text: str, spans: Sequence[Span], facts: _Facts) -> list[str]:
    """"A circular feature", "a round patch" for a class whose parts are all long, thin strips."""
    classes = [sp for sp in spans if sp.kind == "class" and sp.value in facts.classes]
    reasons = []
    for match in SHAPE_WORDS.finditer(text):
        sentence_start = max(text.rfind(".", 0, match.start()), text.rfind("\n", 0, match.start())) + 1
        owner = next((c for c in reversed(classes) if sentence_start <= c.start < match.start()), None)
        if owner is None:
            continue
        comps = facts.components.get(str(owner.value), [])
        if comps and all(float(c.get("elongation", 0.0)) >= THIN_ELONGATION for c in comps):
            reasons.append(f"says {owner.value} is '{match.group(0)}', but it is a long, narrow strip")
    return reasons


# --- vegetation density and health, against NDVI ------------------------------------------------------
_DENSE_WORDS = (r"dense(?:ly vegetated)?|thick|lush|luxuriant|verdant|healthy|vigorous|thriving|flourishing|"
                r"rich green|vibrant green|deep green")
_SPARSE_WORDS = (r"sparse(?:ly vegetated)?|thin|patchy|scant|scanty|stressed|unhealthy|withered|wilted|dried[- ]out|"
                 r"parched|dying|struggling")
_DENSITY_WORD = rf"(?P<word>{_DENSE_WORDS}|{_SPARSE_WORDS})"
# "lush grassland", "dense, healthy forest", "sparse shrubs": the words just before a class or vegetation word
_DENSITY_BEFORE = re.compile(rf"\b{_DENSITY_WORD}(?:\s*,\s*|\s+and\s+|\s+)(?:(?:{_DENSE_WORDS}|{_SPARSE_WORDS}|green|"
                             r"and|very|quite|rather|fairly|mostly|largely|tall|low|mature|young)(?:\s*,\s*|\s+))*$")
# "the forest is dense", "the crops look healthy", "shrubs appear sparse": the word after a class and a verb
_DENSITY_AFTER = re.compile(rf"^\s+(?:is|are|looks?|appears?|seems?|remains?|grows?)\s+(?:to be\s+)?(?:very\s+|quite\s+|"
                            rf"rather\s+|fairly\s+|mostly\s+|largely\s+|relatively\s+)?{_DENSITY_WORD}\b")
# classes whose density words speak of something else ("dense built-up area", "thick ice", "sparse settlement")
_NOT_VEGETATED = re.compile(r"built|water|snow|ice|bare|cloud")
_NEGATED_DENSITY = re.compile(r"\b(?:no|not|without|nor|neither|never|hardly|barely)\s+(?:\w+\s+)?$")


def vegetation_claims(text: str, spans: Sequence[Span], stats: Mapping[str, Any]) -> list[str]:
    """Reasons for words of vegetation density or health that NDVI contradicts.

    With indices in the stats (``output.bands = "all"``) a word such as "dense", "lush" or "healthy" before
    or after a vegetated class ("lush grassland", "the forest is dense") claims the class's mean NDVI is dense
    green vegetation, and "sparse", "patchy" or "stressed" that it is not; `vegetation_density` reads the NDVI. A
    claim fails only when NDVI says the opposite (dense against sparse): between the two ("moderate") neither
    word is contradicted. Before a plain vegetation word ("dense vegetation") "dense" fails only when no class
    of the tile is more than sparse; "dense built-up area" or "thick ice" are no vegetation claims. Without indices (or for a class with no clear pixel) such words are no
    claim the check can verify: they are ignored, neither passing nor failing a caption."""
    if not stats.get("indices"):
        return []
    ndvi = {str(c.get("name")): (c.get("indices") or {}).get("ndvi") for c in stats.get("classes", [])
            if not _NOT_VEGETATED.search(str(c.get("name")))}
    densities = {name: vegetation_density(value) for name, value in ndvi.items()}
    reasons = []
    for sp in spans:
        if sp.negated or sp.kind not in ("class", "sink"):
            continue
        before = _DENSITY_BEFORE.search(text, max(0, sp.start - 60), sp.start)
        after = _DENSITY_AFTER.match(text[sp.end:sp.end + 60]) if sp.kind == "class" else None
        for match in (before, after):
            if match is None or _NEGATED_DENSITY.search(text, max(0, sp.start - 80), match.start("word")
                                                        if match is before else sp.start):
                continue
            word = match.group("word")
            claims_dense = re.fullmatch(_DENSE_WORDS, word) is not None
            if sp.kind == "class":
                density = densities.get(str(sp.value))
                if density is None:
                    continue
                if density == ("sparse" if claims_dense else "dense"):
                    reasons.append(f"calls {sp.value} '{word}', but its NDVI ({ndvi[str(sp.value)]:.2f}) says "
                                   f"{density} vegetation")
            elif re.fullmatch(r"vegetation|vegetated(?: areas?| land)?|greenery|plants?|green (?:areas?|spaces?|cover|"
                              r"patches)", sp.text) and claims_dense:
                known = [d for d in densities.values() if d is not None]
                if known and all(d == "sparse" for d in known):
                    reasons.append(f"speaks of '{word}' vegetation, but no class of the tile has more than sparse "
                                   f"vegetation by NDVI")
    return reasons
