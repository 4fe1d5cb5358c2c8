"""benchmarks/gpu_torch_population.py on its CPU path, tiny (the GPU figures
come from a device run; see benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the script trains torch populations")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_torch_population.py"


def test_cpu_path_reports_configs_per_second_for_each_k_and_dtype(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--ks", "1,3", "--rows", "400",
         "--input", "32", "--hidden", "8", "--steps", "3", "--iters", "10",
         "--dtypes", "bfloat16,float32", "--no-study", "--json", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["net"] == "32-8-10"
    pops = r["populations"]
    assert [(p["dtype"], p["k"]) for p in pops] == [
        ("bfloat16", 1), ("bfloat16", 3), ("float32", 1), ("float32", 3)]
    for p in pops:
        assert p["step_ms"] > 0
        assert p["configs_per_s"] == pytest.approx(p["k"] / (10 * p["step_ms"] / 1e3))
    assert "study" not in r
    assert "configs/s" in proc.stdout


def test_without_cuda_the_default_device_is_a_one_line_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the default device works")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--no-study"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gpu_torch_population: error: no CUDA device (use --device cpu)"]
