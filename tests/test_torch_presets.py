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
    assert cpu.augment and gpu.augment and cpu.epochs and gpu.epochs


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
              "epochs": None, "batch_size": 32}
    config = make_config(values)
    summary = train_run(config, tmp_path / name, figures=False)
    assert summary["iterations"] == 1
    assert summary["status"] == "completed"
    r = evaluate_run(tmp_path / name, "test")
    assert 0 <= r["accuracy"] <= 1 and r["n"] > 0
