"""Datasets that need no file: scikit-learn's 8x8 digits and the exercise's toy data."""

from __future__ import annotations

import numpy as np

from fcnet.data.core import Dataset, Split


def load_digits() -> Dataset:
    """1,797 8x8 greyscale digits, values 0..16 scaled to uint8 0..255 (N, 8, 8, 1)."""
    data = _digits_csv()
    if data is None:  # another layout of scikit-learn: its loader
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        data = np.column_stack([d.data, d.target])
    x = (data[:, :-1].reshape(-1, 8, 8) * 255 / 16).astype(np.uint8)[..., None]
    return Dataset("digits", {"train": Split(x, data[:, -1].astype(np.int64))},
                   [str(c) for c in range(10)], "sklearn.datasets.load_digits",
                   meta={"format": "scikit-learn bundled"})


def _digits_csv() -> np.ndarray | None:
    """The (1797, 65) table scikit-learn's ``load_digits`` reads (pixels 0..16, label),
    read from its bundled digits.csv.gz without importing scikit-learn (about a second
    of imports, most of a failing `fcnet train --dataset digits`); None when not found."""
    import importlib.util
    from pathlib import Path

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
    y = np.array([0, 1, 2, 2, 1], np.int64)
    return Dataset("toy", {"train": Split(x, y)}, ["0", "1", "2"], "builtin toy data",
                   meta={"format": "builtin"})
