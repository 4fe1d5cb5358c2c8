"""The on-disk cache: where it lives, content checksums and the decoded-array
store (plain .npz, read without pickle), written through ``fcnet.files``."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.data.core import Dataset, Split
from fcnet.errors import FcnetError
from fcnet.files import atomic_path, file_digest  # noqa: F401  (data's modules import them here)

# bump when the decoded layout or a loader's output changes, so old entries are ignored
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$FCNET_DATA``, else ``$XDG_CACHE_HOME/fcnet``, else ``~/.cache/fcnet``."""
    env = os.environ.get("FCNET_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fcnet"


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
        files.save_npz(path, arrays)
    except FcnetError as err:  # one line: "cannot write <path>: <problem>"
        warnings.warn(f"fcnet: {err} (the data cache only saves time; going on without it)",
                      stacklevel=2)
