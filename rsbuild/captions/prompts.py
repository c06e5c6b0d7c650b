"""Prompt templates as files: load, validate before any request, render chat messages.

A prompt folder holds ``system.j2`` and one template per task (``area.j2``, ``linear.j2``,
``class.j2``, ``revise.j2``). Templates see these variables (anything else is an error):

- ``stats``: the sample's statistics (ARCHITECTURE.md schema)
- ``subject``: the class name (``class`` task) or the caption to rewrite (``revise`` task), else none
- ``subject_class``: the ``stats.classes`` entry named by ``subject``, else none
- ``elongated``: the ``stats.components`` entries with ``elongated`` true
- ``indices``: the tile's mean spectral indices ``{ndvi, ndwi, nbr, pixels}`` (``output.bands =
  "all"``; each ``stats.classes`` entry then has its own ``indices``), else none

and three filters: ``share | percent`` (0.4567 -> ``"46%"``), ``position | compass``
(``"top-left"`` -> ``"north-west (top-left)"``; north is the top of the image, east the right) and
``position | compass_word`` (``"top-left"`` -> ``"north-west"``: the words a caption should use).

A task template may hold chat turns: a line ``[user]`` or ``[assistant]`` starts a turn, and
the text before the first such line is appended to the system prompt (the task's instructions).
Worked examples as earlier turns keep small models from copying them. A template without such
lines is one user message. The last turn must be a user turn. Fixed instructions and examples
come first and the tile's facts last, so prompts of one task share a long prefix.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

from rsbuild.captions.base import OPTIONAL_TASKS, TASKS
from rsbuild.errors import ConfigError

SYSTEM_TEMPLATE = "system.j2"
TURN_LINE = re.compile(r"^\[(user|assistant)\]$")

COMPASS = {
    "top-left": "north-west (top-left)",
    "top": "north (top)",
    "top-right": "north-east (top-right)",
    "left": "west (left)",
    "center": "center",
    "right": "east (right)",
    "bottom-left": "south-west (bottom-left)",
    "bottom": "south (bottom)",
    "bottom-right": "south-east (bottom-right)",
}

EXAMPLE_STATS: dict[str, Any] = {
    "version": 1,
    "scheme": "esa_worldcover",
    "size": [224, 224],
    "pixels": 50176,
    "valid_pixels": 49000,
    "valid_share": 0.9766,
    "cloud_share": 0.0,
    "unknown_code_pixels": 0,
    "dominant_class": "tree cover",
    "num_classes": 2,
    "classes": [
        {"name": "tree cover", "code": 10, "index": 0, "pixels": 45000, "share": 0.9184,
         "centroid": [0.55, 0.5], "position": "center", "bbox": [0.0, 0.0, 1.0, 1.0],
         "components": 1, "small_patches": 1, "small_patch_pixels": 12},
        {"name": "water", "code": 80, "index": 7, "pixels": 4000, "share": 0.0816,
         "centroid": [0.07, 0.5], "position": "left", "bbox": [0.0446, 0.0, 0.0982, 1.0],
         "components": 1, "small_patches": 0, "small_patch_pixels": 0},
    ],
    "components": [
        {"class": "tree cover", "pixels": 44988, "share": 0.8966, "bbox_px": [0, 0, 224, 224],
         "bbox": [0.0, 0.0, 1.0, 1.0], "centroid": [0.55, 0.5], "position": "center",
         "elongation": 1.2, "elongated": False, "orientation": "north-south", "orientation_deg": 0.0,
         "touches_frame": True},
        {"class": "water", "pixels": 4000, "share": 0.0816, "bbox_px": [10, 0, 22, 224],
         "bbox": [0.0446, 0.0, 0.0982, 1.0], "centroid": [0.07, 0.5], "position": "left",
         "elongation": 18.7, "elongated": True, "orientation": "north-south", "orientation_deg": 0.0,
         "touches_frame": True},
    ],
}
"""A representative ``stats`` object: every template is test-rendered with it at load."""

EXAMPLE_CAPTION = "Tree cover fills almost the whole image, and a narrow river runs from north to south along the west side."


def percent(share: float) -> str:
    """A share in 0-1 as a rounded percentage for prompts (``"46%"``, ``"under 1%"``)."""
    value = round(float(share) * 100)
    return "under 1%" if value < 1 and share > 0 else f"{value}%"


def compass_word(position: str) -> str:
    """A 3x3 image position as the compass words alone (``"top-left"`` -> ``"north-west"``)."""
    return compass(position).split(" (")[0]


def compass(position: str) -> str:
    """A 3x3 image position as a compass phrase with its image side (north = top, east = right)."""
    return COMPASS.get(position, position)


def elongated_components(stats: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tile's elongated components (rivers, roads, field edges); the linear task needs one."""
    return [c for c in stats.get("components", ()) if c.get("elongated")]


