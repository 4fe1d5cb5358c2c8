"""How near can any training come to a study's floor on this machine, now?  A study's floor counts
each shape's *fastest* floor step (``fcnet.experiments.floor.measure``, docs/bench.md).  A loop of
that floor step alone, nothing else, is the best any trainer could do; on a shared host it runs
slower than its fastest step, and that ratio is the least ``wall / floor`` a perfect study could
show here.  Per shape (synthetic rows, the floor step of ``fcnet bench``), this prints:

- ``fastest_ms`` and ``median_ms``: the floor's own way (a warm-up, then interleaved rounds of at
  least 5 steps and 5 ms each; the fastest and the median of those steps);
- ``loop_ms``: the mean step of an unbroken loop of ``--loop`` steps, on the same thread count;
- ``two_loops_ms``: the same loop in two processes at once, one BLAS thread each, as a study's two
  sweep workers train (the mean of their means).

    .venv/bin/python benchmarks/floor_noise.py                    # CIFAR-10's widths, about 2 min
    .venv/bin/python benchmarks/floor_noise.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fcnet.bench import FloorStep, machine_info
from fcnet.experiments.floor import MIN_SECONDS, MIN_STEPS, ROUNDS

SHAPES = [(50, 1), (100, 1), (50, 2), (100, 8)]  # (hidden, population): the CIFAR-10 study's


def rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32) * 60


def floor_way(steps: list[FloorStep]) -> list[list[float]]:
    """Each step's timed steps, as the study floor times them (seconds)."""
    for f in steps:
        for _ in range(3):
            f.step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(ROUNDS):
        for f, ts in zip(steps, times, strict=True):
            n, start = 0, time.perf_counter()
            while n < MIN_STEPS or time.perf_counter() - start < MIN_SECONDS:
                t0 = time.perf_counter()
                f.step()
                ts.append(time.perf_counter() - t0)
                n += 1
    return times


def loop(f: FloorStep, n: int) -> float:
    """Mean seconds a step over an unbroken loop of n steps."""
    f.step()
    t0 = time.perf_counter()
    for _ in range(n):
        f.step()
    return (time.perf_counter() - t0) / n


def _one_loop(args) -> float:  # a process of its own, one BLAS thread (a sweep worker)
    n_rows, d, hidden, k, batch, n, seed, start = args
    with threadpool_limits(1):
        f = FloorStep(rows(n_rows, d, seed), [d, hidden, 10], batch, k)
        f.step()
        time.sleep(max(0.0, start - time.time()))  # both loops start together
        return loop(f, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=49000, help="rows to gather batches from (default 49000)")
    ap.add_argument("--dim", type=int, default=3072, help="input width (default 3072: CIFAR-10)")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--loop", type=int, default=400, help="steps of each unbroken loop (default 400)")
    ap.add_argument("--shapes", default=",".join(f"{h}x{k}" for h, k in SHAPES),
                    help="hidden x population, comma-separated (default: %(default)s)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    a = ap.parse_args()
    shapes = [tuple(map(int, s.split("x"))) for s in a.shapes.split(",")]
    X = rows(a.rows, a.dim)
    steps = [FloorStep(X, [a.dim, h, 10], a.batch, k) for h, k in shapes]
    times = floor_way(steps)
    out = {"machine": machine_info(), "settings": vars(a), "shapes": []}
    ctx = mp.get_context("spawn")
    for (h, k), f, ts in zip(shapes, steps, times, strict=True):
        fastest, median, sustained = min(ts), float(np.median(ts)), loop(f, a.loop)
        with ctx.Pool(2) as pool:
            start = time.time() + 2.0
            two = pool.map(_one_loop, [(a.rows, a.dim, h, k, a.batch, a.loop, s, start) for s in (1, 2)])
        r = {"shape": f"{a.dim}-{h}-10 batch {a.batch}" + (f", population of {k}" if k > 1 else ""),
             "timed_steps": len(ts), "fastest_ms": 1e3 * fastest, "median_ms": 1e3 * median,
             "loop_ms": 1e3 * sustained, "loop / fastest": sustained / fastest,
             "two_loops_ms": 1e3 * float(np.mean(two)),
             # two workers' loops against the floor's fastest step (2 threads, one process)
             "two_loops / 2 / fastest": float(np.mean(two)) / 2 / fastest}
        out["shapes"].append(r)
        print(f"{r['shape']:<44} fastest {r['fastest_ms']:7.3f} ms  median {r['median_ms']:7.3f}  "
              f"loop {r['loop_ms']:7.3f} ({r['loop / fastest']:.2f}x fastest)  two loops "
              f"{r['two_loops_ms']:7.3f} ({r['two_loops / 2 / fastest']:.2f}x fastest per step)", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
