"""Dependencies point one way, checked by AST scans of the sources.

- The runtime never imports the workstation side: nothing under ``dear_local/`` imports
  ``dear_local_convert`` in any form (``import``, ``from ... import``, or ``importlib.import_module``
  / ``__import__`` of a literal name). The workstation commands reach the CLI through the
  ``dear_local.commands`` entry points (``dear_local/cli/plugins.py``).
- The benchmarks use the installed packages, never the tests: no ``bench/*.py`` imports a module
  from ``tests/`` or edits ``sys.path``. A benchmark is run as a script (``python bench/bench_x.py``)
  where dear-local is installed, so it imports ``dear_local`` and ``dear_local_convert`` as
  installed and its sibling scripts by name.
- ``dear_local_convert.lora`` stands below ``dear_local_convert.to_gguf`` (which merges an adapter
  while converting): nothing under ``lora/`` imports ``to_gguf``; what both need lives in
  ``safetensors_file`` and ``gguf_layout``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_MODULES = {"tests", "conftest"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
SYS_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear"}


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:  # the module, and module.name
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def _imports(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, name) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            for name in _imported(node)]


DYNAMIC_IMPORTS = {"import_module", "__import__"}  # importlib.import_module(name), __import__(name)


def _imported_dynamically(node: ast.AST) -> str | None:
    """The module a call such as ``importlib.import_module("x.y")`` or ``__import__("x")`` imports,
    when it is named by a literal string."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    arg = node.args[0]
    if name in DYNAMIC_IMPORTS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _all_imports(source: str) -> list[tuple[int, str]]:
    """Every module ``source`` imports, statically or by a literal name, with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        found += [(node.lineno, name) for name in _imported(node)]
        dynamic = _imported_dynamically(node)
        if dynamic is not None:
            found.append((node.lineno, dynamic))
    return found


def _is_workstation(name: str) -> bool:
    return name == "dear_local_convert" or name.startswith("dear_local_convert.")


def _is_sys_path(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
        and node.value.id == "sys"


def _sys_path_edit(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in SYS_PATH_EDITS and _is_sys_path(node.func.value)
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(_is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)) for t in targets)
    return False


def test_the_benchmarks_import_neither_the_tests_nor_edit_sys_path():
    scripts = sorted((ROOT / "bench").glob("*.py"))
    assert scripts
    found = []
    for path in scripts:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            found += [f"{where} imports {name}" for name in _imported(node) if name.split(".")[0] in TEST_MODULES]
            if _sys_path_edit(node):
                found.append(f"{where} edits sys.path: {ast.unparse(node)}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(("lower", "upper"), [("lora", "to_gguf"), ("reference", "agreement")])
def test_a_lower_workstation_stage_does_not_import_the_one_above(lower, upper):
    """``lora`` stands below ``to_gguf`` (which merges an adapter while converting), and recording the
    reference (``reference``) below checking quants against it (``agreement``)."""
    package = ROOT / "convert" / "dear_local_convert"
    modules = sorted((package / lower).rglob("*.py"))
    assert modules
    banned = f"dear_local_convert.{upper}"
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in modules for line, name in _imports(path)
             if name == banned or name.startswith(banned + ".")]
    assert not found, "\n".join(found)


def test_the_runtime_does_not_import_the_workstation_package():
    modules = sorted((ROOT / "dear_local").rglob("*.py"))
    assert len(modules) > 50
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in modules
             for line, name in _all_imports(path.read_text(encoding="utf-8")) if _is_workstation(name)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source", [
    "import dear_local_convert",
    "import dear_local_convert.build as b",
    "from dear_local_convert import build",
    "from dear_local_convert.agreement.check import check",
    "def f():\n    from dear_local_convert.cli import convert",
    "import importlib\nimportlib.import_module('dear_local_convert.cli.convert')",
    "from importlib import import_module\nimport_module('dear_local_convert')",
    "__import__('dear_local_convert.demo', fromlist=['run_demo'])",
])
def test_the_scan_sees_every_form_of_import(source):
    assert any(_is_workstation(name) for _, name in _all_imports(source))


def test_the_scan_lets_docstrings_and_other_names_through():
    source = '"""Reached through ``dear_local_convert.cli`` (see pyproject.toml)."""\nimport dear_local\n' \
        "import dear_local_converter\nimportlib.import_module(name)\n"
    assert not any(_is_workstation(name) for _, name in _all_imports(source))
