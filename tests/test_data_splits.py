"""Splits are reproducible, stratified on class-sorted sources, positional on the
official batches, recorded (sizes, seed, hash); get_CIFAR10_data is the course's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _data_util import cifar_batches, cifar_tree, rows_to_images

from fcnet.data import Dataset, Split, get_CIFAR10_data, load_splits, make_splits
from fcnet.data.splits import stratified


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FCNET_DATA", str(tmp_path / "cache"))


def sorted_source(per_class=(50, 30, 20), n_test=12) -> Dataset:
    """A class-sorted source whose rows carry their own index as the feature."""
    y = np.repeat(np.arange(len(per_class)), per_class)
    x = np.arange(len(y), dtype=float)[:, None]
    yt = np.arange(n_test) % len(per_class)
    return Dataset("imagefolder", {"train": Split(x, y),
                                   "test": Split(np.arange(n_test, dtype=float)[:, None], yt)},
                   ["a", "b", "c"], "memory")


def test_stratified_split_keeps_each_class_share_and_partitions_the_rows():
    ds = sorted_source()
    d = make_splits(ds, val_size=10, seed=3)
    assert d.val.class_counts(3) == [5, 3, 2]  # 50:30:20 of 10
    assert d.train.class_counts(3) == [45, 27, 18]
    rows = np.concatenate([d.train.x[:, 0], d.val.x[:, 0]])
    assert sorted(rows) == list(range(100))  # disjoint, and together all of train
    np.testing.assert_array_equal(d.train.y, ds.parts["train"].y[d.train.x[:, 0].astype(int)])


def test_same_seed_same_split_other_seed_other_split():
    ds = sorted_source()
    a, b, c = (make_splits(ds, val_size=10, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert a.meta["split"]["hash"] == b.meta["split"]["hash"] != c.meta["split"]["hash"]
    assert not np.array_equal(a.val.x, c.val.x)
    assert a.meta["split"] == {"val_size": 10, "test_size": 12, "train_size": 90, "seed": 7,
                               "method": "stratified", "hash": a.meta["split"]["hash"]}


def test_recorded_sizes_reproduce_the_split():
    ds = sorted_source()
    a = make_splits(ds, seed=1)  # defaults: 10% val, the whole test split
    s = a.meta["split"]
    b = make_splits(ds, val_size=s["val_size"], test_size=s["test_size"], seed=s["seed"],
                    train_size=s["train_size"])
    assert b.meta["split"]["hash"] == s["hash"]
    np.testing.assert_array_equal(a.test.x, ds.parts["test"].x)  # whole test, in order


def test_stratified_draw_smaller_than_the_number_of_classes():
    y = np.repeat(np.arange(10), 7)
    picked, rest = stratified(y, 3, np.random.default_rng(0))
    assert len(picked) == 3 and len(set(y[picked])) == 3
    assert sorted(np.concatenate([picked, rest])) == list(range(70))


def test_test_subset_is_stratified_for_sorted_sources():
    d = make_splits(sorted_source(n_test=30), val_size=5, test_size=9)
    assert d.test.class_counts(3) == [3, 3, 3]


def test_split_of_the_jpeg_like_tree_has_every_class_in_val(tmp_path):
    cifar_tree(tmp_path / "tree", n_train=6)
    d = load_splits("cifar10", str(tmp_path / "tree"), val_size=10, progress=False)
    assert d.val.class_counts(10) == [1] * 10 and (d.train.n, d.test.n) == (50, 20)
    json.dumps(d.meta)  # JSON-serialisable as recorded in runs


def test_digits_carves_a_stratified_test_split():
    d = load_splits("digits", progress=False)
    assert (d.train.n, d.val.n, d.test.n) == (1294, 144, 359)
    counts = np.array(d.test.class_counts(10))
    assert counts.min() >= 35 and counts.max() <= 37
    e = load_splits("digits", val_size=100, test_size=200, seed=4, progress=False)
    assert (e.train.n, e.val.n, e.test.n) == (1497, 100, 200)


def reference_get_cifar10(src, num_training, num_validation, num_test):
    """The exercise's data_utils: float arrays, masks by position, mean image off."""
    X_train = rows_to_images(src["train_rows"]).astype("float")
    y_train = np.array(src["train_labels"])
    X_test = rows_to_images(src["test_rows"]).astype("float")
    y_test = np.array(src["test_labels"])
    mask = range(num_training, num_training + num_validation)
    X_val, y_val = X_train[mask], y_train[mask]
    mask = range(num_training)
    X_train, y_train = X_train[mask], y_train[mask]
    mask = range(num_test)
    X_test, y_test = X_test[mask], y_test[mask]
    mean_image = np.mean(X_train, axis=0)
    X_train -= mean_image
    X_val -= mean_image
    X_test -= mean_image
    return (X_train.reshape(num_training, -1), y_train, X_val.reshape(num_validation, -1), y_val,
            X_test.reshape(num_test, -1), y_test)


def test_get_cifar10_data_is_the_exercises_exactly(tmp_path):
    src = cifar_batches(tmp_path / "b", per_batch=5)
    got = get_CIFAR10_data(15, 4, 3, path=str(tmp_path / "b"))
    want = reference_get_cifar10(src, 15, 4, 3)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype or (g.dtype.kind == w.dtype.kind == "i")
        np.testing.assert_array_equal(g, w)


def test_get_cifar10_data_on_an_image_tree(tmp_path):
    cifar_tree(tmp_path / "tree", n_train=5)
    X_train, y_train, X_val, y_val, X_test, y_test = get_CIFAR10_data(
        30, 10, 10, path=str(tmp_path / "tree"))
    assert X_train.shape == (30, 48) and X_val.shape == (10, 48) and X_test.shape == (10, 48)
    assert X_train.dtype == np.float64 and abs(X_train.mean(axis=0)).max() < 1e-9
    assert sorted(np.bincount(y_val)) == [1] * 10 and sorted(np.bincount(y_test)) == [1] * 10
