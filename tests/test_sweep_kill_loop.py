"""SIGKILL at random moments, several times in a row, each kill followed by a rerun: the
sweep ends with every trial exactly once, and no run trained to the end twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import optuna
from _sweep_util import DIGITS, FCNET, attempts, cli, run_dirs, summary, trained_ends

SEEDS = [0, 1, 2, 3, 4]


def kill_at_random(args: list[str], kills: int, seed: int) -> list[float]:
    """Start the command ``kills`` times, SIGKILL each after a random delay; the delays."""
    rng = random.Random(seed)
    delays = []
    for _ in range(kills):
        delay = rng.uniform(1.0, 4.0)
        p = subprocess.Popen([*FCNET, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            p.wait(timeout=delay)  # finished before its kill: the loop just ends early
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            delays.append(delay)
        time.sleep(0.2)  # spawned workers die with their parent (PDEATHSIG)
    return delays


def one_finished_trial_per_key(db, study_name: str = "sweep") -> dict[str, int]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
    done: dict[str, int] = {}
    for t in study.trials:
        if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs:
            done[t.user_attrs["key"]] = done.get(t.user_attrs["key"], 0) + 1
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    return done


def test_sweep_killed_at_random_moments_ends_with_every_trial_once(tmp_path):
    d = tmp_path / "s"
    args = ["sweep", *DIGITS, "--iters", "3000", "--grid", "seed=" + ",".join(map(str, SEEDS)),
            "--dir", str(d), "--workers", "2", "--json", "--quiet"]
    delays = kill_at_random(args, kills=3, seed=11)
    assert delays, "every run finished before its kill: make the trials longer"
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted(x["config"]["seed"] for x in rows) == SEEDS
    assert all(x["status"] == "completed" for x in rows)
    dirs = run_dirs(d)
    assert len(dirs) == len(SEEDS)
    for x in dirs:
        assert summary(x)["status"] == "completed"
        # trained to the end once at most (a run finished just before a kill is read back)
        assert len(trained_ends(x)) <= 1 and any("end" in a for a in attempts(x))
    assert one_finished_trial_per_key(d / "sweep.db") == {x.name: 1 for x in dirs}
