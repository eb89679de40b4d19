"""The package's layering, read from the installed source: imports point one way, no cycles, small files, one name
per class.

Layers, bottom up: the root `vdsr` (model, metadata, networks, catalogue, weights, errors, files) <- `vdsr.runtime`
<- `vdsr.bench` <- `vdsr.train` and `vdsr.export` (siblings: neither imports the other). A module that nothing in
the package imports sits on top and may import anything: the commands (`cli.py`, `__main__.py`), the measurement
scripts (vdsr.bench.scripts: every module that runs as a program lives there, or is a command) and the root
package's front door (`vdsr/__init__.py`, whose lazy `vdsr.Upscaler` is the public API). Every other module imports
only down. Function-local imports count: they are only allowed where the module imported
loads a heavy optional library (torch, tensorrt, onnx, onnxruntime), never to dodge a cycle.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import vdsr

ROOT = Path(vdsr.__file__).parent  # the installed package: what users run
LAYERS = {"vdsr.runtime": 1, "vdsr.bench": 2, "vdsr.train": 3, "vdsr.export": 3}  # anything else in vdsr: 0
HEAVY = {"torch", "tensorrt", "onnx", "onnxruntime"}
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    source: str
    target: str  # a module (a submodule where `from package import submodule`)
    line: int
    local: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    parts = ["vdsr", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for p in sorted(ROOT.rglob("*.py")) if p.name != "_version.py"}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in SOURCES.items()}


def resolve(source: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = source if SOURCES[source].name == "__init__.py" else source.rsplit(".", 1)[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imports_of(source: str) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, local: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(source, a.name, child.lineno, local, type_only) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = resolve(source, child)
                for alias in child.names:  # `from vdsr.runtime import png16` imports the submodule png16
                    target = f"{module}.{alias.name}" if f"{module}.{alias.name}" in SOURCES else module
                    found.append(Import(source, target, child.lineno, local, type_only))
            else:
                guard = isinstance(child, ast.If) and ast.unparse(child.test) in (
                    "TYPE_CHECKING",
                    "typing.TYPE_CHECKING",
                )
                scope = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                visit(child, local or scope, type_only or guard)

    visit(TREES[source], False, False)
    return found


IMPORTS = [i for name in SOURCES for i in imports_of(name)]
OURS = [i for i in IMPORTS if i.target.split(".")[0] == "vdsr"]


def is_script(name: str) -> bool:
    return any(
        isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'" for node in TREES[name].body
    )


def is_command_or_script(name: str) -> bool:
    return name.endswith((".cli", ".__main__")) or name.startswith("vdsr.bench.scripts.")


# what some library module imports (`python -m vdsr.train`, a command, starts the vdsr-train command)
IMPORTED = {i.target for i in OURS if i.source != i.target and not is_command_or_script(i.source)}


def exempt(name: str) -> bool:
    """A module nothing imports (a command, a script) and the root's front door sit on top of every layer."""
    return name == "vdsr" or name not in IMPORTED


def group(name: str) -> str:
    return next((g for g in LAYERS if name == g or name.startswith(g + ".")), "vdsr")


def test_the_scan_sees_the_whole_package() -> None:
    for expected in (
        "vdsr.errors",
        "vdsr.catalogue",
        "vdsr.runtime.backends.choice",
        "vdsr.bench.harness",
        "vdsr.train.loop",
        "vdsr.export.quantize",
    ):
        assert expected in SOURCES
    assert exempt("vdsr.runtime.cli") and exempt("vdsr.bench.scripts.parity") and not exempt("vdsr.bench.harness")
    assert len(OURS) > 100 and any(i.local for i in OURS)  # function-local imports are seen too


def test_commands_and_scripts_are_imported_by_nothing_and_programs_live_there() -> None:
    """Commands and scripts sit on top: no module imports one (scripts included); a module that runs as a program is
    a command or lives in vdsr.bench.scripts, apart from the library."""
    imported = sorted(name for name in SOURCES if is_command_or_script(name) and name in IMPORTED)
    assert not imported, imported
    programs = sorted(name for name in SOURCES if is_script(name) and not is_command_or_script(name))
    assert not programs, programs
    scripts = [name for name in SOURCES if name.startswith("vdsr.bench.scripts.")]
    assert len(scripts) >= 10


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for i in OURS:
        if exempt(i.source) or i.target == "vdsr._version":
            continue
        if i.target not in SOURCES:
            wrong.append(f"{i.source}:{i.line} imports {i.target}, which does not exist")
        elif exempt(i.target):
            wrong.append(f"{i.source}:{i.line} imports {i.target} (a command, script or the front door)")
        elif group(i.source) != group(i.target) and LAYERS.get(group(i.target), 0) >= LAYERS.get(group(i.source), 0):
            wrong.append(f"{i.source}:{i.line} ({group(i.source)}) imports {i.target} ({group(i.target)})")
    assert not wrong, "\n".join(wrong)


def module_level_graph() -> dict[str, set[str]]:
    """Module-level imports between our modules, with each module's import of its parent packages."""
    graph: dict[str, set[str]] = {name: set() for name in SOURCES}
    for i in OURS:
        if not i.local and not i.type_only and i.target in SOURCES:
            graph[i.source].add(i.target)
    for name in SOURCES:
        if "." in name:
            graph[name].add(name.rsplit(".", 1)[0])
    return graph


def test_no_module_level_cycle() -> None:
    graph = module_level_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not cycles, cycles


def loads_heavy_library(name: str) -> bool:
    """Whether importing `name` loads torch, tensorrt, onnx or onnxruntime (at module level, transitively)."""
    graph = module_level_graph()
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph[module])
    return any(i.target.split(".")[0] in HEAVY for m in seen for i in imports_of(m) if not i.local and not i.type_only)


def test_function_local_imports_of_our_modules_only_defer_heavy_libraries() -> None:
    local = [i for i in OURS if i.local and i.source != "vdsr"]  # the front door's lazy Upscaler is the exemption
    dodges = [
        f"{i.source}:{i.line} imports {i.target} inside a function" for i in local if not loads_heavy_library(i.target)
    ]
    assert not dodges, "\n".join(dodges)
    assert loads_heavy_library("vdsr.runtime.backends.pytorch") and not loads_heavy_library("vdsr.runtime.upscaler")


def test_the_cpu_path_and_the_benchmark_load_no_heavy_library_at_import() -> None:
    for light in (
        "vdsr.runtime.upscaler",
        "vdsr.runtime.backends.opening",
        "vdsr.bench.harness",
        "vdsr.runtime.cli",
        "vdsr.bench.cli",
        "vdsr.catalogue",
        "vdsr.errors",
    ):
        assert not loads_heavy_library(light), light


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_source_files_are_small(name: str) -> None:
    lines = len(SOURCES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{SOURCES[name]}: {lines} lines"


def test_no_two_classes_share_a_name() -> None:
    names = Counter(node.name for tree in TREES.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef))
    assert not [name for name, count in names.items() if count > 1]


def test_long_signatures_take_keywords() -> None:
    """More than three parameters: the rest are keyword-only (no long positional calls with adjacent flags). Typer
    commands, whose parameters are the command's options, are never called positionally."""
    long = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            command = any("command" in ast.unparse(d) for d in node.decorator_list) or (
                is_script(name) and node.name == "main"
            )
            positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            if len(positional) > 3 and not command:
                long.append(f"{name}.{node.name}({', '.join(positional)})")
    assert not long, "\n".join(long)
