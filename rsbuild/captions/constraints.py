"""Grammar-constrained decoding: a per-request GBNF grammar that binds each class to its own facts.

A 135M model writes fluent sentences but pairs classes with the wrong numbers. The grammar lets it
choose which classes to describe, in which order, with which verb, hedge and position phrase, while
every sentence it can write states a class with that class's measured share and position, each
class at most once:
``Tree cover takes up about 30% of the image, mostly in the north-west.`` The faithfulness check
still reads every text. Tasks other than ``area`` and ``class`` get no grammar (None).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from itertools import permutations
from typing import Any

from rsbuild.captions.check import DEFAULT_MIN_SHARE

MAX_AREA_CLASSES = 3
VERBS = ("covers", "takes up", "makes up")
HEDGES = ("about ", "roughly ", "")
PLACES = ("mostly in the ", "mainly in the ", "in the ")
SPREAD_EXTENT = 0.8  # a class whose box spans this much of both axes is "spread across the image", not "in the center"
WORDS = {"top-left": "north-west", "top": "north", "top-right": "north-east", "left": "west", "center": "center",
         "right": "east", "bottom-left": "south-west", "bottom": "south", "bottom-right": "south-east"}


def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal uses JSON escapes


def _choice(options: tuple[str, ...]) -> str:
    return "(" + " | ".join(_literal(o) for o in options) + ")"


def _place(cls: Mapping[str, Any]) -> str:
    """The place phrase a class may take: its 3x3 cell, or "spread across the image" when its pixels
    reach over most of the tile around a central centroid (saying "in the center" would mislead)."""
    position = str(cls.get("position"))
    x0, y0, x1, y1 = (float(v) for v in cls.get("bbox") or (0.0, 0.0, 0.0, 0.0))
    if position == "center" and min(x1 - x0, y1 - y0) >= SPREAD_EXTENT:
        return _choice(("spread across the image",))
    return f"place {_literal(WORDS.get(position, position))}"


def _sentence(rule: str, cls: Mapping[str, Any]) -> str:
    name = str(cls["name"])
    share = max(1, round(float(cls["share"]) * 100))
    verbs = _agree(tuple(v for v in VERBS if not (name.endswith("cover") and v == "covers")), name)  # not "Tree cover covers"
    return (f"{rule} ::= {_literal(name[:1].upper() + name[1:] + ' ')} {_choice(verbs)} \" \" hedge "
            f"{_literal(f'{share}% of the image')} (\", \" {_place(cls)})? \".\"")


# the varied grammar: more verbs, hedges and places, and a second sentence form ("About 30% of the image
# is tree cover, mostly in the north-west."); every sentence still binds a class to its share and place
VARIED_VERBS = ("covers", "takes up", "makes up", "occupies", "accounts for", "spans")
VARIED_HEDGES = ("about ", "roughly ", "around ", "")
VARIED_PLACES = ("mostly in the ", "mainly in the ", "in the ", "largely in the ", "towards the ")


def _agree(verbs: tuple[str, ...], name: str) -> tuple[str, ...]:
    """The verbs in the form a plural class name takes ("Crops cover", "Trees take up")."""
    if not (name.endswith("s") and not name.endswith("ss")):
        return verbs
    plural = {"covers": "cover", "takes up": "take up", "makes up": "make up", "occupies": "occupy",
              "accounts for": "account for", "spans": "span"}
    return tuple(plural.get(v, v) for v in verbs)


def _varied_sentence(rule: str, cls: Mapping[str, Any]) -> str:
    name = str(cls["name"])
    share = max(1, round(float(cls["share"]) * 100))
    verbs = _agree(tuple(v for v in VARIED_VERBS if not (name.endswith("cover") and v == "covers")), name)
    place = f'(", " {_place(cls)})?'
    first = f"{_literal(name[:1].upper() + name[1:] + ' ')} {_choice(verbs)} \" \" hedge {_literal(f'{share}%')} " \
            f"(\" of the image\")? {place} \".\""
    second = f"hedgecap {_literal(f'{share}% of the image is {name}')} {place} \".\""
    return f"{rule} ::= ({first}) | ({second})"


def grammar_suffix(constrained: bool, varied: bool) -> str:
    """What an engine adds to its annotator name when it decodes under the grammar."""
    return ("+varied-grammar" if varied else "+grammar") if constrained else ""


def caption_grammar(task: str, stats: Mapping[str, Any], subject: str | None = None, varied: bool = False) -> str | None:
    """GBNF text for one request, or None when the task is not constrained. ``varied`` lets the model
    choose among more verbs, hedges, places and two sentence forms (the facts stay bound)."""
    classes = [c for c in stats.get("classes", []) if float(c.get("share", 0.0)) >= DEFAULT_MIN_SHARE]
    if task == "class":
        classes = [c for c in classes if c.get("name") == subject]
    elif task == "area":
        classes = classes[:MAX_AREA_CLASSES]
    else:
        return None
    if not classes:
        return None
    rules = [(_varied_sentence if varied else _sentence)(f"s{i}", c) for i, c in enumerate(classes)]
    orders = [order for size in range(1, len(classes) + 1) for order in permutations(range(len(classes)), size)]
    root = "root ::= " + " | ".join("(" + ' " " '.join(f"s{i}" for i in order) + ")" for order in orders)
    if not varied:
        return "\n".join([root, f"hedge ::= {_choice(HEDGES)}", f"place ::= {_choice(PLACES)}", *rules]) + "\n"
    hedges = _choice(VARIED_HEDGES)
    capitalised = _choice(tuple(h[:1].upper() + h[1:] for h in VARIED_HEDGES))
    return "\n".join([root, f"hedge ::= {hedges}", f"hedgecap ::= {capitalised}", f"place ::= {_choice(VARIED_PLACES)}",
                      *rules]) + "\n"
