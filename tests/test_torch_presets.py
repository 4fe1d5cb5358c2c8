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
