"""`fcnet train`, run directories, resume, atomic writes, divergence, evaluate, predict."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fcnet.config import make_config
from fcnet.errors import FcnetError
from fcnet.files import load_npz, save_npz
from fcnet.training import evaluate_run, predict_files, train_run

FCNET = [sys.executable, "-m", "fcnet"]


def fcnet(*args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FCNET, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def digits_config(**kw):
    return make_config({"dataset": "digits", "iters": 60, "batch_size": 50, "lr": 1e-2,
                        "reg": 1e-3, "std": 1e-2, **kw})


# ----------------------------------------------------------------- config validation
@pytest.mark.parametrize("flags, field", [
    (["--lr", "-1"], "lr"),
    (["--dropout-keep", "1.5"], "dropout_keep"),
    (["--dropout-keep", "0"], "dropout_keep"),
    (["--hidden", "0"], "hidden"),
    (["--batch-size", "0"], "batch_size"),
])
def test_bad_config_value_fails_before_work_naming_the_field(tmp_path, flags, field):
    r = fcnet("train", "--dataset", "digits", "--runs-dir", str(tmp_path), *flags)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'{field}'" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_unknown_toml_key_is_rejected(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "digits"\nlearning_rat = 0.1\n')
    r = fcnet("train", "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2
    assert "learning_rat" in r.stderr and "unknown key" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_flags_override_the_toml_file(tmp_path):
    from fcnet.cli import build_parser
    from fcnet.cli.options import config_from_args

    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "digits"\nlr = 0.5\nhidden = [30, 20]\nepochs = 3\n')
    args = build_parser().parse_args(["train", "--config", str(cfg), "--lr", "0.01", "--iters", "7"])
    c = config_from_args(args)
    assert (c.lr, c.hidden, c.iters, c.epochs) == (0.01, [30, 20], 7, None)


def test_defaults_are_the_exercise_baseline():
    c = make_config()
    assert (c.hidden, c.std, c.iters, c.batch_size, c.lr, c.decay, c.reg, c.preprocess) == (
        [50], 1e-4, 1000, 200, 1e-4, 0.95, 0.25, "mean")


# ----------------------------------------------------------------- run directory
def test_run_directory_has_config_metrics_summary_params_and_figures(tmp_path):
    s = train_run(digits_config(), tmp_path / "r")
    d = tmp_path / "r"
    for name in ("config.toml", "summary.json", "loss.csv", "epochs.csv", "params.npz",
                 "preprocess.npz", "loss.png", "accuracy.png", "weights.png", "confusion.png"):
        assert (d / name).exists(), name
    summary = json.loads((d / "summary.json").read_text())
    for key in ("status", "final_val_acc", "best_val_acc", "train_seconds", "samples_per_second",
                "dataset", "split_hash", "fcnet_version", "seed"):
        assert key in summary, key
    assert summary["status"] == "completed" and s["final_val_acc"] > 0.5
    assert len((d / "loss.csv").read_text().splitlines()) == 61
    params = load_npz(d / "params.npz")
    assert set(params) == {"W1", "b1", "W2", "b2"}


def test_completed_run_is_reused_not_retrained(tmp_path):
    a = train_run(digits_config(), tmp_path / "r")
    mtime = (tmp_path / "r" / "params.npz").stat().st_mtime_ns
    b = train_run(digits_config(), tmp_path / "r")
    assert a == b and (tmp_path / "r" / "params.npz").stat().st_mtime_ns == mtime


def test_same_dir_with_a_different_config_is_refused(tmp_path):
    train_run(digits_config(), tmp_path / "r")
    with pytest.raises(FcnetError, match="different config"):
        train_run(digits_config(lr=0.5), tmp_path / "r")


def test_eval_at_records_accuracy_along_one_run_equal_to_shorter_runs(tmp_path):
    long = train_run(digits_config(iters=60), tmp_path / "long", eval_at=[20, 40, 60])
    short = train_run(digits_config(iters=20), tmp_path / "short")
    assert long["val_acc_at"]["20"] == short["final_val_acc"]
    assert long["val_acc_at"]["60"] == long["final_val_acc"]


def test_keep_best_writes_best_params(tmp_path):
    s = train_run(digits_config(keep_best=True), tmp_path / "r")
    assert (tmp_path / "r" / "best_params.npz").exists() and s["best_val_acc"] >= s["final_val_acc"]


# ----------------------------------------------------------------- resume and atomicity
def test_resume_after_sigkill_ends_with_identical_parameters(tmp_path):
    args = ["train", "--dataset", "digits", "--iters", "20000", "--batch-size", "20", "--lr",
            "1e-2", "--std", "1e-2", "--quiet", "--checkpoint-every", "0", "--runs-dir",
            str(tmp_path)]
    ref = fcnet(*args, "--name", "straight")
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([*FCNET, *args, "--name", "killed"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint.npz"
    deadline = time.time() + 60
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    it = int(load_npz(ckpt)["it"])
    assert 0 < it < 20000, "the kill must land mid-run"
    r = fcnet("train", "--resume", str(tmp_path / "killed"), "--quiet")
    assert r.returncode == 0, r.stderr
    a = load_npz(tmp_path / "straight" / "params.npz")
    b = load_npz(tmp_path / "killed" / "params.npz")
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_kill_during_checkpoint_write_leaves_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "checkpoint.npz"
    save_npz(target, {"w": np.arange(10.0)})
    code = f"""
