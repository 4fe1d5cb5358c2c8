"""The training loop: minibatch SGD exactly as study.md Q3, resumable.

The loop itself (batches, epochs, ``run``) is ``fcnet.nn.loop.MinibatchLoop``;
a Solver adds one model's step, histories and checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn.loop import MinibatchLoop, Model
from fcnet.nn.optim import SGD, make_optimizer


class Solver(MinibatchLoop):
    """Owns the loop; the model only knows its loss.

    ``seed=None`` draws batches from NumPy's global legacy generator (the
    course's driver seeds it); an int gives a private ``RandomState(seed)``.
    ``callback(solver, event)`` is called with event 'iter' after every step
    and 'epoch' after every epoch record.

    ``optimizer`` names an update rule of ``fcnet.nn.optim.RULES`` and
    ``optim_config`` holds its own settings (e.g. ``{'momentum': 0.9}``; missing
    ones take the rule's defaults).  With ``optimizer='sgd'`` each step is
    ``MLP.sgd_step`` (update fused into backprop, ws.grads not filled); other
    rules use ``forward_backward`` and their ``update``.  ``run`` flushes subnormal floats to zero
    (``flush_denormals=True``, see ``fcnet.nn.fpenv``).
    """

    def __init__(
        self,
        model: Model,
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
        super().__init__(model, X, y, X_val, y_val, num_iters, batch_size, sampling, seed,
                         callback, flush_denormals, verbose)
        self.model = model
        self.lr0 = self.lr = float(learning_rate)
        self.decay = float(learning_rate_decay)
        self.reg = float(reg)
        self.optimizer = make_optimizer(optimizer, optim_config)
        self.diverged_at: int | None = None
        self.loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        self.lr_history: list[float] = []

    # ----------------------------------------------------------------- loop
    def step(self) -> float:
        """One iteration: gather a batch, forward/backward, update, maybe record."""
        model, it = self.model, self.it
        ws = model.workspace(self.batch_size)
        self._next_batch(ws)
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
        self._end_step(ws)
        return loss

    def scores(self, X: np.ndarray) -> np.ndarray:
        return self.model.scores(X)

    def _record_epoch(self, ws) -> None:
        """Train accuracy on the current batch, validation accuracy, the lr; then decay it."""
        self.train_acc_history.append(float(self._accuracy(ws.x, ws.y)))
        self.val_acc_history.append(self.val_accuracy())
        self.lr_history.append(self.lr)
        self.lr *= self.decay

    def _running(self) -> bool:
        return self.diverged_at is None

    def val_accuracy(self, chunk: int = 4096) -> float:
        return float(self._accuracy(self.X_val, self.y_val, chunk))

    def run(self, until: int | None = None) -> Solver:
        """Train up to iteration ``until`` (default num_iters); stops on divergence."""
        return super().run(until)

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
        out = {f"param.{k}": v.copy() for k, v in self.model.params.items()}
        optim = self.optimizer.state()
        out.update({f"optim.{k}": np.array(v, copy=True) for k, v in optim.items()})
        out.update(self._loop_state())
        out.update(
            {
                "lr": np.array(self.lr),
                "loss_history": np.array(self.loss_history),
                "train_acc_history": np.array(self.train_acc_history),
                "val_acc_history": np.array(self.val_acc_history),
                "lr_history": np.array(self.lr_history),
            }
        )
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for k in self.model.params:
            self.model.params[k] = np.array(state[f"param.{k}"], dtype=self.model.dtype)
        self.optimizer.load_state(
            {k[6:]: v for k, v in state.items() if k.startswith("optim.")}
        )
        self._load_loop_state(state)
        self.lr = float(state["lr"])
        self.loss_history = [float(v) for v in state["loss_history"]]
        self.train_acc_history = [float(v) for v in state["train_acc_history"]]
        self.val_acc_history = [float(v) for v in state["val_acc_history"]]
        self.lr_history = [float(v) for v in state["lr_history"]]
