"""Builders of small synthetic datasets in every format fcnet.data reads
(official CIFAR-10 pickles, image-folder trees and archives, IDX files)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_batches(root: Path, per_batch: int = 4, n_test: int = 6, side: int = 4,
                  bytes_keys: bool = False, protocol: int = 2, seed: int = 0) -> dict:
    """The official layout: data_batch_1..5, test_batch, batches.meta in ``root``.
    Returns the raw rows and labels written, train batches concatenated."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    out = {"train_rows": [], "train_labels": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        rows = rng.randint(0, 256, (n, 3 * side * side)).astype(np.uint8)
        labels = [int(v) for v in rng.randint(0, 10, n)]
        d = {k("batch_label"): k(name), k("labels"): labels, k("data"): rows,
             k("filenames"): [k(f"{i}.png") for i in range(n)]}
        (root / name).write_bytes(pickle.dumps(d, protocol=protocol))
        if name == "test_batch":
            out["test_rows"], out["test_labels"] = rows, labels
        else:
            out["train_rows"].append(rows)
            out["train_labels"] += labels
    meta = {k("label_names"): [k(c) for c in CIFAR], k("num_cases_per_batch"): per_batch}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    out["train_rows"] = np.concatenate(out["train_rows"])
    return out


def rows_to_images(rows: np.ndarray) -> np.ndarray:
    """The exercise's reshape: (N, 3*S*S) channel planes -> (N, S, S, 3)."""
    side = int(round((rows.shape[1] / 3) ** 0.5))
    return rows.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format=fmt)
    return buf.getvalue()


def image_tree(root: Path, layout: dict[str, dict[str, int]], size: int = 4, channels: int = 3,
               fmt: str = "png", seed: int = 0) -> dict[tuple[str, str], list[np.ndarray]]:
    """Write ``root/split/class/NNN.fmt`` images; {split: {class: count}}.
    Returns the pixel arrays written per (split, class), in file-name order."""
    rng = np.random.RandomState(seed)
    written = {}
    for split, classes in layout.items():
        for cls, count in classes.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            arrs = []
            for i in range(count):
                a = rng.randint(0, 256, (size, size, channels)).astype(np.uint8)
                (d / f"{i:03d}.{fmt}").write_bytes(png_bytes(a, "JPEG" if fmt == "jpg" else "PNG"))
                arrs.append(a)
            written[(split, cls)] = arrs
    return written


def cifar_tree(root: Path, n_train: int = 3, n_test: int = 2, **kw):
    return image_tree(root, {"train": {c: n_train for c in CIFAR},
                             "test": {c: n_test for c in CIFAR}}, **kw)


def pack(src: Path, dest: Path, arcroot: str = "") -> Path:
    """``src``'s contents into a .tar, .tar.gz or .zip at ``dest`` (names under arcroot)."""
    files = sorted(p for p in src.rglob("*"))
    if dest.name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w") as zf:
            for p in files:
                zf.write(p, arcroot + p.relative_to(src).as_posix())
    else:
        mode = "w:gz" if dest.name.endswith("gz") else "w"
        with tarfile.open(dest, mode) as tf:
            for p in files:
                tf.add(p, arcroot + p.relative_to(src).as_posix(), recursive=False)
    return dest


def tar_with(dest: Path, members: list[tuple[str, bytes | None, str]]) -> Path:
    """A tar.gz of hand-made members: (name, data, kind) with kind file | dir | sym | link."""
    with tarfile.open(dest, "w:gz") as tf:
        for name, data, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind in ("sym", "link"):
                ti.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                ti.linkname = data.decode()
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return dest


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x0800 | arr.ndim) if magic is None else magic
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def idx_set(root: Path, n_train: int = 12, n_test: int = 5, side: int = 6, gz: bool = True,
            seed: int = 0, sep: str = "-") -> dict:
    """The four standard MNIST files; returns what was written."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.randint(0, 256, (n, side, side)).astype(np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, dims in (("images", x, 3), ("labels", y, 1)):
            data = idx_bytes(arr)
            name = f"{stem}-{kind}{sep}idx{dims}-ubyte" + (".gz" if gz else "")
            (root / name).write_bytes(gzip.compress(data) if gz else data)
        out[stem] = (x, y)
    return out


def cache_leftovers(cache: Path) -> list[str]:
    """Files in the cache: decoded entries and any temporary file."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) \
        if cache.exists() else []
