"""Atomic file writes: a temp file in the same directory, fsync, then rename,
so a run killed at any moment leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fcnet.errors import FcnetError


def atomic_write(path: Path, write: Callable[[object], None], mode: str = "wb") -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays from an .npz, never unpickling objects."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FcnetError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise FcnetError(f"{path}: not a readable .npz file ({err})") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FcnetError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise FcnetError(f"{path}: not valid JSON ({err})") from None
