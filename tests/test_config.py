"""RunConfig at the boundary: non-finite numbers refused from flags, TOML and code
before anything is written; the TOML it saves reads back as the same config."""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
import typing

import pytest

from fcnet.cli import main
from fcnet.config import RunConfig, load_config, make_config
from fcnet.errors import FcnetError

FLOAT_FIELDS = [name for name, f in RunConfig.model_fields.items()
                if f.annotation is float or float in typing.get_args(f.annotation)]


def test_the_float_fields_are_the_ones_expected():
    # a sanity check on FLOAT_FIELDS, so the test below cannot pass on an empty list
    assert {"lr", "decay", "reg", "std", "momentum", "decay_rate", "eps", "pca",
            "weight_decay"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_field_rejects_nan_and_infinities(name, value):
    with pytest.raises(FcnetError, match=rf"config field '{name}': Input should be a finite number"):
        make_config(**{name: value}, **({"backend": "torch"} if name == "time_budget" else {}))


@pytest.mark.parametrize("flag", [["--lr", "inf"], ["--lr", "nan"], ["--lr=-inf"]])
def test_fcnet_train_refuses_non_finite_lr_in_one_line_writing_nothing(tmp_path, flag, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--dataset", "digits", "--runs-dir", str(runs), *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fcnet: error: config field 'lr': Input should be a finite number"]
    assert not runs.exists()


def test_a_toml_with_lr_inf_is_refused_before_anything_is_written(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "digits"\nlr = inf\n')
    runs = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "fcnet", "train", "--config", str(cfg),
                        "--runs-dir", str(runs)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "fcnet: error: config field 'lr': Input should be a finite number"]
    assert not runs.exists()
    with pytest.raises(FcnetError, match="'lr'"):
        load_config(cfg)


def test_to_toml_reads_back_as_the_same_config_and_leaves_out_none():
    c = make_config(hidden=[30, 20], lr=3e-4, path='C:\\data\\"x"', optimizer="rmsprop",
                    decay_rate=0.9, pca=0.95, seed=7)
    text = c.to_toml()
    values = tomllib.loads(text)
    assert make_config(values) == c
    assert "val_size" not in values and "weight_decay" not in values  # None: absent
    assert values["hidden"] == [30, 20] and values["path"] == 'C:\\data\\"x"'


def test_a_run_key_stays_the_same_when_a_field_is_added_at_its_default():
    """The key hashes only the fields that differ from their defaults: a field
    added later (at a default that keeps old behaviour) leaves every key as it
    was, with no hand-kept list; config.toml still records every field."""

    class Later(RunConfig):
        added_later: float = 0.5

    assert Later().key() == RunConfig().key()
    assert Later(lr=3e-3).key() == RunConfig(lr=3e-3).key() != RunConfig().key()
    assert Later(added_later=0.7).key() != RunConfig().key()  # set, it counts
    plain = make_config({})
    assert {"zca_eps", "ema", "tensorboard"} <= set(plain.model_dump())
    assert load_config(None, **{}) == plain
    with pytest.raises(FcnetError, match="ema=0.5 needs --backend torch"):
        make_config({"ema": 0.5})  # numpy: a torch-only setting
    with pytest.raises(FcnetError, match="ZCA keeps every pixel"):
        make_config({"preprocess": "zca", "pca": 0.95})
    with pytest.raises(FcnetError, match="zca_eps"):
        make_config({"preprocess": "zca", "zca_eps": 0})
