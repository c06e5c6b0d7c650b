"""The `rsbuild` command line: builds a config, calls the pipeline, shows the result.

Each command turns its options into a validated `Config` (or paths) and calls one library
function; a `RsbuildError` ends the command with its message and exit code 2.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from rsbuild.errors import ConfigError, RsbuildError


class _HelpWithoutValue:
    """Click's own ``--help`` is a flag: shown without a ``<bool>`` value, like every rsbuild flag."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Group(_HelpWithoutValue, typer.core.TyperGroup):
    pass


class _Command(_HelpWithoutValue, typer.core.TyperCommand):
    pass


app = typer.Typer(
    cls=_Group,
    help="Build remote-sensing vision-language datasets: Sentinel-2 chips, aligned land-cover labels, captions, "
    "WebDataset shards and SFT JSONL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

def _flag(declaration: str, *short: str, help: str) -> Any:
    """A boolean ``--flag/--no-flag`` option shown without a value in ``--help``."""
    return typer.Option(declaration, *short, help=help, metavar="", show_default=False)


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML config file (see `rsbuild init`)")]
OutOption = Annotated[str, typer.Option("--out", "-o", help="output folder: a local path or s3://bucket/prefix")]
QuietOption = Annotated[bool, _flag("--quiet/--no-quiet", "-q", help="no progress bar")]
OverwriteOption = Annotated[bool, _flag("--overwrite/--no-overwrite", help="replace a dataset already in --out")]
NumShardsOption = Annotated[int, typer.Option("--num-shards", help="job arrays: number of workers sharing the units")]
ShardIndexOption = Annotated[int, typer.Option("--shard-index", help="job arrays: this worker's index in [0, --num-shards)")]
RetryOption = Annotated[bool, _flag(
    "--retry-failed/--no-retry-failed", help="also redo finished units that lost POIs to transient errors (timeouts, 5xx, refused connections)")]
FailureShareOption = Annotated[float | None, typer.Option(
    "--max-failure-share", help="exit 1 when a larger share of the POI rows gives no tile (default: output.max_failure_share, 0.5)")]
SourceArgument = Annotated[str, typer.Argument(help="dataset or chip folder (local path or fsspec URL)")]
TargetOption = Annotated[str, typer.Option("--out", "-o", help="output folder (local path or fsspec URL)")]
EngineOption = Annotated[str | None, typer.Option(help="caption engine: template | openai | local | vllm")]
PromptsOption = Annotated[Path | None, typer.Option(help="folder of prompt templates")]
TasksOption = Annotated[str | None, typer.Option(help="comma-separated tasks: area,linear,class,revise (LLM); vqa,referring,masks (from the stats)")]
ServerOption = Annotated[str | None, typer.Option("--server-url", help="OpenAI-compatible base URL")]
ModelOption = Annotated[list[str] | None, typer.Option("--model", help="annotator model (repeatable)")]
ParaphrasesOption = Annotated[int | None, typer.Option(help="paraphrases per area caption (revise task)")]


def _print_version(value: bool) -> None:
    if value:
        from rsbuild.version import __version__

        print(f"rsbuild {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="print the version and exit", is_eager=True,
                                          callback=_print_version, metavar="", show_default=False)] = False,
) -> None:
    """Build remote-sensing vision-language datasets: Sentinel-2 chips, aligned land-cover labels, captions,
    WebDataset shards and SFT JSONL."""


def _friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn RsbuildError into a one-paragraph message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RsbuildError as exc:
            _print_error(str(exc))
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None

    return wrapper


def _print_error(message: str) -> None:
    """``error: message`` on stderr, printed literally (keeps ``[pois]``, ``rsbuild[pc]``)."""
    err_console.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)


def _load(config: Path) -> Any:
    from rsbuild.config import load_config

    return load_config(config)


