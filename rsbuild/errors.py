"""Exceptions: `RsbuildError` for bad runs (stop with a message), `SampleError` for bad samples.

A `SampleError` never leaves its stage: the stage turns it into a `Failure` record
(``rsbuild.records``), counts it and goes on.
"""

from __future__ import annotations


class SampleError(Exception):
    """One sample (a POI's search or read) cannot be made; recorded as a Failure, the run goes on.

    ``transient`` marks a failure that outlived its retries on a transient network error (a
    rerun may succeed); the Failure recorded for it carries the same flag.
    """

    def __init__(self, message: str = "", *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # a retry may succeed (connection error, timeout, 429, 5xx)


class RsbuildError(Exception):
    """A run cannot go on. The message says what is wrong and how to fix it."""


class ConfigError(RsbuildError):
    """The configuration is invalid; the message names the field and the fix."""


class InputError(RsbuildError):
    """An input file or service cannot be read at all."""


class MissingExtraError(RsbuildError):
    """An optional dependency is not installed; the message gives the install command."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package {package!r}, which is not installed. "
            f"Install it with: pip install 'rsbuild[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise MissingExtraError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
