"""Update rules from one registry (fcnet.nn.optim.RULES): each rule's maths, and
config, CLI, Solver, the torch backend and the estimator all reading the registry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fcnet import MLP, FCNetClassifier, FcnetError, Solver
from fcnet.config import RunConfig, make_config
from fcnet.gradcheck import rel_error
from fcnet.nn.optim import NUMPY_RULES, RULES, SETTINGS, RMSprop, make_optimizer
from fcnet.training import train_run


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):  # tiny matmuls on a shared box: threads only cost
        yield


def reference_rmsprop(w0, grads, lr, decay_rate=0.99, eps=1e-8):
    """cs231n's optim.rmsprop, written out plainly."""
    w, cache = w0.copy(), np.zeros_like(w0)
    for g in grads:
        cache = decay_rate * cache + (1 - decay_rate) * g**2
        w = w - lr * g / (np.sqrt(cache) + eps)
    return w


@pytest.mark.parametrize(("decay_rate", "eps", "scale"), [(0.99, 1e-8, 1.0), (0.9, 1e-4, 1e-3)])
def test_rmsprop_matches_the_formula_and_torch_over_several_steps(decay_rate, eps, scale):
    import torch

    rng = np.random.RandomState(0)
    w0 = rng.randn(5, 4)
    grads = [scale * rng.randn(5, 4) for _ in range(6)]
    params = {"W": w0.copy()}
    opt = RMSprop(decay_rate=decay_rate, eps=eps)
    for g in grads:
        opt.update(params, {"W": g.copy()}, 1e-2)
    expected = reference_rmsprop(w0, grads, 1e-2, decay_rate, eps)
    assert rel_error(params["W"] - w0, expected - w0) < 1e-12
    # the steps are not SGD's: dividing by the root makes every entry move about lr
    assert not np.allclose(params["W"] - w0, -1e-2 * sum(grads), rtol=1e-2)
    # torch.optim.RMSprop with the settings the torch backend passes (nn.optim names them)
    p = torch.tensor(w0.copy(), requires_grad=True)
    t_opt = getattr(torch.optim, RMSprop.torch_class)([p], lr=1e-2,
                                                      **RMSprop.torch_kwargs(opt.config))
    for g in grads:
        p.grad = torch.tensor(g)
        t_opt.step()
    assert rel_error(p.detach().numpy() - w0, expected - w0) < 1e-12


def test_rmsprop_state_resumes_the_cache_exactly():
    rng = np.random.RandomState(1)
    w0, grads = rng.randn(3, 3), [rng.randn(3, 3) for _ in range(4)]
    straight, params = RMSprop(), {"W": w0.copy()}
    for g in grads:
        straight.update(params, {"W": g.copy()}, 1e-2)
    first, resumed = RMSprop(), {"W": w0.copy()}
    for g in grads[:2]:
        first.update(resumed, {"W": g.copy()}, 1e-2)
    second = RMSprop()
    second.load_state({k: v.copy() for k, v in first.state().items()})
    for g in grads[2:]:
        second.update(resumed, {"W": g.copy()}, 1e-2)
    assert np.array_equal(resumed["W"], params["W"])


def test_rule_settings_are_checked_where_the_rule_is_built():
    assert make_optimizer("rmsprop", {"decay_rate": 0.9}).config == {"decay_rate": 0.9, "eps": 1e-8}
    with pytest.raises(FcnetError, match="no setting 'momentum'"):
        make_optimizer("rmsprop", {"momentum": 0.9})
    with pytest.raises(FcnetError, match=r"decay_rate must be a finite number in \[0, 1\)"):
        make_optimizer("rmsprop", {"decay_rate": 1.0})
    with pytest.raises(FcnetError, match="eps must be a finite number > 0"):
        make_optimizer("adam", {"eps": float("inf")})
    with pytest.raises(FcnetError, match="optimizer must be one of"):
        make_optimizer("adagrad")
    with pytest.raises(FcnetError, match="torch backend only"):
        make_optimizer("adamw")


def test_solver_passes_the_rules_own_settings_through():
    # momentum 0 is plain SGD (to rounding): the setting reached the rule
    rng = np.random.RandomState(0)
    X, y = rng.randn(40, 5), np.arange(40) % 3
    runs = {}
    for name, config in [("sgd", None), ("momentum", {"momentum": 0.0}),
                         ("momentum", {"momentum": 0.9})]:
        net = MLP(5, [8], 3, std=0.1, seed=0)
        Solver(net, X, y, X, y, learning_rate=0.05, num_iters=30, batch_size=10, seed=0,
               optimizer=name, optim_config=config).run()
        runs[name, (config or {}).get("momentum")] = net.params["W1"]
    np.testing.assert_allclose(runs["momentum", 0.0], runs["sgd", None], rtol=1e-12)
    assert not np.allclose(runs["momentum", 0.9], runs["sgd", None], rtol=1e-3)


