"""The package's shape: no import cycles, layers point one way, each external system in one module.

A plain AST walk over every module's imports (lazy imports inside functions included), so a
cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rsbuild"

# Lower layers never import higher ones (index = layer). `demo` and `cli` sit on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("rsbuild.errors", "rsbuild.version", "rsbuild.records", "rsbuild.presets", "rsbuild.concurrency", "rsbuild.schemes",
     "rsbuild.retries"),
    ("rsbuild.config", "rsbuild.grid"),
    ("rsbuild.sources",),
    ("rsbuild.chips",),
    ("rsbuild.captions",),
    ("rsbuild.dataset",),
    ("rsbuild.report",),
    ("rsbuild.run",),
    ("rsbuild.testing",),
    ("rsbuild.demo", "rsbuild.cli", "rsbuild.__main__", "rsbuild"),
)

# Each external system is imported in exactly these modules.
EXTERNAL_HOMES: dict[str, set[str]] = {
    "pystac_client": {"rsbuild.sources.stac"},
    # the fixture generator writes its rasters itself, independently of the reader under test
    "rasterio": {"rsbuild.sources.raster_io", "rsbuild.testing.synthetic"},
    "ee": {"rsbuild.sources.labels.earthengine"},
    "vllm": {"rsbuild.captions.engines.vllm"},
    "openai": {"rsbuild.captions.engines.openai"},
    "llama_cpp": {"rsbuild.captions.engines.local"},
    "ray": {"rsbuild.run.ray_executor"},
    "webdataset": {"rsbuild.dataset.shards", "rsbuild.dataset.loader"},  # writing, and the training loader
    "matplotlib": {"rsbuild.dataset.plots"},
    "typer": {"rsbuild.cli"},
    "jinja2": {"rsbuild.captions.prompts"},
    "fsspec": {"rsbuild.run.recaption", "rsbuild.dataset.loader", "rsbuild.dataset.remote"},
    "boto3": {"rsbuild.testing.servers"},  # only to set up the loopback S3 server (rsbuild itself goes through fsspec)
    "huggingface_hub": {"rsbuild.report.publish"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, modules: set[str]) -> tuple[set[str], set[str]]:
    """(rsbuild modules, top-level external packages) imported anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    internal: set[str] = set()
    external: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] != "rsbuild":
                if target:
                    external.add(target.split(".")[0])
                continue
            # the longest module name the import names
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                internal.add(target)
    return internal, external


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    names = set(modules)
    return {name: imports_of(path, name, names)[0] for name, path in modules.items()}


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # a package's __init__ importing its own children is not a cycle worth reporting; drop those edges
    edges = {m: {t for t in ts if not (t.startswith(m + ".") and m != "rsbuild")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def layer_of(name: str) -> int:
    best, best_len = len(LAYERS) - 1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def test_imports_point_down_the_layers(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, targets in graph.items()
        for dst in targets
        if src != "rsbuild" and layer_of(dst) > layer_of(src)
    )
    assert not upward, "\n".join(upward)


def test_production_code_never_imports_testing(graph: dict[str, set[str]]) -> None:
    users = sorted(
        src for src, targets in graph.items()
        if not src.startswith("rsbuild.testing") and src != "rsbuild.demo"
        and any(t.startswith("rsbuild.testing") for t in targets)
    )
    assert not users, users


def test_each_external_system_is_imported_in_one_module() -> None:
    modules = all_modules()
    names = set(modules)
    seen: dict[str, set[str]] = {}
    for name, path in modules.items():
        for package in imports_of(path, name, names)[1]:
            seen.setdefault(package, set()).add(name)
    wrong = {pkg: sorted(seen.get(pkg, set()) - homes) for pkg, homes in EXTERNAL_HOMES.items()
             if seen.get(pkg, set()) - homes}
    assert not wrong, wrong
