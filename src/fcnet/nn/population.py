"""Population training: K configurations of one architecture trained at once.

Sweeps mostly vary what leaves array shapes alone (learning rate, decay,
regularisation, dropout, init scale, init seed).  ``PopulationSolver`` stacks
the K members' weights, so one large matrix product replaces K small ones:

- layer 1: every member sees the same minibatch X (N, D), so all K first
  layers are one product X @ [W1_1 ... W1_K], (N, D) @ (D, K*H1), and their
  updates one product X^T dZ1, (D, N) @ (N, K*H1);
- deeper layers: batched products, (K, N, H) @ (K, H, H') (``np.matmul``
  broadcasting over the member axis).

Common random numbers: the members share one minibatch stream, drawn from
``RandomState(seed)`` exactly as ``Solver(seed=seed)`` draws it, so member k is
the lone run ``Solver(model_k, ..., seed=seed)`` with member k's
hyper-parameters, to float rounding (tests/test_population.py checks this), and
differences between members come from their settings, not from the batches
they happened to draw.  Dropout masks are the exception: a lone Solver draws
them from its batch stream, a member draws them from its own stream
``default_rng(SeedSequence(seed).spawn(K)[k])`` (independent of the other
members and of K), so a member with dropout matches a lone run in distribution,
not draw for draw.

Only plain SGD (the exercise's rule) is supported.  A member whose loss stops
being finite is frozen at its last good parameters (its history ends there, as
a lone Solver's would); the others train on unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn import layers
from fcnet.nn.loop import MinibatchLoop
from fcnet.nn.model import MLP
from fcnet.nn.rng import load_pcg64_state, pcg64_state


def _per_member(name: str, value, k: int, low: float, high: float, low_open: bool) -> np.ndarray:
    """A scalar or K values -> float64 (K,), each checked against (low, high]."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or arr.size not in (1, k):
        raise FcnetError(f"{name} must be one value or {k} values (one per member), got {value!r}")
    arr = np.broadcast_to(arr, (k,)).copy()
    below = arr <= low if low_open else arr < low
    if not np.isfinite(arr).all() or below.any() or (arr > high).any():
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise FcnetError(f"{name} must lie in {bound}, got {arr.tolist()}")
    return arr


def row_max(d: np.ndarray) -> np.ndarray:
    """max over the last axis of d (..., C) -> (...), folded class by class:
    numpy reduces a short last axis slowly, and a maximum is exact in any order."""
    out = np.maximum(d[..., 0], d[..., 1]) if d.shape[-1] > 1 else d[..., 0].copy()
    for c in range(2, d.shape[-1]):
        np.maximum(out, d[..., c], out=out)
    return out


class PopulationWorkspace:
    """Preallocated buffers of one population step, for batches of n rows.

    x (N, D), y (N,); z1 (N, K*H1): layer 1's product, reused for dZ1 in the
    backward pass; acts[l] (K, N, H_{l+1}) and dacts[l] (K, N, H_{l+1});
    masks[l] (K, N, H_{l+1}) or None; tmp and db mirror the stacked weights
    and biases (each layer's update, before it is added).
    """

    def __init__(self, pop: PopulationSolver, n: int):
        dt, k, sizes = pop.dtype, pop.k, pop.sizes
        self.n = n
        self.x = np.empty((n, sizes[0]), dtype=dt)
        self.y = np.empty(n, dtype=np.intp)
        self.z1 = np.empty((n, k * sizes[1]), dtype=dt)
        self.acts = [np.empty((k, n, h), dtype=dt) for h in sizes[1:]]
        self.dacts = [np.empty((k, n, h), dtype=dt) for h in sizes[1:-1]]
        self.masks: list[np.ndarray | None] = [None] * (len(sizes) - 2)
        if (pop.keeps < 1).any():
            self.masks = [np.ones((k, n, h), dtype=dt) for h in sizes[1:-1]]
        self.tmp = [np.empty_like(w) for w in pop.W]
        self.db = [np.empty_like(b) for b in pop.b]


