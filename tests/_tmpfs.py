"""A small tmpfs for tests of a full disk (root only, Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def mounted_tmpfs(options: str, why_skip: str) -> Iterator[Path]:
    """Mount a tmpfs with ``options`` (e.g. 'size=8m'), yield its folder, unmount;
    skip the test (saying ``why_skip``) where mounting is not possible."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        pytest.skip(f"mounting a tmpfs needs root on Linux; {why_skip}")
    mnt = Path(tempfile.mkdtemp(prefix="fcnet-tmpfs-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()
