"""The on-disk cache: where it lives, atomic writes, content checksums and the
decoded-array store (plain .npz, read without pickle)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fcnet.data.core import Dataset, Split

# bump when the decoded layout or a loader's output changes, so old entries are ignored
CACHE_VERSION = 1
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """``$FCNET_DATA``, else ``$XDG_CACHE_HOME/fcnet``, else ``~/.cache/fcnet``."""
    env = os.environ.get("FCNET_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fcnet"


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary path beside ``dest``, moved onto it only when the block succeeds,
    so a failure or interrupt never leaves a half-written ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_fingerprint(root: Path) -> str:
    """sha256 over every file's relative path, size and mtime: cheap for 60,000
    small files, and it changes whenever a file is added, removed or rewritten."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        h.update(f"d {rel}\n".encode())
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"f {rel}/{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def source_checksum(path: Path) -> tuple[str, str]:
    """(hex digest, what it covers) of a file or directory source."""
    if path.is_dir():
        return tree_fingerprint(path), "sha256 of the file list (paths, sizes, mtimes)"
    return file_digest(path), "sha256 of the file"


def decoded_path(name: str, checksum: str) -> Path:
    key = hashlib.sha256(f"{name}|{CACHE_VERSION}|{checksum}".encode()).hexdigest()[:24]
    return cache_dir() / "decoded" / f"{name}-{key}.npz"


def load_decoded(name: str, checksum: str) -> Dataset | None:
    """The cached decode of a source, or None (a damaged entry is removed)."""
    path = decoded_path(name, checksum)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        info = json.loads(str(arrays.pop("info")))
        classes = [str(c) for c in arrays.pop("classes")]
        parts = {p: Split(arrays[f"{p}_x"], arrays[f"{p}_y"]) for p in info["parts"]}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        path.unlink(missing_ok=True)
        return None
    return Dataset(name, parts, classes, info["source"], checksum, info["checksum_kind"],
                   info["ordered"], info["meta"])


def store_decoded(ds: Dataset) -> None:
    """Write ``ds`` atomically; a cache that cannot be written only costs speed."""
    arrays = {f"{p}_{a}": getattr(s, a) for p, s in ds.parts.items() for a in ("x", "y")}
    info = {"parts": list(ds.parts), "source": ds.source, "checksum_kind": ds.checksum_kind,
            "ordered": ds.ordered, "meta": ds.meta}
    arrays["info"] = np.array(json.dumps(info))
    arrays["classes"] = np.array(ds.classes, dtype=str)
    path = decoded_path(ds.name, ds.checksum)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as err:
        warnings.warn(f"fcnet: cannot write the data cache {path}: {err}", stacklevel=2)
