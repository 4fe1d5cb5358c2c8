"""Population training (fcnet.nn.solver.Solver of K models): K configurations trained at once,
sharing every minibatch, equal member by member to lone Solver runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fcnet import MLP, FcnetError, Solver


def blobs(n: int, d: int = 6, c: int = 4, seed: int = 0):
    """A small learnable problem: c Gaussian clusters in d dimensions, n rows
    for training and 40 for validation, from the same clusters."""
    rng = np.random.RandomState(seed)
    centres = 2.0 * rng.randn(c, d)
    y = np.arange(n + 40) % c
    X = centres[y] + rng.randn(n + 40, d)
    return X[:n], y[:n], X[n:], y[n:]


X, Y, X_VAL, Y_VAL = blobs(120)

# members differ in everything that keeps the shapes: lr, decay, reg, init scale and seed
LRS = [0.05, 0.2, 0.01, 0.1]
DECAYS = [0.95, 0.9, 1.0, 0.8]
REGS = [0.0, 1e-3, 0.05, 1e-4]
STDS = [0.1, 0.5, 0.01, 0.2]


def members(dtype: str = "float64", keep: float = 1.0, k: int = 4) -> list[MLP]:
    return [MLP(6, [16, 12], 4, std=STDS[j], seed=10 + j, dtype=dtype, dropout_keep=keep)
            for j in range(k)]


def lone_run(model: MLP, j: int, iters: int, sampling: str = "replacement") -> Solver:
    return Solver(model, X, Y, X_VAL, Y_VAL, learning_rate=LRS[j], learning_rate_decay=DECAYS[j],
                  reg=REGS[j], num_iters=iters, batch_size=25, seed=7, sampling=sampling).run()


def population(models: list[MLP], iters: int, sampling: str = "replacement", **kw):
    k = len(models)
    return Solver(models, X, Y, X_VAL, Y_VAL, learning_rate=LRS[:k],
                            learning_rate_decay=DECAYS[:k], reg=REGS[:k], num_iters=iters, batch_size=25,
                            seed=7, sampling=sampling, **kw)


@pytest.mark.parametrize(
    ("dtype", "sampling", "rtol"),
    [("float64", "replacement", 1e-10), ("float64", "shuffle", 1e-10),
     ("float32", "replacement", 1e-4)],
)
def test_each_member_equals_a_lone_solver_run_with_its_hyperparameters(dtype, sampling, rtol):
    models = members(dtype)
    lone_models = copy.deepcopy(models)  # same initial weights
    pop = population(models, 150, sampling).run()
    assert pop.it == 150 and pop.iters_per_epoch == 4  # 120 rows, batch 25: 38 epochs
    for j, lone_model in enumerate(lone_models):
        lone = lone_run(lone_model, j, 150, sampling)
        h = pop.history(j)
        assert set(h) == {"loss_history", "train_acc_history", "val_acc_history", "lr_history"}
        np.testing.assert_allclose(h["loss_history"], lone.loss_history, rtol=rtol)
        for name, w in lone_model.params.items():
            assert models[j].params[name].dtype == np.dtype(dtype)
            np.testing.assert_allclose(models[j].params[name], w, rtol=rtol * 100,
                                       atol=rtol * np.abs(w).max())
        assert h["lr_history"] == lone.lr_history and len(h["lr_history"]) == 38
        assert h["val_acc_history"] == lone.val_acc_history
        assert h["train_acc_history"] == lone.train_acc_history
    # the members really differ (the comparison above is not of one run with itself)
    finals = [pop.history(j)["loss_history"][-1] for j in range(4)]
    assert len(set(np.round(finals, 6))) == 4
    best = pop.history(1)  # and they learn: the fastest reaches most of the validation set
    assert best["loss_history"][-1] < 0.3 * best["loss_history"][0]
    assert best["val_acc_history"][-1] > 0.8


def test_members_params_are_live_views_and_predictions_agree():
    models = members()
    pop = population(models, 30).run()
    preds = pop.predict(X_VAL)
    assert preds.shape == (4, 40)
    for j, m in enumerate(models):
        assert np.array_equal(m.predict(X_VAL), preds[j])
        assert np.shares_memory(m.params["W1"], pop.stack.W[0])
    np.testing.assert_allclose(pop.val_accuracies(), (preds == Y_VAL).mean(axis=1))


def test_a_diverging_member_is_frozen_and_does_not_poison_the_others():
    models = members()
    lone_models = copy.deepcopy(models)
    lrs = [LRS[0], 1e6, LRS[2], LRS[3]]  # member 1 blows up within a few steps
    with np.errstate(all="ignore"):
        pop = Solver(models, X, Y, X_VAL, Y_VAL, learning_rate=lrs, learning_rate_decay=DECAYS,
                     reg=REGS, num_iters=60, batch_size=25, seed=7).run()
        lone_bad = Solver(lone_models[1], X, Y, X_VAL, Y_VAL, learning_rate=1e6,
                          learning_rate_decay=DECAYS[1], reg=REGS[1], num_iters=60,
                          batch_size=25, seed=7).run()
    assert lone_bad.diverged_at[0] is not None
    assert pop.diverged_at[1] == lone_bad.diverged_at[0]
    bad = pop.history(1)["loss_history"]
    assert len(bad) == lone_bad.diverged_at[0] + 1 and not np.isfinite(bad[-1])
    assert all(np.isfinite(bad[:-1]))
    for name, w in lone_models[1].params.items():  # the last good parameters, kept
        assert np.isfinite(models[1].params[name]).all()
        np.testing.assert_allclose(models[1].params[name], w, rtol=1e-10)
    for j in (0, 2, 3):
        lone = lone_run(lone_models[j], j, 60)
        assert pop.diverged_at[j] is None
        np.testing.assert_allclose(pop.history(j)["loss_history"], lone.loss_history, rtol=1e-10)
        np.testing.assert_allclose(models[j].params["W1"], lone_models[j].params["W1"],
                                   rtol=1e-9, atol=1e-12)


def test_run_until_then_continue_equals_one_straight_run_and_callback_sees_every_epoch():
    events: list[tuple[str, int]] = []
    straight = population(members(), 40).run()
    pop = population(members(), 40, callback=lambda p, e: events.append((e, p.it)))
    pop.run(until=13)
    assert pop.it == 13
    mid_val = pop.val_accuracies()
    assert mid_val.shape == (4,) and ((0 <= mid_val) & (mid_val <= 1)).all()
    pop.run()
    assert pop.histories() == straight.histories()
    epochs = [it for e, it in events if e == "epoch"]
    assert epochs == list(range(1, 41, 4))  # after iterations 0, 4, 8, ... (it counts done)
    assert [it for e, it in events if e == "iter"] == list(range(1, 41))


def test_state_saved_to_npz_and_loaded_resumes_bitwise_identically(tmp_path):
    keeps = [0.7, 1.0, 0.9, 1.0]  # mask streams must resume too
    straight = population(members(), 60, dropout_keep=keeps).run()
    first = population(members(), 60, dropout_keep=keeps).run(until=25)
    np.savez(tmp_path / "pop.npz", **first.state())
    fresh = members()
    for m in fresh:  # other weights: everything must come from the file
        m.params["W1"] = m.params["W1"] + 1.0
    pop = population(fresh, 60, dropout_keep=keeps)
    with np.load(tmp_path / "pop.npz", allow_pickle=False) as f:
        pop.load_state({k: f[k] for k in f.files})
    assert pop.it == 25
    pop.run()
    assert pop.histories() == straight.histories()
    for w, v in zip(pop.stack.W, straight.stack.W, strict=True):
        assert np.array_equal(w, v)
    assert np.array_equal(fresh[0].params["W1"], straight.models[0].params["W1"])


def test_dropout_masks_are_deterministic_scaled_and_drawn_per_member():
    keeps = [0.5, 1.0, 0.8]

    def run(models):
        p = Solver(models, X, Y, X_VAL, Y_VAL, learning_rate=0.05,
                             dropout_keep=keeps[: len(models)], num_iters=20, batch_size=25,
                             seed=3)
        return p.run()

    a, b = run(members(k=3)), run(members(k=3))
    assert a.histories() == b.histories()  # same seed, same masks
    ws = a.ws
    m = ws.masks[0]  # (K, N, H1) of the last step
    assert m.shape == (3, 25, 16)
    assert set(np.unique(m[0])) == {0.0, 2.0}  # inverted dropout: 1 / keep where kept
    assert set(np.unique(m[2])) == {0.0, 1.25}
    assert np.all(m[1] == 1.0)  # keep = 1: no dropout at all
    assert abs((m[0] > 0).mean() - 0.5) < 0.1 and abs((m[2] > 0).mean() - 0.8) < 0.1
    # member 0's mask stream does not depend on the population's size
    c = run(members(k=2))
    assert c.history(0) == a.history(0)
    # a member without dropout still equals its lone run, whatever the others draw
    lone_model = members(k=2)[1]
    lone_model.dropout_keep = 1.0
    lone = Solver(lone_model, X, Y, X_VAL, Y_VAL, learning_rate=0.05, num_iters=20,
                  batch_size=25, seed=3).run()
    np.testing.assert_allclose(a.history(1)["loss_history"], lone.loss_history, rtol=1e-10)
    # and dropout changed member 0's run
    no_drop = Solver(members(k=1), X, Y, X_VAL, Y_VAL, learning_rate=0.05,
                               dropout_keep=1.0, num_iters=20, batch_size=25, seed=3).run()
    assert a.history(0)["loss_history"] != no_drop.history(0)["loss_history"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": [0.1, 0.2]}, "learning_rate must be one value or 4 values"),
        ({"reg": -1.0}, "reg must be finite and in"),
        ({"learning_rate_decay": 1.5}, "learning_rate_decay must be finite and in"),
        ({"dropout_keep": 0.0}, "dropout_keep must be finite and in"),
        ({"sampling": "sequential"}, "sampling"),
        ({"batch_size": 500, "sampling": "shuffle"}, "batch_size 500 exceeds"),
    ],
)
def test_bad_settings_raise_fcnet_error_naming_them(kwargs, match):
    with pytest.raises(FcnetError, match=match):
        Solver(members(), X, Y, X_VAL, Y_VAL, **kwargs)


def test_members_of_different_shapes_or_dtypes_cannot_share_a_population():
    odd = MLP(6, [16, 11], 4, std=0.1, seed=0)
    with pytest.raises(FcnetError, match="models\\[1\\].*shaped like models\\[0\\]"):
        Solver([members()[0], odd], X, Y, X_VAL, Y_VAL)
    f32 = MLP(6, [16, 12], 4, std=0.1, seed=0, dtype="float32")
    with pytest.raises(FcnetError, match="shaped like"):
        Solver([members()[0], f32], X, Y, X_VAL, Y_VAL)
    m = members()[0]
    with pytest.raises(FcnetError, match="distinct"):
        Solver([m, m], X, Y, X_VAL, Y_VAL)
    with pytest.raises(FcnetError, match="at least one"):
        Solver([], X, Y, X_VAL, Y_VAL)


def test_members_with_their_own_seeds_equal_their_lone_runs_dropout_included():
    # a study cell's repeats: each member its own init, minibatch stream and masks
    def models(seeds):
        return [MLP(6, [16, 12], 4, std=0.1, seed=s, dropout_keep=0.8) for s in seeds]

    seeds = [3, 11, 5]
    pop = Solver(models(seeds), X, Y, X_VAL, Y_VAL, learning_rate=0.05, num_iters=40,
                 batch_size=25, seed=seeds).run()
    assert not pop.shared and pop.ws.x.shape == (3, 25, 6)
    for j, s in enumerate(seeds):
        lone = Solver(models([s]), X, Y, X_VAL, Y_VAL, learning_rate=0.05, num_iters=40,
                      batch_size=25, seed=s).run()
        np.testing.assert_allclose(pop.history(j)["loss_history"], lone.loss_history, rtol=1e-10)
        assert pop.history(j)["val_acc_history"] == lone.val_acc_history
        np.testing.assert_allclose(pop.models[j].params["W1"], lone.model.params["W1"],
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_own_seeds_with_wide_layers_take_a_gemm_each_and_equal_their_lone_runs_bit_for_bit(dtype):
    """Members with their own batches and first layers of at least ``blas.SMALL`` weights update
    them a member at a time, each with its own decay as the gemm's beta: the very weights of
    their lone runs (whose 2-D update is the same gemm), whatever their lr and reg."""
    from fcnet.nn import blas

    rng = np.random.RandomState(0)
    centres = 2 * rng.randn(4, 300)
    y = np.arange(440) % 4
    Xw = centres[y] + rng.randn(440, 300)
    seeds, lrs, regs = [3, 11, 5], [0.01, 0.003, 0.02], [0.0, 0.05, 0.01]

    def run(j=None):
        which = range(3) if j is None else [j]
        models = [MLP(300, [128, 20], 4, std=0.05, seed=seeds[i], dtype=dtype) for i in which]
        return Solver(models, Xw[:400], y[:400], Xw[400:], y[400:], num_iters=60, batch_size=50,
                      learning_rate=[lrs[i] for i in which], reg=[regs[i] for i in which],
                      seed=[seeds[i] for i in which])

    pop = run()
    assert not pop.shared and blas.per_slice(pop.stack.W[0].transpose(1, 0, 2))
    pop.run()
    for j in range(3):
        lone = run(j).run()
        for name, w in lone.model.params.items():
            assert np.array_equal(pop.models[j].params[name], w), (j, name)
        assert pop.history(j)["val_acc_history"] == lone.val_acc_history
