"""Shipped presets: valid configs, and a clear error for an unknown name."""

from __future__ import annotations

import pytest

from fcnet.config import make_config
from fcnet.errors import FcnetError
from fcnet.presets import available_presets, load_preset


def test_best_presets_are_shipped_and_valid_torch_configs():
    assert {"best-cpu", "best-gpu"} <= set(available_presets())
    cpu = make_config(load_preset("best-cpu"))
    gpu = make_config(load_preset("best-gpu"))
    assert cpu.backend == gpu.backend == "torch"
    assert cpu.device == "cpu" and cpu.amp is True  # bf16 autocast on CPU
    assert gpu.device == "cuda"
    assert cpu.augment and gpu.augment and gpu.epochs
    assert cpu.time_budget == 15 * 60 and cpu.epochs is None  # 15 minutes on any CPU


def test_an_unknown_preset_names_the_available_ones():
    with pytest.raises(FcnetError) as err:
        load_preset("fastest")
    assert "'fastest'" in str(err.value) and "best-cpu" in str(err.value)


@pytest.mark.parametrize("name", available_presets())
def test_each_preset_trains_a_step_on_digits_and_evaluates(tmp_path, name):
    """The preset's whole recipe (its preprocessing, net, optimiser, augmentation,
    schedule) runs end to end: one step on digits (8x8 images), on the CPU."""
    pytest.importorskip("torch")
    from fcnet.training import evaluate_run, train_run

    values = {**load_preset(name), "dataset": "digits", "device": "cpu", "iters": 1,
              "epochs": None, "time_budget": None, "batch_size": 32}
    config = make_config(values)
    summary = train_run(config, tmp_path / name, figures=False)
    assert summary["iterations"] == 1
    assert summary["status"] == "completed"
    r = evaluate_run(tmp_path / name, "test")
    assert 0 <= r["accuracy"] <= 1 and r["n"] > 0


# ---------------------------------------------------------------- time budget
def budget_digits(**kw):
    return make_config({"dataset": "digits", "backend": "torch", "device": "cpu",
                        "optimizer": "adam", "lr": 1e-3, "init": "kaiming", "hidden": [32],
                        "schedule": "cosine", "batch_size": 100, "dropout_keep": 0.9,
                        "tensorboard": False} | kw)


def test_time_budgets_read_units_and_bad_ones_fail_in_one_line():
    import subprocess
    import sys

    assert [budget_digits(time_budget=v).time_budget for v in ("90s", "15m", "1h", 42, "7.5")] \
        == [90, 900, 3600, 42, 7.5]
    for bad in ("15 min", "-1m", "m"):
        with pytest.raises(FcnetError, match="time_budget"):
            budget_digits(time_budget=bad)
    with pytest.raises(FcnetError, match="epochs or time_budget"):
        budget_digits(time_budget="1m", epochs=3)
    with pytest.raises(FcnetError, match="needs --backend torch"):
        make_config(time_budget="1m")
    proc = subprocess.run([sys.executable, "-m", "fcnet", "train", "--backend", "torch",
                           "--dataset", "digits", "--time-budget", "5x"],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "time_budget" in lines[0], proc.stderr


def test_a_time_budget_fixes_the_length_once_and_a_killed_run_resumes_exactly(tmp_path,
                                                                               monkeypatch):
    """The length comes from epochs timed at the start, is kept in the checkpoint
    (a resume does not measure again) and the summary, and the run is then the
    plain run of that many epochs, bit for bit."""
    pytest.importorskip("torch")
    import numpy as np

    from fcnet.torch_backend.train import TorchTrainer
    from fcnet.training import train_run
    from fcnet.training.torch_run import BUDGET_FILL

    cfg = budget_digits(time_budget=3)
    saves, real = [], TorchTrainer.save_checkpoint

    def killed_after_the_first_save(self, path):
        real(self, path)
        saves.append(self.it)
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchTrainer, "save_checkpoint", killed_after_the_first_save)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "r", checkpoint_seconds=0)
    monkeypatch.undo()
    measured = []
    monkeypatch.setattr("fcnet.training.torch_run.measure_budget",
                        lambda *a: measured.append(a))
    s = train_run(cfg, tmp_path / "r")
    assert measured == [] and s["status"] == "completed"
    b = s["time_budget"]  # the measured figures, and the length planned from them
    assert b["seconds"] == 3 and b["epoch_seconds"] > 0 and 0 < b["measuring_seconds"] < 3
    assert b["epochs"] == max(1, int(BUDGET_FILL * (3 - b["measuring_seconds"])
                                     / b["epoch_seconds"]))
    assert s["iterations"] == b["epochs"] * s["iters_per_epoch"] > saves[0] > 0
    plain = train_run(cfg.model_copy(update={"time_budget": None, "epochs": b["epochs"]}),
                      tmp_path / "plain")
    loss = [np.loadtxt(d / "loss.csv", delimiter=",", skiprows=1)[:, 1]
            for d in (tmp_path / "r", tmp_path / "plain")]
    assert np.array_equal(*loss) and s["final_val_acc"] == plain["final_val_acc"]
    assert train_run(cfg, tmp_path / "r")["time_budget"] == b  # finished: reused as it is
