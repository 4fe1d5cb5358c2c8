"""Faults in the experiment layer (issue 23): each ends in one ``fcnet: error:`` line
and a non-zero exit, trains nothing when the input was bad, and keeps completed work.

The corpus, by class (the PostgreSQL server stopped mid-sweep is in
tests/test_sweep_postgres.py, against a real server):

storage
  - a storage opened read-only (SQLite ``mode=ro``): names it, says "read-only", runs intact
  - sweep.db filled with garbage / cut in half: "is damaged", move it away; runs reused after
  - a disk that fills up under sweep.db during a search (tmpfs, root only): "is full"; with
    space again the rerun finishes without training anything twice
  - a PostgreSQL URL where no server listens: "the server at HOST:PORT stopped or cannot be
    reached"
two writers, one run
  - two ``fcnet train --name same`` at once, same config: one trains, the other waits and
    reuses it (both exit 0, one trained attempt)
  - the same with different configs: one finishes, the other refuses in one line; the run
    directory holds the finished one, intact
  - a sweep and a ``fcnet train`` writing the same run directory: never two writers
sizes
  - ``--hidden 10000000``, ``--batch-size 100000000`` and ``--hidden 20000,20000`` under a
    4 GB address-space limit: one line naming the estimate and the limit, nothing written,
    and the process never grew (peak RSS well under the estimate)
  - a MemoryError anywhere else (here inside data loading): one line, exit 1
paths that are not files
  - a FIFO, a socket and /dev/null as ``--path``: refused from their stat (a FIFO read would
    hang: the test runs under a timeout)
  - a FIFO inside an image-folder tree, /proc/self/fd as an image folder, /proc/self as an
    MNIST folder: one line naming the folder and what was expected in it
temp files of killed writes
  - ``.importance.png.*.tmp`` and ``.results.md.*.tmp`` in a sweep folder, removed by the
    next run of the same command; a run directory's temp files removed when it trains again
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from _sweep_util import DIGITS, FCNET, cli, run_dirs, summary, trained_ends
from _tmpfs import mounted_tmpfs

from fcnet.config import load_config
from fcnet.training import rundir

TRAIN = ["train", "--dataset", "digits", "--iters", "60", "--batch-size", "50", "--lr", "1e-2",
         "--std", "1e-2", "--reg", "1e-3", "--quiet", "--checkpoint-every", "0"]
BASE = ["sweep", *DIGITS, "--iters", "60", "--population", "1", "--quiet"]
GRID = [*BASE, "--grid", "lr=1e-2,2e-2", "reg=0,1e-3"]


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcnet: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def intact(run: Path) -> dict:
    """The run's summary, after checking it is finished with every recorded checksum."""
    s = summary(run)
    assert rundir.is_finished(s) and not rundir.damaged(run, s), run
    return s


def sweep_with_runs(tmp_path: Path) -> tuple[Path, dict]:
    d = tmp_path / "s"
    r = cli(*GRID, "--dir", str(d))
    assert r.returncode == 0, r.stderr
    return d, {x.name: intact(x)["final_val_acc"] for x in run_dirs(d)}


# ---------------------------------------------------------------------------- storage
def test_a_read_only_storage_is_one_line_and_keeps_the_runs(tmp_path):
    d, before = sweep_with_runs(tmp_path)
    url = f"sqlite:///file:{d / 'sweep.db'}?mode=ro&uri=true"
    r = cli(*BASE, "--grid", "lr=3e-2", "--dir", str(tmp_path / "t"), "--storage", url,
            "--study", "sweep", "--runs-dir", str(d / "runs"))
    line = one_line(r)
    assert r.returncode != 0 and "read-only" in line and "sweep.db" in line
    assert "run the same command again" in line
    assert {x.name: intact(x)["final_val_acc"] for x in run_dirs(d)} == before


