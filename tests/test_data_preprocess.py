"""Preprocessing is fitted on train only, matches the exercises' formulas, keeps
memory to one copy, reproduces scikit-learn's PCA and survives a pickle-free
save and reload."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.decomposition import PCA

from fcnet.data import Preprocessor
from fcnet.errors import FcnetError

RNG = np.random.RandomState(0)
TRAIN = RNG.randint(0, 256, (300, 6, 6, 3)).astype(np.uint8)
VAL = RNG.randint(0, 256, (40, 6, 6, 3)).astype(np.uint8)


def test_mean_image_subtraction_uses_the_training_mean():
    p = Preprocessor("mean").fit(TRAIN)
    mean = TRAIN.reshape(300, -1).astype(np.float64).mean(axis=0)
    np.testing.assert_array_equal(p.transform(VAL), VAL.reshape(40, -1) - mean)
    assert p.transform(VAL).shape == (40, 108) and p.transform(VAL).dtype == np.float64
    assert abs(p.transform(TRAIN).mean(axis=0)).max() < 1e-9


def test_channel_normalisation_is_the_pytorch_exercises():
    out = Preprocessor("channel", dtype="float32").fit(TRAIN).transform(VAL)
    want = (VAL.reshape(40, -1).astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_array_equal(out, want)
    assert out.dtype == np.float32 and out.min() >= -1 and out.max() <= 1


def test_scale_and_none():
    np.testing.assert_array_equal(Preprocessor("scale").fit(TRAIN).transform(VAL),
                                  VAL.reshape(40, -1) / 255.0)
    feats = RNG.randn(10, 4)
    np.testing.assert_array_equal(Preprocessor("none").fit(feats).transform(feats), feats)


@pytest.mark.parametrize("dtype,limit", [("float32", 0.55), ("float64", 1.05)])
def test_conversion_holds_at_most_one_float64_copy(dtype, limit):
    x = RNG.randint(0, 256, (2000, 32, 32, 3)).astype(np.uint8)
    f64_copy = x.size * 8
    tracemalloc.start()
    p = Preprocessor("mean", dtype=dtype).fit(x)
    fit_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    out = p.transform(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.dtype == np.dtype(dtype)
    assert fit_peak < 0.05 * f64_copy  # the mean is accumulated without a float copy
    assert peak < limit * f64_copy  # float32: half a float64 copy; float64: one


def test_pca_count_matches_scikit_learn_up_to_sign():
    p = Preprocessor("mean", pca=10).fit(TRAIN)
    z = p.transform(VAL)
    base = TRAIN.reshape(300, -1) - TRAIN.reshape(300, -1).mean(axis=0)
    sk = PCA(n_components=10, svd_solver="full").fit(base)
    want = sk.transform(VAL.reshape(40, -1) - TRAIN.reshape(300, -1).mean(axis=0))
    assert z.shape == (40, 10)
    np.testing.assert_allclose(np.abs(z), np.abs(want), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p.explained_variance_curve[:10],
                               np.cumsum(sk.explained_variance_ratio_), rtol=1e-9)


def test_pca_variance_fraction_picks_the_smallest_count_reaching_it():
    p = Preprocessor("scale", pca=0.9).fit(TRAIN)
    curve = p.explained_variance_curve
    k = p.output_dim
    assert np.all(np.diff(curve) >= -1e-12) and curve[-1] == pytest.approx(1.0)
    assert curve[k - 1] >= 0.9 > curve[k - 2] and p.transform(VAL).shape == (40, k)
    assert Preprocessor("mean").fit(TRAIN).explained_variance_curve is None


def test_whitened_components_have_unit_variance_on_train():
    z = Preprocessor("mean", pca=8, whiten=True).fit(TRAIN).transform(TRAIN)
    np.testing.assert_allclose(z.var(axis=0, ddof=1), 1.0, rtol=1e-8)


def test_zca_whitens_the_training_pixels_and_keeps_their_layout():
    p = Preprocessor("zca", zca_eps=1e-6).fit(TRAIN)
    z = p.transform(TRAIN)
    assert z.shape == (300, 108)
    # the covariance of whitened training rows is the identity (eps ~ 0, N > D)
    cov = np.cov(z, rowvar=False)  # ddof 1, as scikit-learn's explained variance
    np.testing.assert_allclose(cov, np.eye(108), atol=1e-4)
    # W = C^(-1/2) is symmetric: ZCA, not PCA whitening (which rotates pixels away)
    np.testing.assert_allclose(p.zca, p.zca.T, atol=1e-10)
    # a larger eps damps the low-variance directions: the variance falls below 1
    damped = Preprocessor("zca", zca_eps=1.0).fit(TRAIN).transform(TRAIN)
    assert damped.var(axis=0).max() < 0.2
    # val is centred with the training mean and whitened with the training matrix
    x = VAL.reshape(40, -1) / 255.0 - TRAIN.reshape(300, -1).mean(axis=0) / 255.0
    np.testing.assert_allclose(p.transform(VAL), x @ p.zca, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kw", [{"kind": "mean"}, {"kind": "channel", "dtype": "float32"},
                                {"kind": "zca", "zca_eps": 0.01},
                                {"kind": "mean", "pca": 0.95, "whiten": True},
                                {"kind": "scale", "pca": 12.0}])
def test_state_reloads_without_pickle_and_transforms_identically(tmp_path, kw):
    p = Preprocessor(**kw).fit(TRAIN)
    np.savez(tmp_path / "prep.npz", **p.state())
    with np.load(tmp_path / "prep.npz", allow_pickle=False) as d:
        q = Preprocessor.from_state(d)
    np.testing.assert_array_equal(q.transform(VAL), p.transform(VAL))
    assert (q.kind, q.pca, q.whiten, q.dtype, q.zca_eps) == \
        (p.kind, p.pca, p.whiten, p.dtype, p.zca_eps)


@pytest.mark.parametrize("kw,msg", [({"kind": "whiten"}, "unknown kind"),
                                    ({"kind": "zca", "zca_eps": 0}, "zca_eps must be"),
                                    ({"kind": "zca", "pca": 10}, "does not combine"),
                                    ({"pca": 0}, "pca must be"),
                                    ({"pca": 2.5}, "must be whole"),
                                    ({"whiten": True}, "whiten needs pca"),
                                    ({"dtype": "int8"}, "dtype")])
def test_bad_settings_fail_at_once(kw, msg):
    with pytest.raises(FcnetError, match=msg):
        Preprocessor(**kw)


def test_bad_use_fails_clearly():
    with pytest.raises(FcnetError, match="more than the"):
        Preprocessor("mean", pca=500).fit(TRAIN)
    p = Preprocessor("mean").fit(TRAIN)
    with pytest.raises(FcnetError, match="rows of 108 values"):
        p.transform(np.zeros((2, 5, 5, 3), np.uint8))
    with pytest.raises(FcnetError, match="before fit"):
        Preprocessor().transform(VAL)
    with pytest.raises(FcnetError, match="preprocess state"):
        Preprocessor.from_state({"kind": np.array("mean")})


def test_a_pca_is_fitted_once_per_machine_and_read_back_exactly(tmp_path, monkeypatch):
    # a study's workers and its report each prepared the PCA data and refitted it (~15 s
    # each on CIFAR-10); the fit is now cached on disk and the transform stays the same
    from fcnet.config import make_config
    from fcnet.training import prepare as prep_mod

    monkeypatch.setenv("FCNET_DATA", str(tmp_path))
    config = make_config({"dataset": "digits", "pca": 0.9})
    first = prep_mod.prepare(config)
    assert len(list((tmp_path / "fitted").glob("*.npz"))) == 1
    prep_mod._CACHE.clear()

    def refit(self, x):
        raise AssertionError("the PCA was fitted again")

    monkeypatch.setattr(Preprocessor, "fit", refit)
    again = prep_mod.prepare(config)
    assert np.array_equal(first.X_train, again.X_train) and np.array_equal(first.X_val, again.X_val)
    prep_mod._CACHE.clear()
    (next((tmp_path / "fitted").glob("*.npz"))).write_bytes(b"damaged")  # fitted again
    monkeypatch.undo()
    monkeypatch.setenv("FCNET_DATA", str(tmp_path))
    assert np.array_equal(prep_mod.prepare(config).X_train, first.X_train)
    prep_mod._CACHE.clear()


def test_the_report_reads_a_pca_curve_without_transforming_the_data(tmp_path, monkeypatch):
    # the study report's explained-variance curve transformed all of CIFAR-10 for it (1.4 s)
    from fcnet.config import make_config
    from fcnet.training import prepare as prep_mod

    monkeypatch.setenv("FCNET_DATA", str(tmp_path))
    monkeypatch.setattr(prep_mod, "_CACHE", {})
    config = make_config({"dataset": "digits", "pca": 0.9})

    def transform(self, x):
        raise AssertionError("the data was transformed")

    with monkeypatch.context() as m:
        m.setattr(Preprocessor, "transform", transform)
        curve = prep_mod.preprocessor(config).explained_variance_curve
    prepared = prep_mod.prepare(config).prep
    assert np.array_equal(curve, prepared.explained_variance_curve)
    assert prep_mod.preprocessor(config) is prepared  # a prepared config's own
