"""What the grader asks of each submission: the inputs (training data, study.md's toy example and, per
run, random sizes, weights, inputs and regs a submission cannot memorise) and each check's steps."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fcnet.check import HIDDEN_SIZE, INPUT_SIZE, NUM_CLASSES, toy_data, toy_model
from fcnet.nn.model import TwoLayerNet

PARAMS = ("W1", "b1", "W2", "b2")
TOY = (INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES)
TOY_REG = 0.05
LARGE_SCALE = 1e4  # X * 1e4 gives toy scores in the thousands: exp overflows unless shifted
SCALING_SIZES = (500, 8000)
TOY_TRAINING = {"learning_rate": 1e-1, "learning_rate_decay": 0.95, "reg": 5e-6, "num_iters": 100,
                "batch_size": 200}
# the training check's settings besides hidden 50, std 1e-4, decay 0.95 and batch 200: digits tuned so
# fcnet's net reaches 0.95 in 300 iterations; CIFAR-10 is study.md's baseline
TRAINING = {"digits": {"learning_rate": 1e-2, "reg": 0.05, "num_iters": 300},
            "cifar10": {"learning_rate": 1e-4, "reg": 0.25, "num_iters": 1000}}


class Case(NamedTuple):
    """A net and a batch: dims (D, H, C), weights, X (N, D), y (N,)."""

    name: str
    dims: tuple[int, int, int]
    params: dict[str, np.ndarray]
    X: np.ndarray
    y: np.ndarray

    def reference(self) -> TwoLayerNet:
        """fcnet's net holding these weights."""
        ref = TwoLayerNet(*self.dims, std=0.1, seed=0)
        for k in PARAMS:
            ref.params[k][...] = self.params[k]
        return ref

    def step(self, op: str, **extra) -> dict:
        return {"op": op, "dims": list(self.dims), "params": self.name, "X": f"{self.name}_X",
                "y": f"{self.name}_y", **extra}


class Plan(NamedTuple):
    """One grading run's inputs and steps, the same for every submission."""

    seed: int
    toy: Case
    rand: Case
    regs: tuple[float, float]  # the random case's regs
    y_test: np.ndarray  # the training check's test labels, never shown to the child
    steps: dict[str, list[dict]]


def make_plan(dataset: str, path: str | None, data: Path) -> tuple[int, Plan]:
    """Write the training data (``path``: CIFAR-10's source) and this run's random inputs into ``data``
    as world-readable ``.npy`` files (the child loads them without pickle, maybe as another uid) and list
    the steps; returns the training data's size in bytes and the plan (y_test stays in it)."""
    from fcnet.data import Preprocessor, get_CIFAR10_data, load_splits

    if dataset == "digits":
        d = load_splits("digits", progress=False, cache=False)
        prep = Preprocessor("mean").fit(d.train.x)
        splits = [a for s in (d.train, d.val, d.test) for a in (prep.transform(s.x), s.y)]
    else:  # CIFAR-10's images as float32, its labels as they are
        splits = [a.astype(np.float32) if i % 2 == 0 else a
                  for i, a in enumerate(get_CIFAR10_data(path=path, progress=False))]
    train = dict(zip(("X_train", "y_train", "X_val", "y_val", "X_test"), splits))
    y_test = np.asarray(splits[5])
    D_train = int(train["X_train"].shape[1])
    C_train = int(max(np.max(train["y_train"]), np.max(train["y_val"]), y_test.max())) + 1
    seed = secrets.randbits(32)
    rs = np.random.RandomState(seed)
    ref = toy_model()
    toy = Case("toy", TOY, {k: ref.params[k].copy() for k in PARAMS}, *toy_data())
    D, H, C, N = int(rs.randint(5, 13)), int(rs.randint(8, 21)), int(rs.randint(4, 8)), int(rs.randint(8, 24))
    rand = Case("rand", (D, H, C), {"W1": 0.2 * rs.randn(D, H), "b1": 0.1 * rs.randn(H),
                                    "W2": 0.2 * rs.randn(H, C), "b2": 0.1 * rs.randn(C)},
                2 * rs.randn(N, D), rs.randint(C, size=N))
    regs = (round(float(rs.uniform(0.1, 0.5)), 3), round(float(rs.uniform(0.6, 1.2)), 3))
    init_rand = {"dims": [D, H, C], "std": round(float(rs.uniform(0.01, 1.0)), 3),
                 "seed": int(rs.randint(1, 10**6))}
    n_max = SCALING_SIZES[-1]
    arrays = {"big_X": toy.X * LARGE_SCALE, "time_X": rs.randn(n_max, INPUT_SIZE),
              "time_y": rs.randint(NUM_CLASSES, size=n_max)}
    data.mkdir(mode=0o755)
    for name, a in (train | arrays | {f"{c.name}_{k}": v for c in (toy, rand)
                                      for k, v in {"X": c.X, "y": c.y, **c.params}.items()}).items():
        np.save(data / f"{name}.npy", np.ascontiguousarray(a))
        (data / f"{name}.npy").chmod(0o644)
    steps = {
        "init": [{"op": "construct", "dims": list(TOY), "std": 0.1, "seed": 0},
                 {"op": "construct", **init_rand}],
        "q1_scores": [toy.step("forward"), rand.step("forward")],
        "q1_stable": [toy.step("forward", X="big_X")],
        "q1_loss": [toy.step("loss", reg=TOY_REG), rand.step("loss", reg=regs[0]),
                    rand.step("loss", reg=regs[1])],
        "q1c_scaling": [toy.step("time", X="time_X", y="time_y", reg=TOY_REG, sizes=list(SCALING_SIZES),
                                 reps=5)],
        "q2_gradients": [toy.step("loss", reg=TOY_REG), rand.step("loss", reg=regs[0]),
                         toy.step("loss", reg=0.0)],
        "q3_toy_training": [{"op": "train", "dims": list(TOY), "std": 0.1, "seed": 0, "X": "toy_X",
                             "y": "toy_y", "X_val": "toy_X", "y_val": "toy_y", "kwargs": TOY_TRAINING}],
        f"q3_{dataset}": [{"op": "train", "dims": [D_train, 50, C_train], "std": 1e-4, "seed": 0,
                           "X": "X_train", "y": "y_train", "X_val": "X_val", "y_val": "y_val",
                           "predict": "X_test", "kwargs": {**TRAINING[dataset], "learning_rate_decay": 0.95,
                                                           "batch_size": 200}}],
    }
    return sum(int(np.asarray(a).nbytes) for a in train.values()), Plan(seed, toy, rand, regs, y_test, steps)
