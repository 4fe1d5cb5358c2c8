"""Reproducible train / val / test splits, recorded by sizes, seed and a hash of the indices.  Official
CIFAR-10 batches keep the exercise's positional split (train = the first 49,000, val = the next 1,000, test =
the first test rows); other sources get a seeded stratified shuffle (every class its share of each split)."""

from __future__ import annotations

import hashlib

import numpy as np

from fcnet.data.core import Dataset, Split, SplitData
from fcnet.errors import FcnetError

DEFAULT_VAL = {"cifar10": 1000}
VAL_FRACTION = 0.1  # of the training part, for datasets without a default
TEST_FRACTION = 0.2  # carved from datasets that ship no test split


def stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``n`` of ``len(y)`` positions keeping each class's share (largest remainders, ties to the
    lower class) -> (picked, rest), each shuffled; unlike sklearn's, ``n`` may be < the class count."""
    classes, counts = np.unique(y, return_counts=True)
    share = counts * (n / len(y))
    take = np.floor(share).astype(np.int64)
    extra = n - int(take.sum())
    order = np.lexsort((classes, -(share - take)))  # biggest remainder first
    take[order[take[order] < counts[order]][:extra]] += 1
    perms = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    picked = np.concatenate([p[:t] for p, t in zip(perms, take, strict=True)])
    rest = np.concatenate([p[t:] for p, t in zip(perms, take, strict=True)])
    return rng.permutation(picked), rng.permutation(rest)


def _check_size(name: str, k: int, avail: int, what: str, where: str) -> None:
    if k < 1:
        raise FcnetError(f"{where}: {name} must be at least 1, got {k}")
    if k > avail:
        raise FcnetError(f"{where}: {name} {k} is larger than the {avail} {what}")


def _subset(ds: Dataset, part: str, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """All of a predefined part (in order), or ``size`` rows of it."""
    y = ds.parts[part].y
    if size is None or size == len(y):
        return np.arange(len(y))
    _check_size(f"{part}_size", size, len(y), f"images of the {part} split", ds.source)
    return np.arange(size) if ds.ordered else stratified(y, size, rng)[0]


def split_indices(ds: Dataset, val_size: int | None = None, test_size: int | None = None,
                  seed: int = 0, train_size: int | None = None) -> dict[str, tuple[str, np.ndarray]]:
    """``{"train"|"val"|"test": (part name, row indices into that part)}``."""
    where = ds.source
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise FcnetError(f"{where}: seed must be a whole number >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    y = ds.parts["train"].y
    if ds.name == "toy":
        if any(v not in (None, len(y)) for v in (val_size, test_size, train_size)):
            raise FcnetError("toy: its 5 samples are the train, val and test split at once; "
                             "val_size / test_size do not apply")
        return dict.fromkeys(("train", "val", "test"), ("train", np.arange(len(y))))

    if "test" in ds.parts:
        test = ("test", _subset(ds, "test", test_size, rng))
        pool = np.arange(len(y))
    else:
        k = test_size if test_size is not None else max(1, round(TEST_FRACTION * len(y)))
        _check_size("test_size", k, len(y) - 1, f"rows it can take from the {len(y)} samples "
                    "(one must stay for training)", where)
        picked, pool = stratified(y, k, rng)
        test = ("train", picked)

    if "val" in ds.parts:
        val = ("val", _subset(ds, "val", val_size, rng))
    else:
        default = DEFAULT_VAL.get(ds.name, max(1, round(VAL_FRACTION * len(pool))))
        k = val_size if val_size is not None else default
        _check_size("val_size", k, len(pool) - 1, f"rows it can take from the {len(pool)} "
                    "training samples (one must stay for training)", where)
        if ds.ordered:  # the exercise: train = first rows, val = the rows after them
            t = train_size if train_size is not None else len(pool) - k
            _check_size("train_size", t, len(pool) - k, "training samples left beside val", where)
            return {"train": ("train", pool[:t]), "val": ("train", pool[t:t + k]), "test": test}
        picked, rest = stratified(y[pool], k, rng)
        val, pool = ("train", pool[picked]), pool[rest]

    if train_size is not None:
        _check_size("train_size", train_size, len(pool), "training samples left", where)
        if train_size < len(pool):
            pool = pool[np.arange(train_size) if ds.ordered else stratified(y[pool], train_size, rng)[0]]
    return {"train": ("train", pool), "val": val, "test": test}


def split_hash(idx: dict[str, tuple[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        part, rows = idx[name]
        h.update(f"{name}:{part}:{len(rows)};".encode() + np.ascontiguousarray(rows, "<i8").tobytes())
    return h.hexdigest()[:16]


def _take(s: Split, rows: np.ndarray) -> Split:
    # a run of consecutive rows stays a view: the official split copies nothing
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return Split(s.x[rows[0]: rows[-1] + 1], s.y[rows[0]: rows[-1] + 1])
    return Split(s.x[rows], s.y[rows])


def make_splits(ds: Dataset, val_size: int | None = None, test_size: int | None = None,
                seed: int = 0, train_size: int | None = None) -> SplitData:
    idx = split_indices(ds, val_size, test_size, seed, train_size)
    out = {name: _take(ds.parts[part], rows) for name, (part, rows) in idx.items()}
    if empty := [name for name, s in out.items() if s.n == 0]:
        raise FcnetError(f"{ds.source}: the {empty[0]} split is empty")
    method = "toy" if ds.name == "toy" else ("positional" if ds.ordered else "stratified")
    split = {"val_size": out["val"].n, "test_size": out["test"].n, "train_size": out["train"].n,
             "seed": seed, "method": method, "hash": split_hash(idx)}
    meta = {"dataset": ds.name, "source": ds.source, "checksum": ds.checksum,
            "checksum_kind": ds.checksum_kind, **ds.meta, "split": split, "classes": list(ds.classes),
            "image_shape": ds.image_shape and list(ds.image_shape)}
    return SplitData(out["train"], out["val"], out["test"], list(ds.classes), ds.image_shape, meta)
