"""Data for a run: load the splits, fit preprocessing on train, convert once (cached in
process, so a study or sweep of many runs on the same data loads and converts it once)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from fcnet.config import RunConfig

_CACHE: dict[tuple, Prepared] = {}
_CACHE_SIZE = 2
# config -> the fields its prepared data depends on (the cache's key)
data_key = attrgetter("dataset", "path", "val_size", "test_size", "split_seed", "preprocess", "pca",
                      "pca_whiten", "dtype", "zca_eps")


@dataclass
class Prepared:
    """Preprocessed float arrays (N, D) for train and val, raw test split, metadata."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    data: object  # fcnet.data.SplitData (uint8 images kept for test and figures)
    prep: object  # fcnet.data.Preprocessor

    classes = property(lambda self: list(self.data.classes))
    image_shape = property(lambda self: self.data.image_shape)


def prepare(config: RunConfig, progress: bool = False) -> Prepared:
    """Load and preprocess the data a config asks for (cached by its data fields)."""
    key = data_key(config)
    if key in _CACHE:
        return _CACHE[key]
    data = _load(config, progress)
    prep = _fitted(config, data)
    out = Prepared(prep.transform(data.train.x), np.asarray(data.train.y, dtype=np.intp),
                   prep.transform(data.val.x), np.asarray(data.val.y, dtype=np.intp), data, prep)
    while len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = out
    return out


def preprocessor(config: RunConfig):
    """The fitted ``fcnet.data.Preprocessor`` of a config's data, without transforming the data
    (1.4 s of CIFAR-10 for a PCA's explained-variance curve): a prepared config's, else fitted or
    read from the machine's cache of slow fits."""
    if (P := _CACHE.get(data_key(config))) is not None:
        return P.prep
    return _fitted(config, _load(config, False))


def _load(config: RunConfig, progress: bool):
    from fcnet.data import load_splits

    c = config
    return load_splits(c.dataset, c.path, val_size=c.val_size, test_size=c.test_size,
                       seed=c.split_seed, progress=progress)


def _fitted(config: RunConfig, data):
    """The config's preprocessing fitted on the training split; a PCA or ZCA fit once per machine
    (a study's workers and its report would each refit)."""
    from fcnet.data import Preprocessor
    from fcnet.data.cache import fitted

    c = config
    pca = None if c.pca is None else int(c.pca) if c.pca >= 1 else float(c.pca)
    dtype = "float32" if c.dtype == "bfloat16" else c.dtype  # bf16 runs: cast on the device
    prep = Preprocessor(kind=c.preprocess, pca=pca, whiten=c.pca_whiten, dtype=dtype, zca_eps=c.zca_eps)
    if (pca is not None or c.preprocess == "zca") and data.meta.get("checksum"):
        fit_key = json.dumps([data.meta["checksum"], data.meta.get("split"), repr(prep), c.zca_eps])
        return Preprocessor.from_state(fitted(fit_key, lambda: prep.fit(data.train.x).state()))
    return prep.fit(data.train.x)
