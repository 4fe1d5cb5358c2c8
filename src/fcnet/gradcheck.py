"""Numerical gradients by centred differences, and study.md's relative error (signatures follow
the course's ``gradient_check.py`` so its driver works unchanged)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def eval_numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, verbose: bool = True,
                            h: float = 1e-5) -> np.ndarray:
    """df/dx at x by (f(x + h) - f(x - h)) / 2h, one coordinate at a time. ``x`` is perturbed in
    place (and restored); f must read it, e.g. ``lambda W: net.loss(X, y, reg)[0]`` with
    ``x = net.params['W1']``."""
    grad = np.zeros_like(x, dtype=np.float64)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        fxph = f(x)
        x[ix] = old - h
        fxmh = f(x)
        x[ix] = old
        grad[ix] = (fxph - fxmh) / (2 * h)
        if verbose:
            print(ix, grad[ix])
    return grad


def rel_error(x, y) -> float:
    """max |x - y| / max(1e-8, |x| + |y|), elementwise, as study.md defines it."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def check_model_gradients(model, X, y, reg: float = 0.0, h: float = 1e-5,
                          dropout_seed: int | None = 0) -> dict[str, float]:
    """Relative error between analytic and numerical gradients for every parameter
    of any model with the ``loss(X, y, reg) -> (loss, grads)`` contract."""
    kwargs = {"dropout_seed": dropout_seed} if getattr(model, "dropout_keep", 1.0) < 1 else {}
    grads = {k: v.copy() for k, v in model.loss(X, y, reg=reg, **kwargs)[1].items()}
    f = lambda _w: model.loss(X, y, reg=reg, **kwargs)[0]  # noqa: E731
    return {name: rel_error(eval_numerical_gradient(f, model.params[name], verbose=False, h=h), grads[name])
            for name in model.params}
