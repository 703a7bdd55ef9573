"""The two test tiers have one rule: a test that needs a real model is slow, and nothing else decides.

``tests/conftest.py`` marks a test ``slow`` when its fixtures (directly or through other fixtures)
include one of ``REAL_MODEL_FIXTURES``; no test module marks itself, and the file names say what a
module tests, not its tier.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _slow_marks(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "slow"
            and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"]


def test_no_test_module_marks_its_own_tier():
    found = [f"{p.name}:{line}" for p in sorted(TESTS.glob("*.py")) if p.name != "conftest.py" for line in _slow_marks(p)]
    assert not found, "mark slow tests by the real-model fixture they use (conftest.REAL_MODEL_FIXTURES), not by hand: " + ", ".join(found)
    named = [p.name for p in TESTS.glob("test_*.py") if p.stem.endswith(("_fast", "_slow"))]
    assert not named, f"name test modules for what they test, not their tier: {named}"


def test_the_real_model_fixtures_exist(request):
    from conftest import REAL_MODEL_FIXTURES

    manager = request.session._fixturemanager
    missing = [name for name in sorted(REAL_MODEL_FIXTURES) if not manager.getfixturedefs(name, request.node)]
    assert not missing, f"REAL_MODEL_FIXTURES names fixtures that do not exist: {missing}"
