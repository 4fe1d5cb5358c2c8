"""The NumPy stepper: minibatch SGD exactly as study.md Q3, for one net or K nets at once
(a population), resumable bit for bit.  Members sharing a seed share the batch stream of
``RandomState(seed)`` (common random numbers); every member's dropout masks come from
``default_rng(SeedSequence(seed, spawn_key=(0,)))``, so a member is its lone run draw for
draw whatever its mates.  A member whose loss turns non-finite is frozen at its last good
parameters; the others train on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn.fpenv import flush_denormals
from fcnet.nn.optim import make_optimizer
from fcnet.nn.rng import legacy_rng, legacy_state, load_legacy_state, load_pcg64_state, pcg64_state
from fcnet.nn.schedule import lr_at, lr_period
from fcnet.nn.stack import Stack, Workspace, backward, forward_loss

SAMPLING = ("replacement", "shuffle")
AHEAD = 64  # 'replacement' batches a stream draws at a time (Stream)


def _per_member(name: str, value, k: int, low: float, high: float, low_open: bool) -> np.ndarray:
    """A scalar or K values -> float64 (K,), each checked against (low, high]."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or arr.size not in (1, k):
        raise FcnetError(f"{name} must be one value or {k} values (one per member), got {value!r}")
    arr = np.broadcast_to(arr, (k,)).copy()
    below = arr <= low if low_open else arr < low
    if not np.isfinite(arr).all() or below.any() or (arr > high).any():
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise FcnetError(f"{name} must be finite and in {bound}, got {value!r}")
    return arr


@dataclass(frozen=True)
class Hyper:
    """The loop's settings; lr, decay, reg, keep and seeds hold one value per member."""

    lr: np.ndarray
    decay: np.ndarray
    reg: np.ndarray
    keep: np.ndarray
    seeds: tuple[int | None, ...]
    num_iters: int
    batch_size: int
    sampling: str = "replacement"
    schedule: str = "step"
    optimizer: str = "sgd"
    optim_config: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, k: int, *, lr, decay, reg, keep, seeds, num_iters: int, batch_size: int,
           sampling: str = "replacement", schedule: str = "step", optimizer: str = "sgd",
           optim_config: Mapping[str, float] | None = None) -> Hyper:
        """Checked settings for K members; a scalar applies to all of them."""
        seeds = tuple(seeds) if isinstance(seeds, Sequence) else (seeds,) * k
        if len(seeds) != k:
            raise FcnetError(f"seeds must be one value or {k} values, got {seeds!r}")
        if sampling not in SAMPLING:
            raise FcnetError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if batch_size <= 0:
            raise FcnetError(f"batch_size must be positive, got {batch_size}")
        make_optimizer(optimizer, optim_config)  # checks the rule and its settings now
        return cls(_per_member("learning_rate", lr, k, 0.0, math.inf, True),
                   _per_member("learning_rate_decay", decay, k, 0.0, 1.0, True),
                   _per_member("reg", reg, k, 0.0, math.inf, False),
                   _per_member("dropout_keep", keep, k, 0.0, 1.0, True), seeds,
                   int(num_iters), int(batch_size), sampling, schedule, optimizer,
                   dict(optim_config or {}))

    @classmethod
    def course(cls, models: Sequence, learning_rate=1e-3, learning_rate_decay=0.95,
               reg=5e-6, num_iters: int = 100, batch_size: int = 200, seed=None,
               optimizer: str = "sgd", optim_config=None, sampling: str = "replacement",
               dropout_keep=None) -> Hyper:
        """The course's keyword options (``TwoLayerNet.train``'s, its defaults)."""
        keep = [m.dropout_keep for m in models] if dropout_keep is None else dropout_keep
        return cls.of(len(models), lr=learning_rate, decay=learning_rate_decay, reg=reg, keep=keep,
                      seeds=seed, num_iters=num_iters, batch_size=batch_size, sampling=sampling,
                      optimizer=optimizer, optim_config=optim_config)


