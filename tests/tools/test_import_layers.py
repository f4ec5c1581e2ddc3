"""The package's imports flow one way, down the layers of docs/architecture.md.

Every ``import`` inside ``lstm_fast`` (module level and inside functions alike) is read with
``ast``; an import may only go to a module of the same or a lower layer, and the graph has no
cycles. A new module must be placed in ``LAYERS`` (the test says where it is missing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lstm_fast"

# Top to bottom; a module may import modules of its own layer or below, never above.
# Entries are module names relative to the package; "pkg.*" covers a subpackage.
LAYERS: list[tuple[str, set[str]]] = [
    ("command line", {"__main__", "cli"}),
    ("tools", {"bench.*", "bench_spec", "peers.*", "demo", "batch_run", "dask", "verify",
               "torch_check", "source_options", "sample_input"}),
    ("api", {"__init__", "frameworks"}),
    ("converters", {"converters.*"}),
    ("runtime", {"model", "pool"}),
    ("file format", {"format", "safetensors"}),
    ("weights", {"quantize"}),
    ("spec", {"spec"}),
    ("engine bridge", {"_core", "_blas"}),
    ("base", {"errors", "_checks", "_untrusted", "_version"}),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def _layer_of(module: str) -> int:
    for depth, (_, members) in enumerate(LAYERS):
        for m in members:
            if module == m or (m.endswith(".*") and (module == m[:-2]
                                                     or module.startswith(m[:-1]))):
                return depth
    raise AssertionError(f"lstm_fast.{module} is in no layer: add it to LAYERS in {__file__}")


def _imports(path: Path, module: str) -> set[str]:
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if module == "__init__":
        base = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = stem + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "lstm_fast":
                target = node.module.split(".")[1:]
            else:
                continue
            names = [a.name for a in node.names]
            for name in names:  # `from . import model` names a module, `from .x import f` does not
                sub = ".".join([*target, name])
                found.add(sub if _exists(sub) else ".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "lstm_fast":
                    found.add(".".join(a.name.split(".")[1:]) or "__init__")
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    p = PACKAGE.joinpath(*module.split("."))
    return bool(module) and (p.with_suffix(".py").exists() or p.with_suffix(".pyx").exists()
                             or (p / "__init__.py").exists())


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = {m for m in _imports(path, module) if m}
    return graph


def test_every_module_is_in_a_layer() -> None:
    for module in _graph():
        _layer_of(module)


def test_imports_only_go_down() -> None:
    upward = []
    for module, targets in _graph().items():
        for t in sorted(targets):
            if _layer_of(t) < _layer_of(module):
                upward.append(f"lstm_fast.{module} ({LAYERS[_layer_of(module)][0]}) imports "
                              f"lstm_fast.{t} ({LAYERS[_layer_of(t)][0]})")
    assert not upward, "imports going up the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
