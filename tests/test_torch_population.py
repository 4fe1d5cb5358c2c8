"""TorchPopulation: K stacked MLPs on torch equal their K lone (autograd) runs,
in every dtype it offers, and resume exactly."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")

from fcnet.config import make_config  # noqa: E402
from fcnet.errors import FcnetError  # noqa: E402
from fcnet.torch_backend.population import TorchPopulation  # noqa: E402
from fcnet.torch_backend.train import TorchTrainer  # noqa: E402

HIDDEN = [16, 12]
# members differing in every free field: lr, decay, reg, dropout, init scale, seed
MEMBERS = [
    dict(lr=0.05, decay=0.9, reg=0.01, dropout_keep=1.0, seed=3, std=0.1),
    dict(lr=0.02, decay=0.8, reg=0.0, dropout_keep=0.7, seed=3, std=0.2),
    dict(lr=0.1, decay=0.95, reg=0.1, dropout_keep=0.9, seed=5, std=0.05),
    dict(lr=0.03, decay=1.0, reg=0.05, dropout_keep=1.0, seed=5, std=0.1),
]


def data(seed=0, n=300):
    rng = np.random.RandomState(seed)
    centres = 2 * rng.randn(4, 20)
    y = rng.randint(0, 4, n + 60)
    X = centres[y] + rng.randn(n + 60, 20)
    return X[:n], y[:n], X[n:], y[n:]


def config(m, dtype="float64", iters=40, **kw):
    return make_config({"backend": "torch", "optimizer": "sgd", "init": "normal", "hidden": HIDDEN,
                        "iters": iters, "batch_size": 32, "dtype": dtype, "device": "cpu"} | m | kw)


def population(members, dtype="float64", iters=40, until=None, **kw):
    pop = TorchPopulation([config(m, dtype, iters, **kw) for m in members], 20, 4)
    return pop, pop.run(*data(), until=until)


def lone(m, dtype="float64", iters=40):
    t = TorchTrainer(config(m, dtype, iters), 20, 4)
    return t, t.fit(*data())


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-12)))


def test_members_equal_their_lone_autograd_runs_in_float64_dropout_and_seeds_included():
    pop, outs = population(MEMBERS)
    assert not pop.shared  # two seeds: two batch streams, layer 1 batched
    for j, m in enumerate(MEMBERS):
        t, h = lone(m)
        assert len(outs[j]["loss_history"]) == 40
        assert rel(outs[j]["loss_history"], h["loss_history"]) < 1e-9, j
        assert outs[j]["val_acc_history"] == h["val_acc_history"]
        assert outs[j]["lr_history"] == pytest.approx(h["lr_history"], rel=1e-15)
        weights = [x for lin in t.model.linears for x in (lin.weight.detach().T, lin.bias)]
        for p, q in zip(pop.member_params(j), weights, strict=True):
            assert rel(p.numpy(), q.detach().numpy()) < 1e-9, j
    # the members really differ (not K copies of one run)
    assert rel(outs[0]["loss_history"], outs[1]["loss_history"]) > 1e-3


def test_one_seed_shares_one_batch_and_layer_1_is_one_product():
    same = [dict(m, seed=3, dropout_keep=1.0) for m in MEMBERS]
    pop, outs = population(same, iters=30)
    assert pop.shared and pop.x.shape == (32, 20) and pop.z1.shape == (32, 4 * 16)
    for j, m in enumerate(same):
        assert rel(outs[j]["loss_history"], lone(m, iters=30)[1]["loss_history"]) < 1e-9


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_float32_and_bfloat16_members_track_the_float64_run(dtype):
    ref, pop = population(MEMBERS)[1], population(MEMBERS, dtype=dtype)
    tol = 1e-5 if dtype == "float32" else 0.05
    for j in range(len(MEMBERS)):
        a, b = ref[j]["loss_history"], pop[1][j]["loss_history"]
        assert np.max(np.abs(np.array(a) - np.array(b))) < tol, (j, dtype)
        assert b[-1] < b[0]  # it trains
    # master weights stay float32, the products' copies are bf16 (where the CPU has bf16)
    pop = pop[0]
    assert all(w.dtype == torch.float32 for w in pop.W)
    if pop.mixed:
        assert all(w.dtype == torch.bfloat16 for w in pop.Wc)
        assert all(torch.equal(w.to(torch.bfloat16), c) for w, c in zip(pop.W, pop.Wc, strict=True))


def test_a_diverging_member_freezes_at_its_last_good_weights_and_the_rest_train_on():
    wild = dict(MEMBERS[0], lr=1e4, std=1.0)
    pop, outs = population([MEMBERS[0], wild])
    d = [o["diverged_at"] for o in outs]
    assert d[0] is None and d[1] is not None
    h = outs[1]["loss_history"]
    assert len(h) == d[1] + 1 and not np.isfinite(h[-1])
    assert all(torch.isfinite(t).all() for t in pop.member_params(1))
    assert rel(outs[0]["loss_history"], lone(MEMBERS[0])[1]["loss_history"]) < 1e-9


def test_state_resumes_exactly_mid_epoch_through_a_weights_only_round_trip(tmp_path):
    full = population(MEMBERS)[1]
    half = population(MEMBERS, until=13)[0]  # 300 // 32 = 9 iterations an epoch
    torch.save(half.state(), tmp_path / "s.pt")
    again = TorchPopulation([config(m) for m in MEMBERS], 20, 4)
    again.load_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert again.it == 13
    for j, out in enumerate(again.run(*data())):
        for key in ("loss_history", "val_acc_history", "train_acc_history", "lr_history"):
            assert out[key] == full[j][key], (j, key)


def test_members_must_share_shapes_and_settings_must_be_valid():
    with pytest.raises(FcnetError, match="hidden"):
        TorchPopulation([config(MEMBERS[0]), config(MEMBERS[1], hidden=[8])], 20, 4)
    with pytest.raises(FcnetError, match="at least one"):
        TorchPopulation([], 20, 4)
    with pytest.raises(FcnetError, match=r"X must be \(N, 20\)"):
        TorchPopulation([config(MEMBERS[0])], 20, 4).run(np.zeros((5, 3)), np.zeros(5),
                                                         np.zeros((5, 3)), np.zeros(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_cuda_members_match_the_cpu_run(dtype):
    plain = [dict(m, dropout_keep=1.0) for m in MEMBERS]  # CUDA draws its own dropout masks
    cpu, gpu = population(plain, dtype=dtype)[1], population(plain, dtype=dtype, device="cuda")[1]
    tol = 1e-9 if dtype == "float64" else 0.05
    for j in range(len(MEMBERS)):
        a, b = cpu[j]["loss_history"], gpu[j]["loss_history"]
        assert np.max(np.abs(np.array(a) - np.array(b))) < tol


# ---------------------------------------------------- run directories (training/)
def digits(**kw):
    from fcnet.config import make_config

    base = dict(dataset="digits", backend="torch", preprocess="mean", iters=40, batch_size=50,
                optimizer="sgd", init="normal", lr=1e-3, decay=0.95, std=1e-2, reg=0.01,
                dtype="float64", device="cpu")
    return make_config(base | kw)


def test_train_population_dispatches_torch_configs_and_members_equal_lone_runs(tmp_path):
    from fcnet.training import train_population, train_run
    from fcnet.training.population_run import compatible

    configs = [digits(), digits(lr=3e-3, seed=1), digits(reg=0.0, dropout_keep=0.8, std=3e-2)]
    assert compatible(configs) and not compatible([digits(optimizer="adam"), digits()])
    dirs = [tmp_path / f"p{i}" for i in range(3)]
    out = train_population(configs, dirs, figures=False, eval_at=[20])
    for c, d, s in zip(configs, dirs, out, strict=True):
        assert s["population"] == 3 and s["status"] == "completed" and "20" in s["val_acc_at"]
        assert {"config.toml", "summary.json", "loss.csv", "model.pt"} <= {p.name for p in d.iterdir()}
        lone = train_run(c, tmp_path / f"lone-{d.name}", figures=False)
        a = np.loadtxt(d / "loss.csv", delimiter=",", skiprows=1)[:, 1]
        b = np.loadtxt(tmp_path / f"lone-{d.name}" / "loss.csv", delimiter=",", skiprows=1)[:, 1]
        assert rel(a, b) < 1e-9
        assert s["final_val_acc"] == lone["final_val_acc"]
    again = train_population(configs, dirs, figures=False, eval_at=[20])  # finished: reused
    assert [s["train_seconds"] for s in again] == [s["train_seconds"] for s in out]
