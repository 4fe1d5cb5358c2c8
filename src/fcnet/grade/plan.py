"""What the grader asks of each submission: the inputs (study.md's toy example and, per
grading run, random sizes, weights, inputs and regs a submission cannot memorise), written
as ``.npy`` files for the child, and the steps of each check."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnet.check import HIDDEN_SIZE, INPUT_SIZE, NUM_CLASSES, toy_data, toy_model

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


@dataclass
class Case:
    """A net and a batch: dims (D, H, C), weights, X (N, D), y (N,)."""

    name: str
    dims: tuple[int, int, int]
    params: dict[str, np.ndarray]
    X: np.ndarray
    y: np.ndarray

    def reference(self):
        """fcnet's net holding these weights."""
        from fcnet.nn.model import TwoLayerNet

        ref = TwoLayerNet(*self.dims, std=0.1, seed=0)
        for k in PARAMS:
            ref.params[k][...] = self.params[k]
        return ref

    def step(self, op: str, **extra) -> dict:
        return {"op": op, "dims": list(self.dims), "params": self.name, "X": f"{self.name}_X",
                "y": f"{self.name}_y", **extra}


@dataclass
class Plan:
    """One grading run's inputs and steps, the same for every submission."""

    seed: int
    toy: Case
    rand: Case
    regs: tuple[float, float]  # the random case's regs
    y_test: np.ndarray  # the training check's test labels, never shown to the child
    steps: dict[str, list[dict]]


def save_arrays(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each array as ``dest/<name>.npy``, world-readable (the child may run as another uid)."""
    for k, v in arrays.items():
        np.save(dest / f"{k}.npy", np.ascontiguousarray(v))
        (dest / f"{k}.npy").chmod(0o644)


def make_plan(dataset: str, data: Path, D_train: int, C_train: int, y_test: np.ndarray) -> Plan:
    """Draw this run's random case, write every input array into ``data`` and list the steps
    (the training check's net has ``D_train`` inputs and ``C_train`` classes)."""
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
    save_arrays(data, arrays | {f"{c.name}_{k}": v for c in (toy, rand)
                                for k, v in {"X": c.X, "y": c.y, **c.params}.items()})
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
    return Plan(seed, toy, rand, regs, y_test, steps)