# ---------------------------------------------------------------- one registry


def test_config_fields_and_cli_flags_come_from_the_registry():
    from fcnet.cli import build_parser

    fields = RunConfig.model_fields
    assert set(fields["optimizer"].annotation.__args__) == set(RULES)
    for name, s in SETTINGS.items():
        assert fields[name].default == s.default, name
        assert fields[name].description == s.help, name
    args = build_parser().parse_args(["train", "--optimizer", "rmsprop", "--decay-rate", "0.9",
                                      "--eps", "1e-6", "--beta1", "0.8"])
    assert (args.optimizer, args.decay_rate, args.eps, args.beta1) == ("rmsprop", 0.9, 1e-6, 0.8)
    c = make_config(optimizer="rmsprop", decay_rate=0.9, eps=1e-6, beta1=0.8)
    assert c.optim_config() == {"decay_rate": 0.9, "eps": 1e-6}  # only the rule's own
    with pytest.raises(FcnetError, match="config field 'decay_rate'"):
        make_config(decay_rate=1.0)
    assert set(NUMPY_RULES) == set(RULES) - {"adamw"}
    for name in NUMPY_RULES:
        make_config(optimizer=name)  # every NumPy rule is allowed on the NumPy backend
    with pytest.raises(FcnetError, match="optimizer='adamw' needs --backend torch"):
        make_config(optimizer="adamw")


def test_torch_backend_builds_each_rule_with_its_settings():
    torch = pytest.importorskip("torch")  # the optional extra; CI installs it
    from fcnet.torch_backend.train import TorchTrainer

    base = dict(backend="torch", hidden=[4], device="cpu", dtype="float32")
    opt = TorchTrainer(make_config(base, optimizer="rmsprop", decay_rate=0.95, eps=1e-6),
                       3, 2).optimizer
    assert type(opt) is torch.optim.RMSprop
    g = opt.param_groups[0]
    assert (g["alpha"], g["eps"], g["momentum"], g["centered"]) == (0.95, 1e-6, 0.0, False)
    opt = TorchTrainer(make_config(base, optimizer="adam", beta1=0.8, beta2=0.99), 3, 2).optimizer
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["betas"] == (0.8, 0.99)
    opt = TorchTrainer(make_config(base, optimizer="momentum", momentum=0.5), 3, 2).optimizer
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.5
    assert type(TorchTrainer(make_config(base, optimizer="adamw"), 3, 2).optimizer) \
        is torch.optim.AdamW


def test_estimator_parameters_and_constraints_come_from_the_registry():
    params = FCNetClassifier().get_params()
    for name in SETTINGS:
        assert params[name] is None, name  # the preset's value: RunConfig's, the rule's default
        assert name in FCNetClassifier._parameter_constraints, name
    X0, y0 = np.random.RandomState(0).randn(10, 3), np.arange(10) % 2
    config = FCNetClassifier(num_iters=1).fit(X0, y0).config_
    for name, s in SETTINGS.items():
        assert getattr(config, name) == s.default, name
    X, y = np.random.RandomState(0).randn(10, 3), np.arange(10) % 2
    with pytest.raises(FcnetError, match="'decay_rate' parameter"):
        FCNetClassifier(optimizer="rmsprop", decay_rate=1.5, num_iters=2).fit(X, y)


# ------------------------------------------------------- RMSprop trains digits


def rmsprop_digits(**kw):
    return make_config({"dataset": "digits", "optimizer": "rmsprop", "preprocess": "scale",
                        "hidden": [32], "std": 1e-2, "lr": 3e-3, "reg": 1e-4, "decay": 0.95,
                        "batch_size": 50, "epochs": 10, **kw})  # measured 0.94 (NumPy), 0.95 (torch)


def test_rmsprop_trains_digits_above_90_percent_on_the_numpy_backend(tmp_path):
    s = train_run(rmsprop_digits(), tmp_path / "r")
    assert s["final_val_acc"] >= 0.9, s["final_val_acc"]


def test_rmsprop_trains_digits_above_90_percent_on_the_torch_backend(tmp_path):
    pytest.importorskip("torch")  # the optional extra; CI installs it
    s = train_run(rmsprop_digits(backend="torch", device="cpu", sampling="shuffle"),
                  tmp_path / "r")
    assert s["final_val_acc"] >= 0.9, s["final_val_acc"]


def test_rmsprop_trains_digits_above_90_percent_in_the_estimator():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    est = FCNetClassifier(hidden=(32,), std=1e-2, optimizer="rmsprop", learning_rate=3e-3,
                          reg=1e-4, num_iters=200, batch_size=50, validation_fraction=0.2,
                          random_state=0)
    pipe = make_pipeline(StandardScaler(), est).fit(X_tr, y_tr)
    assert est.val_acc_history_[-1] >= 0.9, est.val_acc_history_
    assert pipe.score(X_te, y_te) >= 0.9
