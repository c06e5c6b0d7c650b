"""rsbuild: remote-sensing vision-language dataset builder."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "check_caption"]


def __getattr__(name: str):
    if name == "check_caption":
        from rsbuild.captions.check import check_caption

        return check_caption
    raise AttributeError(name)
