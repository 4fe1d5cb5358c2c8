"""Layers as forward/backward pairs, each line one line of study.md's derivation: x is
(N, D), W is (D, H), z = x W + b, a = relu(z), scores z_L, probabilities softmax(z_L).
A leading axis of K models, (K, N, H), gives each model's results; ``out`` buffers let
the training hot loop reuse memory instead of allocating."""

from __future__ import annotations

import numpy as np


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray | None = None):
    """z = x W + b: x (N, D), w (D, H), b (H,) -> z (N, H), into ``out`` when given."""
    z = np.matmul(x, w, out=out)
    z += b
    return z


def affine_backward(dz: np.ndarray, x: np.ndarray, w: np.ndarray, dw: np.ndarray | None = None,
                    db: np.ndarray | None = None, dx: np.ndarray | None = None):
    """Gradients of z = x W + b given dz = dJ/dz: dz (N, H), x (N, D), w (D, H) ->
    dx (N, D), dw (D, H), db (H,); with K models (K, N, D), (K, D, H), (K, H)."""
    dw = np.matmul(np.swapaxes(x, -1, -2), dz, out=dw)  # dW = x^T dz
    db = np.sum(dz, axis=-2, out=db)  # db = sum_i dz_i
    dx = np.matmul(dz, np.swapaxes(w, -1, -2), out=dx)  # dx = dz W^T
    return dx, dw, db


def relu_forward(z: np.ndarray, inplace: bool = False) -> np.ndarray:
    """a = max(z, 0); (N, H) -> (N, H), in place when asked (z is then lost)."""
    return np.maximum(z, 0, out=z if inplace else None)


def relu_backward(da: np.ndarray, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dz = da * (z > 0), read from a = relu(z) (a > 0 exactly where z > 0); da, a (N, H)
    -> dz (N, H), into ``out`` (may be da); the bool product is 3-4x faster than masking."""
    return np.multiply(da, a > 0, out=out)


def dropout_mask(keep: float, rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Inverted-dropout mask into ``out`` (N, H): 1/keep with probability keep, else 0."""
    if keep >= 1:
        out.fill(1)
        return out
    return np.multiply(rng.random(out.shape, dtype=out.dtype) < keep, 1.0 / keep, out=out)


def dropout_forward(a: np.ndarray, mask: np.ndarray, inplace: bool = False) -> np.ndarray:
    """a_drop = a * mask, with mask already scaled by 1/keep (identity at prediction);
    backward the same product, da_in = da * mask."""
    return np.multiply(a, mask, out=a if inplace else None)


dropout_backward = dropout_forward  # da_in = da * mask


def softmax(scores: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so exp never overflows; (N, C)."""
    p = scores if inplace else scores.copy()
    p -= p.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p


def softmax_loss(scores: np.ndarray, y: np.ndarray, inplace: bool = False, row_max=None):
    """Mean cross-entropy and its gradient, stable for logits of any magnitude:
    J = mean_i(logsumexp(z_i) - z_i[y_i]), dJ/dz = (softmax(z) - onehot(y)) / N.
    scores (N, C), y (N,) ints in [0, C) -> (loss, dscores (N, C), over scores in place);
    K models' scores (K, N, C) give losses (K,), y (K, N) when each has its own rows.
    ``row_max`` may replace numpy's max over the last axis (exact in any order)."""
    n = scores.shape[-2]
    d = scores if inplace and scores.flags.c_contiguous else scores.copy()
    top = d.max(axis=-1) if row_max is None else row_max(d)
    d -= top[..., None]  # z - max_j z_j
    # where z_{i, y_i} lies in d's flat memory (a ValueError unless 0 <= y_i < C): 4x faster than
    # d[..., rows, y]; y (N,) is every model's, y (K, N) each model's own
    members = (np.arange(d.shape[0])[:, None],) if d.ndim == 3 else ()
    try:
        at = np.ravel_multi_index((*members, np.arange(n), y), d.shape)
    except ValueError:
        raise ValueError(f"labels y must be integers in [0, {d.shape[-1]})") from None
    flat = d.reshape(-1)
    correct = flat[at].astype(np.float64)  # shifted z_{i, y_i}
    np.exp(d, out=d)
    sums = d.sum(axis=-1, keepdims=True)
    loss = np.add.reduce(np.log(sums[..., 0].astype(np.float64)) - correct, axis=-1) / n  # the mean
    d /= sums  # softmax(z)
    flat[at] -= 1  # - onehot(y)
    d /= n
    return (float(loss) if d.ndim == 2 else loss), d
