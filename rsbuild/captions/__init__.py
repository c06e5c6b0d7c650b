"""Caption engines behind one batch interface, and the faithfulness check.

Engines implement `CaptionEngine` (base.py) and answer batches of `CaptionRequest`s;
`TemplateEngine` (template.py) writes deterministic captions from the stats; `annotate`
(annotate.py) is the caption stage; `check_caption` (check.py) refuses captions that contradict
the label statistics. LLM engines live in their own modules and are imported only when chosen.
"""

from __future__ import annotations

from rsbuild.captions.base import TASKS, CaptionEngine, CaptionRequest, CaptionResult, request_seed
from rsbuild.captions.check import Verdict, check_caption

__all__ = [
    "TASKS", "CaptionEngine", "CaptionRequest", "CaptionResult", "request_seed", "Verdict", "check_caption",
]