def find_class(stats: Mapping[str, Any], name: str | None) -> Mapping[str, Any] | None:
    """The ``stats.classes`` entry called ``name``, or None."""
    return next((c for c in stats.get("classes", ()) if c.get("name") == name), None)


def common_prefix_share(sequences: Sequence[Sequence[Any]]) -> float:
    """Share of all tokens (or characters) that lie in the prefix common to every sequence."""
    if not sequences:
        return 0.0
    prefix = 0
    for items in zip(*sequences):
        if any(item != items[0] for item in items[1:]):
            break
        prefix += 1
    total = sum(len(seq) for seq in sequences)
    return prefix * len(sequences) / total if total else 0.0


def default_prompts_dir() -> Traversable:
    """The shipped prompt templates (package data ``rsbuild/captions/templates/``)."""
    packaged = importlib.resources.files("rsbuild.captions") / "templates"
    if not (packaged / SYSTEM_TEMPLATE).is_file():
        raise ConfigError(
            "the default prompt templates are missing from the installed package "
            "(rsbuild/captions/templates/); reinstall rsbuild or pass a folder with --prompts"
        )
    return packaged


def split_turns(system: str, task_text: str, filename: str) -> tuple[dict[str, str], ...]:
    """Chat messages from the rendered system prompt and task template (see module doc)."""
    lines = task_text.splitlines()
    if not any(TURN_LINE.match(line.strip()) for line in lines):
        return ({"role": "system", "content": system}, {"role": "user", "content": task_text.strip()})
    preamble: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    for line in lines:
        marker = TURN_LINE.match(line.strip())
        if marker:
            turns.append((marker.group(1), []))
        elif turns:
            turns[-1][1].append(line)
        else:
            preamble.append(line)
    instructions = "\n".join(preamble).strip()
    messages = [{"role": "system", "content": f"{system}\n{instructions}".strip()}]
    messages += [{"role": role, "content": "\n".join(body).strip()} for role, body in turns]
    if any(not m["content"] for m in messages[1:]) or messages[-1]["role"] != "user":
        raise ConfigError(
            f"prompt template {filename}: every [user] / [assistant] turn needs text and the last turn "
            "must be [user]; fix the template or pass another --prompts folder"
        )
    return tuple(messages)


@dataclass(frozen=True)
class _Source:
    text: str
    filename: str


class _SourceLoader(jinja2.BaseLoader):
    """Serves templates already read into memory, with their real file names for errors."""

    def __init__(self, sources: Mapping[str, _Source]) -> None:
        self._sources = sources

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        if template not in self._sources:
            raise jinja2.TemplateNotFound(template)
        source = self._sources[template]
        return source.text, source.filename, lambda: True


def _template_error(exc: Exception, filename: str) -> ConfigError:
    """A ConfigError naming the template file and line of a syntax or rendering error."""
    line: int | None
    if isinstance(exc, jinja2.TemplateSyntaxError):
        line = exc.lineno
        what = exc.message
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
        line = frames[-1].lineno if frames else None
        what = str(exc)
    where = f"{filename}, line {line}" if line else filename
    return ConfigError(
        f"prompt template {where}: {what}. Templates may use stats, subject, subject_class, "
        "elongated, indices and the filters percent, compass and compass_word; fix the template or pass another --prompts folder"
    )


def _one_line_each(subject: str | None) -> str | None:
    """Numbered questions, one per line (a line is never a turn marker: markers are bracketed)."""
    return "\n".join(" ".join(line.split()) for line in subject.splitlines() if line.strip()) if subject else subject


