"""Datasets that need no file: scikit-learn's 8x8 digits and the exercise's toy data."""

from __future__ import annotations

import numpy as np

from fcnet.data.core import Dataset, Split


def load_digits() -> Dataset:
    """1,797 8x8 greyscale digits, values 0..16 scaled to uint8 0..255 (N, 8, 8, 1)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images * 255 / 16).astype(np.uint8)[..., None]
    return Dataset("digits", {"train": Split(x, d.target.astype(np.int64))},
                   [str(c) for c in d.target_names], "sklearn.datasets.load_digits",
                   meta={"format": "scikit-learn bundled"})


def load_toy() -> Dataset:
    """study.md's toy data: X = 10 * randn(5, 4) from RandomState(1), y = [0, 1, 2, 2, 1]."""
    x = 10 * np.random.RandomState(1).randn(5, 4)
    y = np.array([0, 1, 2, 2, 1], np.int64)
    return Dataset("toy", {"train": Split(x, y)}, ["0", "1", "2"], "builtin toy data",
                   meta={"format": "builtin"})