class PopulationSolver(MinibatchLoop):
    """Train K same-shaped MLPs at once with plain SGD, sharing every minibatch.

    Parameters
    ----------
    models : K MLPs with identical layer sizes and dtype; their initial weights
        (any init scale or seed) are copied into the population's stacks, and
        each model's ``params`` then become live views of its slice, so
        ``models[k].predict(X)`` works during and after training.
    X, y, X_val, y_val : training (N, D), (N,) and validation data, shared.
    learning_rates, decays, regs : one value for all or K values (Solver's
        learning_rate, learning_rate_decay, reg).
    dropout_keeps : None (each model's own ``dropout_keep``), one value or K.
    num_iters, batch_size, sampling : as Solver.
    seed : the shared minibatch stream, ``RandomState(seed)`` as
        ``Solver(seed=seed)``; None draws from NumPy's global generator.
    callback : ``callback(pop, event)`` with event 'iter' after every step and
        'epoch' after every epoch record (e.g. to read ``val_accuracies()``).
    flush_denormals : flush subnormal floats to zero during ``run``.
    """

    def __init__(
        self,
        models: Sequence[MLP],
        X,
        y,
        X_val,
        y_val,
        learning_rates: float | Sequence[float] = 1e-3,
        decays: float | Sequence[float] = 0.95,
        regs: float | Sequence[float] = 5e-6,
        dropout_keeps: float | Sequence[float] | None = None,
        num_iters: int = 100,
        batch_size: int = 200,
        seed: int | None = 0,
        sampling: str = "replacement",
        callback: Callable | None = None,
        flush_denormals: bool = True,
        verbose: bool = False,
    ):
        models = list(models)
        if not models:
            raise FcnetError("a population needs at least one model")
        first = models[0]
        for i, m in enumerate(models):
            if not isinstance(m, MLP):
                raise FcnetError(f"models[{i}] is not an MLP")
            if m.sizes != first.sizes or m.dtype != first.dtype:
                raise FcnetError(
                    f"models[{i}] is {m!r}, but a population needs every member shaped "
                    f"like models[0], {first!r}"
                )
        if len({id(m) for m in models}) != len(models):
            raise FcnetError("each population member must be a distinct MLP object")
        k = len(models)
        self.k, self.models, self.sizes, self.dtype = k, models, list(first.sizes), first.dtype
        self.lr0 = _per_member("learning_rates", learning_rates, k, 0.0, math.inf, True)
        self.decays = _per_member("decays", decays, k, 0.0, 1.0, True)
        self.regs = _per_member("regs", regs, k, 0.0, math.inf, False)
        keeps = [m.dropout_keep for m in models] if dropout_keeps is None else dropout_keeps
        self.keeps = _per_member("dropout_keeps", keeps, k, 0.0, 1.0, True)
        for m, keep in zip(models, self.keeps, strict=True):
            m.dropout_keep = float(keep)

        super().__init__(first, X, y, X_val, y_val, num_iters, batch_size, sampling, seed,
                         callback, flush_denormals, verbose)
        children = np.random.SeedSequence(seed).spawn(k)
        self.mask_rngs = [np.random.default_rng(c) for c in children]
        self._stack(models)

        self.lr = self.lr0.copy()
        self.diverged_at: list[int | None] = [None] * k
        self.active = np.ones(k, dtype=bool)
        self._losses: list[np.ndarray] = []  # (K,) per iteration
        self.train_acc_history: list[list[float]] = [[] for _ in range(k)]
        self.val_acc_history: list[list[float]] = [[] for _ in range(k)]
        self.lr_history: list[list[float]] = [[] for _ in range(k)]
        self._ws: PopulationWorkspace | None = None

    # ------------------------------------------------------------- stacking
    def _stack(self, models: list[MLP]) -> None:
        """W[0] (D, K, H1), so [W1_1 ... W1_K] is its (D, K*H1) reshape;
        W[l] (K, H_l, H_{l+1}) for l >= 1; b[l] (K, H_{l+1})."""
        k, sizes, dt = self.k, self.sizes, self.dtype
        self.L = len(sizes) - 1
        self.W = [np.empty((sizes[0], k, sizes[1]), dtype=dt)]
        shapes = zip(sizes[1:-1], sizes[2:], strict=True)
        self.W += [np.empty((k, a, b), dtype=dt) for a, b in shapes]
        self.b = [np.empty((k, h), dtype=dt) for h in sizes[1:]]
        for j, m in enumerate(models):
            self.W[0][:, j, :] = m.params["W1"]
            for i in range(1, self.L):
                self.W[i][j] = m.params[f"W{i + 1}"]
            for i in range(self.L):
                self.b[i][j] = m.params[f"b{i + 1}"]
            # the member's params become views of its slice: always current
            m.params["W1"] = self.W[0][:, j, :]
            for i in range(1, self.L):
                m.params[f"W{i + 1}"] = self.W[i][j]
            for i in range(self.L):
                m.params[f"b{i + 1}"] = self.b[i][j]
            m._ws = None

    def workspace(self, n: int) -> PopulationWorkspace:
        if self._ws is None or self._ws.n != n:
            self._ws = PopulationWorkspace(self, n)
        return self._ws

    # -------------------------------------------------------------- forward
    def scores(self, X: np.ndarray) -> np.ndarray:
        """Every member's class scores (K, N, C) at prediction time (no dropout)."""
        n, k, h1 = X.shape[0], self.k, self.sizes[1]
        z1 = np.matmul(np.asarray(X, dtype=self.dtype), self.W[0].reshape(-1, k * h1))
        a = z1.reshape(n, k, h1).transpose(1, 0, 2) + self.b[0][:, None, :]
        for i in range(1, self.L):
            layers.relu_forward(a, inplace=True)
            a = layers.affine_forward(a, self.W[i], self.b[i][:, None, :])
        return a

    def predict(self, X) -> np.ndarray:
        """Every member's predicted labels (K, N)."""
        X, _ = self.models[0].check_inputs(X)
        return np.argmax(self.scores(X), axis=2)

    def val_accuracies(self, chunk: int = 4096) -> np.ndarray:
        """Validation accuracy of every member now, (K,)."""
        return self._accuracy(self.X_val, self.y_val, chunk)

    def _forward_loss(self, ws: PopulationWorkspace) -> tuple[np.ndarray, np.ndarray]:
        """Training forward pass on ws.x; returns J per member (K,) and
        dJ/dz_L (K, N, C), written over the scores."""
        n, k, h1, L = ws.n, self.k, self.sizes[1], self.L
        # layer 1 for all members at once: (N, D) @ (D, K*H1), then to (K, N, H1)
        np.matmul(ws.x, self.W[0].reshape(-1, k * h1), out=ws.z1)
        a = ws.acts[0]
        np.add(ws.z1.reshape(n, k, h1).transpose(1, 0, 2), self.b[0][:, None, :], out=a)
        for i in range(1, L + 1):
            if i > 1:  # a_i = a_{i-1} W_i + b_i, member by member
                a = layers.affine_forward(ws.acts[i - 2], self.W[i - 1],
                                          self.b[i - 1][:, None, :], out=ws.acts[i - 1])
            if i < L:
                layers.relu_forward(a, inplace=True)
                if ws.masks[i - 1] is not None:
                    self._draw_masks(ws.masks[i - 1])
                    layers.dropout_forward(a, ws.masks[i - 1], inplace=True)
        # per-member mean cross-entropy; its sum keeps numpy's order, so members
        # match lone runs bit for bit
        loss, d = layers.softmax_loss(ws.acts[L - 1], ws.y, inplace=True, row_max=row_max)
        # + reg_k * sum_l ||W_l,k||^2 (members without L2 need none)
        if self.regs.any():
            w1 = self.W[0].reshape(-1, k * h1)
            sq = np.einsum("ij,ij->j", w1, w1).reshape(k, h1).sum(axis=1, dtype=np.float64)
            for w in self.W[1:]:
                sq += np.einsum("kij,kij->k", w, w)
            loss += self.regs * sq
        return loss, d

    def _draw_masks(self, masks: np.ndarray) -> None:
        """Inverted-dropout masks (K, N, H): member k's from its own stream."""
        for j in np.flatnonzero(self.keeps < 1):
            keep = self.keeps[j]
            u = self.mask_rngs[j].random(masks.shape[1:], dtype=self.dtype)
            np.multiply(u < keep, 1.0 / keep, out=masks[j])

    # ----------------------------------------------------------------- step
    def step(self) -> np.ndarray:
        """One iteration for every member; returns the losses (K,)."""
        it, k, h1 = self.it, self.k, self.sizes[1]
        ws = self.workspace(self.batch_size)
        self._next_batch(ws)
        if self.active.all():
            loss, dz = self._forward_loss(ws)
        else:  # frozen members keep overflowing; their results are discarded
            with np.errstate(over="ignore", invalid="ignore"):
                loss, dz = self._forward_loss(ws)
        self._losses.append(loss)
        for j in np.flatnonzero(self.active & ~np.isfinite(loss)):
            self.diverged_at[j] = it  # frozen at its last good parameters
            self.active[j] = False
        frozen = ~self.active
        # fused SGD, as MLP.sgd_step: fold -lr into dz, then W <- shrink W + a^T dz
        dz *= (-self.lr).astype(self.dtype)[:, None, None]
        shrink = 1.0 - 2.0 * self.lr * self.regs
        shrink[frozen] = 1.0
        any_reg = bool((shrink != 1.0).any())
        if frozen.any():
            dz[frozen] = 0
        for i in range(self.L - 1, -1, -1):  # stacked layer i is the model's layer i + 1
            W, b, step, db = self.W[i], self.b[i], ws.tmp[i], ws.db[i]
            if i > 0:  # member by member: (K, H, N) @ (K, N, H'), and da from W before its update
                a_prev = ws.acts[i - 1]
                da, _, _ = layers.affine_backward(dz, a_prev, W, dw=step, db=db,
                                                  dx=ws.dacts[i - 1])
                if frozen.any():
                    step[frozen] = 0
                if any_reg:
                    W *= shrink.astype(self.dtype)[:, None, None]
            else:  # all members at once: X^T [dZ1_1 ... dZ1_K], (D, N) @ (N, K*H1)
                dz1 = ws.z1.reshape(ws.n, k, h1)
                np.copyto(dz1, dz.transpose(1, 0, 2))
                np.matmul(ws.x.T, ws.z1, out=step.reshape(-1, k * h1))
                np.sum(dz, axis=1, out=db)
                if frozen.any():
                    step[:, frozen] = 0
                if any_reg:  # one factor per column of (D, K*H1): a contiguous inner loop
                    W2d = W.reshape(-1, k * h1)
                    if (shrink == shrink[0]).all():
                        W2d *= float(shrink[0])  # a scalar is 3x faster than a broadcast row
                    else:
                        W2d *= np.repeat(shrink.astype(self.dtype), h1)
            W += step
            b += db
            if i > 0:
                if ws.masks[i - 1] is not None:
                    layers.dropout_backward(da, ws.masks[i - 1], inplace=True)
                dz = layers.relu_backward(da, a_prev, inplace=True)
        if self.verbose and it % 100 == 0:
            print(f"iteration {it} / {self.num_iters}: losses {np.round(loss, 6).tolist()}")
        self._end_step(ws)
        return loss

    def _record_epoch(self, ws: PopulationWorkspace) -> None:
        """As Solver: train accuracy on the current batch, validation accuracy,
        the learning rate, then lr *= decay; for active members only."""
        train = self._accuracy(ws.x, ws.y)
        val = self.val_accuracies()
        for j in np.flatnonzero(self.active):
            self.train_acc_history[j].append(float(train[j]))
            self.val_acc_history[j].append(float(val[j]))
            self.lr_history[j].append(float(self.lr[j]))
        self.lr[self.active] *= self.decays[self.active]

    def _running(self) -> bool:
        return bool(self.active.any())

    def run(self, until: int | None = None) -> PopulationSolver:
        """Train up to iteration ``until`` (default num_iters); stops early only
        when every member has diverged."""
        return super().run(until)

    # ------------------------------------------------------------ histories
    def losses(self, member: int) -> list[float]:
        """Member's loss per iteration; ends at its divergence (as a lone Solver's)."""
        end = self.it if self.diverged_at[member] is None else self.diverged_at[member] + 1
        return [float(v[member]) for v in self._losses[:end]]

    def history(self, member: int) -> dict:
        """Member's histories, as Solver.history() plus 'lr_history'."""
        return {
            "loss_history": self.losses(member),
            "train_acc_history": list(self.train_acc_history[member]),
            "val_acc_history": list(self.val_acc_history[member]),
            "lr_history": list(self.lr_history[member]),
        }

    def histories(self) -> list[dict]:
        return [self.history(j) for j in range(self.k)]

    # ------------------------------------------------------------- resuming
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit for bit, as plain arrays (np.savez,
        no pickle): stacked parameters, iteration, learning rates, divergence,
        the batch and mask streams, histories.  A snapshot (copies)."""
        out = {f"W.{i}": w.copy() for i, w in enumerate(self.W)}
        out.update({f"b.{i}": b.copy() for i, b in enumerate(self.b)})
        out.update(self._loop_state())
        out.update({
            "lr": self.lr.copy(), "active": self.active.copy(),
            "diverged_at": np.array([-1 if d is None else d for d in self.diverged_at]),
            "losses": np.array(self._losses).reshape(-1, self.k),
        })
        for j, g in enumerate(self.mask_rngs):
            out[f"mask_rng.{j}"] = pcg64_state(g)
            out[f"train_acc.{j}"] = np.array(self.train_acc_history[j])
            out[f"val_acc.{j}"] = np.array(self.val_acc_history[j])
            out[f"lr_history.{j}"] = np.array(self.lr_history[j])
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state()``'s output into this population (same K and shapes)."""
        for i, w in enumerate(self.W):
            w[...] = state[f"W.{i}"]  # in place: the members' params stay views
        for i, b in enumerate(self.b):
            b[...] = state[f"b.{i}"]
        self._load_loop_state(state)
        self.lr = np.array(state["lr"], dtype=np.float64)
        self.active = np.array(state["active"], dtype=bool)
        self.diverged_at = [None if d < 0 else int(d) for d in state["diverged_at"]]
        self._losses = list(np.asarray(state["losses"], dtype=np.float64).reshape(-1, self.k))
        for j, g in enumerate(self.mask_rngs):
            load_pcg64_state(g, state[f"mask_rng.{j}"])
            self.train_acc_history[j] = [float(v) for v in state[f"train_acc.{j}"]]
            self.val_acc_history[j] = [float(v) for v in state[f"val_acc.{j}"]]
            self.lr_history[j] = [float(v) for v in state[f"lr_history.{j}"]]