class PromptSet:
    """The system prompt and one template per task, compiled and validated."""

    def __init__(self, sources: Mapping[str, _Source], location: str) -> None:
        self.location = location
        self._sources = dict(sources)
        self._env = jinja2.Environment(
            loader=_SourceLoader(self._sources),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            autoescape=False,
        )
        self._env.filters["percent"] = percent
        self._env.filters["compass"] = compass
        self._env.filters["compass_word"] = compass_word
        self._templates: dict[str, jinja2.Template] = {}
        for name, source in self._sources.items():
            try:
                self._templates[name] = self._env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise _template_error(exc, source.filename) from None
        self._sha256 = {
            task: hashlib.sha256(
                (self._sources[SYSTEM_TEMPLATE].text + "\x00" + self._sources[f"{task}.j2"].text).encode("utf-8")
            ).hexdigest()
            for task in self.tasks
        }
        self._validate()

    @classmethod
    def load(cls, directory: Path | None = None, tasks: Iterable[str] = TASKS) -> PromptSet:
        """Read ``system.j2`` and ``TASK.j2`` for each task from ``directory`` (default: shipped prompts).

        Raises ConfigError naming the file (and line) of a missing, unreadable or invalid template.
        """
        root = default_prompts_dir() if directory is None else Path(directory)
        if not root.is_dir():
            raise ConfigError(f"prompts folder {root} does not exist; pass an existing folder with --prompts")
        sources: dict[str, _Source] = {}
        for name in (SYSTEM_TEMPLATE, *(f"{task}.j2" for task in tasks)):
            if name.removesuffix(".j2") not in (*TASKS, *OPTIONAL_TASKS, "system"):
                raise ConfigError(f"unknown caption task {name.removesuffix('.j2')!r}; tasks are {', '.join(TASKS)}")
            path = root / name
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"prompt template {path} cannot be read ({exc.__class__.__name__}); "
                    f"add {name} to the prompts folder {root}"
                ) from None
            if not text.strip():
                raise ConfigError(f"prompt template {path} is empty; write the {name.removesuffix('.j2')} instructions "
                                  "into it, or pass another --prompts folder")
            sources[name] = _Source(text, str(path))
        return cls(sources, str(root))

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this set has templates for."""
        return tuple(t for t in (*TASKS, *OPTIONAL_TASKS) if f"{t}.j2" in self._sources)

    def sha256(self, task: str) -> str:
        """sha256 over the system and task template sources (recorded with every annotation)."""
        self._check_task(task)
        return self._sha256[task]

    def render(
        self, task: str, stats: Mapping[str, Any], subject: str | None = None
    ) -> tuple[tuple[dict[str, str], ...], str, str]:
        """Chat messages for one request, the task template's name and the templates' sha256.

        ``subject`` is the class name for ``class`` and the caption to rewrite for ``revise``.
        """
        self._check_task(task)
        name = f"{task}.j2"
        context = self._context(task, stats, subject)
        system = self._render_one(SYSTEM_TEMPLATE, context)
        messages = split_turns(system, self._render_one(name, context), self._sources[name].filename)
        return messages, name, self._sha256[task]

    def _check_task(self, task: str) -> None:
        if task not in self._sha256:
            raise ConfigError(f"no prompt template for task {task!r} in {self.location}; add {task}.j2 there")

    @staticmethod
    def _context(task: str, stats: Mapping[str, Any], subject: str | None) -> dict[str, Any]:
        subject_class = find_class(stats, subject) if task == "class" else None
        if task == "class" and subject_class is None:
            raise ValueError(f"class task: {subject!r} is not among the tile's classes")
        if task == "revise" and not subject:
            raise ValueError("revise task: subject must be the caption to rewrite")
        return {
            "stats": stats,
            "subject": _one_line_each(subject) if task == "vqa_paraphrase" else " ".join(subject.split()) if subject else subject,
            "subject_class": subject_class,
            "elongated": elongated_components(stats),
            "indices": stats.get("indices"),
        }

    def _render_one(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            return self._templates[name].render(context).strip()
        except jinja2.TemplateError as exc:
            raise _template_error(exc, self._sources[name].filename) from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise _template_error(exc, self._sources[name].filename) from None

    def _validate(self) -> None:
        """Render every task once with EXAMPLE_STATS so errors surface before any request."""
        subjects = {"class": EXAMPLE_STATS["classes"][0]["name"], "revise": EXAMPLE_CAPTION,
                    "vqa_paraphrase": "1. Is there any water in this image?\n2. Which class takes up most of this image?"}
        for task in self.tasks:
            self.render(task, EXAMPLE_STATS, subjects.get(task))
