"""The PyTorch backend: exact agreement with the NumPy engine, training, saving,
resuming, augmentation, and a clear error without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the optional extra; CI installs torch==2.13.0

from fcnet import MLP  # noqa: E402
from fcnet.config import make_config  # noqa: E402
from fcnet.errors import FcnetError  # noqa: E402
from fcnet.torch_backend import INSTALL_HINT, require_torch  # noqa: E402
from fcnet.torch_backend.augment import FlipCrop  # noqa: E402
from fcnet.torch_backend.model import MultiLayerPerceptron  # noqa: E402
from fcnet.torch_backend.train import TorchTrainer, subnormals_flushed  # noqa: E402


def rel_error(a, n) -> float:
    """study.md's measure: max |a - n| / max(1e-8, |a| + |n|)."""
    a, n = np.asarray(a), np.asarray(n)
    return float(np.max(np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n))))


def torch_loss_and_grads(net: MLP, X, y, reg, masks=None):
    """The same network in torch, float64: loss = mean CE + reg * sum ||W||^2 by autograd.

    NumPy's W_l is (D, H); nn.Linear's weight is (H, D), so weights are transposed.
    ``masks`` (scaled by 1/keep) replace the Dropout modules' random masks.
    """
    keep = net.dropout_keep
    model = MultiLayerPerceptron(net.sizes[0], net.sizes[1:-1], net.sizes[-1],
                                 dropout=1 - keep).double()
    with torch.no_grad():
        for i, lin in enumerate(model.linears, start=1):
            lin.weight.copy_(torch.from_numpy(net.params[f"W{i}"].T))
            lin.bias.copy_(torch.from_numpy(net.params[f"b{i}"]))
    a, j = torch.from_numpy(X), 0
    for m in model:
        if isinstance(m, torch.nn.Dropout):
            a = a * torch.from_numpy(masks[j])
            j += 1
        else:
            a = m(a)
    loss = torch.nn.functional.cross_entropy(a, torch.from_numpy(y))
    loss = loss + reg * sum((lin.weight**2).sum() for lin in model.linears)
    loss.backward()
    grads = {}
    for i, lin in enumerate(model.linears, start=1):
        grads[f"W{i}"] = lin.weight.grad.numpy().T
        grads[f"b{i}"] = lin.bias.grad.numpy()
    return float(loss.detach()), grads


@pytest.mark.parametrize("hidden", [[10], [20, 15, 10]])
def test_numpy_and_torch_agree_on_loss_and_every_gradient(hidden):
    rng = np.random.RandomState(1)
    X = 10 * rng.randn(7, 6)
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    net = MLP(6, hidden, 3, std=0.1, seed=0, dtype="float64")
    loss_np, grads_np = net.loss(X, y, reg=0.05)
    loss_t, grads_t = torch_loss_and_grads(net, X, y, reg=0.05)
    assert abs(loss_np - loss_t) / abs(loss_np) < 1e-10
    assert set(grads_t) == set(grads_np)
    for k in grads_np:
        assert rel_error(grads_np[k], grads_t[k]) < 1e-10, k


@pytest.mark.parametrize("hidden", [[10], [20, 15, 10]])
def test_numpy_and_torch_agree_with_a_fixed_dropout_mask(hidden):
    rng = np.random.RandomState(2)
    X = rng.randn(8, 5)
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    keep = 0.6
    net = MLP(5, hidden, 4, std=0.2, seed=3, dropout_keep=keep, dtype="float64")
    loss_np, grads_np = net.loss(X, y, reg=0.01, dropout_seed=7)
    # the NumPy engine draws one mask per hidden layer, in order, from its seeded stream
    from fcnet.nn.layers import dropout_mask

    draw = np.random.default_rng(7)
    masks = [dropout_mask(keep, draw, out=np.empty((8, h))) for h in hidden]
    assert 0 < sum(int((m == 0).sum()) for m in masks)  # some units really are dropped
    loss_t, grads_t = torch_loss_and_grads(net, X, y, reg=0.01, masks=masks)
    assert abs(loss_np - loss_t) / abs(loss_np) < 1e-10
    for k in grads_np:
        assert rel_error(grads_np[k], grads_t[k]) < 1e-10, k


