"""TorchPopulation: K stacked MLPs on torch equal K lone runs, and a lone run
equals the NumPy engine's (float64), in every dtype it offers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")

from fcnet.errors import FcnetError  # noqa: E402
from fcnet.nn.model import MLP  # noqa: E402
from fcnet.nn.population import PopulationSolver  # noqa: E402
from fcnet.nn.solver import Solver  # noqa: E402
from fcnet.torch_backend.population import TorchPopulation, normal_init  # noqa: E402

SIZES = [20, 16, 12, 4]
# members differing in every free field: lr, decay, reg, dropout, init scale, seed
MEMBERS = [
    dict(lr=0.05, decay=0.9, reg=0.01, keep=1.0, seed=3, std=0.1),
    dict(lr=0.02, decay=0.8, reg=0.0, keep=0.7, seed=3, std=0.2),
    dict(lr=0.1, decay=0.95, reg=0.1, keep=0.9, seed=5, std=0.05),
    dict(lr=0.03, decay=1.0, reg=0.05, keep=1.0, seed=5, std=0.1),
]


def data(seed=0, n=300):
    rng = np.random.RandomState(seed)
    centres = 2 * rng.randn(4, 20)
    y = rng.randint(0, 4, n + 60)
    X = centres[y] + rng.randn(n + 60, 20)
    return X[:n], y[:n], X[n:], y[n:]


def population(members, dtype="float64", iters=40, sizes=SIZES, device="cpu", **kw):
    X, y, Xv, yv = data()
    return TorchPopulation(
        [normal_init(sizes, m["std"], m["seed"]) for m in members], X, y, Xv, yv,
        lrs=[m["lr"] for m in members], decays=[m["decay"] for m in members],
        regs=[m["reg"] for m in members], keeps=[m["keep"] for m in members],
        seeds=[m["seed"] for m in members], num_iters=iters, batch_size=32, dtype=dtype,
        device=device, **kw).run()


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-12)))


def test_a_lone_float64_run_is_the_numpy_solvers_run_to_rounding():
    X, y, Xv, yv = data()
    m = MEMBERS[0]
    net = MLP(20, SIZES[1:-1], 4, std=m["std"], seed=m["seed"])
    solver = Solver(net, X, y, Xv, yv, learning_rate=m["lr"], learning_rate_decay=m["decay"],
                    reg=m["reg"], num_iters=40, batch_size=32, seed=m["seed"]).run()
    pop = population([m])
    h = pop.history(0)
    assert len(h["loss_history"]) == 40
    assert rel(h["loss_history"], solver.loss_history) < 1e-9
    # the Solver's records: after iterations 0, 9, 18, 27, 36 (300 // 32 = 9 per epoch)
    assert h["val_acc_history"] == solver.val_acc_history
    assert h["train_acc_history"] == solver.train_acc_history
    assert h["lr_history"] == pytest.approx(solver.lr_history, rel=1e-15)
    names = [f"{p}{i}" for i in range(1, 4) for p in "Wb"]
    for t, name in zip(pop.member_params(0), names, strict=True):
        assert rel(t.numpy(), net.params[name]) < 1e-9, name


def test_members_equal_lone_runs_in_float64_to_1e_9_dropout_and_seeds_included():
    pop = population(MEMBERS)
    assert not pop.shared  # two seeds: two batch streams, layer 1 batched
    for j, m in enumerate(MEMBERS):
        lone = population([m])
        a, b = pop.history(j), lone.history(0)
        assert rel(a["loss_history"], b["loss_history"]) < 1e-9, j
        assert a["val_acc_history"] == b["val_acc_history"]
        for p, q in zip(pop.member_params(j), lone.member_params(0), strict=True):
            assert rel(p.numpy(), q.numpy()) < 1e-9, j
    # the members really differ (not K copies of one run)
    assert rel(pop.history(0)["loss_history"], pop.history(1)["loss_history"]) > 1e-3


def test_one_seed_shares_one_batch_and_layer_1_is_one_product_matching_numpy_population():
    same = [dict(m, seed=3, keep=1.0) for m in MEMBERS]
    pop = population(same, iters=30)
    assert pop.shared and pop.x.shape == (32, 20) and pop.z1.shape == (32, 4 * 16)
    X, y, Xv, yv = data()
    models = [MLP(20, SIZES[1:-1], 4, std=m["std"], seed=m["seed"]) for m in same]
    ref = PopulationSolver(models, X, y, Xv, yv, learning_rates=[m["lr"] for m in same],
                           decays=[m["decay"] for m in same], regs=[m["reg"] for m in same],
                           num_iters=30, batch_size=32, seed=3).run()
    for j in range(len(same)):
        assert rel(pop.history(j)["loss_history"], ref.losses(j)) < 1e-9
        assert pop.history(j)["val_acc_history"] == ref.val_acc_history[j]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_float32_and_bfloat16_members_track_the_float64_run(dtype):
    ref, pop = population(MEMBERS), population(MEMBERS, dtype=dtype)
    tol = 1e-5 if dtype == "float32" else 0.05
    for j in range(len(MEMBERS)):
        a, b = ref.history(j)["loss_history"], pop.history(j)["loss_history"]
        assert np.max(np.abs(np.array(a) - np.array(b))) < tol, (j, dtype)
        assert b[-1] < b[0]  # it trains
    # master weights stay float32, the products' copies are bf16
    assert all(w.dtype == torch.float32 for w in pop.W)
    if dtype == "bfloat16":
        assert all(w.dtype == torch.bfloat16 for w in pop.Wc) and pop.X.dtype == torch.bfloat16
        assert all(torch.equal(w.to(torch.bfloat16), c) for w, c in zip(pop.W, pop.Wc, strict=True))


def test_a_diverging_member_freezes_at_its_last_good_weights_and_the_rest_train_on():
    wild = dict(MEMBERS[0], lr=1e4, std=1.0)
    pop = population([MEMBERS[0], wild])
    lone = population([MEMBERS[0]])
    d = pop.diverged_at()
    assert d[0] is None and d[1] is not None
    h = pop.history(1)
    assert len(h["loss_history"]) == d[1] + 1 and not np.isfinite(h["loss_history"][-1])
    assert all(torch.isfinite(t).all() for t in pop.member_params(1))
    assert rel(pop.history(0)["loss_history"], lone.history(0)["loss_history"]) < 1e-9


def test_state_resumes_exactly_through_a_weights_only_round_trip(tmp_path):
    full = population(MEMBERS, iters=40)
    X, y, Xv, yv = data()
    kw = dict(lrs=[m["lr"] for m in MEMBERS], decays=[m["decay"] for m in MEMBERS],
              regs=[m["reg"] for m in MEMBERS], keeps=[m["keep"] for m in MEMBERS],
              seeds=[m["seed"] for m in MEMBERS], num_iters=40, batch_size=32, dtype="float64")
    init = [normal_init(SIZES, m["std"], m["seed"]) for m in MEMBERS]
    half = TorchPopulation(init, X, y, Xv, yv, **kw).run(until=13)
    torch.save(half.state(), tmp_path / "s.pt")
    again = TorchPopulation(init, X, y, Xv, yv, **kw)
    again.load_state(torch.load(tmp_path / "s.pt", weights_only=True))
    again.run()
    for j in range(len(MEMBERS)):
        assert again.history(j) == full.history(j)


def test_members_must_share_shapes_and_settings_must_be_valid():
    X, y, Xv, yv = data()
    with pytest.raises(FcnetError, match="shaped"):
        TorchPopulation([normal_init(SIZES, 0.1, 0), normal_init([20, 8, 4], 0.1, 0)],
                        X, y, Xv, yv)
    with pytest.raises(FcnetError, match="dtype"):
        TorchPopulation([normal_init(SIZES, 0.1, 0)], X, y, Xv, yv, dtype="float16")
    with pytest.raises(FcnetError, match="keeps"):
        TorchPopulation([normal_init(SIZES, 0.1, 0)], X, y, Xv, yv, keeps=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_cuda_members_match_the_cpu_run(dtype):
    plain = [dict(m, keep=1.0) for m in MEMBERS]  # CUDA draws its own dropout masks
    cpu, gpu = population(plain, dtype=dtype), population(plain, dtype=dtype, device="cuda")
    tol = 1e-9 if dtype == "float64" else 0.05
    for j in range(len(MEMBERS)):
        a, b = cpu.history(j)["loss_history"], gpu.history(j)["loss_history"]
        assert np.max(np.abs(np.array(a) - np.array(b))) < tol


# ---------------------------------------------------- run directories (training/)
def digits(**kw):
    from fcnet.config import make_config

    base = dict(dataset="digits", backend="torch", preprocess="mean", iters=40, batch_size=50,
                lr=1e-3, std=1e-2, reg=0.01, dtype="float64", device="cpu")
    return make_config(base | kw)


def test_train_population_dispatches_torch_configs_and_members_equal_lone_runs(tmp_path):
    from fcnet.training import train_population, train_run
    from fcnet.training.torch_population import compatible

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
