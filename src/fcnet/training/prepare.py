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
    from fcnet.data import Preprocessor, load_splits
    from fcnet.data.cache import fitted

    c, key = config, data_key(config)
    if key in _CACHE:
        return _CACHE[key]
    data = load_splits(c.dataset, c.path, val_size=c.val_size, test_size=c.test_size,
                       seed=c.split_seed, progress=progress)
    pca = None if c.pca is None else int(c.pca) if c.pca >= 1 else float(c.pca)
    dtype = "float32" if c.dtype == "bfloat16" else c.dtype  # bf16 runs: cast on the device
    prep = Preprocessor(kind=c.preprocess, pca=pca, whiten=c.pca_whiten, dtype=dtype, zca_eps=c.zca_eps)
    if (pca is not None or c.preprocess == "zca") and data.meta.get("checksum"):
        # slow fits once per machine (a study's workers and its report would each refit)
        fit_key = json.dumps([data.meta["checksum"], data.meta.get("split"), repr(prep), c.zca_eps])
        prep = Preprocessor.from_state(fitted(fit_key, lambda: prep.fit(data.train.x).state()))
    else:
        prep.fit(data.train.x)
    out = Prepared(prep.transform(data.train.x), np.asarray(data.train.y, dtype=np.intp),
                   prep.transform(data.val.x), np.asarray(data.val.y, dtype=np.intp), data, prep)
    while len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = out
    return out
