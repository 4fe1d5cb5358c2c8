"""The NumPy engine (fcnet.nn) as study.md specifies it: forward pass, loss,
gradients, training loop, update rules, checkpoints and the hot loop's memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy.special import log_softmax
from threadpoolctl import threadpool_limits

from fcnet import MLP, FcnetError, Solver, TwoLayerNet
from fcnet.check import EXPECTED_LOSS, EXPECTED_PROBS, toy_data, toy_model
from fcnet.gradcheck import check_model_gradients, eval_numerical_gradient, rel_error
from fcnet.nn import layers
from fcnet.nn.optim import Adam
from fcnet.nn.schedule import lr_at, lr_period

REPORT_TOY_FINAL_LOSS = 0.01714960793873205  # study.md Q3, the report's Figure 1


@pytest.fixture(autouse=True)
def one_blas_thread():
    # tiny matmuls on a shared 2-core box run 5-50x slower with OpenBLAS's threads
    with threadpool_limits(1):
        yield


@pytest.fixture
def global_rng():
    """The course's driver seeds NumPy's global generator; put it back afterwards."""
    saved = np.random.get_state()
    yield
    np.random.set_state(saved)


def blobs(n: int = 60, d: int = 5, c: int = 3, seed: int = 0, spread: float = 3.0):
    """A small, learnable problem: c Gaussian clusters in d dimensions."""
    rng = np.random.RandomState(seed)
    centres = spread * rng.randn(c, d)
    y = np.arange(n) % c
    X = centres[y] + rng.randn(n, d)
    return X, y


def random_biases(model: MLP, seed: int = 0) -> MLP:
    """Non-zero biases, so no pre-activation sits exactly on ReLU's kink at 0
    (with zero biases, a row whose inputs are all dropped gives z = 0 exactly,
    where centred differences see half a slope and the analytic gradient none)."""
    rng = np.random.RandomState(seed)
    for k, v in model.params.items():
        if k.startswith("b"):
            model.params[k] = 0.1 * rng.randn(*v.shape)
    return model


def torch_loss_and_grads(model: MLP, X, y, reg: float, masks: list[np.ndarray | None]):
    """The same forward pass in PyTorch (float64), gradients by autograd."""
    import torch  # installed with the dev tools (bin/test); never skipped

    P = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for k, v in model.params.items()
    }
    a = torch.tensor(X, dtype=torch.float64)
    L = model.num_layers
    for i in range(1, L):
        a = torch.relu(a @ P[f"W{i}"] + P[f"b{i}"])
        if masks[i - 1] is not None:
            a = a * torch.tensor(masks[i - 1])
    scores = a @ P[f"W{L}"] + P[f"b{L}"]
    loss = torch.nn.functional.cross_entropy(scores, torch.tensor(y, dtype=torch.long))
    loss = loss + reg * sum((P[f"W{i}"] ** 2).sum() for i in range(1, L + 1))
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in P.items()}


def engine_masks(model: MLP, n: int, dropout_seed: int) -> list[np.ndarray]:
    """Draw the dropout masks exactly as MLP.loss(..., dropout_seed) does: one
    default_rng(dropout_seed), one (N, H_l) mask per hidden layer, in order."""
    rng = np.random.default_rng(dropout_seed)
    return [
        layers.dropout_mask(model.dropout_keep, rng, np.empty((n, h), dtype=model.dtype))
        for h in model.sizes[1:-1]
    ]


# --------------------------------------------------------------- Q1 and Q2


def test_toy_net_probabilities_match_study_table_within_1e_7():
    net = toy_model()
    X, _ = toy_data()
    probs = net.loss(X)
    assert probs.shape == (5, 3)
    assert np.sum(np.abs(probs - EXPECTED_PROBS)) < 1e-7


def test_toy_loss_with_reg_0_05_is_1_30378789133_within_1e_12():
    net = toy_model()
    X, y = toy_data()
    loss, _ = net.loss(X, y, reg=0.05)
    assert abs(loss - EXPECTED_LOSS) < 1e-12


def test_toy_gradients_pass_numerical_check_below_1e_8_for_every_param():
    net = toy_model()
    X, y = toy_data()
    errors = check_model_gradients(net, X, y, reg=0.05)
    assert set(errors) == {"W1", "b1", "W2", "b2"}
    assert all(e < 1e-8 for e in errors.values()), errors


def test_toy_gradients_match_study_md_formulas():
    # dz3 = (softmax(z3) - onehot(y)) / N, dW2 = a2^T dz3 + 2 reg W2, ... (study.md Q2)
    net = toy_model()
    X, y = toy_data()
    reg = 0.05
    P = net.params
    z2 = X @ P["W1"] + P["b1"]
    a2 = np.maximum(z2, 0)
    z3 = a2 @ P["W2"] + P["b2"]
    dz3 = np.exp(log_softmax(z3, axis=1))
    dz3[np.arange(5), y] -= 1
    dz3 /= 5
    dz2 = (dz3 @ P["W2"].T) * (z2 > 0)
    expected = {
        "W2": a2.T @ dz3 + 2 * reg * P["W2"],
        "b2": dz3.sum(0),
        "W1": X.T @ dz2 + 2 * reg * P["W1"],
        "b1": dz2.sum(0),
    }
    _, grads = net.loss(X, y, reg=reg)
    for k, v in expected.items():
        assert rel_error(grads[k], v) < 1e-12, k


# ---------------------------------------------------------------------- Q3


def test_toy_training_driven_like_course_script_ends_at_report_loss(global_rng):
    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=0.1)  # from the global generator, W1 then W2
    X, y = toy_data()
    stats = net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100, verbose=False)
    losses = stats["loss_history"]
    assert len(losses) == 100
    assert abs(losses[-1] - REPORT_TOY_FINAL_LOSS) < 1e-12
    assert losses[-1] < 0.02 < losses[0]


def test_fcnet_check_json_exits_0_and_reports_every_number_within_threshold():
    proc = subprocess.run(
        [sys.executable, "-m", "fcnet", "check", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["scores_diff"] < 1e-7
    assert r["loss_diff"] < 1e-12
    assert set(r["rel_error"]) == {"W1", "b1", "W2", "b2"}
    assert all(v < 1e-8 for v in r["rel_error"].values())
    assert abs(r["toy_final_loss"] - REPORT_TOY_FINAL_LOSS) < 1e-12
    assert r["ok"] is True and all(r["passed"].values())


# ------------------------------------------------------- deeper, with dropout


def deep_dropout_net(seed: int = 0) -> MLP:
    net = MLP(6, [10, 8, 7], 4, std=0.5, seed=seed, dropout_keep=0.7)
    return random_biases(net, seed)


def test_deep_mlp_with_dropout_and_reg_passes_numerical_gradient_check():
    # Bound: centred differences in float64 with h = 1e-5 carry about 1e-10 of
    # absolute error (truncation h^2 f'''/6 ~ 1e-10, round-off eps |J| / h ~ 1e-11),
    # measured at most 8e-10 over 30 seeds of this net.  study.md's elementwise
    # relative error divides that by |a| + |n|, so gradient entries of 1e-4 read
    # up to ~5e-7; a real mistake (a missing mask, 2 reg W, ReLU gate) reads 1e-2..1.
    rng = np.random.RandomState(1)
    X, y = rng.randn(8, 6), rng.randint(0, 4, 8)
    net = deep_dropout_net()
    errors = check_model_gradients(net, X, y, reg=0.1, dropout_seed=3)
    assert len(errors) == 8  # W1 b1 ... W4 b4
    assert max(errors.values()) < 1e-6, errors
    _, grads = net.loss(X, y, reg=0.1, dropout_seed=3)
    grads = {k: v.copy() for k, v in grads.items()}
    for name, w in net.params.items():
        num = eval_numerical_gradient(
            lambda _w: net.loss(X, y, reg=0.1, dropout_seed=3)[0], w, verbose=False
        )
        assert np.max(np.abs(num - grads[name])) < 1e-8, name


def test_gradient_check_detects_a_different_dropout_mask():
    # the check above can fail: gradients taken under another mask are far off
    rng = np.random.RandomState(1)
    X, y = rng.randn(8, 6), rng.randint(0, 4, 8)
    net = deep_dropout_net()
    _, wrong = net.loss(X, y, reg=0.1, dropout_seed=4)
    wrong = {k: v.copy() for k, v in wrong.items()}
    num = eval_numerical_gradient(
        lambda _w: net.loss(X, y, reg=0.1, dropout_seed=3)[0], net.params["W1"], verbose=False
    )
    assert rel_error(num, wrong["W1"]) > 1e-2


def test_dropout_seed_fixes_the_mask_and_prediction_has_no_dropout():
    rng = np.random.RandomState(1)
    X, y = rng.randn(8, 6), rng.randint(0, 4, 8)
    net = deep_dropout_net()
    a = net.loss(X, y, dropout_seed=3)[0]
    b = net.loss(X, y, dropout_seed=3)[0]
    c = net.loss(X, y, dropout_seed=4)[0]
    assert a == b != c
    p1, p2 = net.predict_proba(X), net.predict_proba(X)
    assert np.array_equal(p1, p2)
    np.testing.assert_allclose(p1.sum(1), 1.0, rtol=1e-12)


# ------------------------------------------------------------ vs PyTorch


def test_two_layer_gradients_agree_with_pytorch_autograd_within_1e_10():
    net = toy_model()
    X, y = toy_data()
    loss, grads = net.loss(X, y, reg=0.05)
    t_loss, t_grads = torch_loss_and_grads(net, X, y, 0.05, [None])
    assert abs(loss - t_loss) < 1e-12
    for k in net.params:
        assert rel_error(grads[k], t_grads[k]) < 1e-10, k


def test_deep_mlp_gradients_with_fixed_dropout_mask_agree_with_pytorch_within_1e_10():
    rng = np.random.RandomState(2)
    X, y = rng.randn(16, 6), rng.randint(0, 4, 16)
    net = deep_dropout_net(seed=5)
    loss, grads = net.loss(X, y, reg=0.02, dropout_seed=11)
    masks = engine_masks(net, 16, dropout_seed=11)
    assert all(0 < (m == 0).mean() < 1 for m in masks)  # some units dropped, not all
    t_loss, t_grads = torch_loss_and_grads(net, X, y, 0.02, masks)
    assert abs(loss - t_loss) < 1e-12
    for k in net.params:
        assert rel_error(grads[k], t_grads[k]) < 1e-10, k


# ------------------------------------------------------- numerical safety


# exp(-1e4) underflowing to 0 is the right answer, so only underflow may pass
RAISE_ON_ALL_BUT_UNDERFLOW = dict(over="raise", divide="raise", invalid="raise", under="ignore")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_and_loss_are_finite_for_logits_of_magnitude_1e4(dtype):
    rng = np.random.RandomState(0)
    scores = (1e4 * rng.randn(6, 4)).astype(dtype)
    y = np.array([0, 1, 2, 3, 0, 1])
    with warnings.catch_warnings(), np.errstate(**RAISE_ON_ALL_BUT_UNDERFLOW):
        warnings.simplefilter("error")
        p = layers.softmax(scores)
        loss, dscores = layers.softmax_loss(scores, y)
    assert np.isfinite(p).all() and np.isfinite(dscores).all() and np.isfinite(loss)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    ref = -log_softmax(scores.astype(np.float64), axis=1)[np.arange(6), y].mean()
    assert loss == pytest.approx(ref, rel=1e-6)
    assert loss > 1e3  # huge logits on wrong classes cost a lot, not inf


def test_model_loss_and_probabilities_finite_when_scores_reach_1e4():
    X, y = blobs(n=12, d=5)
    net = MLP(5, [20], 3, std=30.0, seed=0)
    assert np.abs(net.scores(X)).max() > 1e4
    with warnings.catch_warnings(), np.errstate(**RAISE_ON_ALL_BUT_UNDERFLOW):
        warnings.simplefilter("error")
        loss, grads = net.loss(X, y, reg=1e-3)
        probs = net.predict_proba(X)
    assert np.isfinite(loss)
    assert all(np.isfinite(g).all() for g in grads.values())
    assert np.isfinite(probs).all()


def test_layer_functions_take_a_leading_axis_of_models():
    # the population trainer runs K models' layers at once through the same functions
    rng = np.random.RandomState(0)
    scores, y = 5 * rng.randn(3, 8, 4), rng.randint(0, 4, 8)
    losses, d = layers.softmax_loss(scores, y)
    assert losses.shape == (3,) and d.shape == (3, 8, 4)
    for k in range(3):
        loss_k, d_k = layers.softmax_loss(scores[k], y)
        assert losses[k] == loss_k and np.array_equal(d[k], d_k)  # bit for bit
    dz, x, w = rng.randn(3, 8, 5), rng.randn(3, 8, 6), rng.randn(3, 6, 5)
    dx, dw, db = layers.affine_backward(dz, x, w)
    for k in range(3):
        for got, want in zip((dx[k], dw[k], db[k]), layers.affine_backward(dz[k], x[k], w[k]),
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_softmax_loss_matches_scipy_for_shared_and_own_labels_and_rejects_bad_ones():
    from scipy.special import log_softmax, softmax

    from fcnet.nn.stack import row_max

    rng = np.random.RandomState(3)
    scores = 4 * rng.randn(3, 50, 7)
    for y in (rng.randint(0, 7, 50), rng.randint(0, 7, (3, 50))):  # shared rows, each model's own
        yk = np.broadcast_to(y, (3, 50))
        losses, d = layers.softmax_loss(scores, y)
        want = -np.take_along_axis(log_softmax(scores, axis=-1), yk[..., None], -1)[..., 0].mean(-1)
        np.testing.assert_allclose(losses, want, rtol=1e-12)
        onehot = np.eye(7)[yk]
        np.testing.assert_allclose(d, (softmax(scores, axis=-1) - onehot) / 50, rtol=1e-10, atol=1e-15)
        # the engine's row maximum (a transposed reduction) gives the same numbers bit for bit
        fast = layers.softmax_loss(scores.copy(), y, inplace=True, row_max=row_max)
        assert np.array_equal(fast[0], losses) and np.array_equal(fast[1], d)
    for bad in (np.full(50, 7), np.full(50, -1)):
        with pytest.raises(ValueError, match=r"labels y must be integers in \[0, 7\)"):
            layers.softmax_loss(scores, bad)


# ------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.full((4, 5), np.nan), [0, 1, 2, 0], "NaN"),
        (np.array([[0, 1, 2, 3, np.inf]] * 4), [0, 1, 2, 0], "NaN or infinite"),
        (np.zeros(5), None, r"shape \(N, 5\)"),
        (np.zeros((4, 6)), [0, 1, 2, 0], r"shape \(N, 5\)"),
        (np.zeros((4, 5, 1)), None, r"shape \(N, 5\)"),
        (np.zeros((4, 5)), [0, 1, 2], r"y must have shape \(4,\)"),
        (np.zeros((4, 5)), [[0, 1, 2, 0]], r"y must have shape \(4,\)"),
        (np.zeros((4, 5)), [0, 1, 3, 0], r"labels must be in \[0, 3\)"),
        (np.zeros((4, 5)), [0, -1, 2, 0], r"labels must be in \[0, 3\)"),
        (np.zeros((4, 5)), [0, 0.5, 2, 0], "integer class labels"),
        (np.array([["a"] * 5] * 4), None, "numeric"),
    ],
)
def test_bad_inputs_raise_fcnet_error_naming_the_problem(X, y, match):
    net = MLP(5, [4], 3, std=0.1, seed=0)
    with pytest.raises(FcnetError, match=match):
        net.loss(X, y)
    if y is None:
        with pytest.raises(FcnetError, match=match):
            net.predict(X)


def test_solver_rejects_nan_in_validation_set_and_labels_out_of_range():
    X, y = blobs(n=12, d=5)
    net = MLP(5, [4], 3, std=0.1, seed=0)
    X_val = X.copy()
    X_val[3, 2] = np.nan
    with pytest.raises(FcnetError, match="NaN"):
        Solver(net, X, y, X_val, y)
    with pytest.raises(FcnetError, match=r"labels must be in \[0, 3\)"):
        Solver(net, X, y + 1, X, y)
    with pytest.raises(FcnetError, match="sampling"):
        Solver(net, X, y, X, y, sampling="sequential")
    with pytest.raises(FcnetError, match="optimizer"):
        Solver(net, X, y, X, y, optimizer="adagrad")


def test_string_labels_raise_fcnet_error_not_a_numpy_type_error():
    # regression: check_inputs once ran np.mod on string labels (a numpy TypeError)
    net = MLP(5, [4], 3, std=0.1, seed=0)
    with pytest.raises(FcnetError, match="integer class labels"):
        net.loss(np.zeros((3, 5)), np.array(["cat", "dog", "cat"]))


def test_empty_training_set_raises_fcnet_error():
    # regression: loss on 0 rows once returned NaN with a RuntimeWarning, and the
    # Solver failed inside np.random.choice with a bare ValueError
    net = MLP(5, [4], 3, std=0.1, seed=0)
    with pytest.raises(FcnetError, match="no samples|empty|0 samples|N >= 1|at least one"):
        net.loss(np.zeros((0, 5)), np.zeros(0, dtype=int))
    with pytest.raises(FcnetError, match="no samples|empty|0 samples|N >= 1|at least one"):
        Solver(net, np.zeros((0, 5)), np.zeros(0, dtype=int), np.zeros((2, 5)), [0, 1])


def test_shuffle_sampling_with_batch_larger_than_data_trains_or_fails_up_front():
    # regression: with sampling='shuffle' and batch_size > N the first step once
    # died inside np.take (shape mismatch).  Either the batch is clamped to N or
    # the Solver refuses at once with an FcnetError naming batch_size.
    X, y = blobs(n=7, d=5)
    net = MLP(5, [4], 3, std=0.1, seed=0)
    try:
        solver = Solver(net, X, y, X, y, batch_size=10, sampling="shuffle", num_iters=5, seed=0)
    except FcnetError as err:
        assert "batch_size" in str(err)
        return
    solver.run()
    assert len(solver.loss_history) == 5 and np.isfinite(solver.loss_history).all()


# ------------------------------------------------------------ reproducible


def seeded_run(dtype: str, optimizer: str = "sgd", dropout_keep: float = 1.0, iters: int = 150):
    X, y = blobs(n=50, d=5)
    net = MLP(5, [12, 9], 3, std=0.1, seed=7, dropout_keep=dropout_keep, dtype=dtype)
    solver = Solver(
        net, X, y, X[:20], y[:20], learning_rate=0.05, reg=1e-3, num_iters=iters,
        batch_size=16, seed=3, optimizer=optimizer,
    )
    solver.run()
    return net, solver


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("optimizer", "keep"), [("sgd", 1.0), ("adam", 0.7)])
def test_same_seed_and_data_give_bitwise_identical_runs(dtype, optimizer, keep):
    a_net, a = seeded_run(dtype, optimizer, keep)
    b_net, b = seeded_run(dtype, optimizer, keep)
    for k in a_net.params:
        assert a_net.params[k].dtype == np.dtype(dtype)
        assert np.array_equal(a_net.params[k], b_net.params[k]), k
    assert a.history() == b.history()
    assert a.lr_history == b.lr_history
    # and a different seed gives a different run, so equality above means something
    X, y = blobs(n=50, d=5)
    c_net = MLP(5, [12, 9], 3, std=0.1, seed=7, dropout_keep=keep, dtype=dtype)
    Solver(c_net, X, y, X, y, learning_rate=0.05, reg=1e-3, num_iters=150, batch_size=16,
           seed=4, optimizer=optimizer).run()
    assert not np.array_equal(c_net.params["W1"], a_net.params["W1"])


def test_float32_training_stays_close_to_float64():
    n64, s64 = seeded_run("float64")
    n32, s32 = seeded_run("float32")
    # same initial weights (drawn in float64, then cast) and the same batches
    np.testing.assert_allclose(s32.loss_history, s64.loss_history, rtol=1e-4, atol=1e-6)
    for k in n64.params:
        np.testing.assert_allclose(n32.params[k], n64.params[k], rtol=1e-3, atol=1e-5)
    assert s32.loss_history[-1] < 0.8 * s32.loss_history[0]  # it did learn


# -------------------------------------------------------------- optimisers


@pytest.mark.parametrize(
    ("optimizer", "lr"), [("sgd", 0.1), ("momentum", 0.02), ("adam", 0.01), ("rmsprop", 0.01)])
def test_every_optimizer_reduces_the_loss_on_a_small_problem(optimizer, lr):
    X, y = blobs(n=60, d=5)
    net = MLP(5, [16], 3, std=0.1, seed=0)
    before = net.loss(X, y, reg=1e-4)[0]
    Solver(net, X, y, X, y, learning_rate=lr, reg=1e-4, num_iters=200, batch_size=20,
           seed=0, optimizer=optimizer).run()
    after = net.loss(X, y, reg=1e-4)[0]
    assert after < 0.25 * before, (before, after)
    assert (net.predict(X) == y).mean() > 0.9


def reference_adam(w0, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Kingma & Ba, Algorithm 1 (also torch.optim.Adam and cs231n's optim.adam)."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


def test_adam_matches_reference_algorithm_for_gradients_of_order_one():
    rng = np.random.RandomState(0)
    w0 = rng.randn(5, 4)
    # |g| in [0.5, 1.5]: where eps sits changes a step by at most
    # eps / (sqrt(1 - b2) |g|) ~ 6e-7 of itself, so both forms of Adam agree to 1e-5
    grads = [np.sign(rng.randn(5, 4)) * (0.5 + rng.rand(5, 4)) for _ in range(5)]
    params = {"W": w0.copy()}
    opt = Adam()
    for g in grads:
        opt.update(params, {"W": g.copy()}, 1e-2)
    assert opt.t == 5
    expected = reference_adam(w0, grads, 1e-2)
    np.testing.assert_allclose(params["W"] - w0, expected - w0, rtol=1e-5)
    assert not np.allclose(params["W"], w0 - 5e-2 * np.sign(sum(grads)), rtol=1e-3)


def test_adam_matches_reference_and_torch_adam_for_small_gradients():
    # regression: optim.Adam once added eps to sqrt(v) *before* the bias correction
    # (the paper's "efficient" form, whose eps-hat is not eps), which differs from
    # Algorithm 1 / torch.optim.Adam / cs231n by ~eps / sqrt(1 - b2^t) relative to
    # |g|: 0.6% of the step at |g| = 1e-3, the scale of CIFAR gradients.
    import torch

    rng = np.random.RandomState(0)
    w0 = rng.randn(5, 4)
    grads = [1e-3 * rng.randn(5, 4) for _ in range(5)]
    params = {"W": w0.copy()}
    opt = Adam()
    for g in grads:
        opt.update(params, {"W": g.copy()}, 1e-3)
    expected = reference_adam(w0, grads, 1e-3)
    p = torch.tensor(w0.copy(), requires_grad=True)
    t_opt = torch.optim.Adam([p], lr=1e-3)
    for g in grads:
        p.grad = torch.tensor(g)
        t_opt.step()
    assert rel_error(p.detach().numpy() - w0, expected - w0) < 1e-10  # the reference is right
    assert rel_error(params["W"] - w0, expected - w0) < 1e-10


def test_lr_decays_at_iteration_0_and_every_max_n_over_b_iterations():
    # study.md: 4,000 iterations of 245 per epoch make 17 decays, not 16
    X, y = blobs(n=245, d=2)
    net = MLP(2, [3], 3, std=0.1, seed=0)
    solver = Solver(net, X, y, X[:5], y[:5], learning_rate=1e-2, learning_rate_decay=0.95,
                    num_iters=4000, batch_size=1, seed=0)
    assert solver.iters_per_epoch == 245
    solver.run()
    assert len(solver.lr_history) == len(solver.val_acc_history) == 17
    assert len(solver.train_acc_history) == 17
    assert solver.lr_history[0] == 1e-2  # recorded before the first decay
    assert solver.lr == pytest.approx(1e-2 * 0.95**17, rel=1e-12)


@pytest.mark.parametrize(
    ("n", "batch", "iters", "decays"),
    [(10, 4, 7, 4), (10, 4, 8, 4), (10, 4, 9, 5), (5, 200, 6, 6), (12, 3, 1, 1)],
)
def test_lr_decay_count_for_small_problems(n, batch, iters, decays):
    # iterations per epoch = max(N // B, 1); decays at it = 0, ipe, 2 ipe, ...
    X, y = blobs(n=n, d=2)
    net = MLP(2, [3], 3, std=0.1, seed=0)
    solver = Solver(net, X, y, X, y, learning_rate=1.0, learning_rate_decay=0.5,
                    num_iters=iters, batch_size=batch, seed=0)
    solver.run()
    assert len(solver.lr_history) == decays
    assert solver.lr == 0.5**decays  # exact: halving is exact in binary
    assert solver.lr_history == [0.5**k for k in range(decays)]


@pytest.mark.parametrize("schedule", ["step", "cosine"])
@pytest.mark.parametrize("per_epoch", [1, 3, 7])
def test_the_rate_is_constant_over_each_period_the_stepper_derives_it_once_for(schedule, per_epoch):
    # Solver.step recomputes its rates and their coefficients only when lr_period changes
    kw = {"lr": np.array([0.1, 0.3]), "decay": np.array([0.9, 0.5]), "schedule": schedule,
          "iters_per_epoch": per_epoch, "total": 40}
    seen: dict[int, np.ndarray] = {}
    for it in range(40):
        key = lr_period(it, schedule=schedule, iters_per_epoch=per_epoch)
        rate = lr_at(it, **kw)
        assert np.array_equal(seen.setdefault(key, rate), rate)
    assert len(seen) == (40 if schedule == "cosine" else -(-39 // per_epoch) + 1)


# --------------------------------------------------------------- resuming


def resumable_solver(net: MLP, optimizer: str, sampling: str, seed: int):
    X, y = blobs(n=50, d=5)  # 50 rows, batch 16: 3 iterations per epoch, 2 left over
    return Solver(
        net, X, y, X[:20], y[:20], learning_rate=0.05, learning_rate_decay=0.99, reg=1e-3,
        num_iters=2000, batch_size=16, seed=seed, optimizer=optimizer, sampling=sampling,
    )


@pytest.mark.parametrize("keep", [1.0, 0.6])
@pytest.mark.parametrize("sampling", ["replacement", "shuffle"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "rmsprop"])
def test_save_and_load_state_resumes_bitwise_identically(tmp_path, optimizer, sampling, keep):
    straight_net = MLP(5, [12, 9], 3, std=0.1, seed=7, dropout_keep=keep)
    straight = resumable_solver(straight_net, optimizer, sampling, seed=3).run()

    first_net = MLP(5, [12, 9], 3, std=0.1, seed=7, dropout_keep=keep)
    first = resumable_solver(first_net, optimizer, sampling, seed=3).run(until=1000)
    assert first.it == 1000
    np.savez(tmp_path / "state.npz", **first.state())
    del first, first_net

    # a fresh model and solver with other weights and another seed: all must come from the file
    net = MLP(5, [12, 9], 3, std=0.1, seed=99, dropout_keep=keep)
    solver = resumable_solver(net, optimizer, sampling, seed=12345)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as f:
        solver.load_state({k: f[k] for k in f.files})
    assert solver.it == 1000
    solver.run()

    assert solver.it == straight.it == 2000
    for k in straight_net.params:
        assert np.array_equal(net.params[k], straight_net.params[k]), k
    assert solver.history() == straight.history()
    assert solver.lr_history == straight.lr_history
    assert solver.lr == straight.lr


def test_state_is_a_snapshot_that_later_training_does_not_change():
    # regression: Solver.state() once returned the live parameter and optimiser
    # arrays (the update rules work in place), so a state kept in memory -- e.g.
    # "best so far" -- silently followed training.
    net = MLP(5, [12], 3, std=0.1, seed=7)
    solver = resumable_solver(net, "momentum", "replacement", seed=3)
    solver.run(until=10)
    state = solver.state()
    saved = {k: np.array(v, copy=True) for k, v in state.items()}
    solver.run(until=20)
    changed = [k for k in saved if not np.array_equal(saved[k], state[k])]
    assert changed == []


def test_changing_dropout_keep_to_1_leaves_no_stale_mask_in_the_gradients():
    # regression: the workspace once kept a dropout run's masks, so a later run
    # without dropout back-propagated through the old masks: wrong gradients, silently.
    X, y = blobs(n=8, d=5)
    net = MLP(5, [12], 3, std=0.1, seed=7, dropout_keep=0.5)
    _, dropped = net.loss(X, y, dropout_seed=0)
    net.dropout_keep = 1.0
    _, grads = net.loss(X, y)
    _, expected = MLP(5, [12], 3, std=0.1, seed=7).loss(X, y)
    for k in net.params:
        assert rel_error(grads[k], expected[k]) < 1e-12, k
    assert any(rel_error(dropped[k], expected[k]) > 1e-3 for k in net.params)


# ------------------------------------------------------------ the hot loop


def cifar_sized_solver(dtype: str, optimizer: str) -> Solver:
    rng = np.random.RandomState(0)
    X = rng.randn(600, 3072).astype(dtype)
    y = rng.randint(0, 10, 600)
    net = MLP(3072, [100], 10, std=1e-4, seed=0, dtype=dtype)
    return Solver(net, X, y, X[:10], y[:10], learning_rate=1e-4, num_iters=100,
                  batch_size=200, seed=0, optimizer=optimizer)


def peak_bytes_per_step(solver: Solver, steps: int) -> list[int]:
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(steps):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            solver.step()
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    return peaks


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_step_of_3072_100_10_net_allocates_far_less_than_one_input_batch(dtype):
    solver = cifar_sized_solver(dtype, "sgd")  # 3 iterations per epoch
    solver.run(until=2)  # warm-up: workspace built
    batch_bytes = 200 * 3072 * np.dtype(dtype).itemsize  # one (200, 3072) array
    peaks = peak_bytes_per_step(solver, 6)  # includes 2 epoch boundaries (it 3 and 6)
    plain = [p for it, p in zip(range(2, 8), peaks, strict=True) if it % solver.iters_per_epoch]
    assert len(plain) == 4
    assert max(plain) < batch_bytes / 32, peaks  # measured 68 KB (float64) of 4.9 MB
    # epoch steps also predict on the batch, whose input check builds a (200, 3072)
    # bool array (isfinite): 614 KB, once per epoch
    assert max(peaks) < batch_bytes / 2, peaks


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "rmsprop"])
def test_momentum_adam_and_rmsprop_steps_allocate_no_parameter_sized_temporaries(optimizer):
    # regression: `self.v.setdefault(k, np.zeros_like(w))` evaluated zeros_like on
    # every call, and Adam's `m += (1 - b1) * g` built a temporary, so each step
    # allocated (and zeroed) arrays the size of W1 (3072 x 100).
    solver = cifar_sized_solver("float64", optimizer)
    solver.run(until=4)  # warm-up: workspace and optimiser state built
    w1_bytes = solver.model.params["W1"].nbytes
    peaks = peak_bytes_per_step(solver, 2)  # iterations 4 and 5: no epoch boundary
    assert max(peaks) < w1_bytes / 4, peaks


def test_relu_runs_in_place_and_the_workspace_is_reused_across_steps():
    from fcnet.nn.stack import forward_loss

    z = np.array([[-1.0, 2.0], [3.0, -4.0]])
    a = layers.relu_forward(z, inplace=True)
    assert a is z and np.array_equal(z, [[0.0, 2.0], [3.0, 0.0]])
    solver = cifar_sized_solver("float64", "sgd")
    solver.step()
    ws = solver.ws
    buffers = [ws.x, ws.y, *ws.acts, *ws.dacts, *ws.grads]
    addresses = [b.__array_interface__["data"][0] for b in buffers]
    for _ in range(3):
        solver.step()
    assert solver.ws is ws
    assert [b.__array_interface__["data"][0] for b in buffers] == addresses
    # the hidden buffer holds relu(z) itself (z was overwritten), not a copy of it
    z1 = ws.x @ solver.model.params["W1"] + solver.model.params["b1"]
    forward_loss(solver.stack, ws, np.zeros(1), np.ones(1), [])
    np.testing.assert_allclose(ws.acts[0][0], np.maximum(z1, 0), rtol=1e-12, atol=1e-18)


def test_batches_are_the_course_drivers_choice_draws():
    """A minibatch stream draws what the course's ``np.random.choice(num_train, batch_size)``
    draws from the same generator, batch after batch, for a seeded and the global one."""
    from fcnet.nn.solver import Stream

    for n, b in [(1437, 200), (49000, 200), (5, 7)]:
        for ahead in (1, 64):  # the Solver's streams draw 64 batches at a time: the same batches
            ours, course = Stream(3, ahead), np.random.RandomState(3)
            for it in range(150):
                np.testing.assert_array_equal(ours.draw(n, b, "replacement", it, n // b or 1),
                                              course.choice(n, b))
    # the global generator is the caller's too: one batch at a time, whatever ``ahead``
    np.random.seed(0)
    ours = Stream(None, 64)
    first, between, second = ours.draw(49000, 200, "replacement", 0, 245), np.random.rand(), \
        ours.draw(49000, 200, "replacement", 1, 245)
    np.random.seed(0)
    np.testing.assert_array_equal(first, np.random.choice(49000, 200))
    assert between == np.random.rand()
    np.testing.assert_array_equal(second, np.random.choice(49000, 200))


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blas_gemm_accumulates_into_c_like_numpy_for_every_operand_layout(ta, tb, dtype):
    """fcnet.nn.blas.gemm (NumPy's own cblas gemm with beta) against plain NumPy arithmetic,
    for row-major and transposed operands and a C that is a strided slice of a wider array."""
    from fcnet.nn import blas

    rs = np.random.RandomState(0)
    a = rs.standard_normal((40, 30) if ta else (30, 40)).astype(dtype)
    b = rs.standard_normal((25, 40) if tb else (40, 25)).astype(dtype)
    a_, b_ = (a.T if ta else a), (b.T if tb else b)
    wide = rs.standard_normal((30, 60)).astype(dtype)
    want = wide.copy()
    want[:, 10:35] = want[:, 10:35] * np.asarray(0.75, dtype) + a_ @ b_
    blas.gemm(a_, b_, wide[:, 10:35], 0.75, scratch=np.empty((30, 25), dtype))
    np.testing.assert_allclose(wide, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)
    assert np.array_equal(wide[:, :10], want[:, :10]) and np.array_equal(wide[:, 35:], want[:, 35:])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k", [1, 4])
def test_sgd_step_folded_into_the_gemm_equals_product_then_add_bit_for_bit(monkeypatch, dtype, k):
    """Plain SGD's weight step as one gemm (beta = 1 - 2 lr reg) gives the very numbers of the
    product into a gradient buffer followed by the scale and the add (the fallback path)."""
    from fcnet.nn import blas

    rs = np.random.RandomState(1)
    X, y = (rs.standard_normal((600, 50)) * 10).astype(dtype), rs.randint(0, 10, 600)

    def train():
        models = [MLP(50, [20, 15], 10, std=0.05, seed=j, dtype=dtype) for j in range(k)]
        s = Solver(models, X, y, X[:50], y[:50], learning_rate=[1e-2 * (j + 1) for j in range(k)],
                   reg=[0.1 * j for j in range(k)], num_iters=40, batch_size=200, seed=0)
        s.run()
        return [p.copy() for p in s.stack.params], s.losses(0)

    folded = train()
    monkeypatch.setattr(blas, "_cblas_gemm", lambda kind: None)  # the fallback: product, then add
    apart = train()
    assert folded[1] == apart[1]
    assert all(np.array_equal(p, q) for p, q in zip(folded[0], apart[0], strict=True))
