"""What ``Solver`` and ``PopulationSolver`` share: checked data, the minibatch
stream, the epoch bookkeeping, ``run`` and the loop's part of a checkpoint.

Each iteration draws ``batch_size`` rows (with replacement, ``choice(N, B)``,
the exercise; or shuffled epochs), takes one update step, and every
``max(N // B, 1)`` iterations, counted from iteration 0, records train accuracy
(on the current batch) and validation accuracy, then decays the learning rate.

This module knows models only by the little it asks of them (``Model``), so
``fcnet.nn.model`` can hand its ``train`` to ``Solver`` without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn.fpenv import flush_denormals
from fcnet.nn.rng import legacy_rng, legacy_state, load_legacy_state

SAMPLING = ("replacement", "shuffle")


class Model(Protocol):
    """What the loop needs of a model (``fcnet.nn.model.MLP`` is one)."""

    dtype: np.dtype

    def check_inputs(self, X, y=None) -> tuple[np.ndarray, np.ndarray | None]: ...


def draw_batch(
    rng, n: int, batch_size: int, sampling: str, it: int, iters_per_epoch: int, perm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (B,) of iteration ``it``'s minibatch and the (new) epoch permutation.

    'replacement': ``rng.choice(n, B)`` (the exercise); 'shuffle': consecutive
    slices of ``rng.permutation(n)``, redrawn at each epoch's start.
    """
    if sampling == "replacement":
        return rng.choice(n, batch_size), perm
    pos = (it % iters_per_epoch) * batch_size
    if pos == 0 or pos + batch_size > perm.size:
        perm = rng.permutation(n)
        pos = 0
    return perm[pos : pos + batch_size], perm


def training_arrays(model: Model, X, y, X_val, y_val, batch_size: int, sampling: str):
    """Checked training and validation data, converted once to the model's dtype so
    every step gathers contiguous rows: (X (N, D), y (N,), X_val (M, D), y_val (M,))."""
    if sampling not in SAMPLING:
        raise FcnetError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    if batch_size <= 0:
        raise FcnetError(f"batch_size must be positive, got {batch_size}")
    X, y = model.check_inputs(X, y)
    X_val, y_val = model.check_inputs(X_val, y_val)
    if sampling == "shuffle" and batch_size > X.shape[0]:
        raise FcnetError(
            f"batch_size {batch_size} exceeds the {X.shape[0]} training rows "
            "(sampling 'shuffle' draws each batch without replacement)"
        )
    return (np.ascontiguousarray(X, dtype=model.dtype), y,
            np.ascontiguousarray(X_val, dtype=model.dtype), y_val)


class MinibatchLoop:
    """The loop shared by Solver and PopulationSolver.

    Subclasses define ``step()`` (calling ``_next_batch`` first and
    ``_end_step`` last), ``scores(X)`` (class scores, (..., N, C)),
    ``_record_epoch(ws)``, ``_running()`` and their own part of the state.
    ``callback(loop, event)`` is called with event 'iter' after every step and
    'epoch' after every epoch record.
    """

    def __init__(self, model: Model, X, y, X_val, y_val, num_iters: int, batch_size: int,
                 sampling: str, seed: int | None, callback: Callable | None,
                 flush_denormals: bool, verbose: bool):
        self.X, self.y, self.X_val, self.y_val = training_arrays(
            model, X, y, X_val, y_val, batch_size, sampling)
        self.num_iters = int(num_iters)
        self.batch_size = int(batch_size)
        self.sampling = sampling
        self.rng = legacy_rng(seed)
        self.callback = callback
        self.flush_denormals = flush_denormals
        self.verbose = verbose
        self.iters_per_epoch = max(self.X.shape[0] // self.batch_size, 1)
        self.it = 0
        self._perm = np.empty(0, dtype=np.intp)

    # ------------------------------------------------------------- per step
    def _next_batch(self, ws: Any) -> None:
        """Draw iteration ``it``'s rows and gather them into ws.x (B, D), ws.y (B,)."""
        idx, self._perm = draw_batch(
            self.rng, self.X.shape[0], self.batch_size, self.sampling, self.it,
            self.iters_per_epoch, self._perm,
        )
        # contiguous gather into the preallocated batch (mode='clip' is the fast path)
        np.take(self.X, idx, axis=0, out=ws.x, mode="clip")
        np.take(self.y, idx, out=ws.y, mode="clip")

    def _end_step(self, ws: Any) -> None:
        """Count the step; at an epoch's first iteration record it; call back."""
        it = self.it
        self.it = it + 1
        if it % self.iters_per_epoch == 0:
            self._record_epoch(ws)
            if self.callback:
                self.callback(self, "epoch")
        if self.callback:
            self.callback(self, "iter")

    def _accuracy(self, X: np.ndarray, y: np.ndarray, chunk: int = 4096):
        """Share of rows of X (M, D) classified as y (M,): a float, or (K,) for K models."""
        correct = 0
        for s in range(0, X.shape[0], chunk):
            pred = np.argmax(self.scores(X[s : s + chunk]), axis=-1)
            correct = correct + (pred == y[s : s + chunk]).sum(axis=-1)
        return correct / max(X.shape[0], 1)

    # ------------------------------------------------------------------ run
    def run(self, until: int | None = None):
        """Train up to iteration ``until`` (default num_iters) while ``_running()``,
        flushing subnormal floats to zero (``flush_denormals``, see nn.fpenv)."""
        stop = self.num_iters if until is None else min(until, self.num_iters)
        with flush_denormals(self.flush_denormals):
            while self.it < stop and self._running():
                self.step()
        return self

    # ------------------------------------------------------------- resuming
    def _loop_state(self) -> dict[str, np.ndarray]:
        """The loop's part of a checkpoint: iteration, batch stream, permutation."""
        return {"it": np.array(self.it), **legacy_state(self.rng), "perm": self._perm.copy()}

    def _load_loop_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.it = int(state["it"])
        load_legacy_state(self.rng, state)
        self._perm = np.asarray(state["perm"], dtype=np.intp)
