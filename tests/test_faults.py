"""Fault injection: every write failing (full disk, permission denied, read-only
folder, a file where a folder should be), damaged run files, SIGKILL at random
moments, and file modes.  Each fault ends in one line naming the path, a
non-zero exit, earlier complete files intact and no temp files left."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from _tmpfs import mounted_tmpfs

from fcnet import files
from fcnet.cli import main
from fcnet.config import make_config
from fcnet.errors import FcnetError
from fcnet.training import train_population, train_run

FCNET = [sys.executable, "-m", "fcnet"]
TRAIN = ["train", "--dataset", "digits", "--iters", "60", "--batch-size", "50", "--lr", "1e-2",
         "--std", "1e-2", "--reg", "1e-3", "--quiet", "--checkpoint-every", "0"]
RUN_FILES = ["config.toml", "preprocess.npz", "summary.json", "checkpoint.npz", "params.npz",
             "loss.csv", "epochs.csv", "loss.png", "accuracy.png", "weights.png", "confusion.png"]
ENOSPC, EACCES = errno.ENOSPC, errno.EACCES


def cli(capsys, *args: str) -> tuple[int, list[str]]:
    """Run ``fcnet`` in this process: (exit status, stderr lines)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip().splitlines()


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (tb/'s event files too) by its relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in Path(folder).rglob("*")
            if p.is_file()}


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if files.is_temp(p.name))


