"""Optuna's own tools see a sweep: params with distributions, values, intermediate values,
best_params, trials_dataframe, importances, its plots, and optuna-dashboard in Chromium."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import optuna
import pytest
from _browser_util import CHROMIUM_ARGS, chromium_path
from _sweep_util import FCNET

from fcnet.config import make_config
from fcnet.experiments.sweep import SweepSpec, run_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep") / "s"
    base = make_config({"dataset": "digits", "batch_size": 50, "std": 1e-2, "iters": 40})
    spec = SweepSpec(base, grid={"lr": [1e-2, 3e-2], "hidden": [[10], [20]],
                                 "iters": [20, 40]})
    res = run_sweep(spec, d, figures=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return d, res, optuna.load_study(study_name="sweep", storage=f"sqlite:///{d / 'sweep.db'}")


def test_trials_carry_params_distributions_values_and_shared_iterations(sweep):
    _, res, study = sweep
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4  # 2 lr x 2 hidden; iters 20 is read along each 40-iteration run
    for t in done:
        assert set(t.params) == {"lr", "hidden", "iters"} and t.params["iters"] == 40
        assert t.distributions["lr"].choices == (1e-2, 3e-2)
        assert t.distributions["hidden"].choices == ("10", "20")
        assert t.value == t.user_attrs["final_val_acc"]
        assert set(t.intermediate_values) == {20}  # the row read at 20 iterations
    rows = {(r.config.lr, r.config.hidden[0], r.config.iters): r for r in res.rows}
    for t in done:
        short = rows[(t.params["lr"], int(t.params["hidden"]), 20)]
        assert short.val_acc == t.intermediate_values[20]
    best = max(done, key=lambda t: t.value)
    assert study.best_params == best.params
    df = study.trials_dataframe()
    assert {"params_lr", "params_hidden", "value", "user_attrs_key"} <= set(df.columns)


def test_importances_and_figures_beside_results_md(sweep):
    d, _, study = sweep
    imp = optuna.importance.get_param_importances(study)
    assert set(imp) == {"lr", "hidden", "iters"} and all(v >= 0 for v in imp.values())
    assert abs(sum(imp.values()) - 1.0) < 1e-9
    md = (d / "results.md").read_text()
    for name in ("importance.png", "parallel.png"):
        assert (d / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_lists_the_trials_with_params_and_values(sweep):
    from playwright.sync_api import sync_playwright

    d, _, study = sweep
    port = _free_port()
    p = subprocess.Popen([*FCNET, "sweep", "dashboard", str(d), "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    profile = tempfile.mkdtemp(prefix="fcnet-chromium-")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2)
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dashboard did not start: {p.stderr.read() if p.poll() else ''}")
                time.sleep(0.2)
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            try:
                page = ctx.new_page()
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}/trials")
                page.get_by_text("Parameter", exact=True).first.wait_for()
                text = page.inner_text("body")
            finally:
                ctx.close()
    finally:
        p.terminate()
        p.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    trials = study.trials
    assert f"{len(trials)} Trials" in text
    assert all(f"Trial {t.number}" in text for t in trials)
    first = trials[0]  # shown in detail: its value and its params
    assert str(first.value) in text
    for name, value in first.params.items():
        assert f"{name} {value}" in text
