"""rsbuild: remote-sensing vision-language dataset builder.

The package's map is ARCHITECTURE.md: `sources` → `chips` (the fetch half), `captions` (the
caption half), `dataset` (the format between and after them), `report`, `run`, `cli`.
"""

from __future__ import annotations

from rsbuild.captions.check import check_caption
from rsbuild.version import __version__

__all__ = ["__version__", "check_caption"]