import os, signal, numpy as np
from fcnet.files import atomic_write
def write(f):
    f.write(b"PK\\x03\\x04 partial bytes of a new checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
atomic_write({str(target)!r}, write)
"""
    r = subprocess.run([sys.executable, "-c", code])
    assert r.returncode == -signal.SIGKILL
    assert np.array_equal(load_npz(target)["w"], np.arange(10.0))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "params.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FcnetError, match="params.npz"):
        load_npz(bad)


# ----------------------------------------------------------------- divergence
def test_divergence_stops_marks_summary_and_keeps_finite_parameters(tmp_path):
    r = fcnet("train", "--dataset", "digits", "--lr", "1e6", "--std", "1", "--iters", "200",
              "--quiet", "--runs-dir", str(tmp_path), "--name", "div")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "diverged" in r.stderr
    s = json.loads((tmp_path / "div" / "summary.json").read_text())
    assert s["status"] == "diverged" and isinstance(s["diverged_at"], int)
    for v in load_npz(tmp_path / "div" / "params.npz").values():
        assert np.isfinite(v).all()


# ----------------------------------------------------------------- evaluate / predict
def test_evaluate_json_reports_accuracy_per_class_and_confusion(tmp_path):
    train_run(digits_config(), tmp_path / "r")
    r = fcnet("evaluate", str(tmp_path / "r"), "--split", "val", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"split", "n", "accuracy", "per_class", "confusion"}
    cm = np.array(out["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == out["n"]
    assert out["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert out["accuracy"] == pytest.approx(s["final_val_acc"])  # same preprocessing exactly


def test_predict_image_files_top_classes(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    train_run(digits_config(), tmp_path / "r")
    img = load_digits().images[0]  # a "0", values 0..16
    png = tmp_path / "zero.png"
    Image.fromarray((img * 255 / 16).astype(np.uint8)).save(png)
    rows = predict_files(tmp_path / "r", [str(png)], top=3)
    probs = [t["probability"] for t in rows[0]["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    big = tmp_path / "big.png"
    Image.new("L", (20, 20)).save(big)
    with pytest.raises(FcnetError, match="resize"):
        predict_files(tmp_path / "r", [str(big)])
    assert len(predict_files(tmp_path / "r", [str(big)], resize=True)) == 1


def test_evaluate_on_unfinished_run_is_refused(tmp_path):
    train_run(digits_config(), tmp_path / "r")
    p = tmp_path / "r" / "summary.json"
    s = json.loads(p.read_text())
    s["status"] = "running"
    p.write_text(json.dumps(s))
    with pytest.raises(FcnetError, match="not finished"):
        evaluate_run(tmp_path / "r", "val")


def test_unreadable_dataset_fails_in_one_line_and_writes_no_run_dir(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08 this is not a gzip stream")
    r = fcnet("train", "--dataset", "imagefolder", "--path", str(bad), "--quiet",
              "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "broken.tar.gz" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_checkpoints_are_spaced_by_what_saving_costs(monkeypatch):
    from fcnet.training import rundir

    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    clock = rundir.CheckpointClock(5.0)
    assert not clock.due()
    now[0] += 5.0
    assert clock.due()
    clock.saved(started=now[0] - 0.5)  # a 0.5 s save: the next one 25 s later, not 5
    now[0] += 24.0
    assert not clock.due()
    now[0] += 1.0
    assert clock.due()
    clock.saved(started=now[0] - 0.01)  # a quick save: back to checkpoint_seconds
    now[0] += 5.0
    assert clock.due()
    every = rundir.CheckpointClock(0.0)
    every.saved(started=now[0] - 1.0)
    assert every.due()  # 0: every epoch end, whatever saving costs


@pytest.mark.parametrize("n", [2, 3, 10])
def test_the_confusion_counts_equal_scikit_learns_confusion_matrix(n):
    from sklearn.metrics import confusion_matrix

    from fcnet.training.rundir import confusion

    rng = np.random.RandomState(n)
    y, pred = rng.randint(0, n, 500), rng.randint(0, n, 500)
    y[:3] = 0  # a class nobody predicts still has its row and column
    pred[pred == n - 1] = 0
    assert np.array_equal(confusion(y, pred, n), confusion_matrix(y, pred, labels=np.arange(n)))
