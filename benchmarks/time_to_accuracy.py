"""Time to 50% validation accuracy on CIFAR-10: fcnet's NumPy engine, PyTorch on the
CPU and scikit-learn's MLPClassifier, each training the same net.

The net and its training, in each system's own terms (study.md, "Comparing with peers
fairly"): 3072-100-10 with ReLU, softmax cross-entropy, float32, minibatch 200, plain
SGD (no momentum) at lr 1e-3, L2 reg 0.25 on the weights only:

- fcnet: ``Solver`` as the exercise runs it (batches drawn with replacement,
  ``RandomState(seed).choice(N, 200)``; lr times 0.95 at every epoch record, counted
  from iteration 0), init ``1e-4 * randn``.
- torch: ``nn.Sequential`` + ``optim.SGD`` with ``weight_decay = 2 reg`` on the weights
  only; the same initial weights and the same batches as fcnet (the same index stream),
  the same lr schedule; subnormals flushed as fcnet flushes them.
- sklearn: ``MLPClassifier(solver='sgd', momentum=0, batch_size=200,
  alpha=2 * 200 * reg)``, one ``partial_fit`` per epoch. It differs in ways it cannot be
  told otherwise: Glorot-uniform init, shuffled epochs (no replacement), no lr decay.

An epoch is 245 iterations (49,000 / 200). After every epoch, each system's
validation accuracy (1,000 images) is measured off the clock; the time to the target
is the summed training time of the epochs up to the first one that reaches it.
fcnet's Solver also records an epoch inside its loop (accuracy on the batch and on the
validation set, about a millisecond; measured and reported in ``notes``), which stays
on its clock. Epochs of the systems are interleaved (order rotated every epoch, a
0.3 s pause when switching between NumPy's and torch's thread pools), so machine
drift touches all alike; each seed is a separate race.

    .venv/bin/python benchmarks/time_to_accuracy.py                 # table, about 70 s on 2 cores
    .venv/bin/python benchmarks/time_to_accuracy.py --json results/time_to_accuracy_cpu.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from _proc import DEFAULT_CIFAR, check_source, emit, progress_bar

SYSTEMS = ("fcnet", "torch", "sklearn")


@dataclass
class Settings:
    hidden: int = 100
    batch: int = 200
    lr: float = 1e-3
    decay: float = 0.95
    reg: float = 0.25
    std: float = 1e-4
    target: float = 0.5
    max_epochs: int = 20
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    gap_s: float = 0.02
    switch_gap_s: float = 0.3


@dataclass
class Data:
    X: np.ndarray  # (N, D) float32, mean image subtracted
    y: np.ndarray  # (N,) int64
    X_val: np.ndarray  # (M, D)
    y_val: np.ndarray  # (M,)
    source: str

    @property
    def classes(self) -> int:
        return int(max(self.y.max(), self.y_val.max())) + 1


def load_cifar(path: str) -> Data:
    from fcnet.data import Preprocessor, load_splits

    data = load_splits("cifar10", path, val_size=1000, progress=False)
    prep = Preprocessor("mean", dtype="float32").fit(data.train.x)
    return Data(prep.transform(data.train.x), np.asarray(data.train.y, dtype=np.int64),
                prep.transform(data.val.x), np.asarray(data.val.y, dtype=np.int64), path)


def synthetic(rows: int, seed: int = 0) -> Data:
    """Separable stand-in data (for checking the script, not for figures): 10 classes,
    each a Gaussian blob around its own random centre in 3072 dimensions."""
    gen = np.random.default_rng(seed)
    centres = gen.standard_normal((10, 3072), dtype=np.float32) * 20
    y = gen.integers(0, 10, rows + 200)
    X = centres[y] + gen.standard_normal((rows + 200, 3072), dtype=np.float32) * 60
    return Data(X[:rows], y[:rows], X[rows:], y[rows:], f"synthetic ({rows} rows)")


# ------------------------------------------------------------------ systems


class Trainer:
    name = ""
    pool = "blas"  # whose thread pool it runs on

    def train_epoch(self) -> bool:
        """One epoch of steps; False when training diverged (loss not finite)."""
        raise NotImplementedError

    def val_accuracy(self) -> float:
        raise NotImplementedError


class FcnetTrainer(Trainer):
    name = "fcnet"

    def __init__(self, s: Settings, d: Data, seed: int):
        from fcnet.nn import Solver, TwoLayerNet

        net = TwoLayerNet(d.X.shape[1], s.hidden, d.classes, std=s.std, seed=seed,
                          dtype="float32")
        self.solver = Solver(net, d.X, d.y, d.X_val, d.y_val, learning_rate=s.lr,
                             learning_rate_decay=s.decay, reg=s.reg, num_iters=2**62,
                             batch_size=s.batch, seed=seed)
        self.d = d

    def train_epoch(self) -> bool:
        sv = self.solver
        sv.run(until=sv.it + sv.iters_per_epoch)
        return sv.diverged_at[0] is None

    def val_accuracy(self) -> float:
        return float((self.solver.model.predict(self.d.X_val) == self.d.y_val).mean())

    def record_ms(self) -> float:
        """What the Solver's own epoch record costs (it runs on the clock)."""
        sv, reps = self.solver, 5
        ws = sv.ws
        t0 = time.perf_counter()
        for _ in range(reps):
            float((sv.model.predict(ws.x) == ws.y).mean())
            sv.val_accuracies()
        return 1e3 * (time.perf_counter() - t0) / reps