class Stream:
    """One minibatch stream: its ``RandomState``; for 'shuffle', the epoch's permutation; with
    ``ahead`` > 1 and a seed of its own, 'replacement' batches drawn that many at a time (``ready``,
    rows of B indices handed out in turn): the legacy generator draws ``randint``'s values one by
    one, so (ahead, B) at once are the same numbers as ahead draws of B, and a draw's fixed cost
    (8-11 us of a 140 us digits step) is paid once.  The global generator (seed None) is shared
    with the caller's code: one batch at a time."""

    def __init__(self, seed: int | None, ahead: int = 1):
        self.rng = legacy_rng(seed)
        self.perm = np.empty(0, dtype=np.intp)
        self.ahead = ahead if seed is not None else 1
        self.ready, self.pos = np.empty((0, 0), dtype=np.int64), 0

    def draw(self, n: int, batch: int, sampling: str, it: int, per_epoch: int) -> np.ndarray:
        """Row indices (B,) of iteration ``it``: 'replacement' draws ``choice(n, B)`` (the
        exercise's; ``randint(0, n, B)`` is that draw without choice's checks); 'shuffle'
        slices ``permutation(n)``, redrawn at each epoch's start."""
        if sampling == "replacement":
            if self.pos == len(self.ready):  # at most 64k indices (512 kB) at a time
                rows = max(1, min(self.ahead, (1 << 16) // batch))
                self.ready, self.pos = self.rng.randint(0, n, (rows, batch)), 0
            self.pos += 1
            return self.ready[self.pos - 1]
        pos = (it % per_epoch) * batch
        if pos == 0 or pos + batch > self.perm.size:
            self.perm, pos = self.rng.permutation(n), 0
        return self.perm[pos : pos + batch]

    def unused(self) -> np.ndarray:
        """The batches drawn and not yet handed out (rows of B): a checkpoint keeps them."""
        return self.ready[self.pos :].copy()

    def restore(self, unused: np.ndarray) -> None:
        """Hand out ``unused()``'s rows (from a checkpoint) before drawing again."""
        self.ready, self.pos = np.asarray(unused, dtype=np.int64), 0


class Solver:
    """Train one model, or K same-shaped models at once, with any update rule.  ``models``: an
    MLP or a list of them, whose ``params`` become live views of the stacked parameters.
    ``hyper`` (a ``Hyper``), else the course's keyword options (``learning_rate=1e-3, ...``; a
    list gives one value per member; ``seed=None`` draws batches from NumPy's global legacy
    generator, which the course's driver seeds).  ``callback(solver, event)``: 'epoch' after
    each epoch record, 'iter' after each step.  ``run`` flushes subnormals (nn.fpenv)."""

    def __init__(self, models, X, y, X_val, y_val, hyper: Hyper | None = None, *,
                 callback: Callable | None = None, verbose: bool = False,
                 flush_denormals: bool = True, **course: Any):
        models = [models] if hasattr(models, "params") else list(models)
        if not models:
            raise FcnetError("a population needs at least one model")
        for i, m in enumerate(models):
            if m.sizes != models[0].sizes or m.dtype != models[0].dtype:
                raise FcnetError(f"models[{i}] is {m!r}, but a population needs every member "
                                 f"shaped like models[0], {models[0]!r}")
        if len({id(m) for m in models}) != len(models):
            raise FcnetError("each population member must be a distinct MLP object")
        hp = hyper if hyper is not None else Hyper.course(models, **course)
        self.k, self.models, self.hp = len(models), models, hp
        X, self.y = models[0].check_inputs(X, y)
        X_val, self.y_val = models[0].check_inputs(X_val, y_val)
        if hp.sampling == "shuffle" and hp.batch_size > X.shape[0]:
            raise FcnetError(f"batch_size {hp.batch_size} exceeds the {X.shape[0]} training rows "
                             "(sampling 'shuffle' draws each batch without replacement)")
        # converted once to the models' dtype, so every step gathers contiguous rows
        self.X, self.X_val = (np.ascontiguousarray(a, dtype=models[0].dtype) for a in (X, X_val))
        for m, keep in zip(models, hp.keep, strict=True):
            m.dropout_keep = float(keep)
        self.stack = Stack.wrap(models)
        self.optimizer = make_optimizer(hp.optimizer, hp.optim_config)
        self.shared = len(set(hp.seeds)) == 1
        self.streams = [Stream(s, AHEAD) for s in (hp.seeds[:1] if self.shared else hp.seeds)]
        dropout = bool((hp.keep < 1).any())
        # member j's masks: its seed's stream, the lone run's, so a result never
        # depends on which mates a member trained with
        self.mask_rngs = [np.random.default_rng(np.random.SeedSequence(s, spawn_key=(0,)))
                          for s in hp.seeds] if dropout else []
        self.iters_per_epoch = max(self.X.shape[0] // hp.batch_size, 1)
        self.ws = Workspace(self.stack, hp.batch_size, self.shared, dropout)
        self._l2 = [2.0 * r if i % 2 == 0 and hp.reg.any() else None
                    for i, r in enumerate(self.stack.per_member(hp.reg))]
        self.callback, self.verbose, self.flush_denormals = callback, verbose, flush_denormals
        self.it = 0
        self._rate_key, self._rated = -1, None  # the rates' period (lr_period), they, their derivatives
        self.active = np.ones(self.k, dtype=bool)
        self.diverged_at: list[int | None] = [None] * self.k
        self._frozen: dict[int, list[np.ndarray]] = {}
        self._losses: list[np.ndarray] = []  # (K,) per iteration
        self.hist = [{"train_acc": [], "val_acc": [], "lr": []} for _ in range(self.k)]

    # ----------------------------------------------------------------- step
    def rates(self) -> np.ndarray:
        """Every member's learning rate at the next iteration, (K,)."""
        hp = self.hp
        return lr_at(self.it, lr=hp.lr, decay=hp.decay, schedule=hp.schedule,
                     iters_per_epoch=self.iters_per_epoch, total=hp.num_iters)

    @property
    def lr(self):
        """The next iteration's learning rate: a float for a lone run, else (K,)."""
        r = self.rates()
        return float(r[0]) if self.k == 1 else r

    @property
    def model(self):
        """A lone run's model."""
        return self.models[0]

    def step(self) -> np.ndarray:
        """One iteration for every member: gather a batch, forward, backward,
        update, and at an epoch's first iteration record it.  Returns J (K,)."""
        it, ws, hp, stack = self.it, self.ws, self.hp, self.stack
        for s, stream in enumerate(self.streams):  # contiguous gathers into the batch buffers
            idx = stream.draw(self.X.shape[0], hp.batch_size, hp.sampling, it, self.iters_per_epoch)
            np.take(self.X, idx, axis=0, out=ws.x if self.shared else ws.x[s], mode="clip")
            np.take(self.y, idx, out=ws.y if self.shared else ws.y[s], mode="clip")
        key = lr_period(it, schedule=hp.schedule, iters_per_epoch=self.iters_per_epoch)
        if key != self._rate_key:  # new rates (K,), and what derives from them
            lr = self.rates()
            lrs, coef, keep = stack.per_member(lr), None, None
            if self.optimizer.prescaled:  # plain SGD: dJ/dz_L's factor -lr, the weights' 1 - 2 lr reg
                coef = -lrs[0] if isinstance(lrs[0], float) else (-lr).astype(stack.dtype)[:, None, None]
                keep = [self.optimizer.keep(r, d) for r, d in zip(lrs[::2], self._l2[::2], strict=True)]
            self._rate_key, self._rated = key, (lr, lrs, coef, keep)
        lr, lrs, coef, keep = self._rated

        def quiet():  # frozen members keep overflowing; their results are discarded
            return np.errstate(over="ignore", invalid="ignore") if self._frozen else nullcontext()

        with quiet():
            loss, dz = forward_loss(stack, ws, hp.reg, hp.keep, self.mask_rngs)
        self._losses.append(loss)
        if not all(map(math.isfinite, loss.tolist())):  # as floats: 0.3 us for one member, isfinite 2.2
            for j in np.flatnonzero(self.active & ~np.isfinite(loss)):
                self.diverged_at[j], self.active[j] = it, False  # frozen at its last good parameters
                self._frozen[j] = [a.copy() for a in stack.slices(j)]
        if self._frozen and not self.active.any():  # only a divergence clears ``active``
            return loss
        with quiet():
            if self.optimizer.prescaled:  # plain SGD: -lr dJ/dz_L, so backprop yields the steps,
                # each weight's its product accumulated into it; the biases' steps are added
                dz *= coef
                backward(stack, ws, dz, keep)
                self.optimizer.update(stack.params[1::2], ws.grads[1::2], lrs[1::2], scaled=True)
            else:
                backward(stack, ws, dz)
                self.optimizer.update(stack.params, ws.grads, lrs, self._l2)
        for j, saved in self._frozen.items():
            for p, v in zip(stack.slices(j), saved, strict=True):
                p[...] = v
        if self.verbose and it % 100 == 0:
            shown = f"loss {loss[0]:f}" if self.k == 1 else f"losses {np.round(loss, 6).tolist()}"
            print(f"iteration {it} / {hp.num_iters}: {shown}")
        self.it = it + 1
        if it % self.iters_per_epoch == 0:
            self._record_epoch(lr)
            if self.callback:
                self.callback(self, "epoch")
        if self.callback:
            self.callback(self, "iter")
        return loss

    def _record_epoch(self, lr: np.ndarray) -> None:
        """Train accuracy on the current batch, validation accuracy and the rate
        of this iteration, for the active members."""
        ws = self.ws
        if self.shared:
            train = self._accuracy(ws.x, ws.y)
        else:
            train = [self._accuracy(ws.x[j], ws.y[j], slice(j, j + 1))[0] for j in range(self.k)]
        val = self.val_accuracies()
        for j in np.flatnonzero(self.active):
            h = self.hist[j]
            h["train_acc"].append(float(train[j]))
            h["val_acc"].append(float(val[j]))
            h["lr"].append(float(lr[j]))

    def _accuracy(self, X: np.ndarray, y: np.ndarray, members: slice = slice(None),
                  chunk: int = 4096) -> np.ndarray:
        """Share of rows of X (M, D) each member classifies as y (M,), (K,)."""
        correct = 0
        for s in range(0, X.shape[0], chunk):
            pred = np.argmax(self.stack.scores(X[s : s + chunk], members, scratch=True), axis=-1)
            correct = correct + (pred == y[s : s + chunk]).sum(axis=-1)
        return correct / max(X.shape[0], 1)

    def predict(self, X) -> np.ndarray:
        """Every member's predicted labels (K, N)."""
        X, _ = self.models[0].check_inputs(X)
        return np.argmax(self.stack.scores(X), axis=-1)

    def val_accuracies(self) -> np.ndarray:
        """Validation accuracy of every member now, (K,)."""
        return self._accuracy(self.X_val, self.y_val)

    def run(self, until: int | None = None) -> Solver:
        """Train up to iteration ``until`` (default num_iters); stops early only
        when every member has diverged."""
        stop = self.hp.num_iters if until is None else min(until, self.hp.num_iters)
        with flush_denormals(self.flush_denormals):
            while self.it < stop and self.active.any():
                self.step()
        return self

    # ------------------------------------------------------------ histories
    def losses(self, member: int, start: int = 0) -> list[float]:
        """A member's loss per iteration from ``start`` (ending at its divergence)."""
        d = self.diverged_at[member]
        end = len(self._losses) if d is None else d + 1
        return [float(v[member]) for v in self._losses[start:end]]

    def history(self, member: int = 0) -> dict:
        """A member's histories: loss per iteration (ending at its divergence, as
        a lone run's), and per epoch train/val accuracy and learning rate."""
        h = self.hist[member]
        return {"loss_history": self.losses(member),
                "train_acc_history": list(h["train_acc"]), "val_acc_history": list(h["val_acc"]),
                "lr_history": list(h["lr"])}

    def histories(self) -> list[dict]:
        return [self.history(j) for j in range(self.k)]

    # the course's names for a lone run's histories
    loss_history = property(lambda self: self.history()["loss_history"])
    train_acc_history = property(lambda self: self.hist[0]["train_acc"])
    val_acc_history = property(lambda self: self.hist[0]["val_acc"])
    lr_history = property(lambda self: self.hist[0]["lr"])

    # ------------------------------------------------------------- resuming
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit for bit, as plain arrays (np.savez,
        no pickle): stacked parameters, update-rule state, iteration, the batch
        and mask streams, divergence, histories.  A snapshot (copies)."""
        out = {f"param.{i}": p.copy() for i, p in enumerate(self.stack.params)}
        out.update({f"optim.{k}": np.array(v, copy=True) for k, v in self.optimizer.state().items()})
        out.update({"it": np.array(self.it), "active": self.active.copy(),
                    "diverged_at": np.array([-1 if d is None else d for d in self.diverged_at]),
                    "losses": np.array(self._losses).reshape(-1, self.k)})
        for s, stream in enumerate(self.streams):
            out.update(legacy_state(stream.rng, f"rng{s}."))
            out[f"perm.{s}"] = stream.perm.copy()
            out[f"ready.{s}"] = stream.unused()
        for j in range(self.k):
            if self.mask_rngs:
                out[f"mask_rng.{j}"] = pcg64_state(self.mask_rngs[j])
            for key, values in self.hist[j].items():
                out[f"{key}.{j}"] = np.array(values)
        for j, saved in self._frozen.items():
            out.update({f"frozen.{j}.{i}": v.copy() for i, v in enumerate(saved)})
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore ``state()``'s output (same K and shapes; KeyError or
        ValueError when it does not fit)."""
        for i, p in enumerate(self.stack.params):
            if state[f"param.{i}"].shape != p.shape:
                raise ValueError(f"parameter {i} has shape {state[f'param.{i}'].shape}, "
                                 f"not {p.shape}")
            p[...] = state[f"param.{i}"]  # in place: the models' params stay views
        self.optimizer.load_state({k[6:]: v for k, v in state.items() if k.startswith("optim.")})
        self.it = int(state["it"])
        self.active = np.array(state["active"], dtype=bool)
        self.diverged_at = [None if d < 0 else int(d) for d in state["diverged_at"]]
        self._losses = list(np.asarray(state["losses"], dtype=np.float64).reshape(-1, self.k))
        for s, stream in enumerate(self.streams):
            load_legacy_state(stream.rng, state, f"rng{s}.")
            stream.perm = np.asarray(state[f"perm.{s}"], dtype=np.intp)
            # drawn ahead, not yet used (a checkpoint from before draws ahead has none)
            stream.restore(state.get(f"ready.{s}", np.empty((0, 0), dtype=np.int64)))
        for j in range(self.k):
            if self.mask_rngs:
                load_pcg64_state(self.mask_rngs[j], state[f"mask_rng.{j}"])
            for key in self.hist[j]:
                self.hist[j][key] = [float(v) for v in state[f"{key}.{j}"]]
        self._frozen = {j: [np.array(state[f"frozen.{j}.{i}"]) for i in range(len(self.stack.params))]
                        for j in range(self.k) if self.diverged_at[j] is not None}
