"""`fcnet bench`: the JSON it prints and the table (structure and sanity only;
speed targets live in benchmarks/, not in tests)."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys

import numpy as np
import pytest

from fcnet.bench import (
    STEP_KEYS,
    TORCH_STEP_KEYS,
    BenchSettings,
    FloorStep,
    System,
    format_table,
    measure,
    ratio_ci,
    run_bench,
    solver_system,
)
from fcnet.errors import FcnetError
from fcnet.nn.fpenv import flushing
from fcnet.nn.fpenv import supported as ftz_supported
from fcnet.nn.model import TwoLayerNet

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
    # the population floors: the same stacked step's gather and products alone
    assert pop["floor_ms"] > 0 and pop["torch_bf16_floor_ms"] > 0
    targets = bench_json["targets"]
    # each against the floor of its own precision; no cross-precision target
    assert set(targets) == {
        "fcnet_f32 / blas_floor_f32 <= 1.15", "torch_bf16 / bf16_floor <= 1.2",
        "population / population_floor <= 1.25",
        "torch_population / torch_population_floor <= 1.25"}
    step = bench_json["step_ms"]
    assert targets["fcnet_f32 / blas_floor_f32 <= 1.15"]["ratio"] == pytest.approx(
        step["fcnet_f32"] / step["blas_floor_f32"])
    assert targets["population / population_floor <= 1.25"]["ratio"] == pytest.approx(
        pop["population_ms"] / pop["floor_ms"])
    assert targets["torch_population / torch_population_floor <= 1.25"]["ratio"] == pytest.approx(
        pop["torch_bf16_ms"] / pop["torch_bf16_floor_ms"])
    fallback = pop["torch_dtype"] == "float32"  # this CPU has no bf16 instructions
    assert fallback == ("bf16" in bench_json["notes"])
    for name, t in targets.items():
        assert t["ratio"] > 0
        lo, hi = t["ci95"]  # a bootstrap interval about the measured ratio (a percentile
        assert 0 < lo <= hi  # interval need not hold it, but it cannot be far outside)
        assert lo - (hi - lo) - 1e-9 <= t["ratio"] <= hi + (hi - lo) + 1e-9
        assert t["met"] is None if fallback and "bf16" in name else t["met"] == (
            t["ratio"] <= float(name.split()[-1]))
    # peers and cross-precision ratios are reported figures, not targets
    comp = bench_json["comparisons"]
    assert set(comp) == {"fcnet_f32 / torch_f32", "sklearn_f32 / fcnet_f32",
                         "sequential / population", "fcnet_f32 / torch_bf16",
                         "sequential / torch_bf16_population"}
    assert comp["sequential / population"] == pytest.approx(pop["speedup"])
    assert all(v > 0 for v in comp.values())


def test_table_names_every_system_and_the_population(bench_json):
    text = format_table(bench_json)
    for key in STEP_KEYS + TORCH_STEP_KEYS:
        assert key in text
    assert "torch bfloat16 population:" in text or "torch float32 population:" in text
    assert "population: 8 configurations of 3072-50-10" in text
    assert "its floor" in text
    assert "targets (each against the floor of its own precision, this run; 95% interval):" in text
    assert "comparisons (reported, not targets):" in text
    for name in list(bench_json["targets"]) + list(bench_json["comparisons"]):
        assert name in text


def test_missing_peers_are_null_in_json_with_a_note(monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):  # import torch -> ImportError, as where it is not installed
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    # (not sys.modules["torch"] = None: scipy's array-API helpers read every module there)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    # torch asked for but missing, scikit-learn not asked for
    s = BenchSettings(rows=1000, steps=30, rounds=2, warmup=1, gap_s=0.0, switch_gap_s=0.0,
                      peers=("torch",), input_size=256, pop_k=2)
    r = run_bench(s)
    assert r["step_ms"]["torch_f32"] is None and r["step_ms"]["sklearn_f32"] is None
    assert r["step_ms"]["torch_bf16"] is None and r["population"]["torch_bf16_ms"] is None
    assert "torch_bf16" in r["notes"]
    assert "torch_f32" in r["notes"] and "sklearn_f32" not in r["notes"]
    assert r["step_ms"]["fcnet_f32"] > 0 and r["step_ms"]["blas_floor_f64"] > 0
    assert r["comparisons"]["fcnet_f32 / torch_f32"] is None
    assert r["targets"]["torch_bf16 / bf16_floor <= 1.2"] == {"ratio": None, "ci95": None, "met": None}
    assert r["population"]["floor_ms"] > 0 and r["population"]["torch_bf16_floor_ms"] is None
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
    # the torch population against its float32 floor: the same precision, still a target
    t = r["targets"]["torch_population / torch_population_floor <= 1.25"]
    assert isinstance(t["met"], bool)
    assert "note: bf16: no bf16 here" in format_table(r)


def test_a_target_and_its_floor_are_visited_back_to_back_in_every_round():
    calls: list[str] = []
    names = ("fcnet_f32", "fcnet_f64", "sequential", "blas_floor_f32")
    systems = [System(name, lambda name=name: calls.append(name)) for name in names]
    s = BenchSettings(steps=30, rounds=4, warmup=0, gap_s=0.0, switch_gap_s=0.0)
    samples = measure(systems, s)
    assert {k: len(v) for k, v in samples.items()} == dict.fromkeys(names, 32)  # 8 a round
    # a visit: 2 untimed steps and 8 timed ones; the pair's two visits adjacent, the other first
    # in the next round; the unpaired systems visited on their own, between pairs
    visits = [calls[i] for i in range(0, len(calls), 10)]
    assert all(calls[i:i + 10] == [calls[i]] * 10 for i in range(0, len(calls), 10))
    pairs = [tuple(visits[i:i + 2]) for i in range(len(visits) - 1)
             if {visits[i], visits[i + 1]} == {"fcnet_f32", "blas_floor_f32"}]
    assert pairs == [("fcnet_f32", "blas_floor_f32"), ("blas_floor_f32", "fcnet_f32")] * 2
    assert visits.count("fcnet_f64") == visits.count("sequential") == 4


@pytest.mark.skipif(not ftz_supported(), reason="FTZ/DAZ are set on Linux x86-64 (glibc) only")
def test_solver_steps_are_timed_as_train_runs_them_subnormals_flushed_around_the_block():
    s = BenchSettings(rows=400, steps=30, rounds=3, warmup=1, gap_s=0.0, switch_gap_s=0.0, input_size=12,
                      hidden=5)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((400, 12), dtype=np.float32), rng.integers(0, 10, 400)
    solver = solver_system("fcnet_f32", s, X, y, [(TwoLayerNet(12, 5, 10, dtype="float32"), 1e-3, 0.1)])
    seen: list[tuple[str, bool]] = []  # (system, whether this thread flushed while its step ran)

    def step() -> None:  # the engine's step
        seen.append(("fcnet", flushing()))
        solver.step()

    floor = FloorStep(X, [12, 5, 10], 200)
    systems = [System("fcnet_f32", step, context=solver.context),
               System("blas_floor_f32", lambda: seen.append(("floor", flushing())) or floor.step())]
    samples = measure(systems, s)
    assert len(samples["fcnet_f32"]) == 30 and len(seen) == 2 * (1 + 3 * 12)  # warm-up, 2 untimed + 10
    assert {flush for name, flush in seen if name == "fcnet"} == {True}
    assert {flush for name, flush in seen if name == "floor"} == {False} and not flushing()


def test_ratio_interval_holds_the_true_ratio_of_medians_and_narrows_with_samples():
    rng = np.random.default_rng(1)
    drift = rng.lognormal(0, 0.3, 2000)  # host noise shared by the two sides of a pair
    a, b = 1.3 * drift * rng.lognormal(0, 0.02, 2000), drift * rng.lognormal(0, 0.02, 2000)
    lo, hi = ratio_ci(list(a[:60]), list(b[:60]))
    lo2, hi2 = ratio_ci(list(a), list(b))
    assert lo <= np.median(a[:60]) / np.median(b[:60]) <= hi
    assert lo2 < 1.3 < hi2 and hi2 - lo2 < hi - lo
    # constant samples: no spread to resample; unequal or missing samples: no interval
    assert ratio_ci([2.0] * 40, [1.0] * 40) == pytest.approx([2.0, 2.0])
    assert ratio_ci([], []) is None and ratio_ci([1.0, 2.0], [1.0]) is None


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


# ------------------------------------------------------------------ the floor step
@pytest.mark.parametrize("k,sizes", [(1, [48, 20, 10]), (3, [48, 20, 10]), (2, [48, 16, 12, 10]),
                                     (1, [48, 10])])
def test_floor_step_gathers_the_drawn_rows_and_computes_each_product(k, sizes):
    X = np.random.default_rng(0).standard_normal((500, sizes[0])).astype(np.float32)
    f = FloorStep(X, sizes, batch=40, k=k, seed=3)
    f.step()
    idx = np.random.RandomState(3).choice(500, 40)  # the indices the step drew
    np.testing.assert_array_equal(f.x, X[idx])
    np.testing.assert_allclose(f.z1, f.x @ f.W1, rtol=1e-5, atol=1e-4)  # (B, K*H1)
    np.testing.assert_allclose(f.dW1, f.x.T @ f.dz1, rtol=1e-5, atol=1e-4)  # (D, K*H1)
    assert f.z1.shape == (40, k * sizes[1])
    for i, W in enumerate(f.W):  # deeper layers, batched over the K members
        assert W.shape == (k, sizes[i + 1], sizes[i + 2])
        np.testing.assert_allclose(f.a[i + 1], f.a[i] @ W, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(f.dW[i], f.a[i].swapaxes(1, 2) @ f.da[i + 1],
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(f.da[i], f.da[i + 1] @ W.swapaxes(1, 2), rtol=1e-5, atol=1e-4)
    assert len(f.W) == len(sizes) - 2


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_floor_step_of_own_batches_gathers_one_batch_per_member(backend):
    # members of other seeds draw other batches: K gathers, layer 1 batched (K, B, D) @ (K, D, H1)
    X = np.random.default_rng(0).standard_normal((400, 32)).astype(np.float32)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        X = torch.from_numpy(X)
    f = FloorStep(X, [32, 16, 10], batch=25, k=3, seed=2, own=True)
    f.step()
    rng = np.random.RandomState(2)
    x, W1, dz1 = (np.asarray(a) for a in (f.x, f.W1, f.dz1))
    assert x.shape == (3, 25, 32) and W1.shape == (3, 32, 16)
    for j in range(3):
        np.testing.assert_array_equal(x[j], np.asarray(X)[rng.choice(400, 25)])
        np.testing.assert_allclose(np.asarray(f.z1)[j], x[j] @ W1[j], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(np.asarray(f.dW1)[j], x[j].T @ dz1[j], rtol=1e-5, atol=1e-4)


def test_floor_step_in_torch_matches_numpy_products():
    torch = pytest.importorskip("torch")
    X = torch.randn(300, 32)
    f = FloorStep(X, [32, 16, 8, 10], batch=25, k=2, seed=1)
    f.step()
    idx = torch.from_numpy(np.random.RandomState(1).choice(300, 25))
    assert torch.equal(f.x, X.index_select(0, idx))
    torch.testing.assert_close(f.dW1, f.x.t() @ f.dz1)
    torch.testing.assert_close(f.a[2], torch.bmm(f.a[1], f.W[1]))
    torch.testing.assert_close(f.da[0], torch.bmm(f.da[1], f.W[0].transpose(1, 2)))


# ------------------------------------------------------------------ a study's floor
STUDY = """
title = "floor test"
[base]
dataset = "digits"
hidden = [20]
iters = 300
batch_size = 100
lr = 1e-3
reg = 0.05
dtype = "float32"

