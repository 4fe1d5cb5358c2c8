"""Two `fcnet sweep --join` workers share one sweep through a real PostgreSQL server
(started here on loopback, thrown away after): every trial runs exactly once, and
when the server stops under them, each ends in one line and a rerun after the
restart completes every trial exactly once."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from _sweep_util import DIGITS, FCNET, run_dirs, starts, summary, trained_ends

from fcnet.experiments.storage import driver_url
from fcnet.training import rundir

SEEDS = [0, 1, 2, 3, 4, 5]


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:  # bin/test installs it; a missing server is a failure, not a skip
        pytest.fail("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                    "run bin/test, which installs Debian's postgresql package")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The throwaway server: its ``url``, and ``stop()`` / ``start()`` (pg_ctl)."""

    def __init__(self, url: str, pg_ctl):
        self.url, self._pg_ctl = url, pg_ctl

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("start")


@pytest.fixture
def postgres_url(postgres):
    return postgres.url


@pytest.fixture
def postgres():
    """A throwaway server: initdb into a temp dir, listening on 127.0.0.1 only.

    initdb refuses to run as root, so as root the server runs as the 'postgres'
    user that Debian's package creates (or 'nobody' where there is none)."""
    bindir = _bindir()
    base = Path(tempfile.mkdtemp(prefix="fcnet-pg-", dir="/tmp"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            user = "nobody"
        for p in (base, sock):
            shutil.chown(p, user)
        as_user = ["runuser", "-u", user, "--"]
    port = _free_port()

    def run(*cmd: str) -> None:
        r = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log = base / "log"
            pytest.fail(f"{' '.join(cmd[:2])} failed:\n{r.stdout}\n{r.stderr}\n"
                        f"{log.read_text() if log.exists() else ''}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "fcnet", "--auth=trust",
        "--encoding=UTF8", "--locale=C", "--no-sync")
    def pg_ctl(*args: str) -> None:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", *args)

    pg_ctl("start")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="fcnet", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE sweeps")
        conn.close()
        yield Server(f"postgresql://fcnet@127.0.0.1:{port}/sweeps", pg_ctl)
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_one_sweep_and_run_every_trial_once(tmp_path, postgres_url):
    d = tmp_path / "s"
    args = [*FCNET, "sweep", *DIGITS, "--iters", "2000",
            "--grid", "seed=" + ",".join(map(str, SEEDS)), "--dir", str(d),
            "--storage", postgres_url, "--study", "shared", "--join", "--json", "--quiet",
            # populations of 2: neither worker can know of the other, so with the default
            # of 8 the one that queued the grid could take all 6 mates before the other woke
            "--population", "2"]
    workers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=180) for w in workers]
    # both workers' output on a failure: one worker's error can show in the other's table
    assert [w.returncode for w in workers] == [0, 0], "\n".join(
        f"worker {i}: rc {w.returncode}\nstderr: {err}\nstdout: {out[-3000:]}"
        for i, (w, (out, err)) in enumerate(zip(workers, outs, strict=True)))
    tables = [json.loads(out) for out, _ in outs]
    for rows in tables:  # each worker waits for the other's trials, then prints the whole table
        assert sorted(x["config"]["seed"] for x in rows) == SEEDS
        assert all(x["status"] == "completed" for x in rows)
    assert [x["val_acc"] for x in tables[0]] == [x["val_acc"] for x in tables[1]]

    dirs = run_dirs(d)
    assert len(dirs) == len(SEEDS)
    for x in dirs:  # trained exactly once, by one of the two
        assert len(starts(x)) == 1 and len(trained_ends(x)) == 1
        assert summary(x)["status"] == "completed"
    assert len({starts(x)[0]["pid"] for x in dirs}) == 2, "both workers should have trained"

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=driver_url(postgres_url))
    states = {t.state.name for t in study.trials}
    assert states <= {"COMPLETE", "PRUNED"}  # PRUNED: a twin enqueued by both, dropped
    ran = [t.user_attrs["key"] for t in study.trials
           if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs]
    assert sorted(ran) == sorted(x.name for x in dirs)


def test_a_server_stopped_mid_sweep_is_one_line_and_the_rerun_completes_each_trial_once(
        tmp_path, postgres):
    d = tmp_path / "s"
    args = [*FCNET, "sweep", *DIGITS, "--iters", "6000",
            "--grid", "seed=" + ",".join(map(str, SEEDS)), "--dir", str(d),
            "--storage", postgres.url, "--study", "stopped", "--join", "--quiet",
            "--population", "1"]
    workers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            (summary(x) or {}).get("status") == "completed" for x in run_dirs(d)):
        time.sleep(0.05)
    postgres.stop()  # while both workers are mid-sweep
    stopped = time.monotonic()
    outs = [w.communicate(timeout=180) for w in workers]
    assert time.monotonic() - stopped < 60  # the run in hand, then the first storage call
    for w, (_, err) in zip(workers, outs, strict=True):
        lines = err.strip().splitlines()
        assert w.returncode != 0 and len(lines) == 1, err
        assert lines[0] == (f"fcnet: error: sweep storage {postgres.url}: the server at "
                            f"{postgres.url.split('@')[1].split('/')[0]} stopped or cannot be "
                            "reached: start it and run the same command again")
    finished = [x for x in run_dirs(d) if (summary(x) or {}).get("status") == "completed"]
    assert finished and len(finished) < len(SEEDS)
    for x in finished:  # intact
        assert not rundir.damaged(x, summary(x))

    postgres.start()
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="stopped", storage=driver_url(postgres.url))
    complete = [t.user_attrs["key"] for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(x.name for x in run_dirs(d))  # each exactly once
    assert len(complete) == len(SEEDS)
    for x in run_dirs(d):  # and trained once: a run finished before the stop is read back
        assert len(trained_ends(x)) <= 1 and summary(x)["status"] == "completed"