@pytest.mark.parametrize("damage", ["garbage", "half"])
def test_a_damaged_sweep_db_is_one_line_and_a_fresh_one_reuses_the_runs(tmp_path, damage):
    d, before = sweep_with_runs(tmp_path)
    db = d / "sweep.db"
    data = db.read_bytes()
    db.write_bytes(os.urandom(len(data)) if damage == "garbage" else data[: len(data) // 2])
    r = cli(*GRID, "--dir", str(d))
    line = one_line(r)
    assert r.returncode != 0 and f"{db}" in line and "damaged" in line and "move it away" in line
    assert {x.name: intact(x)["final_val_acc"] for x in run_dirs(d)} == before
    db.rename(d / "sweep.db.bad")  # what the line says to do
    r = cli(*GRID, "--dir", str(d), "--json")
    assert r.returncode == 0, r.stderr
    assert all(len(trained_ends(x)) == 1 for x in run_dirs(d))  # read back, not retrained


def test_a_server_that_cannot_be_reached_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = cli(*GRID, "--dir", str(tmp_path / "s"),
            "--storage", f"postgresql://fcnet:secret@127.0.0.1:{port}/sweeps", "--study", "x")
    line = one_line(r)
    assert r.returncode != 0
    assert f"the server at 127.0.0.1:{port} stopped or cannot be reached" in line
    assert "secret" not in line and "start it and run the same command again" in line
    assert run_dirs(tmp_path / "s") == []


@pytest.fixture
def tmpfs():
    """A small tmpfs (root only, as in tests/test_faults.py); yields its folder."""
    yield from mounted_tmpfs("size=8m", "the damaged and read-only storages above cover "
                             "the same code path")


def test_a_full_disk_under_the_storage_is_one_line_and_the_rerun_trains_nothing_twice(
        tmp_path, tmpfs):
    d, runs = tmpfs / "s", tmp_path / "runs"  # the storage fills up, the runs have room
    search = [*BASE, "--search", "random", "--param", "lr=1e-3:1e-1:log", "--dir", str(d),
              "--runs-dir", str(runs)]
    assert cli(*search, "--trials", "1").returncode == 0  # the study exists
    st = os.statvfs(tmpfs)
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 60_000))  # a few trials' worth
    r = cli(*search, "--trials", "12")
    line = one_line(r)
    assert r.returncode != 0 and f"{d / 'sweep.db'}" in line
    assert "is full: free space and run the same command again" in line
    done = {x.name for x in runs.iterdir() if x.is_dir() and rundir.is_finished(summary(x))}
    assert len(done) >= 1
    filler.unlink()
    r = cli(*search, "--trials", "12", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 12 and all(x["status"] in ("completed", "reused") for x in rows)
    for x in (p for p in runs.iterdir() if p.is_dir()):
        intact(x)
        assert len(trained_ends(x)) == 1, x  # finished before the disk filled: read back
    assert done <= {x.name for x in runs.iterdir()}


# ---------------------------------------------------------------------------- one writer
def _two_trains(tmp_path: Path, second: list[str]) -> list[subprocess.CompletedProcess]:
    args = [*FCNET, *TRAIN, "--iters", "3000", "--runs-dir", str(tmp_path), "--name", "same"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = rundir.lock_path(tmp_path / "same")
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:  # the first one holds the run
        time.sleep(0.01)
    other = subprocess.Popen([*args, *second], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    out = []
    for p in (first, other):
        o, e = p.communicate(timeout=240)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


def test_two_trains_of_one_config_train_once_and_both_report_it(tmp_path):
    first, second = _two_trains(tmp_path, [])
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    s = intact(tmp_path / "same")
    acc = f"val acc {s['final_val_acc']:.4f}"
    assert acc in first.stdout and acc in second.stdout
    assert "Traceback" not in second.stderr
    assert not rundir.lock_path(tmp_path / "same").exists()  # no lock file left behind


def test_two_trains_of_different_configs_one_refuses_in_one_line(tmp_path):
    first, second = _two_trains(tmp_path, ["--lr", "2e-2"])
    assert first.returncode == 0, first.stderr
    line = one_line(second)
    assert second.returncode == 2 and "holds a run with a different config" in line
    assert load_config(tmp_path / "same" / "config.toml").lr == 1e-2
    intact(tmp_path / "same")


def test_a_sweep_and_a_train_never_write_one_run_at_once(tmp_path):
    """A sweep's run directory, trained by `fcnet train` meanwhile: whichever comes second
    waits and reads the finished run back; it is trained once."""
    from fcnet.experiments.space import run_key
    from fcnet.experiments.sweep import SweepSpec, run_sweep

    config = load_config_from(TRAIN + ["--iters", "3000"])
    key = run_key(config)
    args = [*FCNET, *TRAIN, "--iters", "3000", "--runs-dir", str(tmp_path / "s" / "runs"),
            "--name", key]
    train = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = rundir.lock_path(tmp_path / "s" / "runs" / key)
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    res = run_sweep(SweepSpec(config, grid={"seed": [config.seed]}), tmp_path / "s",
                    figures=False)
    out, err = train.communicate(timeout=240)
    assert train.returncode == 0, err
    (row,) = res.rows
    s = intact(tmp_path / "s" / "runs" / key)
    assert row.val_acc == s["final_val_acc"]
    assert [a for a in trained_ends(tmp_path / "s" / "runs" / key)] == []  # the train trained


def load_config_from(args: list[str]):
    """The RunConfig that `fcnet train ARGS` resolves."""
    from fcnet.cli import build_parser
    from fcnet.cli.options import config_from_args

    return config_from_args(build_parser().parse_args(args))


# ---------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("flags", [["--hidden", "10000000"], ["--batch-size", "100000000"],
                                   ["--hidden", "20000,20000"]])
def test_a_run_that_cannot_fit_is_refused_before_allocating(tmp_path, flags):
    cmd = [*FCNET, "train", "--dataset", "digits", *flags, "--runs-dir", str(tmp_path / "runs")]
    p = subprocess.Popen(["prlimit", "--as=4000000000", *cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)  # this child's own peak memory
    r = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), p.stdout.read(),
                                    p.stderr.read())
    line = one_line(r)
    assert r.returncode == 2 and "GB of memory" in line and "address-space limit" in line
    assert usage.ru_maxrss < 1_000_000  # KB: the arrays were never allocated
    assert not (tmp_path / "runs").exists()


