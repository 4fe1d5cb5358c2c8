"""The measurements behind each check, run inside the sandboxed child on the
student's ``TwoLayerNet``.  Each returns ``(value, note, detail)``: the number
the grader compares with the threshold, a short remark, and extra data (the toy
loss curve).  Raise ``GradeFailure`` for a contract violation worth one line."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnet.check import (
    EXPECTED_LOSS,
    EXPECTED_PROBS,
    EXPECTED_TOY_FINAL_LOSS,
    HIDDEN_SIZE,
    INPUT_SIZE,
    NUM_CLASSES,
    toy_data,
    toy_model,
)
from fcnet.gradcheck import check_model_gradients, rel_error
from fcnet.grade.static import find_loops
from fcnet.nn.model import TwoLayerNet as Reference

PARAMS = ("W1", "b1", "W2", "b2")
# the training check's settings: digits tuned so fcnet's net reaches 0.97 in 300
# iterations; CIFAR-10 is study.md's baseline
TRAINING = {
    "digits": {"hidden": 50, "std": 1e-4, "learning_rate": 1e-2, "learning_rate_decay": 0.95,
               "reg": 0.05, "num_iters": 300, "batch_size": 200},
    "cifar10": {"hidden": 50, "std": 1e-4, "learning_rate": 1e-4, "learning_rate_decay": 0.95,
                "reg": 0.25, "num_iters": 1000, "batch_size": 200},
}
LARGE_SCALE = 1e4  # X * 1e4 gives toy scores in the thousands: exp overflows unless shifted
SCALING_SIZES = (500, 8000)


class GradeFailure(Exception):
    """A contract violation, reported as its message alone."""


@dataclass
class Context:
    cls: type
    data: Path | None
    dataset: str


def _seeded(fn: Callable, seed: int = 0):
    """Run ``fn`` after np.random.seed(seed), restoring the global generator after."""
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        return fn()
    finally:
        np.random.set_state(saved)


def _toy_net(cls: type):
    """The student's toy net holding the reference toy weights, so the forward and
    backward checks do not depend on how it draws them (``init`` checks that)."""
    net = _seeded(lambda: cls(INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES, std=1e-1))
    ref = toy_model()
    if not isinstance(getattr(net, "params", None), dict):
        raise GradeFailure("TwoLayerNet has no params dict")
    for k in PARAMS:
        net.params[k] = ref.params[k].copy()
    return net


def _array(value, shape: tuple, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise GradeFailure(f"{what} returned {type(value).__name__}, expected an array {shape}") from None
    if a.shape != shape:
        raise GradeFailure(f"{what} returned shape {a.shape}, expected {shape}")
    return a


def _loss_and_grads(net, X, y, reg: float) -> tuple[float, dict]:
    out = net.loss(X, y, reg=reg)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise GradeFailure("loss(X, y, reg) must return (loss, grads)")
    loss, grads = out
    if not isinstance(grads, dict) or any(k not in grads for k in PARAMS):
        missing = [k for k in PARAMS if not isinstance(grads, dict) or k not in grads]
        raise GradeFailure(f"grads lacks {', '.join(missing)}")
    return float(loss), grads


# ------------------------------------------------------------------ the checks
def load(ctx: Context):
    return None, f"TwoLayerNet from {Path(ctx.cls.__module__ + '.py').name}", None


def init(ctx: Context):
    net = _seeded(lambda: ctx.cls(INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES, std=1e-1))
    ref = _seeded(lambda: Reference(INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES, std=1e-1))
    params = getattr(net, "params", None)
    if not isinstance(params, dict):
        raise GradeFailure("TwoLayerNet has no params dict")
    missing = [k for k in PARAMS if k not in params]
    if missing:
        raise GradeFailure(f"params lacks {', '.join(missing)}")
    worst = 0.0
    for k in PARAMS:
        worst = max(worst, float(np.max(np.abs(_array(params[k], ref.params[k].shape, f"params[{k!r}]")
                                                - ref.params[k]))))
    note = "" if worst < 1e-12 else "draw W1 then W2 as std * np.random.randn(...), biases zero"
    return worst, note, None


def q1_scores(ctx: Context):
    net = _toy_net(ctx.cls)
    X, _ = toy_data()
    probs = _array(net.loss(X), EXPECTED_PROBS.shape, "loss(X)")
    value = float(np.sum(np.abs(probs - EXPECTED_PROBS)))
    note = ""
    if np.all(np.isfinite(probs)) and not np.allclose(probs.sum(axis=1), 1.0):
        note = "rows do not sum to 1: loss(X) must return probabilities, not scores"
    return value, note, None


def q1_stable(ctx: Context):
    net = _toy_net(ctx.cls)
    X = toy_data()[0] * LARGE_SCALE
    with np.errstate(all="ignore"):
        probs = _array(net.loss(X), EXPECTED_PROBS.shape, "loss(X)")
    ref = toy_model().loss(X)
    value = float(np.sum(np.abs(probs - ref)))
    note = "" if np.all(np.isfinite(probs)) else "NaN or inf: subtract each row's max before exp"
    return value, note, None


def q1_loss(ctx: Context):
    net = _toy_net(ctx.cls)
    X, y = toy_data()
    loss, _ = _loss_and_grads(net, X, y, reg=0.05)
    value = abs(loss - EXPECTED_LOSS)
    note = ""
    if value >= 1e-12:
        ref = toy_model()
        data_loss = float(ref.loss(X, y, reg=0.0)[0])
        l2 = sum(float(np.sum(ref.params[k] ** 2)) for k in ("W1", "W2"))
        if abs(loss - (data_loss + 0.025 * l2)) < 1e-10:
            note = "matches 0.5 * reg * sum(W**2): study.md's L2 has no 1/2"
        elif abs(loss - data_loss) < 1e-10:
            note = "matches the loss without the L2 term"
    return value, note, None


def q2_gradients(ctx: Context):
    net = _toy_net(ctx.cls)
    X, y = toy_data()
    _loss_and_grads(net, X, y, reg=0.05)
    rel = check_model_gradients(net, X, y, reg=0.05)
    value = max(rel.values())
    note = ", ".join(f"{k} {rel[k]:.1e}" for k in PARAMS)
    if value >= 1e-8:
        _, g0 = _loss_and_grads(net, X, y, reg=0.0)
        g0 = {k: np.array(v, dtype=np.float64) for k, v in g0.items()}
        ref = toy_model()
        _, r0 = ref.loss(X, y, reg=0.0)
        if all(rel_error(g0[k], r0[k]) < 1e-8 for k in PARAMS):
            note += "; right without reg: is the 2 * reg * W term there?"
    return value, note, None


def q1c_loops(ctx: Context):
    found = find_loops(ctx.cls)
    note = "; ".join(str(f) for f in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return float(len(found)), note or "no loop over data in loss", None


def q1c_scaling(ctx: Context):
    rs = np.random.RandomState(2)
    n_max = SCALING_SIZES[-1]
    X, y = rs.randn(n_max, INPUT_SIZE), rs.randint(NUM_CLASSES, size=n_max)
    net, ref = _toy_net(ctx.cls), toy_model()
    times: dict[str, dict[int, float]] = {"yours": {}, "fcnet": {}}
    for rep in range(5):
        for who, m in (("yours", net), ("fcnet", ref)):
            for n in SCALING_SIZES:
                t0 = time.perf_counter()
                m.loss(X[:n], y[:n], reg=0.05)
                t = time.perf_counter() - t0
                times[who][n] = min(times[who].get(n, t), t)
        if rep and sum(times["yours"].values()) > 1.0:  # a slow loss: two timings are enough
            break
    dn = SCALING_SIZES[1] - SCALING_SIZES[0]
    slope = {w: (t[SCALING_SIZES[1]] - t[SCALING_SIZES[0]]) / dn for w, t in times.items()}
    value = max(slope["yours"], 0.0) / max(slope["fcnet"], 1e-9)
    note = f"{slope['yours'] * 1e6:.3g} us per sample (fcnet {slope['fcnet'] * 1e6:.2g})"
    return value, note, None


def q3_toy_training(ctx: Context):
    X, y = toy_data()

    def run():
        net = ctx.cls(INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES, std=1e-1)
        return net.train(X, y, X, y, learning_rate=1e-1, learning_rate_decay=0.95, reg=5e-6,
                         num_iters=100, batch_size=200, verbose=False)

    stats = _seeded(run)
    hist = _history(stats, "loss_history")
    final = hist[-1]
    exact = abs(final - EXPECTED_TOY_FINAL_LOSS) < 1e-12
    note = ("the course's exact 0.01714960793873205" if exact else
            "the course's driver gives 0.01714960793873205")
    return final, note, {"loss_history": hist}


def _history(stats, key: str) -> list[float]:
    if not isinstance(stats, dict) or key not in stats:
        raise GradeFailure(f"train must return a dict with {key!r}")
    hist = [float(v) for v in np.asarray(stats[key], dtype=np.float64).ravel()]
    if not hist:
        raise GradeFailure(f"train returned an empty {key!r}")
    return hist


def _training(ctx: Context, dataset: str):
    if ctx.data is None:
        raise GradeFailure("no training data was given to the grader")
    arr = {k: np.load(ctx.data / f"{k}.npy", allow_pickle=False)
           for k in ("X_train", "y_train", "X_val", "y_val")}
    s = TRAINING[dataset]
    D, C = arr["X_train"].shape[1], int(max(arr["y_train"].max(), arr["y_val"].max())) + 1

    def run():
        net = ctx.cls(D, s["hidden"], C, std=s["std"])
        opts = {k: v for k, v in s.items() if k not in ("hidden", "std")}
        stats = net.train(arr["X_train"], arr["y_train"], arr["X_val"], arr["y_val"], verbose=False, **opts)
        return net, stats

    net, stats = _seeded(run)
    hist = _history(stats, "loss_history")
    pred = _array(net.predict(arr["X_val"]), arr["y_val"].shape, "predict(X_val)")
    acc = float(np.mean(pred == arr["y_val"]))
    step = max(1, len(hist) // 2000)
    return acc, f"final training loss {hist[-1]:.4g}", {"loss_history": hist[::step]}


def q3_digits(ctx: Context):
    return _training(ctx, "digits")


def q3_cifar10(ctx: Context):
    return _training(ctx, "cifar10")


RUN: dict[str, Callable[[Context], tuple]] = {
    f.__name__: f for f in (load, init, q1_scores, q1_stable, q1_loss, q1c_loops, q1c_scaling,
                            q2_gradients, q3_toy_training, q3_digits, q3_cifar10)
}
