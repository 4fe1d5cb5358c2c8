"""fcnet's torch population on one GPU: configurations trained per second for
K = 1, 8, 64, 256 and 1024, and the bundled study's wall time.

K configurations of the exercise's net (3072-50-10, batch 200, lr and L2 spread
out, one shared minibatch stream) train as one ``TorchPopulation`` in
bfloat16-mixed, exactly as ``fcnet sweep`` / ``fcnet study --backend torch``
train them.  A configuration is the exercise's 1,000 iterations, so
configurations per second = K / (1,000 x seconds per step).  Then ``fcnet study
--backend torch --dtype bfloat16`` runs into an empty folder and its wall time
is kept (or the one line it failed with).

    python3 benchmarks/gpu_torch_population.py --json results/gpu_torch_population.json
    python3 benchmarks/gpu_torch_population.py --device cpu --ks 1,2 --rows 400 \\
        --input 32 --steps 3 --no-study                   # the CPU path, tiny

Needs torch and fcnet (src/ on the path); the throughput part uses synthetic
data (step time does not depend on the values).  About 1-2 minutes on one
H100/H200: the study is capped by --study-timeout (default 100 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

import torch  # noqa: E402

from fcnet.config import make_config  # noqa: E402
from fcnet.torch_backend.population import TorchPopulation  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(k: int, X, y, device: torch.device, dtype: str, hidden: int, classes: int,
               steps: int, iters: int) -> dict:
    """One population of k: ms per step and configurations trained per second."""
    lrs = np.geomspace(3e-5, 1e-3, k)
    regs = np.resize([0.0, 0.05, 0.25, 0.5], k)
    pop = TorchPopulation([make_config(backend="torch", optimizer="sgd", init="normal", std=1e-4,
                                       hidden=[hidden], lr=float(a), reg=float(b), seed=0,
                                       batch_size=200, iters=10**9, dtype=dtype,
                                       device=device.type)
                           for a, b in zip(lrs, regs)], X.shape[1], classes)
    Xt, yt = pop.data(X, y)
    for _ in range(5):  # warm-up: kernels, workspaces
        pop.step(Xt, yt, pop.batch(X.shape[0]), pop.lrs)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        pop.step(Xt, yt, pop.batch(X.shape[0]), pop.lrs)
    sync(device)
    step_s = (time.perf_counter() - t0) / steps
    out = {"k": k, "step_ms": 1e3 * step_s, "configs_per_s": k / (iters * step_s)}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    del pop
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def study_time(dataset: str, path: str | None, timeout: float) -> dict:
    """``fcnet study --backend torch --dtype bfloat16`` into an empty folder."""
    out = tempfile.mkdtemp(prefix="fcnet-gpu-study-")
    cmd = [sys.executable, "-m", "fcnet", "study", "--dataset", dataset, "--backend", "torch",
           "--dtype", "bfloat16", "--quiet", "--out", out]
    if path:
        cmd += ["--path", path]
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[1:]), "wall_s": None,
                "error": f"still running after {timeout:.0f} s (stopped)"}
    wall = time.perf_counter() - t0
    res = {"command": " ".join(cmd[1:]), "wall_s": wall if proc.returncode == 0 else None}
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        res["error"] = lines[-1] if lines else f"exit {proc.returncode}"
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--ks", default="1,8,64,256,1024", help="population sizes")
    p.add_argument("--dtypes", default="bfloat16", help="comma-separated: bfloat16,float32")
    p.add_argument("--rows", type=int, default=49_000, help="synthetic training rows")
    p.add_argument("--input", type=int, default=3072, help="input size D")
    p.add_argument("--hidden", type=int, default=50, help="hidden size (the exercise's 50)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per population")
    p.add_argument("--iters", type=int, default=1000, help="iterations of one configuration")
    p.add_argument("--no-study", action="store_true", help="skip the study's wall time")
    p.add_argument("--study-dataset", default="digits",
                   help="dataset of the study (default digits; cifar10 needs --path)")
    p.add_argument("--path", help="local copy of the study's dataset")
    p.add_argument("--study-timeout", type=float, default=100.0, help="seconds (default 100)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_torch_population: error: no CUDA device (use --device cpu)", file=sys.stderr)
        return 2
    gen = np.random.default_rng(0)
    X = gen.standard_normal((a.rows, a.input), dtype=np.float32) * 60
    y = gen.integers(0, 10, a.rows)
    Xd = torch.from_numpy(X).to(device)  # once on the device, shared by every population
    res: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                 else "cpu", "torch": torch.__version__, "net": f"{a.input}-{a.hidden}-10",
                 "batch": 200, "iters_per_config": a.iters, "populations": []}
    print(f"{'dtype':<9} {'K':>5} {'ms/step':>9} {'configs/s':>10}", flush=True)
    for dtype in a.dtypes.split(","):
        for k in (int(v) for v in a.ks.split(",")):
            try:
                r = throughput(k, Xd, y, device, dtype, a.hidden, 10, a.steps, a.iters)
            except torch.OutOfMemoryError:
                r = {"k": k, "error": "out of memory"}
            r["dtype"] = dtype
            res["populations"].append(r)
            if "error" in r:
                print(f"{dtype:<9} {k:>5}   {r['error']}", flush=True)
            else:
                print(f"{dtype:<9} {k:>5} {r['step_ms']:9.3f} {r['configs_per_s']:10.1f}",
                      flush=True)
    if not a.no_study:
        res["study"] = study_time(a.study_dataset, a.path, a.study_timeout)
        s = res["study"]
        print(f"study ({a.study_dataset}, torch bf16): "
              + (f"{s['wall_s']:.1f} s" if s["wall_s"] is not None else s["error"]), flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
