"""Build the configured caption engines (one per annotator model), each behind the cache.

Engine modules are imported only when chosen, so a missing optional extra matters only to the
run that asks for it.
"""

from __future__ import annotations

from pathlib import Path

from rsbuild.captions.base import CaptionEngine
from rsbuild.config import CaptionsConfig
from rsbuild.errors import ConfigError

CACHE_FILE = "captions.sqlite"



def make_engines(cfg: CaptionsConfig, cache_dir: Path | None) -> list[CaptionEngine]:
    """One engine per configured model (``captions.models``; empty = the engine's default model).

    LLM engines answer from ``cache_dir/captions.sqlite`` first when ``cache_dir`` is given; the
    template engine is deterministic and cheap, so it is never cached.
    """
    if cfg.engine == "template":
        from rsbuild.captions.engines.template import TemplateEngine

        return [TemplateEngine()]
    models: list[str | None] = list(cfg.models) or [None]
    engines = [_llm_engine(cfg, model) for model in models]
    if cache_dir is None:
        return engines
    from rsbuild.captions.cache import CachedEngine, CaptionCache

    return [CachedEngine(engine, CaptionCache(Path(cache_dir) / CACHE_FILE)) for engine in engines]


def _llm_engine(cfg: CaptionsConfig, model: str | None) -> CaptionEngine:
    sampling = cfg.sampling()
    if cfg.engine == "openai":
        url = cfg.model_urls.get(model or "", cfg.server_url)
        if not url:
            raise ConfigError(
                "captions.server_url is required when captions.engine = 'openai' (e.g. http://127.0.0.1:8000/v1)"
            )
        from rsbuild.captions.engines.openai import OpenAIEngine

        return OpenAIEngine(
            base_url=url,
            model=model,
            api_key_env=cfg.api_key_env,
            concurrency=cfg.concurrency,
            timeout_s=cfg.timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
            retries=cfg.retries,
            sampling=sampling,
            constrained=cfg.constrained,
            varied=cfg.varied,
        )
    if cfg.engine == "local":
        from rsbuild.captions.engines.local import LocalEngine

        if model is not None and not Path(model).is_file():
            raise ConfigError(
                f"captions.models: {model!r} is not a GGUF file; the local engine takes GGUF paths "
                "(leave captions.models empty for the embedded SmolLM2-135M-Instruct)"
            )
        return LocalEngine(model_path=Path(model) if model else None, sampling=sampling, constrained=cfg.constrained,
                           varied=cfg.varied)
    if cfg.engine == "vllm":
        if model is None:
            raise ConfigError("captions.models must name at least one model when captions.engine = 'vllm'")
        from rsbuild.captions.engines.vllm import VllmEngine

        return VllmEngine(model=model, sampling=sampling, seed=cfg.seed, settings=cfg.vllm, constrained=cfg.constrained,
                          varied=cfg.varied)
    raise ConfigError(f"captions.engine {cfg.engine!r} is unknown; use template, openai, local or vllm")