def test_a_memory_error_elsewhere_is_one_line(tmp_path, capsys, monkeypatch):
    from fcnet.cli import main
    from fcnet.data import load
    from fcnet.training import prepare

    def no_memory():
        raise MemoryError("Unable to allocate 1.2 TiB for an array with shape (1797, 10**11)")

    monkeypatch.setattr(load, "_digits_csv", no_memory)
    monkeypatch.setattr(prepare, "_CACHE", {})  # loaded afresh, not from an earlier test
    rc = main([*TRAIN, "--runs-dir", str(tmp_path / "runs")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("fcnet: error: out of memory")
    assert "1.2 TiB" in lines[0]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- not files
def _train_on(tmp_path: Path, dataset: str, path: str) -> str:
    r = cli(*TRAIN[:2], dataset, *TRAIN[3:], "--path", path, "--runs-dir",
            str(tmp_path / "runs"), timeout=60)
    assert r.returncode == 2
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    return one_line(r)


def test_a_fifo_socket_or_device_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "data.tar.gz"
    os.mkfifo(fifo)
    assert "is a FIFO (named pipe), not a file or folder" in _train_on(
        tmp_path, "imagefolder", str(fifo))
    assert "is a FIFO" in _train_on(tmp_path, "cifar10", str(fifo))
    sock = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
        assert "is a socket" in _train_on(tmp_path, "mnist", str(sock))
    assert "/dev/null: is a character device" in _train_on(tmp_path, "imagefolder",
                                                           "/dev/null")


def test_errors_inside_a_folder_name_the_folder_and_what_was_expected(tmp_path):
    tree = tmp_path / "tree" / "train" / "cat"
    tree.mkdir(parents=True)
    os.mkfifo(tree / "x.png")
    line = _train_on(tmp_path, "imagefolder", str(tmp_path / "tree"))
    assert f"{tmp_path / 'tree'}: train/cat/x.png is a FIFO" in line
    assert "expected a split/class/image tree in this folder" in line
    line = _train_on(tmp_path, "mnist", "/proc/self")
    assert line.startswith("fcnet: error: /proc/self: train-images-idx3-ubyte.gz")
    assert "is missing" in line
    line = _train_on(tmp_path, "imagefolder", "/proc/self/fd")
    assert line.startswith("fcnet: error: /proc/self/fd: ") and "expected" in line


# ---------------------------------------------------------------------------- temp files
def test_temp_files_of_killed_writes_go_with_the_next_run_of_the_same_command(tmp_path):
    d = tmp_path / "s"
    grid = [*GRID, "--dir", str(d)]
    assert cli(*grid).returncode == 0
    left = [d / ".importance.png.k1l2m3.tmp", d / ".results.md.x9y8.tmp"]
    for p in left:
        p.write_bytes(b"half a picture")
    r = cli(*grid)
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in left)
    assert (d / "importance.png").exists() and (d / "results.md").exists()
    # a run directory's own: removed when the killed run is run again
    args = [*TRAIN, "--runs-dir", str(tmp_path / "runs"), "--name", "r"]
    assert cli(*args).returncode == 0
    run = tmp_path / "runs" / "r"
    s = summary(run)
    (run / "summary.json").write_text(json.dumps({**s, "status": "running"}))  # killed...
    (run / ".params.npz.a1b2.tmp").write_bytes(b"torn")  # ...while writing its parameters
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert not (run / ".params.npz.a1b2.tmp").exists()
    assert intact(run)["final_val_acc"] == s["final_val_acc"]
