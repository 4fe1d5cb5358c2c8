"""Image-folder trees, ``split/class/image``, from a directory or an archive.

Splits are folders named train (required), test and val (or valid /
validation); classes are the folders below them.  Images are decoded with
Pillow; files that are not images (by suffix) are ignored, hidden files and
macOS ``__MACOSX`` folders too."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fcnet.data.archive import is_archive, iter_members
from fcnet.data.core import Dataset, Split
from fcnet.data.decode import Decoder, is_image_name
from fcnet.errors import FcnetError

SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val",
               "validation": "val"}


def _ignored(rel: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/"))


class Tree:
    """Image files (relative names) and folders of a source, decoded images in
    reading order, plus any raw files a caller asked to keep (CIFAR's pickles)."""

    def __init__(self, source: Path):
        self.source = source
        self.files: list[str] = []
        self.dirs: list[str] = []
        self.kept: dict[str, bytes] = {}
        self.images: np.ndarray | None = None


def read_tree(source: Path, progress: bool, keep: Callable[[str], bool] | None = None) -> Tree:
    """Read a directory or archive.  Members for which ``keep(name)`` holds are
    returned raw in ``tree.kept`` instead of being decoded.

    For archives, decoding runs while the archive is read; ``tree.images`` rows
    follow ``tree.files``."""
    from tqdm import tqdm

    tree = Tree(source)
    dec = Decoder(progress=progress, desc=f"decode {source.name}")
    try:
        if is_archive(source):
            with tqdm(total=source.stat().st_size, desc=f"read {source.name}", unit="B",
                      unit_scale=True, leave=False, disable=None if progress else True,
                      file=sys.stderr) as bar:
                for name, data in iter_members(source, bar):
                    if data is None:
                        if not _ignored(name):
                            tree.dirs.append(name.rstrip("/"))
                    elif keep is not None and keep(name):
                        tree.kept[name] = data
                    elif is_image_name(name) and not _ignored(name):
                        tree.files.append(name)
                        dec.add(f"{source}: {name}", data)
        else:
            for dirpath, dirnames, filenames in os.walk(source):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, source).replace(os.sep, "/")
                rel_dir = "" if rel_dir == "." else rel_dir + "/"
                tree.dirs.extend(rel_dir + d for d in dirnames if not _ignored(rel_dir + d))
                for f in sorted(filenames):
                    rel = rel_dir + f
                    if keep is not None and keep(rel):
                        tree.kept[rel] = (Path(dirpath) / f).read_bytes()
                    elif is_image_name(f) and not _ignored(rel):
                        tree.files.append(rel)
                        dec.add(os.path.join(dirpath, f), os.path.join(dirpath, f))
        if tree.files:
            tree.images = dec.finish()
    finally:
        dec.close()
    return tree


def layout(tree: Tree, classes: list[str] | None = None) -> tuple[list[str], dict[str, Split]]:
    """Class names and the predefined splits of an image tree.

    ``classes`` fixes the label order (CIFAR-10's official one): any other class
    folder is an error, and so is a missing one.  Otherwise classes are the
    sorted folder names, as torchvision's ImageFolder numbers them."""
    src = tree.source
    if not tree.files:
        raise FcnetError(f"{src}: no images found (expected train/<class>/<image>.png|jpg...)")
    # one wrapping folder (e.g. cifar10/train/...) is looked through
    tops = {p.split("/")[0] for p in tree.files + tree.dirs}
    prefix = ""
    if len(tops) == 1 and next(iter(tops)).lower() not in SPLIT_NAMES:
        prefix = next(iter(tops)) + "/"
    groups: dict[str, dict[str, list[int]]] = {}

    def split_of(first: str, what: str) -> str:
        s = SPLIT_NAMES.get(first.lower())
        if s is None:
            raise FcnetError(f"{src}: {what}: {first!r} is not a split folder "
                             "(expected train/, test/ or val/ holding <class>/<image>)")
        return s

    for d in tree.dirs:
        if not d.startswith(prefix) or d == prefix.rstrip("/"):
            continue
        parts = d[len(prefix):].split("/")
        s = split_of(parts[0], d + "/")
        g = groups.setdefault(s, {})
        if len(parts) == 2:
            g.setdefault(parts[1], [])
    for i, f in enumerate(tree.files):
        parts = f[len(prefix):].split("/")
        if len(parts) < 3:
            raise FcnetError(f"{src}: {f}: image is not inside a split/class/ folder "
                             "(expected train/<class>/<image>)")
        groups.setdefault(split_of(parts[0], f), {}).setdefault(parts[1], []).append(i)

    if "train" not in groups:
        raise FcnetError(f"{src}: no train/ folder (expected train/<class>/<image>)")
    fixed = classes is not None
    if classes is None:
        classes = sorted({c for g in groups.values() for c in g})
    # folder name -> official class name (case-insensitive when the order is fixed)
    canon = {c.lower() if fixed else c: c for c in classes}
    label = {c: i for i, c in enumerate(classes)}
    parts_out: dict[str, Split] = {}
    for s, g in sorted(groups.items()):
        if not any(g.values()):
            raise FcnetError(f"{src}: split folder {prefix}{s}/ is empty")
        folder_label: dict[str, int] = {}
        for c, idx in sorted(g.items()):
            official = canon.get(c.lower() if fixed else c)
            if official is None:
                raise FcnetError(f"{src}: unknown class folder {prefix}{s}/{c}/ "
                                 f"(expected {', '.join(classes)})")
            if not idx:
                raise FcnetError(f"{src}: class folder {prefix}{s}/{c}/ is empty")
            folder_label[c] = label[official]
        missing = [c for c in classes if label[c] not in folder_label.values()]
        if fixed and missing:
            raise FcnetError(f"{src}: {prefix}{s}/ lacks class folder(s) {', '.join(missing)}")
        # rows sorted by (label, file name), so the order never depends on the archive's
        rows = sorted((folder_label[c], tree.files[i], i) for c, idx in g.items() for i in idx)
        order = np.fromiter((r[2] for r in rows), np.intp, len(rows))
        y = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        parts_out[s] = Split(tree.images[order], y)
    # a class with test or val images but no training images could never be predicted
    trained = set(parts_out["train"].y.tolist())
    for s, part in sorted(parts_out.items()):
        lacking = [classes[c] for c in sorted(set(part.y.tolist()) - trained)]
        if lacking:
            raise FcnetError(f"{src}: class {', '.join(map(repr, lacking))} has {s} images "
                             f"but no training images (add them to {prefix}train/ or remove the class)")
    return classes, parts_out


def load_imagefolder(source: Path, progress: bool, name: str = "imagefolder",
                     classes: list[str] | None = None) -> Dataset:
    if not source.exists():
        raise FcnetError(f"{source}: no such file or directory")
    if not source.is_dir() and not is_archive(source):
        raise FcnetError(f"{source}: not a folder or a .tar, .tar.gz or .zip archive")
    tree = read_tree(source, progress)
    cls, parts = layout(tree, classes)
    return Dataset(name, parts, cls, str(source), meta={"format": "image folder"})