[[table]]
name = "iterations"
vary = { iters = [100, 200, 300] }

[[table]]
name = "L2"
vary = { reg = [0.0, 0.1, 0.2] }

[[table]]
name = "hidden"
vary = { hidden = [[10], [20]] }
"""


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    path = tmp_path_factory.mktemp("floor") / "study.toml"
    path.write_text(STUDY)
    return path


def test_study_floor_counts_each_run_the_plan_executes_once(small_study):
    from fcnet.experiments.floor import floor_runs
    from fcnet.experiments.study import load_study

    study = load_study(small_study)
    # iters 100/200/300 are one 300-iteration run; hidden [20] is the base config again;
    # the four H20 configs differ only in reg: one population; H10 alone
    floor = floor_runs(study)
    got = sorted((r.what, r.shape.sizes[1], r.shape.k, r.iterations) for r in floor.runs)
    assert got == [("population", 20, 4, 300), ("run", 10, 1, 300)]
    assert all(r.shape.sizes == (64, r.shape.sizes[1], 10) and r.shape.batch == 100
               and r.shape.dtype == "float32" and r.shape.backend == "numpy" for r in floor.runs)
    # at most `population` mates train as one population
    got = sorted((r.what, r.shape.k) for r in floor_runs(study, population=3).runs)
    assert got == [("population", 3), ("run", 1), ("run", 1)]


def test_study_floor_of_seeds_gathers_a_batch_per_member(small_study):
    from fcnet.experiments.floor import floor_runs
    from fcnet.experiments.study import load_study

    # with 3 seeds, each population's members draw their own batches, as the trainers do
    runs = floor_runs(load_study(small_study, seeds=3)).runs
    got = {(r.shape.sizes[1], r.shape.k, r.shape.own) for r in runs}
    assert got == {(20, 12, True), (10, 3, True)}
    assert not any(r.shape.own for r in floor_runs(load_study(small_study)).runs)


def test_study_floor_leaves_out_runs_finished_before(small_study, tmp_path):
    import os
    import time

    from fcnet.experiments.floor import floor_runs
    from fcnet.experiments.study import load_study
    from fcnet.experiments.sweep import SweepSpec, plan

    study = load_study(small_study)
    _, jobs = plan(SweepSpec(study.base, points=study.runs))
    h10 = next(j for j in jobs.values() if j.config.hidden == [10])
    summary = tmp_path / "runs" / h10.key / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"status": "running"}')  # a run writes its summary when it starts
    assert floor_runs(study, out=tmp_path).reused == 0
    summary.write_text('{"status": "completed"}')
    os.utime(summary, (time.time() - 60, time.time() - 60))
    floor = floor_runs(study, out=tmp_path)
    assert floor.reused == 1 and [r.shape.sizes[1] for r in floor.runs] == [20]
    # a run finished during this invocation (after `since`) was trained by it: counted
    floor = floor_runs(study, out=tmp_path, since=time.time() - 120)
    assert floor.reused == 0 and len(floor.runs) == 2


def test_bench_study_json_sums_iterations_times_the_measured_step(small_study):
    proc = subprocess.run(
        [sys.executable, "-m", "fcnet", "bench", "--study", str(small_study), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    floor = r["floor"]
    assert len(floor["runs"]) == 2 and floor["reused"] == 0
    for run in floor["runs"]:
        assert 0 < run["step_ms"] < 1e3
        assert run["seconds"] == pytest.approx(run["iterations"] * run["step_ms"] / 1e3)
    assert floor["seconds"] == pytest.approx(sum(x["seconds"] for x in floor["runs"]))
    assert floor["load_average"] is None or floor["load_average"] >= 0  # said with the floor
    assert r["dataset"] == "digits" and r["machine"]["cpu"]


def test_study_floor_keeps_each_shapes_fastest_pass(small_study, monkeypatch):
    # a pass timed in a slow spell does not raise the floor; a quieter one lowers it
    import time

    import fcnet.experiments.floor as fl
    from fcnet.experiments.study import load_study

    delay = [0.004]

    class Step:  # a floor step that takes ``delay`` seconds
        def __init__(self, *args, **kwargs):
            pass

        def step(self):
            time.sleep(delay[0])

    monkeypatch.setattr(fl, "FloorStep", Step)
    monkeypatch.setattr(fl, "_STEP_MS", {})
    study = load_study(small_study)
    got = []
    for d in (0.004, 0.001, 0.004):
        delay[0] = d
        floor = fl.study_floor(study)
        got.append(([r.step_ms for r in floor.runs], floor.passes))
    (slow, one), (fast, two), (again, three) = got
    assert (one, two, three) == (1, 2, 3)
    assert all(4 <= ms < 12 for ms in slow) and all(1 <= ms < 3.5 for ms in fast)
    assert again == fast
    assert "measured now" in fl.StudyFloor(floor.runs, passes=1).header(10)["floor seconds"]
    assert "timed before training and after" in floor.header(10)["floor seconds"]


def test_study_floor_before_training_leaves_out_runs_whose_rows_need_a_fit(tmp_path, monkeypatch):
    # before a study trains, a PCA's width is unknown and its fit slow: those runs wait for the
    # floor's pass after training, when the workers' summaries give the width
    import fcnet.training.prepare as prep
    from fcnet.experiments.floor import floor_runs
    from fcnet.experiments.study import load_study

    path = tmp_path / "pca.toml"
    path.write_text(STUDY.replace('name = "hidden"\nvary = { hidden = [[10], [20]] }',
                                  'name = "pca"\nvary = { pca = [0.9] }'))
    real = prep.prepare

    def no_fit(config, progress=False):
        assert config.pca is None, "the floor fitted a PCA before the study trained"
        return real(config, progress)

    assert "pca = [0.9]" in path.read_text()
    monkeypatch.setattr(prep, "prepare", no_fit)
    study = load_study(path)
    runs = floor_runs(study, fit=False).runs
    assert runs and all(r.config.pca is None for r in runs)
    assert {r.shape.sizes[0] for r in runs} == {64}


def test_bench_study_of_a_missing_file_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "fcnet", "bench", "--study", "no-such.toml"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fcnet: error: ") and len(proc.stderr.splitlines()) == 1


def test_study_floor_takes_a_pca_width_from_its_run_without_fitting_the_pca(tmp_path, monkeypatch):
    # the workers fitted the PCA; the floor reads its width from summary.json and times
    # the products on the rows before the PCA cut to that width
    import fcnet.training.prepare as prep
    from fcnet.config import make_config
    from fcnet.experiments.floor import _Data

    base = make_config({"dataset": "digits"})
    pca = base.model_copy(update={"pca": 0.95})
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"input_size": 29}))
    real = prep.prepare

    def no_pca(config, progress=False):
        assert config.pca is None, "the floor fitted the PCA again"
        return real(config, progress)

    monkeypatch.setattr(prep, "prepare", no_pca)
    data = _Data()
    data.read_width(pca, summary)
    X, classes = data.rows(pca)
    assert X.shape[1] == 29 and X.flags.c_contiguous and classes == 10
    assert X.shape[0] == data.rows(base)[0].shape[0]
