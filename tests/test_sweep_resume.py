"""A sweep killed with SIGKILL at any moment continues when the same command runs again:
finished trials are reused, none is lost or run twice, the unfinished one runs again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _sweep_util import DIGITS, FCNET, attempts, cli, run_dirs, starts, summary, trained_ends

# long enough (~0.5-1 s a trial on digits) that the kill lands while one is training
ITERS = "3000"
SEEDS = [0, 1, 2, 3]


def _ended(run_dir: Path) -> bool:
    return any("end" in a for a in attempts(run_dir))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _kill_mid_sweep(args: list[str], sweep_dir: Path) -> tuple[list[Path], list[Path]]:
    """Start the sweep, SIGKILL it once a trial has finished and another is running."""
    p = subprocess.Popen([*FCNET, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while True:
            dirs = run_dirs(sweep_dir)
            done = [d for d in dirs if trained_ends(d)]
            running = [d for d in dirs if starts(d) and not _ended(d)]
            if done and running:
                break
            if p.poll() is not None:
                pytest.fail(f"the sweep ended (rc {p.returncode}) before it could be killed: "
                            f"make its trials longer\n{p.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("no trial finished within 90 s")
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    return done, running


def _check_rerun(args, d: Path, done: list[Path], running: list[Path]) -> None:
    before = {x: ((x / "summary.json").stat().st_mtime_ns, len(attempts(x))) for x in done}
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    # every grid point exactly once, all finished
    assert sorted(x["config"]["seed"] for x in rows) == SEEDS
    assert all(x["status"] == "completed" and x["val_acc"] is not None for x in rows)
    dirs = run_dirs(d)
    assert len(dirs) == len(SEEDS)
    for x in done:  # finished before the kill: never trained again
        assert (x / "summary.json").stat().st_mtime_ns == before[x][0]
        assert len(trained_ends(x)) == 1
        # a worker may finish a run just before the kill, unrecorded: the rerun reads it back
        assert all(not a.get("trained", False) for a in attempts(x)[before[x][1]:])
    for x in running:  # killed mid-training: started again and finished once
        assert len(starts(x)) == 2 and len(trained_ends(x)) == 1
    for x in dirs:
        assert summary(x)["status"] == "completed" and len(trained_ends(x)) == 1

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{d / 'sweep.db'}")
    complete = [t.user_attrs["key"] for t in study.trials if t.state.name == "COMPLETE"]
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert sorted(complete) == sorted(x.name for x in dirs)  # one finished trial per run
    failed_keys = {t.user_attrs["key"] for t in failed}
    assert {x.name for x in running} <= failed_keys <= {x.name for x in running + done}
    assert all("interrupted" in t.user_attrs["error"] for t in failed)


def test_sigkill_then_rerun_reuses_finished_trials_and_reruns_the_killed_one(tmp_path):
    d = tmp_path / "s"
    # --population 1: one trial at a time (seeds would otherwise train together)
    args = ["sweep", *DIGITS, "--iters", ITERS, "--grid", "seed=" + ",".join(map(str, SEEDS)),
            "--dir", str(d), "--population", "1", "--json", "--quiet"]
    done, running = _kill_mid_sweep(args, d)
    assert len(running) == 1
    _check_rerun(args, d, done, running)


def test_sigkill_takes_the_worker_processes_down_too(tmp_path):
    d = tmp_path / "s"
    args = ["sweep", *DIGITS, "--iters", ITERS, "--grid", "seed=" + ",".join(map(str, SEEDS)),
            "--dir", str(d), "--workers", "2", "--population", "1", "--json", "--quiet"]
    done, running = _kill_mid_sweep(args, d)
    pids = {starts(x)[-1]["pid"] for x in running}
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "a worker outlived its sweep"
    ends = {x: len(attempts(x)) for x in run_dirs(d)}
    time.sleep(0.5)
    assert {x: len(attempts(x)) for x in run_dirs(d)} == ends  # nobody writes any more
    _check_rerun(args, d, done, running)


@pytest.mark.parametrize("command", ["sweep", "study"])
def test_a_sweep_an_earlier_fcnet_made_is_refused_in_one_line(tmp_path, command):
    # an earlier fcnet hashed every field into a run's key: its sweep.db names runs this
    # version would never find. What it left: a set-up study with no format mark.
    import optuna

    out = tmp_path / "old"
    out.mkdir()
    old = optuna.create_study(study_name="sweep", storage=f"sqlite:///{out / 'sweep.db'}")
    old.set_user_attr("spec", {"base": {}})
    args = ["sweep", *DIGITS, "--grid", "lr=1e-3", "--iters", "10", "--dir", str(out)] \
        if command == "sweep" else ["study", "--dataset", "digits", "--out", str(out)]
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcnet: error: ") and "earlier fcnet" in lines[0]
    assert not (out / "runs").exists()  # nothing trained
