"""fcnet.gradcheck: centred differences and study.md's relative error."""

from __future__ import annotations

import numpy as np
import pytest

from fcnet import MLP
from fcnet.gradcheck import check_model_gradients, eval_numerical_gradient, rel_error


def test_numerical_gradient_of_a_cubic_matches_the_derivative_and_restores_x():
    x = np.random.RandomState(0).randn(3, 4)
    before = x.copy()
    num = eval_numerical_gradient(lambda v: float(np.sum(v**3)), x, verbose=False)
    # centred differences are exact to h^2 f''' / 6 = 1e-10 for f = x^3
    np.testing.assert_allclose(num, 3 * before**2, atol=1e-9)
    assert np.array_equal(x, before)  # perturbed in place, put back exactly


def test_rel_error_is_max_abs_diff_over_sum_of_magnitudes_with_1e_8_floor():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([1.0], [3.0]) == 0.5  # |1 - 3| / (1 + 3)
    assert rel_error([0.0], [1e-12]) == pytest.approx(1e-4, rel=1e-12)  # 1e-12 / 1e-8
    assert rel_error([[1.0, 0.0]], [[1.0, -1.0]]) == 1.0


def test_check_model_gradients_flags_a_broken_gradient():
    class Broken(MLP):
        def loss(self, X, y=None, reg=0.0, dropout_seed=None):
            out = super().loss(X, y, reg=reg, dropout_seed=dropout_seed)
            if y is None:
                return out
            loss, grads = out
            grads["W2"] *= 1.01  # a 1% mistake in one parameter
            return loss, grads

    rng = np.random.RandomState(0)
    X, y = rng.randn(6, 4), rng.randint(0, 3, 6)
    good = check_model_gradients(MLP(4, [5], 3, std=0.5, seed=0), X, y, reg=0.1)
    bad = check_model_gradients(Broken(4, [5], 3, std=0.5, seed=0), X, y, reg=0.1)
    assert max(good.values()) < 1e-7
    assert bad["W2"] > 1e-3 and bad["W1"] < 1e-7