def _load_with(config: Path, max_failure_share: float | None, edit: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """The config file with command-line options applied (validated again)."""
    from rsbuild.config import config_from_dict

    cfg = _load(config)
    if max_failure_share is None and edit is None:
        return cfg
    data = cfg.dump()
    if max_failure_share is not None:
        if not 0 <= max_failure_share <= 1:
            raise ConfigError(f"--max-failure-share must be between 0 and 1 (a share of the POI rows), not {max_failure_share:g}")
        data["output"]["max_failure_share"] = max_failure_share
    if edit is not None:
        edit(data)
    return config_from_dict(data, source=f"{config} with command-line options")


def _exit_on_problem(summary: Any) -> None:
    """Exit 1 with the summary's reason when the run made nothing or lost too many POIs."""
    if summary.problem:
        _print_error(summary.problem)
        raise typer.Exit(1)


@app.command(cls=_Command)
@_friendly_errors
def init(path: Annotated[Path, typer.Argument(help="where to write the example config")] = Path("rsbuild.toml")) -> None:
    """Write a commented example config.

    Examples:

    \b
      rsbuild init
      rsbuild init my-run.toml
    """
    from rsbuild.config import load_config, write_example
    from rsbuild.presets import SCENE_PRESETS

    write_example(path)
    preset = load_config(path).scenes.preset
    console.print(f"wrote {path}; edit [pois], [scenes] and [labels], then run rsbuild build --config {path} --out OUT\n"
                  f"imagery: scenes.preset = {preset!r}: {SCENE_PRESETS[preset].description}; "
                  f"other presets: {', '.join(name for name in SCENE_PRESETS if name != preset)}",
                  markup=False, highlight=False)


@app.command(cls=_Command)
@_friendly_errors
def fetch(
    config: ConfigOption,
    out: OutOption,
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
    num_shards: NumShardsOption = 1,
    shard_index: ShardIndexOption = 0,
    max_failure_share: FailureShareOption = None,
    retry_failed: RetryOption = False,
) -> None:
    """Fetch half: POIs → scenes → aligned chips, masks and statistics in chip shards.

    Rerunning the same command resumes where it stopped. Exits 1 when no tile was written or
    too many POI rows gave none (--max-failure-share).

    Examples:

    \b
      rsbuild fetch -c rsbuild.toml -o chips
      rsbuild fetch -c rsbuild.toml -o chips --num-shards 4 --shard-index 0
    """
    from rsbuild.dataset.remote import staged_output
    from rsbuild.run.pipeline import WorkerSlice, run_fetch

    with staged_output(out, overwrite=overwrite) as folder:  # s3://: staged locally, each finished unit uploaded
        summary = run_fetch(_load_with(config, max_failure_share), folder, console=console, show_progress=not quiet,
                            overwrite=overwrite, workers=WorkerSlice(num_shards, shard_index), retry_failed=retry_failed)
    console.print(summary.table())
    _exit_on_problem(summary)


@app.command(cls=_Command)
@_friendly_errors
def build(
    config: ConfigOption,
    out: OutOption,
    engine: Annotated[str | None, typer.Option(help="caption engine: template | openai | local | vllm")] = None,
    prompts: Annotated[Path | None, typer.Option(help="folder of prompt templates")] = None,
    write_bbox_overlays: Annotated[bool, _flag("--write-bbox-overlays/--no-write-bbox-overlays", help="draw each JSONL row's boxes")] = False,
    split_by: Annotated[str | None, typer.Option("--split-by", help="poi | cell")] = None,
    tasks: TasksOption = None,
    server_url: ServerOption = None,
    model: ModelOption = None,
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
    num_shards: NumShardsOption = 1,
    shard_index: ShardIndexOption = 0,
    executor: Annotated[str, typer.Option(help="local | ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start or join a local one)")] = None,
    max_failure_share: FailureShareOption = None,
    retry_failed: RetryOption = False,
) -> None:
    """The whole job: fetch → caption → shards, SFT JSONL, folders and dataset card.

    Rerunning the same command resumes where it stopped; no caption request is sent twice.
    Exits 1 when nothing was written, too many POI rows gave no tile (--max-failure-share) or no
    caption was kept.

    Examples:

    \b
      rsbuild build -c rsbuild.toml -o out
      rsbuild build -c rsbuild.toml -o out --engine openai --server-url http://127.0.0.1:8000/v1 --model M
      rsbuild build -c rsbuild.toml -o out --tasks area,class --split-by cell
    """
    from rsbuild.run.pipeline import WorkerSlice, run_build

    def edit(data: dict[str, Any]) -> None:
        overrides = _caption_overrides(engine, prompts, tasks, server_url, model, None)
        data["captions"].update({k: v for k, v in overrides.items() if v is not None})
        if write_bbox_overlays:
            data["output"]["write_bbox_overlays"] = True
        if split_by:
            data["splits"]["by"] = split_by

    cfg = _load_with(config, max_failure_share, edit)
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be 'local' or 'ray', not {executor!r}")
    from rsbuild.dataset.remote import staged_output

    with staged_output(out, overwrite=overwrite) as folder:  # s3://: staged locally, each finished unit uploaded
        if executor == "ray":
            from rsbuild.run.ray_executor import run_build_ray

            summary = run_build_ray(cfg, folder, console, address=ray_address, overwrite=overwrite)
        else:
            summary = run_build(cfg, folder, console=console, show_progress=not quiet, overwrite=overwrite,
                                workers=WorkerSlice(num_shards, shard_index), retry_failed=retry_failed)
    console.print(summary.table())
    _exit_on_problem(summary)
    console.print(Text.assemble("dataset written to ", (str(out), "bold"), "; check it with ", (f"rsbuild inspect {out}", "bold")))


@app.command(cls=_Command)
@_friendly_errors
def scenes(
    config: ConfigOption,
    limit: Annotated[int | None, typer.Option(help="at most this many POIs")] = None,
    aoi_cloud: Annotated[bool, _flag("--aoi-cloud/--no-aoi-cloud", help="read each candidate scene's SCL window over the AOI (no imagery) "
                                     "and show the AOI cloud share; the scene shown is then the one the fetch picks")] = False,
) -> None:
    """Dry run: the scene each POI would get (id, date, scene cloud) or why there is none; reads no pixels
    (with --aoi-cloud: only the SCL window over each AOI).

    Examples:

    \b
      rsbuild scenes -c rsbuild.toml
      rsbuild scenes -c rsbuild.toml --limit 20 --aoi-cloud
    """
    from rsbuild.run.scenes import choose_scenes, scenes_table

    cfg = _load(config)
    choices = list(choose_scenes(cfg, limit, aoi_cloud=aoi_cloud))
    console.print(scenes_table(choices, cfg.scenes.aoi_cloud_candidates, aoi_cloud=aoi_cloud))
    found = sum(1 for choice in choices if choice.scene is not None)
    console.print(Text(f"{found} of {len(choices)} POIs have a scene"))


def _caption_overrides(engine: str | None, prompts: Path | None, tasks: str | None, server_url: str | None,
                      models: list[str] | None, paraphrases: int | None) -> dict[str, Any]:
    return {
        "engine": engine,
        "prompts_dir": str(prompts.resolve()) if prompts else None,
        "tasks": [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None,
        "server_url": server_url,
        "models": models or None,
        "paraphrases": paraphrases,
    }




@app.command(cls=_Command)
@_friendly_errors
def recaption(
    source: SourceArgument,
    out: TargetOption,
    engine: EngineOption = None,
    prompts: PromptsOption = None,
    tasks: TasksOption = None,
    server_url: ServerOption = None,
    model: ModelOption = None,
    paraphrases: ParaphrasesOption = None,
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Caption a built dataset again (new prompts, tasks or engine); images are copied, not re-encoded.

    Annotations of the chosen tasks are replaced, others kept; captions whose template did not
    change are kept without asking the engine. Rerunning the same command resumes.

    Examples:

    \b
      rsbuild recaption out -o out-v2 --prompts my-prompts
      rsbuild caption chips -o out --engine vllm --model HuggingFaceTB/SmolLM2-1.7B-Instruct
    """
    from rsbuild.dataset.remote import staged_output
    from rsbuild.run.recaption import run_recaption

    overrides = _caption_overrides(engine, prompts, tasks, server_url, model, paraphrases)
    with staged_output(out, overwrite=overwrite) as folder:  # s3://: staged locally, each finished unit uploaded
        summary = run_recaption(source, str(folder), overrides, console, show_progress=not quiet, overwrite=overwrite)
    console.print(summary.table())


app.command(
    "caption",
    cls=_Command,
    help="Caption half: chip shards from `rsbuild fetch` → the finished dataset (GPU box, no network). "
    "Same options as recaption; rerunning resumes.\n\nExamples:\n\n\b\n"
    "  rsbuild caption chips -o out --engine vllm --model HuggingFaceTB/SmolLM2-1.7B-Instruct\n"
    "  rsbuild caption chips -o out --engine openai --server-url http://127.0.0.1:8000/v1 --model M\n",
)(recaption)


@app.command(cls=_Command)
@_friendly_errors
def inspect(
    directory: Annotated[Path, typer.Argument(help="a dataset folder written by `rsbuild build`")],
    as_json: Annotated[bool, _flag("--json/--no-json", help="print the report as JSON")] = False,
) -> None:
    """Counts and validation of a built dataset; exits 1 when it is broken.

    Examples:

    \b
      rsbuild inspect out
      rsbuild inspect out --json
    """
    from rsbuild.report.inspection import inspect_dataset, render_report

    report = inspect_dataset(directory)
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        render_report(report, console)
    if not report.ok:
        raise typer.Exit(1)


@app.command(cls=_Command)
@_friendly_errors
def verify(
    directory: Annotated[Path, typer.Argument(help="a dataset folder written by `rsbuild build`")],
    as_json: Annotated[bool, _flag("--json/--no-json", help="print the report as JSON")] = False,
    min_pass_rate: Annotated[float | None, typer.Option(help="exit 1 when the pass rate is lower")] = None,
) -> None:
    """Check every caption against its tile's statistics: pass rate per task and the reasons.

    Examples:

    \b
      rsbuild verify out
      rsbuild verify out --min-pass-rate 0.9
    """
    from rsbuild.report.verify import render_verify, verify_dataset

    report = verify_dataset(directory)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        render_verify(report, console)
    if min_pass_rate is not None and (report["pass_rate"] or 0.0) < min_pass_rate:
        raise typer.Exit(1)
    if report.get("derived", {}).get("failures"):  # derived rows are exact: any mismatch is an error
        raise typer.Exit(1)


@app.command(cls=_Command)
@_friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("rsbuild-demo"),
    engine: Annotated[str | None, typer.Option(help="caption engine: template, local, vllm (default: local if installed, else template)")] = None,
    model: Annotated[str | None, typer.Option(help="model for the engine (vllm default: the SmolLM2 folder scripts/setup_vllm_cpu.sh converts)")] = None,
    quiet: QuietOption = False,
    bands: Annotated[bool, _flag("--bands/--no-bands", help="also KEY.bands.tif (12 L2A bands) and the VQA, referring and mask rows")] = False,
) -> None:
    """Generate a synthetic catalog, serve it on loopback, build a dataset from it.

    Examples:

    \b
      rsbuild demo
      rsbuild demo --engine template -o /tmp/demo
      rsbuild demo --bands
    """
    from rsbuild.demo import run_demo

    run_demo(out, console=console, engine=engine, show_progress=not quiet, model=model, bands=bands)


@app.command(cls=_Command)
@_friendly_errors
def preview(
    directory: Annotated[Path, typer.Argument(help="a dataset folder written by `rsbuild build`")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default DIR/preview.html)")] = None,
    split: Annotated[str | None, typer.Option(help="only this split")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many samples")] = None,
    filter: Annotated[list[str] | None, typer.Option("--filter", help="KEY=VALUE[,VALUE]; KEY: split|task|class|verdict; repeatable")] = None,
    inline: Annotated[bool, _flag("--inline/--no-inline", help="embed images: one portable file")] = False,
) -> None:
    """Write a static HTML gallery: chips, label overlays, boxes, captions and check verdicts.

    Examples:

    \b
      rsbuild preview out
      rsbuild preview out --split train --limit 50 --inline
    """
    from rsbuild.report.preview import write_preview

    summary = write_preview(directory, out, split=split, limit=limit, filters=filter or [], inline_images=inline)
    console.print(Text.assemble("wrote ", (str(summary.out_file), "bold"),
                                f" with {summary.samples} samples (of {summary.scanned} read); open it in a browser"))


@app.command(cls=_Command)
@_friendly_errors
def publish(
    directory: Annotated[Path, typer.Argument(help="a dataset folder written by `rsbuild build`")],
    repo: Annotated[str, typer.Argument(help="Hugging Face dataset repository, NAMESPACE/NAME")],
    private: Annotated[bool, _flag("--private/--public", help="create the repository private")] = False,
    message: Annotated[str | None, typer.Option(help="commit message")] = None,
) -> None:
    """Upload a finished dataset to the Hugging Face Hub (token from HF_TOKEN or `huggingface-cli login`).

    Run bookkeeping (units/, data/parts/) stays local; files the Hub already holds are skipped, so
    running it again after an interruption sends only what is missing.

    Examples:

    \b
      rsbuild publish out my-org/sentinel2-captions
      HF_TOKEN=... rsbuild publish out my-org/sentinel2-captions --private
    """
    from rsbuild.report.publish import publish as publish_dataset

    result = publish_dataset(directory, repo, private=private, message=message)
    console.print(Text.assemble("published to ", (result.repo_url, "bold"),
                                "" if result.commit_url else " (nothing changed)"), highlight=False)


def main() -> None:  # pragma: no cover - console script entry
    app()
