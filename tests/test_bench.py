"""`fcnet bench`: the JSON it prints and the table (structure and sanity only;
speed targets live in benchmarks/, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fcnet.bench import STEP_KEYS, TORCH_STEP_KEYS, BenchSettings, format_table, run_bench
from fcnet.errors import FcnetError

SMALL = ["--rows", "1000", "--steps", "30", "--rounds", "2", "--quiet"]


@pytest.fixture(scope="module")
def bench_json() -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "fcnet", "bench", "--json", *SMALL],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_has_step_ms_for_every_system_all_positive(bench_json):
    step = bench_json["step_ms"]
    assert set(step) == set(STEP_KEYS + TORCH_STEP_KEYS) == {
        "fcnet_f32", "fcnet_f64", "blas_floor_f32", "blas_floor_f64", "torch_f32", "sklearn_f32",
        "torch_bf16", "bf16_floor",
    }
    # torch and scikit-learn are installed in the dev environment, so all are measured
    assert all(isinstance(v, float) and 0 < v < 1e4 for v in step.values()), step
    # every system got at least 30 timed steps
    assert all(n >= 30 for n in bench_json["steps_timed"].values()), bench_json["steps_timed"]


def test_json_population_and_machine_blocks(bench_json):
    pop = bench_json["population"]
    assert pop["k"] == 8 and pop["hidden"] == 50
    assert pop["sequential_ms"] > 0 and pop["population_ms"] > 0
    assert pop["speedup"] == pytest.approx(pop["sequential_ms"] / pop["population_ms"])
    # the torch bf16 population, K = 8 and K = 64, beside them
    assert pop["torch_bf16_ms"] > 0 and pop["torch_bf16_k64_ms"] > 0 and pop["k_large"] == 64
    m = bench_json["machine"]
    assert m["cores"] >= 1
    assert isinstance(m["cpu"], str) and m["cpu"]
    assert m["blas_threads"] is None or m["blas_threads"] >= 1
    assert {"blas", "numpy", "torch", "sklearn", "flush_denormals"} <= set(m)
    targets = bench_json["targets"]
    assert len(targets) == 7
    assert {"torch_bf16 / bf16_floor <= 1.6", "fcnet_f32 / torch_bf16 >= 2.2",
            "sequential / torch_bf16_population >= 4"} <= set(targets)
    assert all(t["ratio"] > 0 for t in targets.values())
    fallback = pop["torch_dtype"] == "float32"  # this CPU has no bf16 instructions
    assert fallback == ("bf16" in bench_json["notes"])
    for name, t in targets.items():
        assert t["met"] is None if fallback and "bf16" in name else isinstance(t["met"], bool)


def test_table_names_every_system_and_the_population(bench_json):
    text = format_table(bench_json)
    for key in STEP_KEYS + TORCH_STEP_KEYS:
        assert key in text
    assert "torch bf16 population:" in text
    assert "population: 8 configurations of 3072-50-10" in text
    assert "targets:" in text


def test_missing_peers_are_null_in_json_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    # torch asked for but missing, scikit-learn not asked for
    s = BenchSettings(rows=1000, steps=30, rounds=2, warmup=1, gap_s=0.0, switch_gap_s=0.0, peers=("torch",))
    r = run_bench(s)
    assert r["step_ms"]["torch_f32"] is None and r["step_ms"]["sklearn_f32"] is None
    assert r["step_ms"]["torch_bf16"] is None and r["population"]["torch_bf16_ms"] is None
    assert "torch_bf16" in r["notes"]
    assert "torch_f32" in r["notes"] and "sklearn_f32" not in r["notes"]
    assert r["step_ms"]["fcnet_f32"] > 0 and r["step_ms"]["blas_floor_f64"] > 0
    assert r["targets"]["fcnet_f32 / torch_f32 <= 1.0"] == {"ratio": None, "met": None}
    assert json.loads(json.dumps(r))["step_ms"]["torch_f32"] is None  # null in JSON
    assert "(n/a)" in format_table(r)


def test_a_cpu_without_bf16_times_the_float32_fallback_and_leaves_bf16_targets_open(monkeypatch):
    import fcnet.torch_backend.train as torch_train

    monkeypatch.setattr(torch_train, "bf16_unsupported", lambda device: "no bf16 here")
    s = BenchSettings(rows=1000, steps=30, rounds=2, warmup=1, gap_s=0.0, switch_gap_s=0.0,
                      peers=("torch",), input_size=256, pop_k=2, pop_k_large=3)
    r = run_bench(s)
    assert r["population"]["torch_dtype"] == "float32"
    assert r["notes"]["bf16"].startswith("no bf16 here: ")
    assert r["step_ms"]["torch_bf16"] > 0 and r["population"]["torch_bf16_k64_ms"] > 0
    for name, t in r["targets"].items():
        if "bf16" in name:
            assert t["ratio"] > 0 and t["met"] is None
    assert "note: bf16: no bf16 here" in format_table(r)


def test_too_few_steps_is_a_one_line_error_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "fcnet", "bench", "--steps", "10", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "fcnet: error: --steps must be at least 30 (a median needs them), got 10"
    )
    with pytest.raises(FcnetError, match="--rows"):
        BenchSettings(rows=10).validate()
