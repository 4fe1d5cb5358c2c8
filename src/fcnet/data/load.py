"""One entry point for every source (resolved, decoded through the cache, split), and the built-in ones."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from fcnet.data import cifar10
from fcnet.data.archive import one_line
from fcnet.data.cache import cache_dir, load_decoded, source_checksum, store_decoded
from fcnet.data.core import Dataset, Split, SplitData
from fcnet.data.idx import idx_files, load_idx
from fcnet.data.imagefolder import load_imagefolder
from fcnet.data.preprocess import Preprocessor
from fcnet.data.splits import make_splits
from fcnet.errors import FcnetError

DATASETS: dict[str, str] = {
    "cifar10": "CIFAR-10: official python batches (folder or .tar.gz) or an image-folder tree of its "
               "classes; downloaded to the cache when no --path is given",
    "imagefolder": "any split/class/image tree, as a folder or a .tar, .tar.gz or .zip archive",
    "mnist": "MNIST in the IDX format (the four standard files, gzipped or raw)",
    "fashion-mnist": "Fashion-MNIST in the IDX format (the four standard files)",
    "digits": "scikit-learn's bundled 8x8 digits (1,797 images, offline)",
    "toy": "the exercise's toy data: 5 samples of 4 features, 3 classes",
}


def load_digits() -> Dataset:
    """1,797 8x8 greyscale digits, values 0..16 scaled to uint8 0..255 (N, 8, 8, 1)."""
    if (data := _digits_csv()) is None:  # another layout of scikit-learn: its loader
        from sklearn.datasets import load_digits as sk_digits

        data = np.column_stack(sk_digits(return_X_y=True))
    x = (data[:, :-1].reshape(-1, 8, 8) * 255 / 16).astype(np.uint8)[..., None]
    return Dataset("digits", {"train": Split(x, data[:, -1].astype(np.int64))}, [str(c) for c in range(10)],
                   "sklearn.datasets.load_digits", meta={"format": "scikit-learn bundled"})


def _digits_csv() -> np.ndarray | None:
    """sklearn's digits.csv.gz as (1797, 65) (pixels 0..16, label), without importing it (~1 s); or None."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data if data.shape == (1797, 65) else None
    return None


def load_toy() -> Dataset:
    """study.md's toy data: X = 10 * randn(5, 4) from RandomState(1), y = [0, 1, 2, 2, 1]."""
    x = 10 * np.random.RandomState(1).randn(5, 4)
    return Dataset("toy", {"train": Split(x, np.array([0, 1, 2, 2, 1], np.int64))}, ["0", "1", "2"],
                   "builtin toy data", meta={"format": "builtin"})


def _cached(name: str, path: Path, load, cache: bool, expected: str, members=None) -> Dataset:
    """``load()`` via the decoded cache, keyed by the source's checksum (of ``members()`` only, if given)."""
    try:
        checksum, kind = source_checksum(path, expected, members)
        if cache and (ds := load_decoded(name, checksum)) is not None:
            ds.meta["cache"] = "hit"
            ds.source = str(path)  # the entry may have been written from another path
            return ds
        ds = load()
    except OSError as err:  # unreadable files, a folder that vanished, ...
        raise FcnetError(f"{err.filename or path}: {err.strerror or one_line(err)}") from None
    ds.checksum, ds.checksum_kind = checksum, kind
    if cache:
        store_decoded(ds)
    ds.meta["cache"] = "miss" if cache else "off"
    return ds


def load_dataset(dataset: str, path: str | Path | None = None, progress: bool = True,
                 cache: bool = True) -> Dataset:
    """The predefined parts of a dataset, as uint8 images (or features) and int64 labels."""
    if dataset not in DATASETS:
        raise FcnetError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    t0 = time.perf_counter()
    p = Path(os.path.abspath(Path(path).expanduser())) if path is not None else None
    if dataset in ("digits", "toy"):
        if p is not None:
            raise FcnetError(f"{dataset}: is built in and takes no --path")
        ds = load_digits() if dataset == "digits" else load_toy()
        arrays = b"".join(np.ascontiguousarray(a).tobytes() for s in ds.parts.values() for a in (s.x, s.y))
        ds.checksum, ds.checksum_kind = hashlib.sha256(arrays).hexdigest(), "sha256 of the arrays"
    elif dataset == "cifar10":
        p, verify = (p, False) if p is not None else cifar10.default_source(progress)
        ds = _cached("cifar10", p, lambda: cifar10.load_cifar10(p, progress, verify), cache,
                     "the CIFAR-10 python batches (data_batch_1 ... test_batch) or a split/class/image tree")
    elif dataset == "imagefolder":
        if p is None:
            raise FcnetError("imagefolder: needs --path (a split/class/image folder or archive)")
        ds = _cached("imagefolder", p, lambda: load_imagefolder(p, progress), cache,
                     "a split/class/image tree")
    else:
        root = p if p is not None else cache_dir() / dataset
        if p is None and not root.is_dir():
            raise FcnetError(f"{root}: not found; put the four {dataset} IDX files there "
                             "(train-images-idx3-ubyte.gz, ...) or pass --path")
        ds = _cached(dataset, root, lambda: load_idx(dataset, root), cache,
                     f"the four {dataset} IDX files", lambda: idx_files(dataset, root))
    ds.meta["load_s"] = round(time.perf_counter() - t0, 3)
    return ds


def load_splits(dataset: str, path: str | None = None, val_size: int | None = None,
                test_size: int | None = None, seed: int = 0, progress: bool = True,
                train_size: int | None = None, cache: bool = True) -> SplitData:
    """Load ``dataset`` and split it reproducibly.  None sizes: val the dataset's default (cifar10
    1,000, else 10% of the training part), test the predefined test split (digits: a seeded 20%;
    toy: train = val = test = its 5 samples), train all that is left; ``meta["split"]`` records them."""
    ds = load_dataset(dataset, path, progress=progress, cache=cache)
    return make_splits(ds, val_size, test_size, seed, train_size)


def get_CIFAR10_data(num_training: int = 49000, num_validation: int = 1000,
                     num_test: int = 1000, path: str | None = None, progress: bool = False):
    """The course's ``get_CIFAR10_data``: X_train, y_train, X_val, y_val, X_test, y_test as float64
    rows (N, 3072) less the mean training image; the exercise's rows on the official batches (the
    first num_training, the next num_validation, the first num_test), else a seed-0 stratified draw."""
    data = load_splits("cifar10", path, num_validation, num_test, 0, progress, num_training)
    prep = Preprocessor("mean").fit(data.train.x)
    return tuple(a for s in (data.train, data.val, data.test) for a in (prep.transform(s.x), np.asarray(s.y)))