class TorchTrainer(Trainer):
    name, pool = "torch", "torch"

    def __init__(self, s: Settings, d: Data, seed: int):
        import torch

        from fcnet.nn import TwoLayerNet

        torch.set_flush_denormal(True)  # as fcnet's Solver.run does
        self.torch, self.s, self.d = torch, s, d
        ref = TwoLayerNet(d.X.shape[1], s.hidden, d.classes, std=s.std, seed=seed,
                          dtype="float32")  # fcnet's initial weights, to start alike
        self.net = torch.nn.Sequential(torch.nn.Linear(d.X.shape[1], s.hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(s.hidden, d.classes))
        with torch.no_grad():
            for i, layer in ((1, self.net[0]), (2, self.net[2])):
                layer.weight.copy_(torch.from_numpy(ref.params[f"W{i}"].T.copy()))
                layer.bias.copy_(torch.from_numpy(ref.params[f"b{i}"]))
        weights = [self.net[0].weight, self.net[2].weight]
        biases = [self.net[0].bias, self.net[2].bias]
        # reg * sum(W**2) has gradient 2 reg W: weight_decay = 2 reg, weights only
        self.opt = torch.optim.SGD([{"params": weights, "weight_decay": 2 * s.reg},
                                    {"params": biases, "weight_decay": 0.0}], lr=s.lr)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(d.X), torch.from_numpy(d.y)
        self.X_val = torch.from_numpy(d.X_val)
        self.rng = np.random.RandomState(seed)  # fcnet's batch stream, draw for draw
        self.iters_per_epoch = max(d.X.shape[0] // s.batch, 1)
        self.it, self.lr = 0, s.lr

    def train_epoch(self) -> bool:
        torch, n, b = self.torch, self.X.shape[0], self.s.batch
        for _ in range(self.iters_per_epoch):
            idx = torch.from_numpy(self.rng.choice(n, b))
            xb, yb = self.X.index_select(0, idx), self.y.index_select(0, idx)
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.net(xb), yb)
            loss.backward()
            if not math.isfinite(loss.item()):
                return False
            self.opt.step()
            if self.it % self.iters_per_epoch == 0:  # the exercise's decay, from iteration 0
                self.lr *= self.s.decay
                for g in self.opt.param_groups:
                    g["lr"] = self.lr
            self.it += 1
        return True

    def val_accuracy(self) -> float:
        with self.torch.no_grad():
            pred = self.net(self.X_val).argmax(1).numpy()
        return float((pred == self.d.y_val).mean())


class SklearnTrainer(Trainer):
    name = "sklearn"

    def __init__(self, s: Settings, d: Data, seed: int):
        import sklearn
        from sklearn.neural_network import MLPClassifier

        self.sklearn, self.d = sklearn, d
        self.classes = np.arange(d.classes)
        # study.md: reg * sum(W**2) per batch is alpha = 2 * batch * reg. A RandomState
        # object, not an int: partial_fit re-seeds from an int at every call, which would
        # replay the same shuffle every epoch.
        self.model = MLPClassifier(
            hidden_layer_sizes=(s.hidden,), activation="relu", solver="sgd",
            alpha=2 * s.batch * s.reg, batch_size=s.batch, learning_rate="constant",
            learning_rate_init=s.lr, momentum=0.0, nesterovs_momentum=False, shuffle=True,
            random_state=np.random.RandomState(seed), early_stopping=False,
        )

    def train_epoch(self) -> bool:
        # assume_finite: no NaN scan of the whole training set at every call
        with warnings.catch_warnings(), self.sklearn.config_context(assume_finite=True):
            warnings.simplefilter("ignore")
            try:
                self.model.partial_fit(self.d.X, self.d.y, classes=self.classes)
            except ValueError as err:  # "Solver produced non-finite parameter weights"
                if "non-finite" in str(err):
                    return False
                raise
        return bool(np.isfinite(self.model.loss_))

    def val_accuracy(self) -> float:
        return float((self.model.predict(self.d.X_val) == self.d.y_val).mean())


TRAINERS = {"fcnet": FcnetTrainer, "torch": TorchTrainer, "sklearn": SklearnTrainer}


# -------------------------------------------------------------- measurement


def race(s: Settings, d: Data, seed: int, progress=None) -> tuple[dict, dict]:
    """One seed: all systems' epochs interleaved until each reaches the target, diverges
    or hits the cap. Returns ({system: record}, notes)."""
    trainers = [TRAINERS[name](s, d, seed) for name in s.systems]
    rec = {t.name: {"seed": seed, "status": "running", "epochs": None, "train_s": None,
                    "epoch_s": [], "val_acc": []} for t in trainers}
    last_pool = None
    for epoch in range(1, s.max_epochs + 1):
        active = [t for t in trainers if rec[t.name]["status"] == "running"]
        shift = epoch % max(len(active), 1)
        for t in active[shift:] + active[:shift]:
            time.sleep(s.gap_s if t.pool == last_pool else s.switch_gap_s)
            last_pool = t.pool
            t0 = time.perf_counter()
            ok = t.train_epoch()
            dt = time.perf_counter() - t0
            r = rec[t.name]
            r["epoch_s"].append(dt)
            if not ok:
                r["status"] = "diverged"
                continue
            acc = t.val_accuracy()  # off the clock
            r["val_acc"].append(acc)
            if acc >= s.target:
                r["status"], r["epochs"], r["train_s"] = "reached", epoch, sum(r["epoch_s"])
        if progress:
            progress()
    notes = {}
    for t in trainers:
        r = rec[t.name]
        if r["status"] == "running":
            r["status"] = "not reached"
        r["best_val_acc"] = max(r["val_acc"], default=None)
        r["iterations"] = None if r["epochs"] is None else r["epochs"] * (d.X.shape[0] // s.batch)
        if isinstance(t, FcnetTrainer):
            notes["fcnet_epoch_record_ms"] = t.record_ms()
    return rec, notes


def summarise(records: dict[str, list[dict]], s: Settings) -> dict:
    out = {}
    for name, recs in records.items():
        # a seed that never reached the target counts as slower than any that did
        times = [r["train_s"] if r["train_s"] is not None else math.inf for r in recs]
        med = statistics.median(times)
        epoch_s = [x for r in recs for x in r["epoch_s"]]
        med_epoch = statistics.median(epoch_s) if epoch_s else None
        # epochs needed x the typical epoch: shrugs off epochs slowed by other jobs
        steady = [None if r["epochs"] is None or med_epoch is None else r["epochs"] * med_epoch
                  for r in recs]
        med_steady = statistics.median(math.inf if x is None else x for x in steady)
        out[name] = {
            "reached": sum(r["status"] == "reached" for r in recs),
            "runs": len(recs),
            "median_train_s": None if math.isinf(med) else med,
            "train_s": [r["train_s"] for r in recs],
            "epochs": [r["epochs"] for r in recs],
            "status": [r["status"] for r in recs],
            "median_epoch_s": med_epoch,
            "steady_train_s": steady,
            "median_steady_train_s": None if math.isinf(med_steady) else med_steady,
            "best_val_acc": [r["best_val_acc"] for r in recs],
        }
    return out


def run(s: Settings, d: Data, progress=None) -> dict:
    records: dict[str, list[dict]] = {name: [] for name in s.systems}
    notes: dict = {}
    for seed in s.seeds:
        rec, n = race(s, d, seed, progress)
        for name, r in rec.items():
            records[name].append(r)
        notes.setdefault("fcnet_epoch_record_ms", []).append(n.get("fcnet_epoch_record_ms"))
    notes["sklearn"] = ("Glorot-uniform init, shuffled epochs, no lr decay (MLPClassifier "
                        "has no per-epoch decay); the rest as fcnet")
    notes["torch"] = "fcnet's initial weights and batch indices, lr decay as fcnet"
    notes["fcnet_epoch_record"] = ("fcnet's Solver records train/val accuracy once per epoch "
                                   "inside its loop; that time (ms, per seed) is on its clock")
    from fcnet.bench import machine_info

    return {
        "target": s.target,
        "summary": summarise(records, s),
        "runs": records,
        "data": {"source": d.source, "train": int(d.X.shape[0]), "val": int(d.X_val.shape[0]),
                 "dtype": str(d.X.dtype)},
        "settings": asdict(s),
        "machine": machine_info(),
        "notes": notes,
    }


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def format_table(r: dict) -> str:
    target = r["target"]
    lines = [f"time to {target:.0%} validation accuracy (training seconds, evaluation off the "
             f"clock; {r['data']['train']} train / {r['data']['val']} val rows)",
             f"{'system':<8} {'reached':>7} {'median s':>11} {'s/epoch':>8} {'steady s':>11}  "
             f"{'per seed: s (epochs)':<32} best val acc"]
    for name, m in r["summary"].items():
        per_seed = " ".join(
            f"{_fmt(t, '.1f', 'n/r')}({_fmt(e, 'd', '-')})" for t, e in zip(m["train_s"], m["epochs"])
        )
        best = " ".join(_fmt(b, ".3f") for b in m["best_val_acc"])
        lines.append(f"{name:<8} {m['reached']:>4}/{m['runs']:<2} "
                     f"{_fmt(m['median_train_s'], '.2f', 'not reached'):>11} "
                     f"{_fmt(m['median_epoch_s'], '8.3f'):>8} "
                     f"{_fmt(m['median_steady_train_s'], '.2f', 'not reached'):>11}  "
                     f"{per_seed:<32} {best}")
    lines += [f"(cap {r['settings']['max_epochs']} epochs; n/r = not reached; steady s = median "
              "of epochs needed x the median epoch time, robust to epochs slowed by other jobs)",
              f"(sklearn: {r['notes']['sklearn']})"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Wall-clock training seconds until validation accuracy first reaches "
        "--target on CIFAR-10 (49,000 train / 1,000 val, mean image subtracted, float32), "
        "for fcnet's NumPy engine, PyTorch (CPU) and scikit-learn's MLPClassifier training "
        "3072-100-10 with plain SGD (batch 200, lr 1e-3, decay 0.95 per epoch, reg 0.25 or "
        "its equivalent). Accuracy is checked after every epoch (245 iterations), off the "
        "clock; the systems' epochs are interleaved.")
    p.add_argument("--path", default=DEFAULT_CIFAR, metavar="P",
                   help=f"local CIFAR-10 copy, loaded with fcnet.data.load_splits (default "
                   f"{DEFAULT_CIFAR}, relative to the current folder)")
    p.add_argument("--target", type=float, default=0.5, metavar="ACC",
                   help="validation accuracy to reach, in (0, 1] (default 0.5)")
    p.add_argument("--max-epochs", type=int, default=20, metavar="E",
                   help="cap: a system still below the target after E epochs is reported as "
                   "'not reached' (default 20 = 4,900 iterations)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="one race per seed (init and batches); the table gives the median "
                   "(default 0 1 2)")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                   help="which systems race (default all three)")
    p.add_argument("--hidden", type=int, default=100, metavar="H", help="hidden units (default 100)")
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="use N rows of separable synthetic data instead of CIFAR-10 (checks "
                   "the script; its figures mean nothing)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the full results (per-epoch times and accuracies, machine) "
                   "as JSON to PATH ('-' = stdout, instead of the table)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if not 0 < a.target <= 1:
        p.error(f"--target must be in (0, 1], got {a.target}")
    if a.max_epochs < 1:
        p.error(f"--max-epochs must be at least 1, got {a.max_epochs}")
    if a.hidden < 1:
        p.error(f"--hidden must be at least 1, got {a.hidden}")
    if a.synthetic is not None and a.synthetic < 200:
        p.error(f"--synthetic needs at least 200 rows (one batch), got {a.synthetic}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    s = Settings(hidden=a.hidden, target=a.target, max_epochs=a.max_epochs,
                 seeds=list(a.seeds), systems=list(dict.fromkeys(a.systems)))
    if a.synthetic is not None:
        s.gap_s = s.switch_gap_s = 0.0
        d = synthetic(a.synthetic)
    else:
        d = load_cifar(check_source(a.path))
    bar = progress_bar(len(s.seeds) * s.max_epochs, "epochs", "epoch", a.quiet)
    result = run(s, d, bar.update if bar else None)
    if bar:
        bar.close()
    emit(result, a.json, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
