"""The training loop: minibatch SGD exactly as study.md Q3, resumable.

Each iteration draws ``batch_size`` rows (with replacement, ``choice(N, B)``,
the exercise; or shuffled epochs), takes one update step, and every
``max(N // B, 1)`` iterations, counted from iteration 0, records train accuracy
(on the current batch) and validation accuracy, then multiplies the learning
rate by ``learning_rate_decay``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn.fpenv import flush_denormals
from fcnet.nn.model import MLP, legacy_rng
from fcnet.nn.optim import SGD, make_optimizer

SAMPLING = ("replacement", "shuffle")


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


def training_arrays(model: MLP, X, y, X_val, y_val, batch_size: int, sampling: str):
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


class Solver:
    """Owns the loop; the model only knows its loss.

    ``seed=None`` draws batches from NumPy's global legacy generator (the
    course's driver seeds it); an int gives a private ``RandomState(seed)``.
    ``callback(solver, event)`` is called with event 'iter' after every step
    and 'epoch' after every epoch record.

    ``optimizer`` names an update rule of ``fcnet.nn.optim.RULES`` and
    ``optim_config`` holds its own settings (e.g. ``{'momentum': 0.9}``; missing
    ones take the rule's defaults).  With ``optimizer='sgd'`` each step is ``MLP.sgd_step`` (update fused into
    backprop, ws.grads not filled); other rules use ``forward_backward`` and
    their ``update``.  ``run`` flushes subnormal floats to zero
    (``flush_denormals=True``, see ``fcnet.nn.fpenv``).
    """

    def __init__(
        self,
        model: MLP,
        X,
        y,
        X_val,
        y_val,
        learning_rate: float = 1e-3,
        learning_rate_decay: float = 0.95,
        reg: float = 5e-6,
        num_iters: int = 100,
        batch_size: int = 200,
        verbose: bool = False,
        seed: int | None = None,
        optimizer: str = "sgd",
        optim_config: Mapping[str, float] | None = None,
        sampling: str = "replacement",
        dropout_keep: float | None = None,
        callback: Callable | None = None,
        flush_denormals: bool = True,
    ):
        if dropout_keep is not None:
            if not 0.0 < dropout_keep <= 1.0:
                raise FcnetError(f"dropout_keep must be in (0, 1], got {dropout_keep}")
            model.dropout_keep = float(dropout_keep)
        self.model = model
        self.X, self.y, self.X_val, self.y_val = training_arrays(
            model, X, y, X_val, y_val, batch_size, sampling)
        self.lr0 = self.lr = float(learning_rate)
        self.decay = float(learning_rate_decay)
        self.reg = float(reg)
        self.num_iters = int(num_iters)
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self.sampling = sampling
        self.rng = legacy_rng(seed)
        self.optimizer = make_optimizer(optimizer, optim_config)
        self.callback = callback
        self.flush_denormals = flush_denormals
        self.iters_per_epoch = max(self.X.shape[0] // self.batch_size, 1)
        self.it = 0
        self.diverged_at: int | None = None
        self.loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        self.lr_history: list[float] = []
        self._perm = np.empty(0, dtype=np.intp)

    # ----------------------------------------------------------------- loop
    def _batch_indices(self) -> np.ndarray:
        idx, self._perm = draw_batch(
            self.rng, self.X.shape[0], self.batch_size, self.sampling, self.it,
            self.iters_per_epoch, self._perm,
        )
        return idx

    def step(self) -> float:
        """One iteration: gather a batch, forward/backward, update, maybe record."""
        model, it = self.model, self.it
        ws = model.workspace(self.batch_size)
        idx = self._batch_indices()
        # contiguous gather into the preallocated batch (mode='clip' is the fast path)
        np.take(self.X, idx, axis=0, out=ws.x, mode="clip")
        np.take(self.y, idx, out=ws.y, mode="clip")
        fused = type(self.optimizer) is SGD
        if fused:  # forward, backward and update in one pass (updates only on a finite loss)
            loss = model.sgd_step(ws, self.reg, self.lr, self.rng)
        else:
            loss = model.forward_backward(ws, self.reg, self.rng)
        self.loss_history.append(loss)
        if not math.isfinite(loss):
            self.diverged_at = it  # keep the last good parameters
            return loss
        if not fused:
            self.optimizer.update(model.params, ws.grads, self.lr)
        if self.verbose and it % 100 == 0:
            print(f"iteration {it} / {self.num_iters}: loss {loss:f}")
        self.it = it + 1
        if it % self.iters_per_epoch == 0:
            self.train_acc_history.append(float((model.predict(ws.x) == ws.y).mean()))
            self.val_acc_history.append(self.val_accuracy())
            self.lr_history.append(self.lr)
            self.lr *= self.decay
            if self.callback:
                self.callback(self, "epoch")
        if self.callback:
            self.callback(self, "iter")
        return loss

    def val_accuracy(self, chunk: int = 4096) -> float:
        correct = 0
        for s in range(0, self.X_val.shape[0], chunk):
            pred = np.argmax(self.model.scores(self.X_val[s : s + chunk]), axis=1)
            correct += int((pred == self.y_val[s : s + chunk]).sum())
        return correct / max(self.X_val.shape[0], 1)

    def run(self, until: int | None = None) -> Solver:
        """Train up to iteration ``until`` (default num_iters); stops on divergence."""
        stop = self.num_iters if until is None else min(until, self.num_iters)
        with flush_denormals(self.flush_denormals):
            while self.it < stop and self.diverged_at is None:
                self.step()
        return self

    def history(self) -> dict:
        return {
            "loss_history": self.loss_history,
            "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history,
        }

    # ------------------------------------------------------------- resuming
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit for bit: params, optimiser, rng, lr.

        A snapshot: arrays are copies, so later training leaves it unchanged."""
        rng_state = self.rng.get_state()
        out = {f"param.{k}": v.copy() for k, v in self.model.params.items()}
        optim = self.optimizer.state()
        out.update({f"optim.{k}": np.array(v, copy=True) for k, v in optim.items()})
        out.update(
            {
                "it": np.array(self.it),
                "lr": np.array(self.lr),
                "rng.keys": rng_state[1],
                "rng.pos": np.array(rng_state[2]),
                "rng.has_gauss": np.array(rng_state[3]),
                "rng.gauss": np.array(rng_state[4]),
                "perm": self._perm.copy(),
                "loss_history": np.array(self.loss_history),
                "train_acc_history": np.array(self.train_acc_history),
                "val_acc_history": np.array(self.val_acc_history),
                "lr_history": np.array(self.lr_history),
            }
        )
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for k in self.model.params:
            self.model.params[k] = np.array(state[f"param.{k}"], dtype=self.model.dtype)
        self.optimizer.load_state(
            {k[6:]: v for k, v in state.items() if k.startswith("optim.")}
        )
        self.it = int(state["it"])
        self.lr = float(state["lr"])
        self.rng.set_state(
            ("MT19937", np.asarray(state["rng.keys"], dtype=np.uint32), int(state["rng.pos"]),
             int(state["rng.has_gauss"]), float(state["rng.gauss"]))
        )
        self._perm = np.asarray(state["perm"], dtype=np.intp)
        self.loss_history = [float(v) for v in state["loss_history"]]
        self.train_acc_history = [float(v) for v in state["train_acc_history"]]
        self.val_acc_history = [float(v) for v in state["val_acc_history"]]
        self.lr_history = [float(v) for v in state["lr_history"]]
