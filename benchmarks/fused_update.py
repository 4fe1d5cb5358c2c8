"""Plain SGD's weight step folded into the backward product (``fcnet.nn.blas.gemm``: one gemm
with beta = 1 - 2 lr reg) against the product into a gradient buffer followed by the scale and
the add (the fallback, forced by hiding NumPy's cblas), and both against the floor step of
``fcnet bench`` (the gather and the products alone), in one process: a lone 3072-100-10 net
and a population of 8 x 3072-50-10 (bench's sweep configurations), batch 200, float32.
``no_l2`` is the fused step with reg = 0: no squared norms for the loss and no decay of the
weights, so ``fused - no_l2`` is what the L2 term's two passes over W1 cost inside the step.

Systems alternate every few steps, so drift on a shared machine touches them alike; each
figure is the median ms of the timed steps.  Both ways end with the same parameters (checked
and reported: ``same_params``).

    .venv/bin/python benchmarks/fused_update.py              # about a minute on 2 cores
    .venv/bin/python benchmarks/fused_update.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from fcnet.bench import BenchSettings, FloorStep, pop_configs
from fcnet.nn import blas
from fcnet.nn.fpenv import flush_denormals
from fcnet.nn.model import MLP
from fcnet.nn.solver import Solver


def solver(X, y, hidden: int, configs: list[dict]) -> Solver:
    models = [MLP(X.shape[1], [hidden], 10, std=1e-4, seed=c["seed"], dtype="float32") for c in configs]
    return Solver(models, X, y, X[:100], y[:100], learning_rate=[c["lr"] for c in configs],
                  reg=[c["reg"] for c in configs], num_iters=2**40, batch_size=200, seed=0)


def measure(X, y, hidden: int, configs: list[dict], rounds: int, block: int) -> dict:
    fused, apart = solver(X, y, hidden, configs), solver(X, y, hidden, configs)
    no_l2 = solver(X, y, hidden, [{**c, "reg": 0.0} for c in configs])
    floor = FloorStep(X, [X.shape[1], hidden, 10], 200, len(configs))
    real = blas._cblas_gemm

    def product_then_add() -> None:
        blas._cblas_gemm = lambda kind: None
        try:
            apart.step()
        finally:
            blas._cblas_gemm = real

    systems = {"fused": fused.step, "product_then_add": product_then_add, "no_l2": no_l2.step,
               "floor": floor.step}
    times: dict[str, list[float]] = {k: [] for k in systems}
    for f in systems.values():
        for _ in range(10):
            f()
    for _ in range(rounds):
        for name, f in systems.items():
            f()  # untimed: the previous system's data leaves the caches
            for _ in range(block):
                t = time.perf_counter()
                f()
                times[name].append(1e3 * (time.perf_counter() - t))
    ms = {k: statistics.median(v) for k, v in times.items()}
    return {"k": len(configs), "hidden": hidden, "ms": ms,
            "fused / floor": ms["fused"] / ms["floor"],
            "product_then_add / floor": ms["product_then_add"] / ms["floor"],
            "no_l2 / floor": ms["no_l2"] / ms["floor"],
            "same_params": all(np.array_equal(p, q) for p, q in
                               zip(fused.stack.params, apart.stack.params, strict=True)),
            "blas_gemm_found": real("s") is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=49_000, help="training rows (CIFAR-10's 49,000)")
    ap.add_argument("--input", type=int, default=3072, help="input width D")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--block", type=int, default=5, help="timed steps per system per round")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    gen = np.random.default_rng(0)
    X = gen.standard_normal((a.rows, a.input), dtype=np.float32) * 60
    y = gen.integers(0, 10, a.rows).astype(np.intp)
    s = BenchSettings()
    with flush_denormals(True):
        out = [measure(X, y, s.hidden, [{"lr": s.lr, "reg": s.reg, "seed": 0}], a.rounds, a.block),
               measure(X, y, s.pop_hidden, pop_configs(s, s.pop_k), a.rounds, a.block)]
    for r in out:
        print(f"K = {r['k']} x {a.input}-{r['hidden']}-10: fused {r['ms']['fused']:.3f} ms "
              f"({r['fused / floor']:.3f}x floor), product then add {r['ms']['product_then_add']:.3f} ms "
              f"({r['product_then_add / floor']:.3f}x), without the L2 term {r['ms']['no_l2']:.3f} ms "
              f"({r['no_l2 / floor']:.3f}x), floor {r['ms']['floor']:.3f} ms; "
              f"same parameters: {r['same_params']}, NumPy's cblas found: {r['blas_gemm_found']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
