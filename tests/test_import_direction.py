"""Dependencies point one way: the benchmarks use the installed packages, never the tests.

An AST scan of ``bench/*.py``: no import of a module from ``tests/`` and no edit of ``sys.path``.
A benchmark is run as a script (``python bench/bench_x.py``) where dear-local is installed, so it
imports ``dear_local`` and ``dear_local_convert`` as installed and its sibling scripts by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_MODULES = {"tests", "conftest"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
SYS_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear"}


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module]
    return []


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
