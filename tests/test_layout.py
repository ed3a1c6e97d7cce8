"""The layout's rules, checked from the code's own imports (ast), so they stay true.

Imports go one way: ui -> core -> {learning, trust} -> serving -> storage, with the shared
foundations (config, errors, text, files) below all of studio. A module may import from its
own package or from a lower layer, never from a higher one or a sibling (learning and trust know
nothing of each other), and there are no import circles. The entry points (the command line,
the benchmark, app.py) sit above everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATIONS = {"studio.config", "studio.errors", "studio.text", "studio.files", "studio.logs", "studio.metrics"}
ENTRY_POINTS = {"studio.__main__", "app"}  # and the benchmarks, studio.bench.*
LAYERS = {"storage": 0, "foundations": 1, "studio.serving": 2, "studio.learning": 3, "studio.trust": 3,
          "studio.core": 4, "studio.ui": 5, "entry": 6}
MAX_FILE_LINES = 350  # "about 300": past this a file wants splitting
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    paths = [*ROOT.glob("studio/**/*.py"), *ROOT.glob("storage/*.py"), ROOT / "app.py"]
    modules = {}
    for path in paths:
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _package(module: str) -> str:
    if module in ENTRY_POINTS or module == "studio" or module.split(".")[:2] == ["studio", "bench"]:
        return "entry"
    if module in FOUNDATIONS:
        return "foundations"
    if module.startswith("storage"):
        return "storage"
    return ".".join(module.split(".")[:2])


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports (anywhere in the file, TYPE_CHECKING blocks included)."""
    found = set()
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]) if node.level else node.module
            target = target.strip(".")
            names = [f"{target}.{alias.name}" for alias in node.names] + [target]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


MODULES = _modules()
GRAPH = {module: _imports(module, path, set(MODULES)) for module, path in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    assert {_package(m) for m in MODULES} <= set(LAYERS), sorted({_package(m) for m in MODULES} - set(LAYERS))


def test_imports_go_one_way():
    wrong = []
    for module, targets in GRAPH.items():
        source = _package(module)
        for target in targets:
            destination = _package(target)
            if destination != source and LAYERS[destination] >= LAYERS[source]:
                wrong.append(f"{module} ({source}) imports {target} ({destination})")
    assert not wrong, "\n".join(sorted(wrong))


def test_there_are_no_import_circles():
    # Within a package too: a circle of modules is one module in two files.
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(GRAPH[module]):
            if seen.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in seen:
                visit(target, path + [target])
        seen[module] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_no_module_reaches_into_another_modules_private_names():
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("studio", "storage"):
                wrong += [f"{module} imports {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("storage.migrations")))
def test_files_and_functions_stay_small(module):
    source = MODULES[module].read_text(encoding="utf-8")
    assert source.count("\n") <= MAX_FILE_LINES, f"{module} has {source.count(chr(10))} lines"
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{module}: " + ", ".join(long)
