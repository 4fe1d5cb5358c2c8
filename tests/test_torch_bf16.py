"""--dtype bfloat16 on the torch backend, the exercise's run on torch (autograd
and torch.optim, equal to the NumPy engine's in float64), and the torch
backend's defaults (issues 12, 13 and 20)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")

from fcnet.config import make_config  # noqa: E402
from fcnet.errors import FcnetError  # noqa: E402
from fcnet.nn.model import MLP  # noqa: E402
from fcnet.nn.solver import Solver  # noqa: E402
from fcnet.torch_backend import train as torch_train  # noqa: E402
from fcnet.torch_backend.train import TorchTrainer  # noqa: E402


def blobs(n=400, d=20, c=3, seed=0):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, c, n)
    X = 3 * rng.randn(c, d)[y] + rng.randn(n, d)
    return X, y


def exercise(**kw):
    base = dict(backend="torch", optimizer="sgd", init="normal", hidden=[16, 8], lr=0.05,
                decay=0.9, reg=0.01, std=0.1, iters=45, batch_size=30, seed=4, dtype="float64",
                device="cpu", preprocess="mean")
    return make_config(base | kw)


def test_the_torch_exercise_run_is_the_numpy_solvers_run_in_float64():
    X, y = blobs()
    t = TorchTrainer(exercise(), 20, 3)
    assert type(t.optimizer) is torch.optim.SGD  # autograd and torch.optim, no own step
    h = t.fit(X[:300], y[:300], X[300:], y[300:])
    net = MLP(20, [16, 8], 3, std=0.1, seed=4)
    s = Solver(net, X[:300], y[:300], X[300:], y[300:], learning_rate=0.05,
               learning_rate_decay=0.9, reg=0.01, num_iters=45, batch_size=30, seed=4).run()
    ref = np.array(s.loss_history)
    assert np.max(np.abs(np.array(h["loss_history"]) - ref) / ref) < 1e-9
    # records at the ends of epochs of 10 iterations; the rate decays once an epoch
    assert h["epochs"] == 5 and len(s.val_acc_history) == 5
    assert h["lr_history"] == pytest.approx([0.05 * 0.9**i for i in range(5)], rel=1e-14)
    for i, lin in enumerate(t.model.linears, start=1):
        w = lin.weight.detach().numpy().T
        assert np.max(np.abs(w - net.params[f"W{i}"])) < 1e-9 * np.abs(net.params[f"W{i}"]).max()
    assert np.array_equal(t.predict(X[300:]), net.predict(X[300:]))


def test_one_exercise_step_in_float64_matches_the_numpy_engines_step():
    X, y = blobs(n=100)
    t = TorchTrainer(exercise(iters=1, hidden=[50]), 20, 3)
    t.fit(X[:80], y[:80], X[80:], y[80:])
    net = MLP(20, [50], 3, std=0.1, seed=4)
    s = Solver(net, X[:80], y[:80], X[80:], y[80:], learning_rate=0.05, reg=0.01, num_iters=1,
               batch_size=30, seed=4).run()
    assert t.history["loss_history"] == pytest.approx(s.loss_history, rel=1e-12)
    for i, lin in enumerate(t.model.linears, start=1):
        assert np.allclose(lin.weight.detach().numpy().T, net.params[f"W{i}"], rtol=1e-10,
                           atol=1e-16)
        assert np.allclose(lin.bias.detach().numpy(), net.params[f"b{i}"], rtol=1e-10,
                           atol=1e-16)


def test_bfloat16_trains_with_float32_weights_and_tracks_float32():
    X, y = blobs(n=600)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        t = TorchTrainer(exercise(dtype=dtype, iters=200, lr=0.02), 20, 3)
        runs[dtype] = (t, t.fit(X[:500], y[:500], X[500:], y[500:]))
    t, h = runs["bfloat16"]
    if t.bf16_fallback is None:
        assert t.precision == "bfloat16-mixed" and t.amp
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    ref = runs["float32"][1]
    assert h["loss_history"][-1] < 0.5 * h["loss_history"][0]
    assert abs(h["val_acc_history"][-1] - ref["val_acc_history"][-1]) <= 0.03
    assert np.max(np.abs(np.array(h["loss_history"]) - ref["loss_history"])) < 0.1


def test_bfloat16_on_a_cpu_without_bf16_falls_back_to_float32_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    t = TorchTrainer(exercise(dtype="bfloat16"), 20, 3)
    assert t.precision == "float32" and not t.amp
    assert "no bfloat16 instructions" in t.bf16_fallback
    X, y = blobs()
    h = t.fit(X[:300], y[:300], X[300:], y[300:])  # trains, does not fail
    assert np.isfinite(h["loss_history"]).all()
    adam = TorchTrainer(exercise(dtype="bfloat16", optimizer="adam", lr=1e-2), 20, 3)
    assert not adam.amp and adam.bf16_fallback
    # amp = true (best-cpu's autocast) likewise: float32, not emulated bf16
    auto = TorchTrainer(exercise(optimizer="adam", lr=1e-2, amp=True, dtype="float32"), 20, 3)
    assert not auto.amp and auto.precision == "float32" and auto.bf16_fallback
    assert torch_train.bf16_unsupported(torch.device("cpu")) is not None


def test_bfloat16_beyond_the_exercise_uses_autocast_with_float32_weights():
    cfg = exercise(dtype="bfloat16", optimizer="adam", lr=1e-2, batchnorm=True, epochs=3)
    t = TorchTrainer(cfg, 20, 3)
    X, y = blobs()
    h = t.fit(X[:300].astype(np.float32), y[:300], X[300:].astype(np.float32), y[300:])
    assert h["val_acc_history"][-1] > 0.8
    assert all(p.dtype == torch.float32 for p in t.model.parameters())


def test_an_exercise_run_resumes_exactly_from_its_checkpoint(tmp_path):
    X, y = blobs()
    cfg = exercise(dropout_keep=0.8, iters=60)
    full = TorchTrainer(cfg, 20, 3)
    h_full = full.fit(X[:300], y[:300], X[300:], y[300:])
    first, ckpt = TorchTrainer(cfg, 20, 3), tmp_path / "checkpoint.pt"

    def stop(record):
        if record["epoch"] == 3:
            first.save_checkpoint(ckpt)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.fit(X[:300], y[:300], X[300:], y[300:], callback=stop)
    again = TorchTrainer(cfg, 20, 3)
    again.load_checkpoint(ckpt)
    h = again.fit(X[:300], y[:300], X[300:], y[300:])
    assert h["loss_history"] == h_full["loss_history"]
    assert h["val_acc_history"] == h_full["val_acc_history"]
    for k, v in full.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_numpy_backend_rejects_bfloat16_in_one_line_naming_the_torch_backend():
    with pytest.raises(FcnetError, match="bfloat16.*--backend torch"):
        make_config(dtype="bfloat16")
    proc = subprocess.run([sys.executable, "-m", "fcnet", "train", "--dataset", "digits",
                           "--dtype", "bfloat16"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcnet: error:") and "torch" in lines[0]


def test_torch_defaults_to_channel_normalisation_and_records_the_resolved_value():
    assert make_config(backend="torch").preprocess == "channel"
    assert make_config().preprocess == "mean"  # the NumPy engine keeps the exercise's
    assert make_config(backend="torch", preprocess="mean").preprocess == "mean"
    assert 'preprocess = "channel"' in make_config(backend="torch").to_toml()


def test_the_torch_backend_with_no_tuning_flag_trains_digits_past_90_percent(tmp_path):
    """``fcnet train --backend torch --dataset digits``: the 'general' profile (Adam,
    Kaiming, reg 1e-4, no decay, channel scaling) trains out of the box (issue 20)."""
    from fcnet.training.run import train_run

    cfg = make_config(backend="torch", dataset="digits")  # what the two flags give
    assert (cfg.optimizer, cfg.init, cfg.reg, cfg.decay) == ("adam", "kaiming", 1e-4, 1.0)
    s = train_run(cfg, tmp_path / "r", figures=False)
    assert s["final_val_acc"] >= 0.9, s["final_val_acc"]  # measured 0.979


def test_a_bfloat16_run_directory_records_its_precision_and_preprocessing(tmp_path):
    from fcnet.config import load_config
    from fcnet.training.run import train_run

    cfg = make_config(dataset="digits", backend="torch", dtype="bfloat16", device="cpu",
                      iters=30, batch_size=50, lr=1e-2)
    s = train_run(cfg, tmp_path / "r", figures=False)
    assert s["status"] == "completed"
    assert s["precision"] in ("bfloat16-mixed", "float32")
    assert (s["precision"] == "float32") == (s["bf16_fallback"] is not None)
    assert load_config(tmp_path / "r" / "config.toml").preprocess == "channel"


def test_a_fallback_run_says_so_in_one_line_and_records_it(tmp_path, monkeypatch, capsys):
    from fcnet.training.run import train_run

    monkeypatch.setattr(torch_train, "bf16_unsupported", lambda device: "no bf16 here")
    cfg = make_config(dataset="digits", backend="torch", dtype="bfloat16", device="cpu",
                      iters=30, batch_size=50, lr=1e-2, tensorboard=False)
    s = train_run(cfg, tmp_path / "r", quiet=False, figures=False)
    err = capsys.readouterr().err
    assert "fcnet: no bf16 here: training in float32" in err
    assert s["precision"] == "float32" and s["bf16_fallback"] == "no bf16 here"
