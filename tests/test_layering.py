"""Imports flow one way between the converters, the spec/format layer and the runtime model:
converters never import the runtime model, the spec/format layer imports neither, and the
model imports no converter (module-level and function-level imports alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_fast"

#: module (or package prefix) -> modules it must not import, at any level.
FORBIDDEN = {
    "lstm_fast.converters": ("lstm_fast.model", "lstm_fast.frameworks", "lstm_fast.cli",
                             "lstm_fast.bench", "lstm_fast.pool", "lstm_fast.verify"),
    "lstm_fast.spec": ("lstm_fast.model", "lstm_fast.format", "lstm_fast.converters",
                       "lstm_fast.quantize", "lstm_fast.cli"),
    "lstm_fast.format": ("lstm_fast.model", "lstm_fast.converters", "lstm_fast.cli"),
    "lstm_fast.quantize": ("lstm_fast.model", "lstm_fast.format", "lstm_fast.converters",
                           "lstm_fast.cli"),
    "lstm_fast.bench_spec": ("lstm_fast.model", "lstm_fast.cli", "lstm_fast.bench"),
    "lstm_fast.model": ("lstm_fast.converters", "lstm_fast.frameworks", "lstm_fast.cli"),
    "lstm_fast.errors": ("lstm_fast.",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_flow_one_way(path: Path) -> None:
    name = _module_name(path)
    rules = [bad for prefix, bad in FORBIDDEN.items()
             if name == prefix or name.startswith(prefix + ".")]
    imported = _imports(path)
    for bad in (b for group in rules for b in group):
        hits = sorted(m for m in imported if m == bad or m.startswith(bad if bad.endswith(".")
                                                                        else bad + "."))
        assert not hits, f"{name} imports {hits} (against the layer order)"
