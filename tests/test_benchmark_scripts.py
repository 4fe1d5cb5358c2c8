"""The longer benchmarks in benchmarks/: their measuring helper and the JSON they write
(correctness only, on tiny synthetic input; speed figures live in benchmarks/README.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))



def measured_from_a_small_process(cmd: list[str]) -> dict:
    # ru_maxrss survives fork + exec, so the measuring process must itself be small
    # (as the benchmark scripts are); pytest with torch loaded is not
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import _proc; "
            "print(json.dumps(_proc.run_measured(json.loads(sys.argv[2]))))")
    out = subprocess.run([sys.executable, "-c", code, str(BENCH), json.dumps(cmd)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_run_measured_reports_the_childs_peak_memory_exit_code_and_output():
    # the child touches 200 MiB, so its peak resident size is at least that
    code = "import numpy as np; a = np.ones(200 * 2**20, dtype=np.uint8); print(int(a.sum()))"
    r = measured_from_a_small_process([sys.executable, "-c", code])
    assert r["rc"] == 0
    assert r["stdout"].strip() == str(200 * 2**20)
    assert r["peak_rss_mib"] >= 200
    assert r["wall_s"] > 0
    small = measured_from_a_small_process([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert small["rc"] == 3
    assert small["peak_rss_mib"] < r["peak_rss_mib"] - 150


def test_time_to_accuracy_writes_json_and_torch_matches_fcnet_step_for_step(tmp_path):
    out = tmp_path / "tta.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "time_to_accuracy.py"), "--synthetic", "2000",
         "--max-epochs", "3", "--seeds", "0", "--target", "1.0", "--hidden", "20",
         "--quiet", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "time to 100% validation accuracy" in proc.stdout
    r = json.loads(out.read_text())
    assert set(r["summary"]) == {"fcnet", "torch", "sklearn"}
    for name, runs in r["runs"].items():
        (run,) = runs
        # target 1.0 on noisy blobs is out of reach: every system runs to the cap
        assert run["status"] == "not reached", name
        assert len(run["epoch_s"]) == 3 and all(t > 0 for t in run["epoch_s"])
        assert len(run["val_acc"]) == 3 and all(0 <= a <= 1 for a in run["val_acc"])
        assert r["summary"][name]["median_train_s"] is None
    # torch starts from fcnet's weights and draws fcnet's batches: same accuracies
    # up to float32 rounding (at most one of the 200 validation rows apart)
    fc, th = r["runs"]["fcnet"][0]["val_acc"], r["runs"]["torch"][0]["val_acc"]
    assert fc[-1] > 0.3  # well above chance (0.1), so agreeing says something
    assert all(abs(a - b) <= 1 / 200 + 1e-9 for a, b in zip(fc, th)), (fc, th)


def test_time_to_accuracy_rejects_a_target_outside_0_1():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "time_to_accuracy.py"), "--target", "50"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "--target must be in (0, 1]" in proc.stderr


def test_floor_noise_times_the_floor_step_three_ways_per_shape(tmp_path):
    out = tmp_path / "noise.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "floor_noise.py"), "--rows", "600", "--dim", "48", "--loop", "20",
         "--shapes", "8x1,8x3", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert [x["shape"] for x in r["shapes"]] == ["48-8-10 batch 200", "48-8-10 batch 200, population of 3"]
    for x in r["shapes"]:
        assert x["timed_steps"] >= 25  # the study floor's 5 rounds of at least 5 steps
        assert 0 < x["fastest_ms"] <= x["median_ms"]
        assert math.isclose(x["loop / fastest"], x["loop_ms"] / x["fastest_ms"]) and x["loop_ms"] > 0
        assert math.isclose(x["two_loops / 2 / fastest"], x["two_loops_ms"] / 2 / x["fastest_ms"])
        assert x["two_loops_ms"] > 0
    assert r["machine"]["cpu"]


def test_fused_update_reports_both_ways_against_the_floor_with_the_same_parameters(tmp_path):
    out = tmp_path / "fused.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "fused_update.py"), "--rows", "600", "--input", "300",
         "--rounds", "3", "--block", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert [x["k"] for x in r] == [1, 8]
    for x in r:
        assert x["same_params"] is True  # batch 200 fits one OpenBLAS block: bit for bit
        assert all(v > 0 for v in x["ms"].values())
        assert x["fused / floor"] == x["ms"]["fused"] / x["ms"]["floor"]
        assert x["no_l2 / floor"] == x["ms"]["no_l2"] / x["ms"]["floor"]
