"""Skip marks for tests that need an optional dependency, decided without importing it.

``pytest.importorskip("torch")`` at the top of a test module imports torch (and transformers, peft
...) while the module is collected, seconds per xdist worker even when every test in it is
deselected. ``pytestmark = needs("torch", "transformers")`` only looks the modules up; the tests
import them inside the fixtures and functions that run.
"""

from __future__ import annotations

import importlib.util

import pytest

# The extra that installs each module (pyproject.toml's [project.optional-dependencies]; "" for a
# dependency of dear-local itself); a module not listed comes with the dev extra.
EXTRAS = {
    "llama_cpp": "",
    "torch": "convert",
    "transformers": "convert",
    "gguf": "convert",
    "safetensors": "convert",
    "accelerate": "convert",
    "peft": "convert",
    "pytrec_eval": "check",
    "fastapi": "serve",
}


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package that is missing, or a module without a spec
        return True


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip unless every one of ``modules`` is installed; the reason names the missing ones and the extra."""
    missing = [m for m in modules if _missing(m)]
    if not missing:
        return pytest.mark.skipif(False, reason=f"needs {', '.join(modules)}")
    extras = sorted({EXTRAS.get(m, "dev") for m in missing})
    install = " or ".join(f'pip install -e ".[{extra}]"' if extra else "pip install -e ." for extra in extras)
    return pytest.mark.skipif(True, reason=f"needs {', '.join(missing)}, not installed ({install})")
