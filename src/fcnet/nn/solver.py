"""The training loop: minibatch SGD exactly as study.md Q3, resumable.

Each iteration draws ``batch_size`` rows (with replacement, ``choice(N, B)``,
the exercise; or shuffled epochs), takes one update step, and every
``max(N // B, 1)`` iterations, counted from iteration 0, records train accuracy
(on the current batch) and validation accuracy, then multiplies the learning
rate by ``learning_rate_decay``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn.model import MLP, legacy_rng
from fcnet.nn.optim import make_optimizer

SAMPLING = ("replacement", "shuffle")


class Solver:
    """Owns the loop; the model only knows its loss.

    ``seed=None`` draws batches from NumPy's global legacy generator (the
    course's driver seeds it); an int gives a private ``RandomState(seed)``.
    ``callback(solver, event)`` is called with event 'iter' after every step
    and 'epoch' after every epoch record.
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
        momentum: float = 0.9,
        sampling: str = "replacement",
        dropout_keep: float | None = None,
        callback: Callable | None = None,
    ):
        if sampling not in SAMPLING:
            raise FcnetError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if batch_size <= 0:
            raise FcnetError(f"batch_size must be positive, got {batch_size}")
        if dropout_keep is not None:
            if not 0.0 < dropout_keep <= 1.0:
                raise FcnetError(f"dropout_keep must be in (0, 1], got {dropout_keep}")
            model.dropout_keep = float(dropout_keep)
        X, y = model.check_inputs(X, y)
        X_val, y_val = model.check_inputs(X_val, y_val)
        self.model = model
        # one conversion up front, so every step gathers rows of the model's dtype
        self.X = np.ascontiguousarray(X, dtype=model.dtype)
        self.y = y
        self.X_val = np.ascontiguousarray(X_val, dtype=model.dtype)
        self.y_val = y_val
        self.lr0 = self.lr = float(learning_rate)
        self.decay = float(learning_rate_decay)
        self.reg = float(reg)
        self.num_iters = int(num_iters)
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self.sampling = sampling
        self.rng = legacy_rng(seed)
        self.optimizer = make_optimizer(optimizer, momentum=momentum)
        self.callback = callback
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
        n, b = self.X.shape[0], self.batch_size
        if self.sampling == "replacement":
            return self.rng.choice(n, b)
        pos = (self.it % self.iters_per_epoch) * b
        if pos == 0 or pos + b > self._perm.size:
            self._perm = self.rng.permutation(n)
            pos = 0
        return self._perm[pos : pos + b]

    def step(self) -> float:
        """One iteration: gather a batch, forward/backward, update, maybe record."""
        model, it = self.model, self.it
        ws = model.workspace(self.batch_size)
        idx = self._batch_indices()
        # contiguous gather into the preallocated batch (mode='clip' is the fast path)
        np.take(self.X, idx, axis=0, out=ws.x, mode="clip")
        np.take(self.y, idx, out=ws.y, mode="clip")
        loss = model.forward_backward(ws, self.reg, self.rng)
        self.loss_history.append(loss)
        if not math.isfinite(loss):
            self.diverged_at = it  # keep the last good parameters
            return loss
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
        """Everything needed to continue bit for bit: params, optimiser, rng, lr."""
        rng_state = self.rng.get_state()
        out = {f"param.{k}": v for k, v in self.model.params.items()}
        out.update({f"optim.{k}": v for k, v in self.optimizer.state().items()})
        out.update(
            {
                "it": np.array(self.it),
                "lr": np.array(self.lr),
                "rng.keys": rng_state[1],
                "rng.pos": np.array(rng_state[2]),
                "rng.has_gauss": np.array(rng_state[3]),
                "rng.gauss": np.array(rng_state[4]),
                "perm": self._perm,
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
