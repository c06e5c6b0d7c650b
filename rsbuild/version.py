"""The installed version of rsbuild (one source: ``pyproject.toml``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rsbuild")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