def fail_writes(monkeypatch, name: str, err: int) -> None:
    """Make the one writer fail for files called ``name``: EACCES when it creates
    the temp file, ENOSPC when it syncs the written bytes (a full disk)."""
    real_mkstemp, real_fsync = tempfile.mkstemp, os.fsync

    def mkstemp(*args, prefix=None, **kwargs):
        if err == EACCES and prefix == f".{name}.":
            raise PermissionError(EACCES, os.strerror(EACCES))
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if err == ENOSPC and Path(target).name.startswith(f".{name}."):
            raise OSError(ENOSPC, os.strerror(ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fsync", fsync)


def assert_complete(folder: Path) -> None:
    """No torn file: every npz, json and png in ``folder`` reads back whole."""
    from PIL import Image

    for p in Path(folder).iterdir():
        if p.suffix == ".npz":
            files.load_npz(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.load()


def same_arrays(a: Path, b: Path) -> bool:
    x, y = files.load_npz(a), files.load_npz(b)
    return set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A complete digits run, trained once for the whole module."""
    d = tmp_path_factory.mktemp("ref")
    assert main([*TRAIN, "--runs-dir", str(d), "--name", "r"]) == 0
    return d / "r"


# ----------------------------------------------------------------- the one writer
@pytest.mark.parametrize("err", [ENOSPC, EACCES])
@pytest.mark.parametrize("stage", ["create", "write", "fsync", "rename"])
def test_a_failing_write_is_one_line_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch,
                                                                            stage, err):
    target = tmp_path / "f.json"
    files.write_json(target, {"old": 1})

    def boom(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    def write(f):
        f.write(b'{"new": ')
        if stage == "write":
            boom()  # what Pillow or np.savez raise when the disk fills mid-file
        f.write(b"2}")

    if stage == "create":
        monkeypatch.setattr(tempfile, "mkstemp", boom)
    elif stage == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    elif stage == "rename":
        monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(FcnetError) as info:
        files.atomic_write(target, write)
    assert str(info.value) == f"cannot write {target}: {os.strerror(err)}"
    assert json.loads(target.read_text()) == {"old": 1}
    assert temp_files(tmp_path) == []


def test_an_interrupt_inside_the_writer_leaves_no_temp_file(tmp_path):
    def write(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "x.npz", write)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- every kind of write
@pytest.mark.parametrize("err", [ENOSPC, EACCES])
@pytest.mark.parametrize("name", RUN_FILES)
def test_train_failing_to_write_any_run_file_says_so_in_one_line(tmp_path, capsys, monkeypatch,
                                                                 reference, name, err):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    # a damaged file makes --resume rewrite every file of the run from its checkpoint
    bait = "epochs.csv" if name == "loss.csv" else "loss.csv"
    (run / bait).write_text("iteration,loss\n")
    before = contents(run)
    with monkeypatch.context() as m:
        fail_writes(m, name, err)
        rc, lines = cli(capsys, "train", "--resume", run, "--quiet")
    assert rc == 2
    assert lines[-1] == f"fcnet: error: cannot write {run / name}: {os.strerror(err)}"
    assert len(lines) == 2 and "resuming from the last intact checkpoint" in lines[0]
    assert (run / name).read_bytes() == before[name]  # the earlier complete file
    assert temp_files(run) == []
    assert_complete(run)
    rc, _ = cli(capsys, "train", "--resume", run, "--quiet")  # the disk has room again
    assert rc == 0 and same_arrays(run / "params.npz", reference / "params.npz")


@pytest.mark.parametrize("name", ["checkpoint.pt", "model.pt"])
def test_torch_checkpoint_and_weights_failures_are_one_line(tmp_path, capsys, monkeypatch, name):
    pytest.importorskip("torch")
    with monkeypatch.context() as m:
        fail_writes(m, name, ENOSPC)
        rc, lines = cli(capsys, "train", "--dataset", "digits", "--backend", "torch", "--epochs",
                        "2", "--device", "cpu", "--quiet", "--runs-dir", tmp_path, "--name", "t")
    assert rc == 2
    assert lines == [f"fcnet: error: cannot write {tmp_path / 't' / name}: "
                     f"{os.strerror(ENOSPC)}"]
    assert temp_files(tmp_path) == []


def test_a_population_member_failing_to_write_is_one_line(tmp_path, monkeypatch):
    configs = [make_config({"dataset": "digits", "iters": 40, "batch_size": 50, "lr": lr,
                            "std": 1e-2}) for lr in (1e-2, 2e-2)]
    with monkeypatch.context() as m:
        fail_writes(m, "params.npz", ENOSPC)
        with pytest.raises(FcnetError, match=r"cannot write .*/p0/params.npz: No space left"):
            train_population(configs, [tmp_path / "p0", tmp_path / "p1"], figures=False)
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("name", ["report.md", "report.html", "copied.png"])
def test_report_failures_are_one_line_and_keep_the_earlier_report(tmp_path, monkeypatch, name):
    from fcnet.report import plots
    from fcnet.report.render import Figure, Report, Section

    png = plots.loss_curve([3.0, 2.0, 1.0], tmp_path / "copied.png")
    report = Report("R", [Section("S", text="text", figures=[Figure(png, "loss")])])
    out = tmp_path / "out"
    report.write(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "figures" / "copied.png").unlink()  # so the next write copies it again
    report.sections[0].text = "new text"
    with monkeypatch.context() as m:
        fail_writes(m, name, ENOSPC)
        with pytest.raises(FcnetError) as info:
            report.write(out)
    assert str(info.value).startswith("cannot write ") and name in str(info.value)
    assert temp_files(out) == []
    for p, data in before.items():
        assert not p.exists() or p.read_bytes() == data or p.name != name


def test_a_data_cache_that_cannot_be_written_costs_one_warning_line_only(tmp_path, capsys,
                                                                         monkeypatch):
    from fcnet.data.cache import load_decoded, store_decoded
    from fcnet.data.core import Dataset, Split

    monkeypatch.setenv("FCNET_DATA", str(tmp_path / "cache"))
    ds = Dataset("t", {"train": Split(np.zeros((2, 3), np.uint8), np.zeros(2, np.int64))},
                 ["a"], "src", "abc", "sha256 of the file", True, {})
    with monkeypatch.context() as m:
        fail_writes(m, Path(_decoded_name(ds)).name, ENOSPC)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store_decoded(ds)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert "No space left on device" in str(caught[0].message)
    assert load_decoded("t", "abc") is None and temp_files(tmp_path) == []


def _decoded_name(ds) -> str:
    from fcnet.data.cache import decoded_path

    return decoded_path(ds.name, ds.checksum).name


def test_data_show_failing_to_write_its_image_is_one_line(tmp_path, capsys, monkeypatch):
    with monkeypatch.context() as m:
        fail_writes(m, "grid.png", EACCES)
        rc, lines = cli(capsys, "data", "show", "digits", "--out", tmp_path / "grid.png",
                        "--quiet")
    assert rc == 2 and lines == [f"fcnet: error: cannot write {tmp_path / 'grid.png'}: "
                                 f"{os.strerror(EACCES)}"]
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_folder_should_be_is_named(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    rc, lines = cli(capsys, *TRAIN, "--runs-dir", tmp_path / "runs", "--name", "x")
    assert rc == 2
    assert lines == [f"fcnet: error: cannot write {tmp_path / 'runs' / 'x'}: "
                     f"{tmp_path / 'runs'} is a file, not a folder"]


def test_an_unwrapped_oserror_still_ends_in_one_line(capsys, monkeypatch):
    import fcnet.cli.evaluate as evaluate

    def handler(args):
        raise PermissionError(EACCES, os.strerror(EACCES), "/some/file")

    monkeypatch.setattr(evaluate, "run", handler)
    rc, lines = cli(capsys, "evaluate", "whatever")
    assert rc == 2 and lines == ["fcnet: error: /some/file: Permission denied"]


# ----------------------------------------------------------------- for real, on a small tmpfs
@pytest.fixture
def tmpfs():
    """Mount a small tmpfs (root only); yields its folder."""
    yield from mounted_tmpfs("size=400k,mode=0755",
                             "the monkeypatched faults above cover the same code")


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` up to ``leave`` bytes free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


# TensorBoard's writer thread may fail first (fcnet's next call reports it in one line, and fcnet's
# thread hook keeps its traceback off stderr); pytest replaces that hook while a test runs
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("leave", [0, 20_000, 90_000, 180_000])
def test_a_full_disk_for_real_is_one_line_and_resume_then_completes(tmpfs, capsys, reference,
                                                                    leave):
    filler = fill(tmpfs, leave)
    rc, lines = cli(capsys, *TRAIN, "--runs-dir", tmpfs / "runs", "--name", "r")
    assert rc == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"fcnet: error: cannot write {tmpfs}")
    assert lines[0].endswith("No space left on device")
    assert temp_files(tmpfs) == []
    if (tmpfs / "runs" / "r").exists():
        assert_complete(tmpfs / "runs" / "r")
    filler.unlink()
    rc, lines = cli(capsys, *TRAIN, "--runs-dir", tmpfs / "runs", "--name", "r")
    assert rc == 0, lines
    assert same_arrays(tmpfs / "runs" / "r" / "params.npz", reference / "params.npz")


def test_a_read_only_folder_for_real_is_one_line_and_changes_nothing(tmpfs, capsys, reference):
    run = tmpfs / "r"
    shutil.copytree(reference, run)
    (run / "loss.csv").write_text("damaged")  # so --resume has to write
    before = contents(run)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    rc, lines = cli(capsys, "train", "--resume", run, "--quiet")
    assert rc == 2 and lines[-1].endswith("Read-only file system") and str(run) in lines[-1]
    assert contents(run) == before


def test_permission_denied_for_real_is_one_line(tmp_path, reference):
    """In a run folder fcnet may not write (0555); root is run without the
    capability that lets it ignore permissions."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root ignores permissions, and setpriv (to drop that) is missing")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    (run / "loss.csv").write_text("damaged")  # so --resume has to write
    before = contents(run)
    run.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    try:
        r = subprocess.run([*prefix, *FCNET, "train", "--resume", str(run), "--quiet"],
                           capture_output=True, text=True, env=env, timeout=120)
    finally:
        run.chmod(0o755)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert lines[-1].startswith(f"fcnet: error: cannot write {run}/")
    assert lines[-1].endswith("Permission denied") and "Traceback" not in r.stderr
    assert contents(run) == before


# ----------------------------------------------------------------- damaged run files
def test_evaluate_and_predict_name_a_truncated_params_file(tmp_path, capsys, reference):
    from PIL import Image

    run = tmp_path / "r"
    shutil.copytree(reference, run)
    with open(run / "params.npz", "r+b") as f:
        f.truncate(1000)
    png = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(png)
    for args in (["evaluate", run], ["predict", run, png]):
        rc, lines = cli(capsys, *args)
        assert rc == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"fcnet: error: {run / 'params.npz'}: damaged")
    # a run from before checksums: the archive's own error, still one line
    s = json.loads((run / "summary.json").read_text())
    del s["files"]
    (run / "summary.json").write_text(json.dumps(s))
    rc, lines = cli(capsys, "evaluate", run)
    assert rc == 2 and len(lines) == 1 and "params.npz: not a readable .npz" in lines[0]


@pytest.mark.parametrize("truncate, says", [
    (["params.npz"], "resuming from the last intact checkpoint"),
    (["params.npz", "checkpoint.npz"], "training again from the start"),
])
def test_resume_of_a_damaged_run_falls_back_and_ends_identical(tmp_path, capsys, reference,
                                                               truncate, says):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    for name in truncate:
        with open(run / name, "r+b") as f:
            f.truncate(500)
    rc, lines = cli(capsys, "train", "--resume", run, "--quiet")
    assert rc == 0
    assert says in lines[0] and all(n in lines[0] for n in truncate)
    for name in ("params.npz", "checkpoint.npz"):
        assert same_arrays(run / name, reference / name)
    assert (run / "loss.csv").read_bytes() == (reference / "loss.csv").read_bytes()
    rc, lines = cli(capsys, "train", "--resume", run, "--quiet")  # now intact: reused
    assert rc == 0 and len(lines) == 0


def test_an_interrupted_run_with_a_truncated_checkpoint_trains_from_the_start(tmp_path, capsys,
                                                                              reference):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    s = json.loads((run / "summary.json").read_text())
    s["status"] = "running"
    (run / "summary.json").write_text(json.dumps(s))
    (run / "params.npz").unlink()
    with open(run / "checkpoint.npz", "r+b") as f:
        f.truncate(2000)
    rc, lines = cli(capsys, "train", "--resume", run, "--quiet")
    assert rc == 0 and "checkpoint.npz" in lines[0] and "from the start" in lines[0]
    assert same_arrays(run / "params.npz", reference / "params.npz")


def test_a_truncated_summary_is_never_taken_for_a_finished_run(tmp_path, capsys, reference):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    (run / "summary.json").write_text('{"status": "compl')
    rc, lines = cli(capsys, "evaluate", run)
    assert rc == 2 and lines[0].startswith(f"fcnet: error: {run / 'summary.json'}: not valid JSON")
    rc, lines = cli(capsys, "train", "--resume", run, "--quiet")
    assert rc == 0 and "summary.json: unreadable" in lines[0]
    assert same_arrays(run / "params.npz", reference / "params.npz")
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_a_torch_run_with_truncated_weights_is_named_and_retrained(tmp_path, capsys):
    pytest.importorskip("torch")
    args = ["train", "--dataset", "digits", "--backend", "torch", "--epochs", "2", "--device",
            "cpu", "--quiet", "--runs-dir", tmp_path, "--name", "t"]
    assert cli(capsys, *args)[0] == 0
    run = tmp_path / "t"
    good = run.joinpath("model.pt").read_bytes()
    for name in ("model.pt", "checkpoint.pt"):
        with open(run / name, "r+b") as f:
            f.truncate(300)
    rc, lines = cli(capsys, "evaluate", run)
    assert rc == 2 and lines[0].startswith(f"fcnet: error: {run / 'model.pt'}: damaged")
    rc, lines = cli(capsys, "train", "--resume", run, "--quiet")
    assert rc == 0 and "training again from the start" in lines[0]
    assert run.joinpath("model.pt").read_bytes() == good


# ----------------------------------------------------------------- SIGKILL at random moments
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_bit_identical(tmp_path):
    args = [*FCNET, "train", "--dataset", "digits", "--iters", "1500", "--batch-size", "20",
            "--lr", "1e-2", "--std", "1e-2", "--quiet", "--checkpoint-every", "0",
            "--runs-dir", str(tmp_path)]
    t0 = time.monotonic()
    assert subprocess.run([*args, "--name", "straight"], capture_output=True).returncode == 0
    length = time.monotonic() - t0
    rng = random.Random(12)
    run, kills = tmp_path / "killed", 0

    def again() -> list[str]:  # killed before its config was written, a run starts afresh
        return ([*FCNET, "train", "--resume", str(run), "--quiet"]
                if (run / "config.toml").exists() else [*args, "--name", "killed"])

    for _ in range(4):
        cmd = again()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.8 * length))  # anywhere: start-up, training, files
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if run.exists():
            assert_complete(run)  # a kill never leaves a torn file
    assert kills >= 1
    r = subprocess.run(again(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    straight = tmp_path / "straight"
    for name in ("params.npz", "checkpoint.npz"):
        assert same_arrays(run / name, straight / name), name
    for name in ("loss.csv", "epochs.csv", "config.toml", "preprocess.npz"):
        assert (run / name).read_bytes() == (straight / name).read_bytes(), name
    assert temp_files(run) == []


# ----------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_run_file_gets_the_mode_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        train_run(make_config({"dataset": "digits", "iters": 20, "batch_size": 50}),
                  tmp_path / "r")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "r").rglob("*")
             if p.is_file()}  # tb/'s event files too
    assert set(modes.values()) == {0o666 & ~umask}, modes
