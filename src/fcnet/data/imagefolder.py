"""Image-folder trees, ``split/class/image`` (split: train, test, val / valid / validation), from
a directory or an archive; non-images (by suffix), hidden files and ``__MACOSX`` are ignored.
Many images decode in forked workers: Pillow holds the GIL for much of it, threads do not help."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcnet.data.archive import is_archive, iter_members, one_line
from fcnet.data.core import Dataset, Split
from fcnet.errors import FcnetError

SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")
CHUNK = 1000


def progress_bar(progress: bool, **kw):
    """A tqdm on stderr; with ``progress`` tqdm still turns it off where stderr is no terminal."""
    from tqdm import tqdm

    return tqdm(disable=None if progress else True, file=sys.stderr, **kw)


def _ignored(rel: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/"))


@dataclass
class Tree:
    """A source's image files (relative names), folders, decoded images, raw files kept (CIFAR's pickles)."""

    source: Path
    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    kept: dict[str, bytes] = field(default_factory=dict)
    images: np.ndarray | None = None


def decode_one(item: bytes | str) -> np.ndarray | str:
    """(H, W, 1) for greyscale, (H, W, 3) otherwise; a message string if undecodable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as im:
            if im.mode in ("1", "L", "I", "I;16", "F"):  # greyscale
                return np.asarray(im.convert("L"))[..., None]
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Exception as err:  # Pillow raises many types for broken files
        return f"cannot decode the image ({one_line(err)})"


def decode_chunk(items: list[bytes | str]) -> np.ndarray | list[np.ndarray | str]:
    """One (n, H, W, C) array when all decode to one shape (cheap to send back), else each result."""
    out = [decode_one(i) for i in items]
    if all(isinstance(a, np.ndarray) for a in out) and len({a.shape for a in out}) == 1:
        return np.stack(out)
    return out


def _pool() -> Executor | None:
    # fork: workers start at once and import nothing; only on Linux, where it is safe
    n = int(os.environ.get("FCNET_DATA_WORKERS", min(os.cpu_count() or 1, 8)))
    if n < 2 or not sys.platform.startswith("linux"):
        return None
    return ProcessPoolExecutor(n, mp_context=mp.get_context("fork"))


def _decoded(chunks: list[Future | list], names: list[str], progress: bool, desc: str) -> np.ndarray:
    """The chunks as one (N, H, W, C) uint8 array; an undecodable image or mixed sizes name the file."""
    runs: list[np.ndarray] = []  # (n, H, W, C) runs of images of one shape
    with progress_bar(progress, total=len(names), desc=desc, unit="img", leave=False) as bar:
        for r in chunks:
            out = r.result() if isinstance(r, Future) else decode_chunk(r)
            for a in [out] if isinstance(out, np.ndarray) else out:  # one run, or each image
                if isinstance(a, str):
                    raise FcnetError(f"{names[sum(map(len, runs))]}: {a}")
                runs.append(a if a.ndim == 4 else a[None])
            bar.update(len(out))
    h, w = runs[0].shape[1:3]
    out = np.empty((len(names), h, w, max(a.shape[3] for a in runs)), np.uint8)
    for i, a in zip(np.cumsum([0, *map(len, runs)]), runs):
        if a.shape[1:3] != (h, w):
            raise FcnetError(f"{names[i]}: image is {a.shape[2]}x{a.shape[1]} but "
                             f"{names[0]} is {w}x{h}; images of mixed sizes are refused")
        out[i: i + len(a)] = a  # a greyscale (.., 1) run broadcasts when others are RGB
    return out


