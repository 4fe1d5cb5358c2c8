"""The on-disk cache: where it lives, content checksums, the decoded-array and fitted-state .npz stores."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fcnet import files
from fcnet.data.core import Dataset, Split
from fcnet.errors import FcnetError

# bump when the decoded layout or a loader's output changes, so old entries are ignored
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$FCNET_DATA``, else ``$XDG_CACHE_HOME/fcnet``, else ``~/.cache/fcnet``."""
    if env := os.environ.get("FCNET_DATA"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcnet"


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def tree_fingerprint(root: Path, expected: str) -> str:
    """sha256 over every file's relative path, size and mtime: cheap for 60,000 small files, and
    changed by any file added, removed or rewritten.  Only folders and regular files may be in it."""
    h = hashlib.sha256()

    def bad(rel: str, problem: str) -> FcnetError:
        return FcnetError(f"{root}: {rel} {problem}; expected {expected} in this folder")

    def walk_error(err: OSError) -> None:
        raise bad(os.path.relpath(err.filename or root, root), f"cannot be read ({err.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        h.update(f"d {rel}\n".encode())
        for name in sorted(filenames):
            where = os.path.normpath(os.path.join(rel, name))
            try:
                st = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:
                raise bad(where, "vanished while the folder was read (or is a broken link)") from None
            except OSError as err:
                raise bad(where, f"cannot be read ({err.strerror})") from None
            if not stat.S_ISREG(st.st_mode):
                raise bad(where, f"is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a file')}")
            h.update(f"f {rel}/{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def source_checksum(path: Path, expected: str,
                    members: Callable[[], list[Path]] | None = None) -> tuple[str, str]:
    """(hex digest, what it covers) of a file or folder source, or of only ``members()`` (the files read).
    A FIFO, socket or device (reading could hang) is refused by its stat, before anything opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FcnetError(f"{path}: no such file or directory") from None
    except OSError as err:
        raise FcnetError(f"{path}: cannot read ({err.strerror or err})") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise FcnetError(f"{path}: is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a "
                         "file or folder; give the dataset's file or folder")
    if members is not None:
        listing = "".join(f"{m.name} {files.file_digest(m)}\n" for m in members())
        return hashlib.sha256(listing.encode()).hexdigest(), "sha256 of the files read"
    if stat.S_ISDIR(mode):
        return tree_fingerprint(path, expected), "sha256 of the file list (paths, sizes, mtimes)"
    return files.file_digest(path), "sha256 of the file"


def _read(path: Path, parse: Callable[[dict[str, np.ndarray]], Any] = dict) -> Any:
    """A cache entry, ``parse`` of its arrays (never unpickled), or None; a damaged entry is removed."""
    if path.is_file():
        try:
            return parse(files.load_npz(path))
        except (FcnetError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    return None


def _store(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a cache entry atomically; a cache that cannot be written only costs time."""
    try:
        files.save_npz(path, arrays)
    except FcnetError as err:  # one line: "cannot write <path>: <problem>"
        warnings.warn(f"fcnet: {err} (the data cache only saves time; going on without it)", stacklevel=3)


def decoded_path(name: str, checksum: str) -> Path:
    key = hashlib.sha256(f"{name}|{CACHE_VERSION}|{checksum}".encode()).hexdigest()[:24]
    return cache_dir() / "decoded" / f"{name}-{key}.npz"


def load_decoded(name: str, checksum: str) -> Dataset | None:
    """The cached decode of a source, keyed by its content checksum, or None."""

    def dataset(arrays: dict[str, np.ndarray]) -> Dataset:
        info = json.loads(str(arrays.pop("info")))
        parts = {p: Split(arrays[f"{p}_x"], arrays[f"{p}_y"]) for p in info["parts"]}
        return Dataset(name, parts, [str(c) for c in arrays["classes"]], info["source"],
                       checksum, info["checksum_kind"], info["ordered"], info["meta"])

    return _read(decoded_path(name, checksum), dataset)


def store_decoded(ds: Dataset) -> None:
    arrays = {f"{p}_{a}": getattr(s, a) for p, s in ds.parts.items() for a in ("x", "y")}
    info = {"parts": list(ds.parts), "source": ds.source, "checksum_kind": ds.checksum_kind,
            "ordered": ds.ordered, "meta": ds.meta}
    arrays["info"] = np.array(json.dumps(info))
    arrays["classes"] = np.array(ds.classes, dtype=str)
    _store(decoded_path(ds.name, ds.checksum), arrays)


def fitted(key: str, fit: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of a slow fit (a PCA's ``Preprocessor.state()``, ~15 s on CIFAR-10) for ``key``
    (data checksum, split, fit settings): cached, else ``fit()`` once per machine, others waiting."""
    digest = hashlib.sha256(f"{CACHE_VERSION}|{key}".encode()).hexdigest()[:24]
    path = cache_dir() / "fitted" / f"{digest}.npz"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        held = files.lock(path.with_suffix(".lock"))
        held.acquire()
    except OSError:
        return fit()
    try:
        if (state := _read(path)) is None:
            state = fit()
            _store(path, state)
        return state
    finally:
        held.release()
