"""A small private disk for full-disk tests: a tmpfs mounted in a mount namespace of its own.

``unshare -rm`` gives an unprivileged process its own mount namespace, so a test can mount a
tmpfs of a few KiB and fill it without touching the machine's disks. Where that is not allowed
(some containers), the tests that need it are skipped (``needs_tmpfs``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def can_mount_tmpfs() -> bool:
    """Whether ``unshare -rm`` can mount a tmpfs here."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not can_mount_tmpfs(), reason="needs unprivileged mounts (unshare -rm) for a small tmpfs")


def in_small_disk(disk: Path, size_kib: int, script: str, env: dict | None = None,
                  timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the shell ``script`` with a private ``size_kib`` KiB tmpfs mounted at ``disk``."""
    disk.mkdir(exist_ok=True)
    full = f"mount -t tmpfs -o size={size_kib}k tmpfs {disk} && {script}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", full], capture_output=True, text=True, env=env,
                          timeout=timeout)
