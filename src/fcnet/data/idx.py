"""MNIST and Fashion-MNIST in the IDX format (raw or gzipped), magic numbers, sizes and labels validated."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fcnet.data.archive import one_line
from fcnet.data.core import Dataset, Split
from fcnet.errors import FcnetError

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # ubyte data, 3 dims / 1 dim
STEMS = (("train-images", 3), ("train-labels", 1), ("t10k-images", 3), ("t10k-labels", 1))
CLASSES = {"mnist": [str(i) for i in range(10)],
           "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                             "Sneaker", "Bag", "Ankle boot"]}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array an IDX file holds, after checking its magic number and size."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise FcnetError(f"{path}: truncated or corrupt gzip file ({one_line(err)})") from None
    got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if got != magic:
        shown = "none" if got is None else f"0x{got:08x}"
        raise FcnetError(f"{path}: wrong magic number {shown} (an IDX "
                         f"{'image' if magic == IMAGES_MAGIC else 'label'} file starts with 0x{magic:08x})")
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise FcnetError(f"{path}: truncated header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    size = int(np.prod(dims))
    if len(raw) - head != size:
        raise FcnetError(f"{path}: holds {len(raw) - head} bytes of data but its header "
                         f"announces {'x'.join(map(str, dims))} = {size}")
    return np.frombuffer(raw, np.uint8, size, head).reshape(dims)


def idx_files(name: str, root: Path) -> list[Path]:
    """The four IDX files of ``name`` in ``root`` (STEMS' order), each named like
    ``train-images-idx3-ubyte[.gz]`` (or Kaggle's ``train-images.idx3-ubyte``)."""
    if not root.is_dir():
        raise FcnetError(f"{root}: not a folder with the {name} IDX files")
    found = []
    for stem, dims in STEMS:
        paths = [root / f"{stem}{sep}idx{dims}-ubyte{gz}" for sep in "-." for gz in (".gz", "")]
        if (path := next((p for p in paths if p.is_file()), None)) is None:
            raise FcnetError(f"{root}: {stem}-idx{dims}-ubyte.gz (or the same without .gz) is missing")
        found.append(path)
    return found


def load_idx(name: str, root: Path) -> Dataset:
    found = idx_files(name, root)
    classes = CLASSES[name]
    parts = {}
    for part, img_path, lab_path in (("train", *found[:2]), ("test", *found[2:])):
        x, y = read_idx(img_path, IMAGES_MAGIC), read_idx(lab_path, LABELS_MAGIC)
        if y.shape[0] != x.shape[0]:
            raise FcnetError(f"{lab_path}: {y.shape[0]} labels for the {x.shape[0]} images "
                             f"of {img_path.name}")
        if x.shape[0] == 0:
            raise FcnetError(f"{img_path}: holds no images")
        if y.max() >= len(classes):
            raise FcnetError(f"{lab_path}: label {int(y.max())} out of range "
                             f"({name} labels are 0..{len(classes) - 1})")
        parts[part] = Split(x[..., None].copy(), y.astype(np.int64))
    return Dataset(name, parts, list(classes), str(root), meta={"format": "IDX"})
