"""`fcnet sweep`: grid and search syntax, shared iteration runs, reuse, tables, --test,
population batches and worker processes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sweep_util import DIGITS, cli, run_dirs, starts, summary, trained_ends

import fcnet.training
from fcnet.config import make_config
from fcnet.errors import FcnetError
from fcnet.experiments import space
from fcnet.experiments.space import SearchParam, parse_grid, run_key
from fcnet.experiments.sweep import (
    SweepResult,
    SweepSpec,
    best_test_accuracy,
    load_result,
    load_sweep_file,
    plan,
    run_sweep,
)
from fcnet.training import train_run


def digits(**kw):
    return make_config({"dataset": "digits", "batch_size": 50, "lr": 1e-2, "std": 1e-2,
                        "reg": 1e-3, "iters": 40, **kw})


# ------------------------------------------------------------------ grid and search syntax
def test_grid_values_lists_ranges_and_hidden_layers():
    g = parse_grid(["lr=1e-3,1e-4", "iters=1000:4000:1000", "hidden=50,100x50,[20,10]",
                    "reg=0:0.5:0.25", "preprocess=mean,none"])
    assert g["lr"] == [1e-3, 1e-4]
    assert g["iters"] == [1000, 2000, 3000, 4000]
    assert g["hidden"] == [[50], [100, 50], [20, 10]]
    assert g["reg"] == [0.0, 0.25, 0.5]
    assert g["preprocess"] == ["mean", "none"]


@pytest.mark.parametrize("item, words", [
    ("lrr=1", ["'lrr'", "did you mean 'lr'"]),
    ("lr", ["FIELD=V1,V2"]),
    ("iters=10:5:1", ["STOP >= START"]),
    ("reg=0,0", ["listed twice"]),
])
def test_bad_grid_items_name_the_problem(item, words):
    with pytest.raises(FcnetError) as e:
        parse_grid([item])
    assert all(w in str(e.value) for w in words), str(e.value)


def test_search_params_ranges_log_integers_and_choices():
    lr = SearchParam.parse("lr=1e-5:1e-2:log")
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-5, 1e-2, True, False)
    bs = SearchParam.parse("batch_size=100:500")
    assert bs.integer and not bs.log
    reg = SearchParam.parse("reg=0:1:0.25")
    assert reg.step == 0.25
    h = SearchParam.parse("hidden=50,100x50")
    assert h.choices == ("50", "100x50")  # Optuna wants scalars; mapped back on suggest
    for bad, word in [("lr=0:1:log", "LOW > 0"), ("lr=1:0", "LOW < HIGH"),
                      ("batch_size=1.5:3", "integer"), ("lr=1e-3", "at least two")]:
        with pytest.raises(FcnetError, match=word):
            SearchParam.parse(bad)


def test_search_samples_stay_inside_their_ranges():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = space.parse_params(["lr=1e-5:1e-2:log", "batch_size=100:500", "hidden=50,100x50"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        t = study.ask()
        v = {n: p.suggest(t) for n, p in params.items()}
        assert 1e-5 <= v["lr"] <= 1e-2 and isinstance(v["batch_size"], int)
        assert 100 <= v["batch_size"] <= 500 and v["hidden"] in ([50], [100, 50])
        study.tell(t, 0.0)


def test_a_bad_value_fails_before_any_work_naming_the_field(tmp_path):
    r = cli("sweep", *DIGITS, "--grid", "lr=1e-3,-1", "--dir", str(tmp_path / "s"))
    assert r.returncode == 2 and "'lr'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ the plan
def test_iteration_points_share_one_run_and_identical_configs_are_one_job():
    spec = SweepSpec(digits(), grid={"iters": [20, 40, 60], "reg": [0.0, 1e-3]},
                     points=[{"lr": 1e-2}, {"lr": 0.01}])  # the same lr twice
    points, jobs = plan(spec)
    assert len(points) == 12 and len(jobs) == 2  # 2 regs; 3 iters share; lr points identical
    for job in jobs.values():
        assert job.config.iters == 60 and job.eval_at == [20, 40]
    short = [p for p in points if p.config.iters == 20]
    assert all(p.iteration == 20 and p.job in jobs for p in short)
    assert all(p.iteration is None for p in points if p.config.iters == 60)


def test_cosine_schedule_and_keep_best_do_not_share_iterations():
    for base in (digits(schedule="cosine", backend="torch"), digits(keep_best=True)):
        _, jobs = plan(SweepSpec(base, grid={"iters": [20, 40]}))
        assert len(jobs) == 2 and all(j.eval_at == [] for j in jobs.values())


# ------------------------------------------------------------------ running
def test_shared_iteration_rows_equal_separate_shorter_runs(tmp_path):
    """One run of 60 iterations evaluated at 20 and 40 gives the numbers that runs of
    20 and 40 iterations give: the learning rate decays per epoch, not per total."""
    spec = SweepSpec(digits(), grid={"iters": [20, 40, 60]})
    res = run_sweep(spec, tmp_path / "s", figures=False)
    assert len(run_dirs(tmp_path / "s")) == 1
    by_iters = {r.config.iters: r for r in res.rows}
    assert by_iters[60].status == "completed"
    assert by_iters[20].status == by_iters[40].status == "shared"
    for it in (20, 40):
        alone = train_run(digits(iters=it), tmp_path / f"alone{it}", figures=False)
        assert by_iters[it].val_acc == alone["final_val_acc"]
    assert [r.val_acc for r in res.ranked()] == sorted((r.val_acc for r in res.rows),
                                                       reverse=True)


def test_rerun_reuses_every_finished_trial(tmp_path):
    spec = SweepSpec(digits(), grid={"reg": [0.0, 1e-3], "seed": [0, 1]})
    first = run_sweep(spec, tmp_path / "s", figures=False)
    dirs = run_dirs(tmp_path / "s")
    mtimes = {d: (d / "summary.json").stat().st_mtime_ns for d in dirs}
    again = run_sweep(SweepSpec(digits(), grid={"reg": [0, 0.001], "seed": [0, 1]}),
                      tmp_path / "s", figures=False)  # 0 and 0.001 spelled differently
    assert len(dirs) == 4
    assert {d: (d / "summary.json").stat().st_mtime_ns for d in dirs} == mtimes
    assert all(len(starts(d)) == 1 for d in dirs)
    assert [r.val_acc for r in again.rows] == [r.val_acc for r in first.rows]
    assert [r.val_acc for r in load_result(tmp_path / "s").rows] == [
        r.val_acc for r in first.rows]


def test_identical_points_run_once_and_read_as_reused(tmp_path):
    spec = SweepSpec(digits(), grid={"seed": [0, 1]}, points=[{"reg": 1e-3}, {}])
    res = run_sweep(spec, tmp_path / "s", figures=False)  # base reg is 1e-3: same configs
    assert len(res.rows) == 4 and len(run_dirs(tmp_path / "s")) == 2
    assert [r.status for r in res.rows] == ["completed", "completed", "reused", "reused"]
    assert res.rows[0].val_acc == res.rows[2].val_acc


def test_cli_json_table_files_and_test_accuracy_once(tmp_path, monkeypatch):
    d = tmp_path / "s"
    r = cli("sweep", *DIGITS, "--grid", "iters=20,40", "hidden=10,30", "--dir", str(d),
              "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 4 and all({"config", "val_acc", "status"} <= set(x) for x in rows)
    accs = [x["val_acc"] for x in rows]
    assert accs == sorted(accs, reverse=True)
    assert sorted((x["config"]["iters"], x["config"]["hidden"][0]) for x in rows) == [
        (20, 10), (20, 30), (40, 10), (40, 30)]
    assert {x["status"] for x in rows} == {"completed", "shared"}
    md = (d / "results.md").read_text()
    for x in rows:
        rel = os.path.relpath(x["run_dir"], d)
        assert f"[{rel}]({rel}/)" in md and Path(x["run_dir"]).is_dir()
    table = list(csv.DictReader(io.StringIO((d / "results.csv").read_text())))
    assert [float(t["val_acc"]) for t in table] == accs

    # --test: the best row's test accuracy, evaluated once and cached
    calls = []
    real = fcnet.training.evaluate_run

    def counting(run_dir, split="test"):
        calls.append((Path(run_dir).name, split))
        return real(run_dir, split=split)

    monkeypatch.setattr(fcnet.training, "evaluate_run", counting)
    result = load_result(d)
    best = result.best()
    t1 = best_test_accuracy(result)
    t2 = best_test_accuracy(load_result(d))
    assert len(calls) == 1 and calls[0][1] == "test"
    assert t1 == t2 and 0.0 <= t1["test_acc"] <= 1.0 and t1["key"] == best.key
    assert t1["val_acc"] == best.val_acc == max(accs)
    # a shared row is tested on its own run of its length, a final row on its run dir
    tested = best.key if best.iteration is not None else Path(best.run_dir).name
    assert calls[0][0] == tested


def test_a_shared_best_row_is_tested_on_a_run_of_its_own_length(tmp_path):
    res = run_sweep(SweepSpec(digits(), grid={"iters": [20, 40]}), tmp_path / "s",
                    figures=False)
    (short,) = [r for r in res.rows if r.config.iters == 20]
    assert short.status == "shared" and Path(short.run_dir).name != short.key
    only_short = SweepResult(res.sweep_dir, res.spec, [short])  # make it the best row
    rec = best_test_accuracy(only_short)
    assert Path(rec["run_dir"]).name == short.key == run_key(short.config)
    assert summary(Path(rec["run_dir"]))["iterations"] == 20
    assert rec["own_run_val_acc"] == short.val_acc  # the tested parameters are the row's


def test_sweep_file_with_base_grid_and_points(tmp_path):
    f = tmp_path / "sweep.toml"
    f.write_text('[base]\ndataset = "digits"\nbatch_size = 50\nlr = 1e-2\nstd = 1e-2\n'
                 'iters = 30\n\n[grid]\nreg = [0.0, 1e-3]\n\n'
                 '[[points]]\nhidden = [10]\n\n[[points]]\nhidden = [20, 10]\n')
    base, tables = load_sweep_file(f)
    assert base["dataset"] == "digits" and tables["grid"] == {"reg": [0.0, 1e-3]}
    r = cli("sweep", "--config", str(f), "--dir", str(tmp_path / "s"), "--json", "--quiet",
              "--no-figures")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted((tuple(x["config"]["hidden"]), x["config"]["reg"]) for x in rows) == [
        ((10,), 0.0), ((10,), 1e-3), ((20, 10), 0.0), ((20, 10), 1e-3)]
    assert all(x["config"]["iters"] == 30 and x["config"]["dataset"] == "digits" for x in rows)

    bad = tmp_path / "bad.toml"
    bad.write_text('lr = 1e-3\n[grid]\nreg = [0.0]\n')
    r = cli("sweep", "--config", str(bad), "--dir", str(tmp_path / "b"))
    assert r.returncode == 2 and "'lr'" in r.stderr and "[base]" in r.stderr


def test_random_search_runs_its_budget_and_extends_on_request(tmp_path):
    d = tmp_path / "s"
    r = cli("sweep", *DIGITS, "--iters", "30", "--search", "random", "--trials", "4",
              "--param", "lr=1e-3:1e-1:log", "reg=0:0.01", "--dir", str(d), "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 4 and len(run_dirs(d)) == 4
    assert all(1e-3 <= x["config"]["lr"] <= 1e-1 and 0 <= x["config"]["reg"] <= 0.01
               for x in rows)
    assert all(x["status"] == "completed" for x in rows)
    r = cli("sweep", "--dir", str(d), "--trials", "6", "--json", "--quiet")  # reopen, extend
    assert r.returncode == 0, r.stderr
    more = json.loads(r.stdout)
    assert len(more) == 6 and len(run_dirs(d)) == 6
    assert {x["key"] for x in rows} < {x["key"] for x in more}


def test_a_different_sweep_in_the_same_dir_is_refused(tmp_path):
    run_sweep(SweepSpec(digits(), grid={"seed": [0]}), tmp_path / "s", figures=False)
    with pytest.raises(FcnetError, match="different sweep"):
        run_sweep(SweepSpec(digits(), grid={"seed": [1]}), tmp_path / "s", figures=False)


def test_one_process_at_a_time_holds_an_sqlite_sweep(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fcnet.experiments.storage import lock_sweep; "
        f"held = lock_sweep({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FcnetError, match=f"in use by pid {holder.pid}"):
            run_sweep(SweepSpec(digits(), grid={"seed": [0]}), tmp_path, figures=False)
        assert not (tmp_path / "sweep.db").exists()  # refused before opening the storage
    finally:
        holder.kill()
        holder.wait()


def test_a_joining_process_that_creates_the_study_queues_it_without_waiting(tmp_path):
    # every worker of a shared sweep may be started with --join: the one that happens to
    # create the study queues the jobs at once (it once waited out join_wait_s for itself)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = SweepSpec(digits(), grid={"seed": [0, 1]})
    t0 = time.monotonic()
    r = run_sweep(spec, tmp_path / "a", storage=url, join=True, join_wait_s=60, figures=False)
    assert time.monotonic() - t0 < 45
    assert r.ok and [x.status for x in r.rows] == ["completed", "completed"]
    # a joining process without the sweep's flags waits for another to set it up, and
    # says so in one line when nobody does
    with pytest.raises(FcnetError, match="was not set up within 1 s"):
        run_sweep(None, tmp_path / "b", storage=f"sqlite:///{tmp_path / 'empty.db'}",
                  join=True, join_wait_s=1, figures=False)


# ------------------------------------------------------------------ population and workers
def test_population_batches_reach_train_population_with_compatible_configs(tmp_path,
                                                                            monkeypatch):
    """The seam: with ``fcnet.training.train_population`` present, trials that differ only
    in shape-free fields (here lr and reg) arrive in one call; hidden sizes never mix."""
    calls = []

    def fake_population(configs, run_dirs, quiet=True, resume=True, eval_at=None,
                        figures=True):
        calls.append(configs)
        return [train_run(c, d, quiet=quiet, eval_at=eval_at, figures=figures)
                for c, d in zip(configs, run_dirs, strict=True)]

    monkeypatch.setattr(fcnet.training, "train_population", fake_population, raising=False)
    spec = SweepSpec(digits(), grid={"hidden": [[10], [20]], "lr": [1e-2, 3e-2], "reg": [0, 1e-3]})
    res = run_sweep(spec, tmp_path / "s", population=4, figures=False)
    assert sorted(len(c) for c in calls) == [4, 4]
    for batch in calls:
        assert len({tuple(c.hidden) for c in batch}) == 1
        assert len({(c.lr, c.reg) for c in batch}) == 4
    assert all(r.status == "completed" for r in res.rows) and len(run_dirs(tmp_path / "s")) == 8
    assert all(starts(d)[0]["batch"] == 4 for d in run_dirs(tmp_path / "s"))

    calls.clear()  # seeds train together (each member its own batch stream)
    run_sweep(SweepSpec(digits(), grid={"seed": [5, 6]}), tmp_path / "p0", figures=False)
    assert [sorted(c.seed for c in batch) for batch in calls] == [[5, 6]]
    calls.clear()  # --population 1 turns populations off
    run_sweep(SweepSpec(digits(), grid={"lr": [5e-3, 6e-3]}), tmp_path / "p1", population=1,
              figures=False)
    assert calls == []


def test_worker_processes_split_the_cores_and_run_each_trial_once(tmp_path):
    d = tmp_path / "s"
    r = cli("sweep", *DIGITS, "--iters", "30", "--grid", "seed=0,1,2,3", "--dir", str(d),
              "--workers", "2", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted(x["config"]["seed"] for x in rows) == [0, 1, 2, 3]
    cores = len(os.sched_getaffinity(0))
    dirs = run_dirs(d)
    assert len(dirs) == 4
    for run in dirs:
        (s,) = starts(run)
        assert s["threads"] == str(max(1, cores // 2))
        assert len(trained_ends(run)) == 1 and summary(run)["status"] == "completed"
    pids = {starts(run)[0]["pid"] for run in dirs}
    assert 1 <= len(pids) <= 2


@pytest.mark.parametrize("build", [
    lambda: parse_grid(["reg=0:inf:0.25"]),                      # a range's end
    lambda: parse_grid(["lr=1e-3:1e-2:nan"]),                    # a range's step
    lambda: SearchParam.parse("lr=1e-5:inf:log"),                # a search bound
    lambda: SearchParam.parse("reg=nan:1"),
    lambda: plan(SweepSpec(digits(), grid={"reg": [0.0, float("inf")]})),  # a grid value
    lambda: plan(SweepSpec(digits(), grid={"lr": [float("nan")]})),
    lambda: plan(SweepSpec(digits(), points=[{"std": float("inf")}])),  # an explicit point
    lambda: SweepSpec(digits(), search="random",
                      params=space.parse_params(["reg=0,inf"])),  # a choice
])
def test_non_finite_numbers_are_refused_in_grids_ranges_and_searches(build):
    with pytest.raises(FcnetError, match="finite|nan|inf"):
        build()


def test_cli_non_finite_grid_value_is_one_line_and_writes_nothing(tmp_path):
    f = tmp_path / "sweep.toml"
    f.write_text('[base]\ndataset = "digits"\n[grid]\nreg = [0.0, inf]\n')
    for args in (["--config", str(f)], [*DIGITS, "--grid", "reg=0:inf:1"]):
        r = cli("sweep", *args, "--dir", str(tmp_path / "s"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "reg" in r.stderr
        assert not (tmp_path / "s").exists()


def test_a_search_trial_retried_after_a_torn_attribute_write_gets_the_attributes_it_lacks():
    """A full disk can stop a search trial's attribute writes half way (its key written, its
    population key not); retried, the trial gets the missing ones, and nothing is rewritten."""
    import optuna

    from fcnet.experiments.worker import _suggest, job_attrs

    spec = SweepSpec(digits(), search="random", params=space.parse_params(["lr=1e-3:1e-1:log"]), trials=2)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    want = job_attrs(space.with_changes(spec.base, {"lr": lr}, where="--param"))
    trial.set_user_attr("key", want["key"])  # then the disk filled
    writes = []
    real = trial.set_user_attr
    trial.set_user_attr = lambda k, v: (writes.append(k), real(k, v))
    _suggest(trial, spec)
    assert trial.user_attrs == want and sorted(writes) == sorted(set(want) - {"key"})
