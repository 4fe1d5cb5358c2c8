"""train_population: K compatible runs at once, each with its own complete run directory,
equal to training each alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fcnet.config import make_config
from fcnet.files import load_npz
from fcnet.training import train_population, train_run
from fcnet.training.population_run import compatible


def cfg(**kw):
    return make_config({"dataset": "digits", "iters": 120, "batch_size": 50, "lr": 1e-2,
                        "std": 1e-2, "reg": 1e-3, **kw})


def test_population_runs_equal_lone_runs_and_write_full_run_dirs(tmp_path):
    configs = [cfg(lr=1e-2), cfg(lr=2e-2, reg=0.0), cfg(lr=5e-3, decay=0.9), cfg(std=1e-3)]
    pop = train_population(configs, [tmp_path / f"p{i}" for i in range(4)], eval_at=[60, 120])
    for i, c in enumerate(configs):
        alone = train_run(c, tmp_path / f"a{i}", eval_at=[60, 120])
        assert pop[i]["population"] == 4 and pop[i]["status"] == "completed"
        assert pop[i]["final_val_acc"] == pytest.approx(alone["final_val_acc"], abs=1e-9)
        assert pop[i]["val_acc_at"] == pytest.approx(alone["val_acc_at"], abs=1e-9)
        a, b = load_npz(tmp_path / f"p{i}" / "params.npz"), load_npz(tmp_path / f"a{i}" / "params.npz")
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12)
        for name in ("config.toml", "loss.csv", "epochs.csv", "preprocess.npz", "loss.png"):
            assert (tmp_path / f"p{i}" / name).exists()


def test_finished_members_are_reused(tmp_path):
    configs = [cfg(lr=1e-2), cfg(lr=2e-2)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    first = train_population(configs, dirs)
    mtime = (tmp_path / "a" / "params.npz").stat().st_mtime_ns
    again = train_population(configs, dirs)
    assert first == again and (tmp_path / "a" / "params.npz").stat().st_mtime_ns == mtime


def test_a_diverging_member_does_not_poison_the_others(tmp_path):
    configs = [cfg(lr=1e-2), cfg(lr=1e6, std=1.0)]
    out = train_population(configs, [tmp_path / "ok", tmp_path / "bad"])
    assert out[0]["status"] == "completed" and out[1]["status"] == "diverged"
    s = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert s["status"] == "diverged" and isinstance(s["diverged_at"], int)
    alone = train_run(configs[0], tmp_path / "alone")
    assert out[0]["final_val_acc"] == pytest.approx(alone["final_val_acc"], abs=1e-9)


def test_configs_that_share_shapes_and_update_rule_are_grouped():
    assert compatible([cfg(lr=1e-2), cfg(reg=0.5, dropout_keep=0.5)])
    assert compatible([cfg(seed=0), cfg(seed=1)])  # repeats: each member its own stream
    assert compatible([cfg(optimizer="adam"), cfg(optimizer="adam", lr=1e-3)])
    assert not compatible([cfg(hidden=[50]), cfg(hidden=[100])])
    assert not compatible([cfg(optimizer="adam"), cfg(optimizer="sgd")])
    assert not compatible([cfg(batch_size=50), cfg(batch_size=100)])
