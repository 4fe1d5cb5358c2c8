"""Every file fcnet writes goes through ``atomic_write``: a temp file beside the target
(with the mode the umask gives, not mkstemp's 0600), fsync, ``os.replace``, fsync of the
folder, so a process killed at any moment leaves the old complete file or the new one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from fcnet.errors import FcnetError

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    # Linux says it without changing it (no window for other threads)
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_error(path: str | os.PathLike, err: OSError, folder: bool = False) -> FcnetError:
    """One line naming ``path`` (a file, or a ``folder``) and what went wrong."""
    path = Path(path)
    folders = [*reversed(path.parents), *([path] if folder else [])]
    blocker = next((f for f in folders if f.exists() and not f.is_dir()), None)
    if blocker is not None:
        return FcnetError(f"cannot write {path}: {blocker} is a file, not a folder")
    return FcnetError(f"cannot write {path}: {err.strerror or err}")


def ensure_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p`` with the one-line error of a failed write."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err, folder=True) from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file name beside ``path`` for writers that open files themselves, moved onto
    ``path`` (after an fsync) when the block succeeds.  Errors raised inside the block pass
    through as they are; the writer's own become one ``FcnetError`` line naming ``path``."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = None
    try:
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "rb"):
                os.fchmod(fd, 0o666 & ~_umask())
        except OSError as err:
            raise write_error(path, err) from None
        yield Path(tmp)
        try:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise write_error(path, err) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the rename made durable (some filesystems refuse)
        fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], object]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then move it onto ``path``;
    any ``OSError`` (from ``write`` too) becomes one ``FcnetError`` line."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            write(f)
    except OSError as err:
        raise write_error(path, err) from None
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def is_temp(name: str) -> bool:
    """Whether a file name is one of the writer's temp files."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_temps(folder: str | os.PathLike, min_age_s: float = 0.0) -> list[str]:
    """Remove (and name) the temp files a killed write left in ``folder`` (not subfolders) at
    least ``min_age_s`` old (a live writer's are younger); only where no one else writes."""
    removed, now = [], time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed  # no folder yet: nothing left behind
    for e in entries:
        with contextlib.suppress(FileNotFoundError):
            if is_temp(e.name) and e.is_file(follow_symlinks=False) and (
                    min_age_s <= 0 or now - e.stat().st_mtime >= min_age_s):
                os.unlink(e.path)
                removed.append(e.name)
    return removed


def lock(path: str | os.PathLike):
    """The process-wide, re-entrant ``filelock.FileLock`` of ``path``; its holder writes
    ``pid N`` into the file, for :func:`lock_holder`."""
    from filelock import FileLock

    return FileLock(Path(path).resolve(), is_singleton=True, on_acquired=_name_holder)


def _name_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)


def lock_holder(path: str | os.PathLike) -> str:
    """'pid N' of the process that holds the lock file ``path`` (as far as it says)."""
    try:
        return Path(path).read_text().strip() or "another process"
    except (OSError, UnicodeDecodeError):
        return "another process"


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays from an .npz, never unpickling objects; a damaged file is one line."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FcnetError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise FcnetError(f"{path}: not a readable .npz file ({err})") from None


def read_json(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FcnetError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FcnetError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise FcnetError(f"{path}: cannot read ({err.strerror or err})") from None