def _walk(folder: Path) -> Iterator[tuple[str, str | None]]:
    """``iter_members`` of a folder, in sorted order, with file paths instead of bytes."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel = os.path.relpath(dirpath, folder).replace(os.sep, "/")
        rel = "" if rel == "." else rel + "/"
        yield from ((rel + d + "/", None) for d in dirnames)
        yield from ((rel + f, os.path.join(dirpath, f)) for f in sorted(filenames))


def read_tree(source: Path, progress: bool, keep: Callable[[str], bool] | None = None) -> Tree:
    """Read a directory or archive, decoding images in chunks as it goes (``tree.images`` rows
    follow ``tree.files``); members with ``keep(name)`` are returned raw in ``tree.kept``."""
    tree, archive = Tree(source), is_archive(source)
    names: list[str] = []  # the images' display names, for messages
    pending: list[bytes | str] = []  # the next chunk's bytes or paths
    chunks: list[Future | list] = []  # decoding in a worker, or left to _decoded
    pool: Executor | None = None

    def submit() -> None:
        nonlocal pending
        chunks.append(pending if pool is None else pool.submit(decode_chunk, pending))
        pending = []

    try:
        with progress_bar(progress and archive, total=source.stat().st_size, unit="B",
                          desc=f"read {source.name}", unit_scale=True, leave=False) as bar:
            for name, data in iter_members(source, bar) if archive else _walk(source):
                if data is None:
                    if not _ignored(name):
                        tree.dirs.append(name.rstrip("/"))
                elif keep is not None and keep(name):
                    tree.kept[name] = data if archive else Path(data).read_bytes()
                elif name.lower().endswith(IMAGE_SUFFIXES) and not _ignored(name):
                    tree.files.append(name)
                    names.append(f"{source}: {name}" if archive else data)
                    pending.append(data)
                    if len(pending) >= CHUNK:
                        pool = pool if chunks else _pool()  # more than one chunk: worth a pool
                        submit()
        if pending:
            submit()
        if tree.files:
            tree.images = _decoded(chunks, names, progress, f"decode {source.name}")
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return tree


def layout(tree: Tree, classes: list[str] | None = None) -> tuple[list[str], dict[str, Split]]:
    """Class names and the predefined splits of an image tree.  ``classes`` fixes the label
    order (CIFAR-10's, folder names matched case-insensitively; any other or missing class
    folder is an error); else they are the sorted folder names, as torchvision numbers them."""
    src = tree.source
    if not tree.files:
        raise FcnetError(f"{src}: no images found (expected train/<class>/<image>.png|jpg...)")
    # one wrapping folder (e.g. cifar10/train/...) is looked through
    top, *others = {p.split("/")[0] for p in tree.files + tree.dirs}
    prefix = top + "/" if not others and top.lower() not in SPLIT_NAMES else ""
    groups: dict[str, dict[str, list[int]]] = {}  # split -> class folder -> rows of tree.files

    def group(split: str, what: str) -> dict[str, list[int]]:
        if (s := SPLIT_NAMES.get(split.lower())) is None:
            raise FcnetError(f"{src}: {what}: {split!r} is not a split folder "
                             "(expected train/, test/ or val/ holding <class>/<image>)")
        return groups.setdefault(s, {})

    for d in tree.dirs:
        if d.startswith(prefix) and d != prefix.rstrip("/"):
            parts = d[len(prefix):].split("/")
            g = group(parts[0], d + "/")
            if len(parts) == 2:
                g.setdefault(parts[1], [])
    for i, f in enumerate(tree.files):
        parts = f[len(prefix):].split("/")
        if len(parts) < 3:
            raise FcnetError(f"{src}: {f}: image is not inside a split/class/ folder "
                             "(expected train/<class>/<image>)")
        group(parts[0], f).setdefault(parts[1], []).append(i)

    if "train" not in groups:
        raise FcnetError(f"{src}: no train/ folder (expected train/<class>/<image>)")
    fixed = classes is not None
    classes = classes if fixed else sorted({c for g in groups.values() for c in g})
    fold = str.lower if fixed else str
    label = {fold(c): i for i, c in enumerate(classes)}  # folder name -> label
    parts_out: dict[str, Split] = {}
    for s, g in sorted(groups.items()):
        if not any(g.values()):
            raise FcnetError(f"{src}: split folder {prefix}{s}/ is empty")
        for c, idx in sorted(g.items()):
            if fold(c) not in label:
                raise FcnetError(f"{src}: unknown class folder {prefix}{s}/{c}/ "
                                 f"(expected {', '.join(classes)})")
            if not idx:
                raise FcnetError(f"{src}: class folder {prefix}{s}/{c}/ is empty")
        if fixed and (missing := [c for c in classes if fold(c) not in map(fold, g)]):
            raise FcnetError(f"{src}: {prefix}{s}/ lacks class folder(s) {', '.join(missing)}")
        # rows sorted by (label, file name), so the order never depends on the archive's
        y, _, order = zip(*sorted((label[fold(c)], tree.files[i], i) for c, idx in g.items() for i in idx))
        parts_out[s] = Split(tree.images[np.array(order, np.intp)], np.array(y, np.int64))
    # a class with test or val images but no training images could never be predicted
    trained = set(parts_out["train"].y.tolist())
    for s, part in sorted(parts_out.items()):
        if lacking := [classes[c] for c in sorted(set(part.y.tolist()) - trained)]:
            raise FcnetError(f"{src}: class {', '.join(map(repr, lacking))} has {s} images "
                             f"but no training images (add them to {prefix}train/ or remove the class)")
    return classes, parts_out


def load_imagefolder(source: Path, progress: bool) -> Dataset:
    if not source.is_dir() and not is_archive(source):
        raise FcnetError(f"{source}: not a folder or a .tar, .tar.gz or .zip archive")
    classes, parts = layout(read_tree(source, progress))
    return Dataset("imagefolder", parts, classes, str(source), meta={"format": "image folder"})
