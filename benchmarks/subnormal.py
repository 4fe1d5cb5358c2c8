"""Subnormal floats: a deep net with a tiny initialisation vs Kaiming, with and
without flushing subnormals to zero, in both backends.

A deep net started from normal(0, 1e-4) passes signals that shrink by orders of
magnitude per layer; its gradients are tiny and Adam's second moment (their
squares) falls below float32's normal range (1.2e-38) into subnormal numbers,
on which some CPU instructions run many times slower.  Flushing them to zero
(the SSE FTZ/DAZ bits: ``fcnet.nn.fpenv.flush_denormals``, which ``Solver.run``
uses by default; ``torch.set_flush_denormal(True)`` in PyTorch) makes such a
run cost what a healthy one does.

Every configuration is built, trained ``--warmup`` steps (so Adam's state fills
with subnormals), then timed in interleaved rounds (median ms per step), and
its subnormal count (parameters and optimiser state) is read at the end.

    .venv/bin/python benchmarks/subnormal.py              # about a minute on 2 cores
    .venv/bin/python benchmarks/subnormal.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from fcnet.nn.fpenv import flushing, supported
from fcnet.nn.model import MLP
from fcnet.nn.solver import Solver

D, C, ROWS, BATCH = 3072, 10, 4000, 200


def subnormals(arrays) -> int:
    """How many entries are nonzero but below the dtype's smallest normal number."""
    n = 0
    for a in arrays:
        a = np.asarray(a)
        n += int(((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)).sum())
    return n


class NumpyRun:
    def __init__(self, X, y, depth: int, init: str, flush: bool, lr: float):
        net = MLP(D, [50] * (depth - 1), C, std=1e-4, seed=0, dtype="float32")
        if init == "kaiming":
            rng = np.random.RandomState(1)
            for i in range(1, net.num_layers + 1):
                w = net.params[f"W{i}"]
                net.params[f"W{i}"] = (rng.randn(*w.shape) * np.sqrt(2 / w.shape[0])).astype(
                    np.float32)
        self.net = net
        self.solver = Solver(net, X, y, X[:200], y[:200], learning_rate=lr, reg=0.0,
                             num_iters=2**62, batch_size=BATCH, seed=0, optimizer="adam",
                             flush_denormals=flush)

    def step(self) -> None:
        self.solver.run(until=self.solver.it + 1)

    def count(self) -> int:
        opt = self.solver.optimizer
        return subnormals([*self.net.params.values(), *opt.m.values(), *opt.v.values()])

    def loss(self) -> float:
        return float(self.solver.loss_history[-1])


class TorchRun:
    def __init__(self, X, y, depth: int, init: str, flush: bool, lr: float):
        import torch

        self.torch, self.flush = torch, flush
        torch.manual_seed(0)
        sizes = [D] + [50] * (depth - 1) + [C]
        mods = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layer = torch.nn.Linear(a, b)
            with torch.no_grad():
                if init == "kaiming":
                    torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                else:
                    layer.weight.normal_(0, 1e-4)
                layer.bias.zero_()
            mods += [layer, torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*mods[:-1])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.g = torch.Generator().manual_seed(0)
        self.last = float("nan")

    def step(self) -> None:
        torch = self.torch
        torch.set_flush_denormal(self.flush)
        try:
            idx = torch.randint(0, self.X.shape[0], (BATCH,), generator=self.g)
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.net(self.X[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
            self.last = loss.item()
        finally:
            torch.set_flush_denormal(False)

    def count(self) -> int:
        state = [t for s in self.opt.state.values() for t in s.values()
                 if hasattr(t, "dim") and t.dim() > 0]
        return subnormals([p.detach().numpy() for p in self.net.parameters()]
                          + [t.numpy() for t in state])

    def loss(self) -> float:
        return self.last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=8, help="Linear layers (default 8)")
    p.add_argument("--warmup", type=int, default=150, help="untimed steps first (default 150)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--block", type=int, default=10, help="timed steps per round (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--no-torch", action="store_true", help="NumPy engine only")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)

    gen = np.random.default_rng(0)
    X = gen.standard_normal((ROWS, D), dtype=np.float32)
    y = gen.integers(0, C, ROWS).astype(np.int64)
    backends = {"numpy": NumpyRun}
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            backends["torch"] = TorchRun
        except ImportError:
            print("torch not installed: NumPy engine only")
    runs = {}
    for bname, cls in backends.items():
        for init in ("tiny", "kaiming"):
            for flush in (False, True):
                runs[(bname, init, flush)] = cls(X, y, args.depth, init, flush, args.lr)
    for r in runs.values():
        for _ in range(args.warmup):
            r.step()
    times: dict = {key: [] for key in runs}
    keys = list(runs)
    for rnd in range(args.rounds):
        order = keys[rnd % len(keys):] + keys[: rnd % len(keys)]
        for key in order:
            time.sleep(0.05)  # let the previous run's worker threads go idle
            runs[key].step()
            for _ in range(args.block):
                t0 = time.perf_counter()
                runs[key].step()
                times[key].append(1e3 * (time.perf_counter() - t0))

    rows = []
    for (bname, init, flush), r in runs.items():
        rows.append({"backend": bname, "init": init, "flush": flush,
                     "ms_per_step": statistics.median(times[(bname, init, flush)]),
                     "subnormals": r.count(), "loss": r.loss()})
    print(f"net {D}-" + "-".join(["50"] * (args.depth - 1)) + f"-{C}, float32, Adam "
          f"lr {args.lr}, batch {BATCH}; fcnet FTZ/DAZ supported here: {supported()}")
    print(f"{'backend':<7} {'init':<8} {'flush':<6} {'ms/step':>8} {'x kaiming':>10} "
          f"{'subnormals':>11} {'loss':>8}")
    for row in rows:
        base = next(x for x in rows if x["backend"] == row["backend"]
                    and x["init"] == "kaiming" and x["flush"] == row["flush"])
        row["vs_kaiming"] = row["ms_per_step"] / base["ms_per_step"]
        print(f"{row['backend']:<7} {row['init']:<8} {('on' if row['flush'] else 'off'):<6} "
              f"{row['ms_per_step']:8.3f} {row['vs_kaiming']:10.2f} {row['subnormals']:>11,} "
              f"{row['loss']:8.4f}")
    assert not flushing()  # every run put the floating-point environment back
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"depth": args.depth, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
