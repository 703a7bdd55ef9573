"""Atomic writes: a finished file or directory appears whole under its name, a failed one not at all."""

from __future__ import annotations

import pytest

from dear_local.fileio import atomic_dir, atomic_path


def test_atomic_dir_replaces_the_old_directory_only_when_complete(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    (tmp_path / "model.partial").mkdir()  # left over by an earlier crash
    (tmp_path / "model.partial" / "stale.bin").write_bytes(b"x")
    with atomic_dir(final) as tmp:
        assert tmp == tmp_path / "model.partial" and list(tmp.iterdir()) == []
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").read_text() == "old"  # untouched until the block ends
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("exc", [RuntimeError("build failed"), KeyboardInterrupt()])
def test_atomic_dir_leaves_nothing_behind_when_interrupted(tmp_path, exc):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(type(exc)):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"half")
            raise exc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]


def test_atomic_path_keeps_the_old_file_when_interrupted(tmp_path):
    final = tmp_path / "run.jsonl"
    final.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]
