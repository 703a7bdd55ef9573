"""Dependencies point one way, checked by AST scans of the sources.

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


def test_lora_does_not_import_to_gguf():
    package = ROOT / "convert" / "dear_local_convert"
    modules = sorted((package / "lora").rglob("*.py"))
    assert modules
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in modules for line, name in _imports(path)
             if name == "dear_local_convert.to_gguf" or name.startswith("dear_local_convert.to_gguf.")]
    assert not found, "\n".join(found)
