"""Preprocessing fitted on the training split only, then applied unchanged; state in a pickle-free .npz."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fcnet.errors import FcnetError

KINDS = ("mean", "channel", "scale", "zca", "none")
_ARRAYS = ("mean", "pca_mean", "components", "explained_variance", "explained_variance_curve", "zca")


class Preprocessor:
    """Rows (N, ...) -> float features (N, D).

    ``kind``: ``mean`` subtracts the mean training image (the exercise); ``channel`` is ``(x/255 - 0.5)/0.5``
    (the PyTorch exercise's Normalize); ``scale`` is ``x/255``; ``zca`` is ``(x/255 - mu) U diag(1 /
    sqrt(lambda + zca_eps)) U^T`` (U, lambda: the training covariance's eigenvectors and eigenvalues; zca_eps
    in units of the [0, 1] pixels' variance, ~0.06 on CIFAR-10): decorrelated pixels in the image layout, so
    flips and crops still apply; ``none`` keeps the values. ``pca``: None, a component count (int >= 1) or a
    fraction of variance to keep (0 < f < 1), fitted on the output of ``kind``; ``whiten`` divides each
    component by its standard deviation. ``dtype``: float64 or float32; a float32 transform never makes a
    float64 copy."""

    # fitted state, None until fit: the (D,) mean training row (kind mean, zca), the (D, D) symmetric ZCA
    # matrix; PCA's (D,) mean, (K, D) components, their (K,) variances and the cumulative ratio of all
    input_dim: int | None = None
    mean = zca = pca_mean = components = explained_variance = explained_variance_curve = None

    def __init__(self, kind: str = "mean", pca: float | int | None = None, whiten: bool = False,
                 dtype: str = "float64", zca_eps: float = 0.1):
        if kind not in KINDS:
            raise FcnetError(f"preprocess: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        if str(np.dtype(dtype)) not in ("float64", "float32"):
            raise FcnetError(f"preprocess: dtype must be float64 or float32, got {dtype!r}")
        if pca is not None:
            if isinstance(pca, bool) or not isinstance(pca, int | float | np.number) or pca <= 0:
                raise FcnetError(f"preprocess: pca must be a count >= 1 or a fraction in (0, 1), got {pca!r}")
            if pca >= 1 and float(pca) != int(pca):
                raise FcnetError(f"preprocess: a pca count must be whole, got {pca!r}")
            pca = int(pca) if pca >= 1 else pca
        if whiten and pca is None:
            raise FcnetError("preprocess: whiten needs pca")
        if not (isinstance(zca_eps, int | float) and np.isfinite(zca_eps) and zca_eps > 0):
            raise FcnetError(f"preprocess: zca_eps must be a positive number, got {zca_eps!r}")
        if kind == "zca" and pca is not None:
            raise FcnetError("preprocess: zca keeps every pixel; it does not combine with pca")
        self.kind, self.pca, self.whiten, self.dtype = kind, pca, bool(whiten), np.dtype(dtype)
        self.zca_eps = float(zca_eps)

    def __repr__(self) -> str:
        pca = "" if self.pca is None else f", pca={self.pca!r}, whiten={self.whiten}"
        return f"Preprocessor(kind={self.kind!r}{pca}, dtype={self.dtype.name!r})"

    @property
    def output_dim(self) -> int | None:
        return self.components.shape[0] if self.components is not None else self.input_dim

    def fit(self, x: np.ndarray) -> Preprocessor:
        """Fit on training rows x (N, ...) only."""
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[0] == 0:
            raise FcnetError(f"preprocess: fit needs rows (N, ...), got shape {x.shape}")
        flat = x.reshape(x.shape[0], -1)
        n, d = flat.shape
        if isinstance(self.pca, int) and self.pca > min(n, d):
            raise FcnetError(f"preprocess: pca {self.pca} is more than the {min(n, d)} components "
                             f"{n} rows of {d} values have")
        self.input_dim = d
        if self.kind in ("mean", "zca"):  # float64 sums over uint8 rows, no float copy of the data
            self.mean = np.mean(flat, axis=0, dtype=np.float64)
        if self.kind != "zca" and self.pca is None:
            return self
        from sklearn.decomposition import PCA

        # every component of kind's output (a copy PCA may overwrite); covariance_eigh is far faster
        # when rows outnumber features
        p = PCA(n_components=min(n, d), svd_solver="covariance_eigh" if n >= d else "full",
                copy=False).fit(self._base(flat))
        if self.kind == "zca":  # W = U diag(1 / sqrt(lambda + eps)) U^T from every component
            u = p.components_.astype(np.float64)  # (K, D), rows are eigenvectors
            scale = 1.0 / np.sqrt(p.explained_variance_.astype(np.float64) + self.zca_eps)
            self.zca = ((u.T * scale) @ u).astype(self.dtype)
            return self
        curve = self.explained_variance_curve = np.cumsum(p.explained_variance_ratio_)
        # a fraction keeps the smallest count whose cumulative ratio reaches it (sklearn's rule)
        k = self.pca if isinstance(self.pca, int) else \
            min(int(np.searchsorted(curve, self.pca, side="right")) + 1, n, d)
        self.pca_mean = p.mean_.astype(self.dtype)
        self.components = p.components_[:k].astype(self.dtype)
        self.explained_variance = p.explained_variance_[:k].astype(self.dtype)
        return self

    def _base(self, flat: np.ndarray) -> np.ndarray:
        """kind's transform of (N, D) rows into a new array of self.dtype."""
        out = flat.astype(self.dtype)  # the one copy, already in the target dtype
        if self.kind in ("mean", "zca"):
            out -= self.mean.astype(self.dtype, copy=False)
        if self.kind in ("zca", "channel", "scale"):
            out /= 255
        if self.kind == "channel":
            out -= 0.5
            out /= 0.5
        return out

    def transform(self, x: np.ndarray) -> np.ndarray:
        """x (N, ...) -> (N, D) of dtype, D = the input size or the PCA count."""
        if self.input_dim is None:
            raise FcnetError("preprocess: transform before fit")
        x = np.asarray(x)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.input_dim:
            raise FcnetError(f"preprocess: rows of {self.input_dim} values expected, got shape {x.shape}")
        z = self._base(x.reshape(x.shape[0], -1))
        if self.zca is not None:
            return z @ self.zca  # (N, D) @ (D, D); W is symmetric
        if self.components is None:
            return z
        z -= self.pca_mean
        out = z @ self.components.T  # (N, D) @ (D, K), as PCA.transform
        if self.whiten:
            out /= np.sqrt(self.explained_variance)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """Arrays only (np.savez-able, reloadable with allow_pickle=False)."""
        if self.input_dim is None:
            raise FcnetError("preprocess: state before fit")
        pca = -1.0 if self.pca is None else float(self.pca)
        s = {"kind": np.array(self.kind), "dtype": np.array(self.dtype.name), "whiten": np.array(self.whiten),
             "input_dim": np.array(self.input_dim), "pca": np.array(pca), "zca_eps": np.array(self.zca_eps)}
        return s | {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}

    @classmethod
    def from_state(cls, d: Mapping[str, np.ndarray]) -> Preprocessor:
        """Rebuild from ``state()`` (a dict or an opened .npz); transforms identically."""
        try:
            pca = float(d["pca"])
            p = cls(str(d["kind"]), None if pca < 0 else pca, bool(d["whiten"]),
                    str(d["dtype"]), float(d["zca_eps"]) if "zca_eps" in d else 0.1)
            p.input_dim = int(d["input_dim"])
            for k in _ARRAYS:
                if k in d:
                    setattr(p, k, np.asarray(d[k]))
        except (KeyError, TypeError, ValueError) as err:
            raise FcnetError(f"preprocess state: missing or bad entry ({err})") from None
        if p.kind in ("mean", "zca") and p.mean is None or p.pca is not None and \
                p.components is None or p.kind == "zca" and p.zca is None:
            raise FcnetError("preprocess state: arrays missing for its kind / pca")
        return p