def test_model_is_a_sequential_of_linear_relu_pairs_with_the_exercise_init():
    torch.manual_seed(0)
    m = MultiLayerPerceptron(3072, [100, 50], 10, init="normal:1e-3")
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    w = m.linears[0].weight.detach()
    assert w.shape == (100, 3072)
    assert abs(float(w.std()) - 1e-3) < 5e-5
    assert all(float(lin.bias.detach().abs().max()) == 0 for lin in m.linears)
    bn = MultiLayerPerceptron(8, [4], 2, dropout=0.1, batchnorm=True, activation="gelu",
                              init="kaiming")
    assert [type(x).__name__ for x in bn] == ["Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]
    assert abs(float(bn.linears[0].weight.detach().std()) - np.sqrt(2 / 8)) < 0.25


def test_dropout_keeps_1_minus_p_of_the_units_scaled_and_passes_the_mask_back():
    from fcnet.torch_backend.model import Dropout

    torch.manual_seed(0)
    for p in (0.1, 0.5, 0.9):
        x = torch.ones(301, 1237, requires_grad=True)  # not a multiple of 4 units
        y = Dropout(p)(x)
        kept = (y > 0).double().mean().item()
        assert abs(kept - (1 - p)) < 4 * ((p * (1 - p) / x.numel()) ** 0.5) + 2e-5
        assert y.max().item() == pytest.approx(1 / (1 - p), rel=1e-4)  # inverted: mean kept
        y.sum().backward()
        assert torch.equal(x.grad, y.detach())  # d(x * mask * scale)/dx = mask * scale
    d = Dropout(0.5).eval()
    x = torch.randn(4, 6)
    assert torch.equal(d(x), x)


@pytest.mark.parametrize("bad", ["normal", "normal:-1", "xavier", "kaiming:2"])
def test_model_rejects_an_unknown_init(bad):
    with pytest.raises(FcnetError, match="init"):
        MultiLayerPerceptron(4, [3], 2, init=bad)


# ------------------------------------------------------------------ training
def blobs(n=900, d=20, c=3, seed=0):
    rng = np.random.RandomState(seed)
    centres = 3 * rng.randn(c, d)
    y = rng.randint(0, c, n)
    X = centres[y] + rng.randn(n, d)
    return X.astype(np.float32), y


def small_config(**kw):
    base = dict(backend="torch", hidden=[16], optimizer="adam", lr=1e-2, reg=0.0, epochs=4,
                batch_size=50, sampling="shuffle", dtype="float32", init="kaiming", device="cpu")
    base.update(kw)
    return make_config(base)


def test_trainer_learns_a_separable_toy_problem_above_chance():
    X, y = blobs()
    t = TorchTrainer(small_config(), 20, 3)
    records = []
    h = t.fit(X[:700], y[:700], X[700:], y[700:], callback=records.append)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert len(h["loss_history"]) == 4 * (700 // 50) == h["iterations"]
    assert h["val_acc_history"][-1] > 0.9  # chance is 1/3
    assert h["final_train_acc"] > 0.9
    assert h["loss_history"][-1] < h["loss_history"][0]
    p = t.predict_proba(X[700:])
    assert p.shape == (200, 3) and np.allclose(p.sum(axis=1), 1)
    assert t.score(X[700:], y[700:]) == pytest.approx(h["val_acc_history"][-1])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adamw"])
def test_every_optimizer_and_the_cosine_schedule_train(optimizer):
    X, y = blobs(seed=1)
    cfg = small_config(optimizer=optimizer, lr=0.05 if optimizer != "adamw" else 1e-2,
                       schedule="cosine", batchnorm=True, dropout_keep=0.9, label_smoothing=0.1,
                       activation="gelu", weight_decay=1e-4)
    h = TorchTrainer(cfg, 20, 3).fit(X[:700], y[:700], X[700:], y[700:])
    assert h["val_acc_history"][-1] > 0.8
    # cosine: linear warm-up over the first epoch, then down towards 0
    assert h["lr_history"][1] > h["lr_history"][-1] > 0


def test_iters_sets_the_length_when_epochs_is_absent():
    X, y = blobs(n=300)
    t = TorchTrainer(small_config(epochs=None, iters=9, batch_size=100), 20, 3)
    h = t.fit(X[:250], y[:250], X[250:], y[250:])
    # 250 // 100 = 2 iterations per epoch: 9 iterations are 4 full epochs and one partial
    assert h["iterations"] == 9 and len(h["loss_history"]) == 9 and h["epochs"] == 5


def test_step_schedule_decays_lr_after_every_epoch_and_weight_decay_defaults_to_2_reg():
    X, y = blobs(n=300)
    t = TorchTrainer(small_config(optimizer="sgd", lr=0.1, decay=0.5, reg=0.25), 20, 3)
    assert t.optimizer.param_groups[0]["weight_decay"] == 0.5  # weights: 2 * reg
    assert t.optimizer.param_groups[1]["weight_decay"] == 0.0  # biases are not decayed
    h = t.fit(X[:200], y[:200], X[200:], y[200:])
    assert h["lr_history"] == [0.1, 0.05, 0.025, 0.0125]


def test_subnormals_are_flushed_during_training_and_restored_after():
    torch.set_flush_denormal(False)
    X, y = blobs(n=200)
    seen = []
    t = TorchTrainer(small_config(epochs=2), 20, 3)
    t.fit(X[:150], y[:150], X[150:], y[150:], callback=lambda r: seen.append(subnormals_flushed()))
    assert seen == [True, True]
    assert torch.tensor([1e-323], dtype=torch.float64).item() != 0  # off again afterwards


FLUSH_PROBE = """
import sys, torch
{setup}
from fcnet.torch_backend.train import flush_subnormals
torch.set_num_threads(2)
x = torch.full((1 << 21,), 1e-300, dtype=torch.float64)
with flush_subnormals():
    y = x * 1e-20  # 1e-320 is subnormal: 0 in every thread that flushes
print(int((y != 0).sum()))
"""


def _unflushed(setup: str) -> int:
    out = subprocess.run([sys.executable, "-c", FLUSH_PROBE.format(setup=setup)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_torchs_worker_threads_flush_subnormals_too():
    """The depth study's tiny-init deep nets ran 10x slower when only the calling
    thread flushed: torch's intra-op workers, started by fcnet, flush as well."""
    assert _unflushed("from fcnet.torch_backend import require_torch; require_torch()") == 0
    # the failure it guards against: a pool started before flushing keeps subnormals
    # in the workers' share of an element-wise product (2 threads on 2+ cores)
    if (torch.get_num_threads() or 1) > 1:
        assert _unflushed("torch.set_num_threads(2); torch.ones(1 << 21).sum()\n"
                          "from fcnet.torch_backend import require_torch; require_torch()") > 0


def test_saved_weights_load_back_with_weights_only(tmp_path):
    X, y = blobs(n=300)
    cfg = small_config(batchnorm=True, epochs=2)
    t = TorchTrainer(cfg, 20, 3)
    t.fit(X[:200], y[:200], X[200:], y[200:])
    path = tmp_path / "model.pt"
    t.save(path)
    assert not (tmp_path / "model.pt.tmp").exists()
    state = torch.load(path, weights_only=True)
    assert set(state) == set(t.model.state_dict())
    back = TorchTrainer.load(path, cfg, 20, 3)
    assert np.array_equal(back.predict_proba(X[200:]), t.predict_proba(X[200:]))
    with pytest.raises(FcnetError, match="do not fit"):
        TorchTrainer.load(path, small_config(hidden=[8]), 20, 3)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FcnetError, match="junk.pt"):
        TorchTrainer.load(tmp_path / "junk.pt", cfg, 20, 3)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(tmp_path, ema):
    X, y = blobs(n=400)
    img = (2, 2, 5)  # rows of 20 as tiny 2x2x5 "images", so augmentation draws too
    cfg = small_config(epochs=4, dropout_keep=0.8, augment=True, optimizer="adamw", mixup=0.4,
                       ema=ema, batchnorm=True)
    full = TorchTrainer(cfg, 20, 3, image_shape=img)
    h_full = full.fit(X[:300], y[:300], X[300:], y[300:])

    first = TorchTrainer(cfg, 20, 3, image_shape=img)
    ckpt = tmp_path / "checkpoint.pt"

    def stop_after_two(record):
        if record["epoch"] == 2:
            first.save_checkpoint(ckpt)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.fit(X[:300], y[:300], X[300:], y[300:], callback=stop_after_two)
    torch.manual_seed(123)  # disturb the global stream: the checkpoint must restore it
    resumed = TorchTrainer(cfg, 20, 3, image_shape=img)
    resumed.load_checkpoint(ckpt)
    assert resumed.epoch == 2
    h = resumed.fit(X[:300], y[:300], X[300:], y[300:])
    assert h["loss_history"] == h_full["loss_history"]
    assert h["val_acc_history"] == h_full["val_acc_history"]
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_ema_averages_the_weights_and_the_average_is_the_trained_model():
    X, y = blobs(n=400)
    plain = TorchTrainer(small_config(batchnorm=True), 20, 3)
    plain.fit(X[:300], y[:300], X[300:], y[300:])
    # a vanishing decay: the average is the last weights (and BatchNorm statistics)
    last = TorchTrainer(small_config(batchnorm=True, ema=1e-12), 20, 3)
    last.fit(X[:300], y[:300], X[300:], y[300:])
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(last.state_dict()[k].float(), v.float(), rtol=1e-5, atol=1e-6)
    # a slow average: the served weights lie between the initial and the last ones
    init = {k: v.clone() for k, v in TorchTrainer(small_config(batchnorm=True), 20, 3)
            .state_dict().items()}
    slow = TorchTrainer(small_config(batchnorm=True, ema=0.99), 20, 3)
    slow.fit(X[:300], y[:300], X[300:], y[300:])
    w, w0, w1 = (d["0.weight"] for d in (slow.state_dict(), init, plain.state_dict()))
    assert 0 < (w - w0).norm() < (w1 - w0).norm()
    assert slow.state_dict()["1.running_var"].ne(plain.state_dict()["1.running_var"]).any()


def test_divergence_stops_training_and_keeps_finite_weights():
    X, y = blobs(n=300)
    X[:, 0] *= 1e20  # hopeless scale: the first steps overflow
    t = TorchTrainer(small_config(optimizer="sgd", lr=1e10, init="normal:1.0"), 20, 3)
    h = t.fit(X[:200], y[:200], X[200:], y[200:])
    assert h["diverged_at"] is not None
    assert all(torch.isfinite(v).all() for v in t.state_dict().values())


def test_bad_inputs_and_impossible_settings_fail_with_one_clear_message():
    X, y = blobs(n=100)
    t = TorchTrainer(small_config(), 20, 3)
    with pytest.raises(FcnetError, match=r"X must have shape \(N, 20\)"):
        t.fit(X[:, :5], y, X, y)
    with pytest.raises(FcnetError, match="labels must be in"):
        t.fit(X, y + 5, X, y)
    with pytest.raises(FcnetError, match="augment"):
        TorchTrainer(small_config(augment=True), 20, 3)  # no image shape
    with pytest.raises(FcnetError, match="amp"):
        TorchTrainer(small_config(dtype="float64", amp=True), 20, 3)
    if not torch.cuda.is_available():
        with pytest.raises(FcnetError, match="cuda"):
            TorchTrainer(small_config(device="cuda"), 20, 3)


def test_mixed_precision_on_cpu_trains_with_float32_weights(monkeypatch):
    import fcnet.torch_backend.train as torch_train

    # the autocast path even on a CPU without bf16 instructions (there torch emulates
    # bf16, slowly; a run would fall back to float32 instead)
    monkeypatch.setattr(torch_train, "bf16_unsupported", lambda device: None)
    X, y = blobs()
    t = TorchTrainer(small_config(amp=True), 20, 3)
    assert t.amp
    h = t.fit(X[:700], y[:700], X[700:], y[700:])
    assert h["val_acc_history"][-1] > 0.9
    assert all(p.dtype == torch.float32 for p in t.model.parameters())


# -------------------------------------------------------------- augmentation
def test_flip_and_shift_move_pixels_as_expected_in_both_layouts():
    rng = np.random.RandomState(0)
    img = rng.rand(3, 4, 5).astype(np.float32)  # (C, H, W)
    chw = torch.from_numpy(img.reshape(1, -1))
    hwc = torch.from_numpy(img.transpose(1, 2, 0).reshape(1, -1).copy())
    a_chw, a_hwc = FlipCrop((3, 4, 5), 60), FlipCrop((4, 5, 3), 60)
    one = torch.ones(1, 1, dtype=torch.long)
    zero = torch.zeros(1, 1, dtype=torch.long)
    flip = torch.ones(1, 1, dtype=torch.bool)
    # flip alone mirrors the columns
    out = a_chw.apply(chw, zero, zero, flip).reshape(3, 4, 5).numpy()
    assert np.array_equal(out, img[:, :, ::-1])
    # dy = 1: output row i shows input row i + 1; the last row is padding (zeros)
    out = a_chw.apply(chw, one, zero, ~flip).reshape(3, 4, 5).numpy()
    assert np.array_equal(out[:, :3], img[:, 1:]) and not out[:, 3].any()
    out_hwc = a_hwc.apply(hwc, one, -one, flip).reshape(4, 5, 3).numpy()
    out_chw = a_chw.apply(chw, one, -one, flip).reshape(3, 4, 5).numpy()
    assert np.array_equal(out_hwc.transpose(2, 0, 1), out_chw)


def test_a_net_trained_with_flips_predicts_the_mean_over_each_image_and_its_mirror():
    X, y = blobs(n=300, d=12)
    t = TorchTrainer(small_config(augment=True, epochs=1), 12, 3, image_shape=(2, 2, 3))
    t.fit(X[:200], y[:200], X[200:], y[200:])
    assert t.tta
    both = t.predict_proba(X[200:])
    t.tta = False
    plain = t.predict_proba(X[200:])
    mirrored = X[200:].reshape(-1, 2, 2, 3)[:, :, ::-1].reshape(100, 12)
    assert np.allclose(both, (plain + t.predict_proba(mirrored)) / 2, atol=1e-6)
    assert not np.allclose(both, plain, atol=1e-3)


def test_image_shape_must_match_the_rows():
    with pytest.raises(FcnetError, match="image_shape"):
        FlipCrop((32, 32, 3), 100)


# ----------------------------------------------------------- without torch
def test_require_torch_says_how_to_install_when_torch_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(FcnetError) as err:
        require_torch()
    assert str(err.value) == INSTALL_HINT
    assert "pip install 'fcnet[torch]'" in INSTALL_HINT and "\n" not in INSTALL_HINT


def test_fcnet_imports_without_torch_and_the_backend_fails_in_one_line():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import fcnet, fcnet.config, fcnet.presets, fcnet.torch_backend, fcnet.cli\n"
        "fcnet.cli.build_parser()\n"
        "from fcnet.errors import FcnetError\n"
        "try:\n"
        "    from fcnet.torch_backend.train import TorchTrainer\n"
        "except FcnetError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ERR {INSTALL_HINT}"
