"""fcnet.FCNetClassifier: a scikit-learn classifier on the NumPy engine."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from fcnet import MLP, FCNetClassifier, FcnetError, Solver
from fcnet.estimator import _SEED_MAX, EstimatorError


@pytest.fixture(autouse=True)
def one_blas_thread():
    # tiny matmuls on a shared 2-core box run 5-50x slower with OpenBLAS's threads
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # ships with scikit-learn, no download
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


# plain SGD for standardised features (the exercise's rule, hand-tuned)
SCALED = dict(preset="exercise", hidden=(64,), std=1e-2, learning_rate=0.1, reg=1e-3,
              learning_rate_decay=0.95, batch_size=100)


# scikit-learn's estimator checks fit tiny data many times: small, fast settings
# here, not in the defaults.  Two checks skip themselves for a missing optional
# dependency (pandas; SCIPY_ARRAY_API), which is sklearn's decision, not ours.
CHECKED = [
    FCNetClassifier(),  # the defaults: the general profile
    FCNetClassifier(preset="exercise", hidden=(16,), std=0.1, learning_rate=0.1, reg=1e-3,
                    num_iters=200, batch_size=32, random_state=0),
    FCNetClassifier(hidden=(16, 8), std=0.1, learning_rate=0.01, reg=1e-3, num_iters=200,
                    batch_size=32, optimizer="adam", dropout_keep=0.8, sampling="shuffle",
                    dtype="float32", random_state=0),
    FCNetClassifier(preset="exercise", hidden=(), std=0.1, learning_rate=0.1, reg=1e-3,
                    num_iters=200, batch_size=500, optimizer="momentum", random_state=0),
]


def expected_failed_checks(estimator):
    if estimator.dtype == "float32":
        # compares predict_proba on reordered rows with rtol 1e-7, below float32's
        # resolution (1.2e-7): BLAS sums in another order differ in the last bit.
        # float64 (the default) passes it.
        reason = "float32 probabilities differ in the last bit when rows are reordered"
        return {"check_methods_sample_order_invariance": reason}
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    if getattr(check, "func", check).__name__ == "check_array_api_input":
        # opt-in check for array-API estimators: fcnet is NumPy-only and must not claim it
        assert not estimator.__sklearn_tags__().array_api_support
        return
    check(estimator)


def test_init_only_stores_the_parameters_and_none_means_the_presets_value():
    est = FCNetClassifier()
    params = est.get_params()
    assert params.pop("preset") == "general"
    assert params == {**{k: None for k in params}, "validation_fraction": 0.0,
                      "random_state": None, "verbose": False}
    odd = FCNetClassifier(hidden="wide", learning_rate=-1)  # no checks until fit
    assert odd.hidden == "wide" and odd.learning_rate == -1
    X, y = np.random.RandomState(0).randn(30, 4), np.arange(30) % 2
    general = FCNetClassifier(num_iters=2).fit(X, y).config_
    assert (general.optimizer, general.lr, general.init, general.reg, general.decay,
            general.hidden) == ("adam", 1e-3, "kaiming", 1e-4, 1.0, [100])
    exercise = FCNetClassifier(preset="exercise", num_iters=2).fit(X, y).config_
    assert (exercise.optimizer, exercise.lr, exercise.std, exercise.reg, exercise.decay,
            exercise.hidden) == ("sgd", 1e-4, 1e-4, 0.25, 0.95, [50])
    scaled = FCNetClassifier(std=0.5, num_iters=2).fit(X, y).config_
    assert (scaled.init, scaled.std) == ("normal", 0.5)  # a scale given: the normal init


def split(loader, divide: float | None = None):
    X, y = loader(return_X_y=True)
    if divide:
        X = X / divide
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.mark.parametrize(
    ("name", "scaled", "divide"),
    [("digits", True, None), ("breast_cancer", True, None), ("wine", True, None),
     ("iris", True, None), ("digits", False, None), ("digits", False, 16.0)],
)
def test_defaults_score_within_3_points_of_mlpclassifier_defaults(name, scaled, divide):
    # scikit-learn's own datasets, as a new user would try them: a 75/25 stratified
    # split (seed 0), random_state=0 for both, no tuning.  Measured (2026-12-06):
    # fcnet 0.982 / 0.958 / 1.000 / 0.974 / 0.976 / 0.976, MLPClassifier 0.978 /
    # 0.951 / 1.000 / 0.974 / 0.960 / 0.980.
    import warnings

    from sklearn import datasets
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X_tr, X_te, y_tr, y_te = split(getattr(datasets, f"load_{name}"), divide)

    def score(est) -> float:
        pipe = make_pipeline(StandardScaler(), est) if scaled else est
        return pipe.fit(X_tr, y_tr).score(X_te, y_te)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = score(MLPClassifier(random_state=0))
    ours = score(FCNetClassifier(random_state=0))
    assert ours >= theirs - 0.03, (ours, theirs)


def test_pipeline_with_standard_scaler_learns_digits(digits):
    X_tr, X_te, y_tr, y_te = digits
    pipe = make_pipeline(StandardScaler(), FCNetClassifier(num_iters=1000, random_state=0,
                                                           **SCALED))
    pipe.fit(X_tr, y_tr)
    acc = pipe.score(X_te, y_te)
    assert acc > 0.9, acc  # measured 0.944; chance is 0.1
    est = pipe[-1]
    assert est.n_features_in_ == 64
    assert list(est.classes_) == list(range(10))
    assert len(est.loss_history_) == est.n_iter_ == 1000
    assert np.mean(est.loss_history_[-50:]) < 0.2 * est.loss_history_[0]


def test_grid_search_over_reg_picks_a_light_penalty(digits):
    X_tr, X_te, y_tr, y_te = digits
    pipe = make_pipeline(
        StandardScaler(),
        FCNetClassifier(preset="exercise", hidden=(32,), std=1e-2, learning_rate=0.1,
                        learning_rate_decay=0.95, num_iters=300, batch_size=100, random_state=0),
    )
    grid = GridSearchCV(pipe, {"fcnetclassifier__reg": [1e-4, 1e-2, 1.0]}, cv=3)
    grid.fit(X_tr, y_tr)
    scores = grid.cv_results_["mean_test_score"]
    assert len(scores) == 3
    # reg 1.0 on sum(W**2) crushes the weights to chance; the light ones learn
    assert scores[2] < 0.3 < 0.8 < min(scores[0], scores[1])
    assert grid.best_params_["fcnetclassifier__reg"] in (1e-4, 1e-2)
    assert grid.score(X_te, y_te) > 0.8


def test_any_hashable_labels_come_back_from_predict(digits):
    X_tr, X_te, y_tr, y_te = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                      "eight", "nine"], dtype=object)
    pipe = make_pipeline(StandardScaler(), FCNetClassifier(num_iters=300, random_state=0,
                                                           **SCALED))
    pipe.fit(X_tr, names[y_tr])
    pred = pipe.predict(X_te)
    assert set(pred) <= set(names)
    assert (pred == names[y_te]).mean() > 0.85
    proba = pipe.predict_proba(X_te)
    assert proba.shape == (len(X_te), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    est = pipe[-1]
    assert list(est.classes_) == sorted(names)  # columns follow classes_
    assert np.array_equal(est.classes_[proba.argmax(1)], pred)


def test_fit_is_exactly_the_engines_training_loop():
    rng = np.random.RandomState(0)
    X, y = rng.randn(40, 6), np.arange(40) % 3
    params = dict(std=0.1, learning_rate=0.05, learning_rate_decay=0.9, reg=1e-3,
                  num_iters=60, batch_size=8)
    est = FCNetClassifier(preset="exercise", hidden=(7, 5), random_state=42, **params).fit(X, y)
    # the same run by hand: seeds drawn as the estimator documents
    init_seed, solver_seed, _ = (int(s) for s in
                                 np.random.RandomState(42).randint(_SEED_MAX, size=3))
    net = MLP(6, [7, 5], 3, std=0.1, seed=init_seed)
    solver = Solver(net, X, y, X[:1], y[:1], seed=solver_seed,
                    **{k: v for k, v in params.items() if k != "std"})
    solver.run()
    for k in net.params:
        assert np.array_equal(est.model_.params[k], net.params[k]), k
    assert est.loss_history_ == solver.loss_history
    assert est.lr_history_ == solver.lr_history
    assert len(est.lr_history_) == 12  # 40 // 8 = 5 per epoch, from iteration 0


def test_same_random_state_gives_identical_fits_and_others_differ():
    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 4), np.arange(30) % 2
    base = FCNetClassifier(preset="exercise", hidden=(8,), std=0.1, learning_rate=0.1,
                           reg=1e-3, num_iters=50, dropout_keep=0.7, random_state=3)
    a = clone(base).fit(X, y)
    b = clone(base).fit(X, y)
    c = clone(base).set_params(random_state=4).fit(X, y)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_history_ == b.loss_history_
    assert not np.array_equal(a.model_.params["W1"], c.model_.params["W1"])


def test_validation_fraction_fills_the_per_epoch_validation_history():
    rng = np.random.RandomState(0)
    X, y = rng.randn(100, 4), np.arange(100) % 2
    X[y == 1] += 5.0
    est = FCNetClassifier(preset="exercise", hidden=(8,), std=0.1, learning_rate=0.1, reg=1e-3,
                          num_iters=45, batch_size=10, validation_fraction=0.2,
                          random_state=0).fit(X, y)
    # 80 training rows, batch 10: 8 iterations per epoch, records at 0, 8, ..., 40
    assert len(est.val_acc_history_) == len(est.train_acc_history_) == 6
    assert est.val_acc_history_[-1] > 0.9
    no_val = clone(est).set_params(validation_fraction=0.0).fit(X, y)
    assert no_val.val_acc_history_ == []
    assert len(no_val.train_acc_history_) == 5  # 100 rows: 10 per epoch, 0..40


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"hidden": (10, 0)}, "hidden"),
        ({"hidden": "wide"}, "hidden"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"reg": -0.1}, "reg"),
        ({"num_iters": 0}, "num_iters"),
        ({"num_iters": 2.5}, "num_iters"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"optimizer": "adamw"}, "optimizer"),
        ({"sampling": "sequential"}, "sampling"),
        ({"dropout_keep": 0.0}, "dropout_keep"),
        ({"dtype": "float16"}, "dtype"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"momentum": 1.5}, "momentum"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"reg": float("inf")}, "reg"),
        ({"std": float("nan")}, "std"),
        ({"learning_rate_decay": float("-inf")}, "learning_rate_decay"),
        ({"eps": float("inf")}, "eps"),
        ({"eps": 0.0}, "eps"),
        ({"decay_rate": float("nan")}, "decay_rate"),
        ({"decay_rate": 1.0}, "decay_rate"),
        ({"beta2": float("inf")}, "beta2"),
    ],
)
def test_bad_parameters_fail_at_fit_naming_the_parameter(params, name):
    X, y = np.random.RandomState(0).randn(10, 3), np.arange(10) % 2
    est = FCNetClassifier(**{"num_iters": 5, **params})
    with pytest.raises(EstimatorError, match=rf"The '{name}' parameter of FCNetClassifier must be") as info:
        est.fit(X, y)
    # fcnet's one-line error, a ValueError and scikit-learn's own parameter error
    assert isinstance(info.value, FcnetError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, InvalidParameterError)


def test_divergence_is_an_error_naming_the_learning_rate():
    rng = np.random.RandomState(0)
    X, y = rng.randn(50, 4), np.arange(50) % 3
    est = FCNetClassifier(preset="exercise", std=1.0, learning_rate=1e8, reg=0.0, num_iters=200,
                          random_state=0)
    with np.errstate(all="ignore"), pytest.raises(EstimatorError, match="diverged.*learning_rate"):
        est.fit(X, y)
