"""Every source loads into the same Dataset shape: uint8 images (N, H, W, C) or
features, int64 labels, class names, provenance; the decoded cache and the
official download behave."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from _data_util import (
    CIFAR,
    cache_leftovers,
    cifar_batches,
    cifar_tree,
    idx_set,
    image_tree,
    pack,
    rows_to_images,
)

from fcnet.data import DATASETS, imagefolder, load_dataset, load_splits
from fcnet.data import cifar10 as cifar_mod


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FCNET_DATA", str(d))
    return d


@pytest.mark.parametrize("bytes_keys,protocol", [(False, 2), (True, 2), (True, 5)])
def test_official_batches_decode_to_hwc_images_in_official_order(tmp_path, bytes_keys, protocol):
    src = cifar_batches(tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys,
                        protocol=protocol)
    ds = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", progress=False)
    assert ds.classes == CIFAR and ds.ordered
    assert ds.parts["train"].x.shape == (20, 4, 4, 3) and ds.parts["train"].x.dtype == np.uint8
    np.testing.assert_array_equal(ds.parts["train"].x, rows_to_images(src["train_rows"]))
    np.testing.assert_array_equal(ds.parts["train"].y, src["train_labels"])
    np.testing.assert_array_equal(ds.parts["test"].x, rows_to_images(src["test_rows"]))
    assert ds.parts["test"].y.dtype == np.int64


def test_official_batches_found_in_parent_folder_and_in_archive(tmp_path):
    src = cifar_batches(tmp_path / "d" / "cifar-10-batches-py")
    archive = pack(tmp_path / "d", tmp_path / "cifar-10-python.tar.gz")
    for p in (tmp_path / "d", archive):
        ds = load_dataset("cifar10", p, progress=False)
        np.testing.assert_array_equal(ds.parts["train"].x, rows_to_images(src["train_rows"]))
        assert ds.meta["format"] == "official python batches"


def test_official_split_is_the_exercises_positional_one(tmp_path):
    cifar_batches(tmp_path / "b")
    ds = load_dataset("cifar10", tmp_path / "b", progress=False)
    data = load_splits("cifar10", str(tmp_path / "b"), val_size=3, test_size=4, progress=False)
    x = ds.parts["train"].x
    np.testing.assert_array_equal(data.train.x, x[:17])  # train = the first rows
    np.testing.assert_array_equal(data.val.x, x[17:20])  # val = the rows after them
    np.testing.assert_array_equal(data.test.x, ds.parts["test"].x[:4])
    assert data.meta["split"]["method"] == "positional"


@pytest.mark.parametrize("form", ["dir", "tar", "tar.gz", "zip"])
def test_cifar10_image_tree_maps_folders_to_official_labels(tmp_path, form):
    written = cifar_tree(tmp_path / "tree")
    src = tmp_path / "tree" if form == "dir" else pack(tmp_path / "tree", tmp_path / f"c.{form}")
    ds = load_dataset("cifar10", src, progress=False)
    assert ds.classes == CIFAR and not ds.ordered
    tr = ds.parts["train"]
    assert tr.x.shape == (30, 4, 4, 3) and list(np.bincount(tr.y)) == [3] * 10
    # "truck" is label 9 whatever the folder order; rows follow file names
    np.testing.assert_array_equal(tr.x[tr.y == 9], np.stack(written[("train", "truck")]))
    np.testing.assert_array_equal(ds.parts["test"].x[ds.parts["test"].y == 0],
                                  np.stack(written[("test", "airplane")]))


def test_imagefolder_classes_sorted_greyscale_wrapping_folder_and_val(tmp_path):
    root = tmp_path / "t" / "mydata"  # one wrapping folder is looked through
    w = image_tree(root, {"train": {"zebra": 3, "ant": 2}, "valid": {"zebra": 1, "ant": 1},
                          "test": {"ant": 2}}, size=5, channels=1)
    (root / "train" / "ant" / "notes.txt").write_text("not an image, ignored")
    (root / "README").write_text("ignored")
    archive = pack(tmp_path / "t", tmp_path / "t.zip")
    ds = load_dataset("imagefolder", archive, progress=False)
    assert ds.classes == ["ant", "zebra"]
    assert ds.parts["train"].x.shape == (5, 5, 5, 1)
    np.testing.assert_array_equal(ds.parts["train"].x[:2], np.stack(w[("train", "ant")]))
    assert set(ds.parts) == {"train", "val", "test"}
    data = load_splits("imagefolder", str(archive), progress=False)
    assert (data.val.n, data.test.n, data.train.n) == (2, 2, 5)  # predefined val kept whole


def test_jpeg_images_decode_close_to_their_pixels(tmp_path):
    w = image_tree(tmp_path / "j", {"train": {"a": 2, "b": 2}}, size=16, fmt="jpg")
    ds = load_dataset("imagefolder", tmp_path / "j", progress=False)
    err = np.abs(ds.parts["train"].x[0].astype(int) - w[("train", "a")][0]).mean()
    assert ds.parts["train"].x.shape == (4, 16, 16, 3) and err < 60  # lossy, but the same image


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    cifar_tree(tmp_path / "tree", n_train=4)
    archive = pack(tmp_path / "tree", tmp_path / "c.tar.gz")
    monkeypatch.setattr(imagefolder, "CHUNK", 7)  # many chunks -> a worker pool
    monkeypatch.setenv("FCNET_DATA_WORKERS", "2")
    par = load_dataset("cifar10", archive, progress=False, cache=False)
    monkeypatch.setenv("FCNET_DATA_WORKERS", "1")
    ser = load_dataset("cifar10", archive, progress=False, cache=False)
    for part in ("train", "test"):
        np.testing.assert_array_equal(par.parts[part].x, ser.parts[part].x)
        np.testing.assert_array_equal(par.parts[part].y, ser.parts[part].y)


@pytest.mark.parametrize("name,gz,sep", [("mnist", True, "-"), ("fashion-mnist", False, "."),
                                         ("mnist", False, "-")])
def test_idx_files_gzipped_or_raw(tmp_path, name, gz, sep):
    w = idx_set(tmp_path / "m", gz=gz, sep=sep)
    ds = load_dataset(name, tmp_path / "m", progress=False)
    assert ds.parts["train"].x.shape == (12, 6, 6, 1) and ds.parts["test"].x.shape == (5, 6, 6, 1)
    np.testing.assert_array_equal(ds.parts["train"].x[..., 0], w["train"][0])
    np.testing.assert_array_equal(ds.parts["test"].y, w["t10k"][1])
    assert len(ds.classes) == 10 and (ds.classes[9] == "Ankle boot") == (name == "fashion-mnist")


def test_idx_default_location_is_the_cache(cache):
    idx_set(cache / "mnist")
    assert load_dataset("mnist", progress=False).parts["train"].x.shape[0] == 12


def test_digits_and_toy_builtins():
    d = load_splits("digits", progress=False)
    assert d.train.x.dtype == np.uint8 and d.image_shape == (8, 8, 1)
    assert d.train.x.max() == 255 and d.train.n + d.val.n + d.test.n == 1797
    t = load_splits("toy", progress=False)
    expect = 10 * np.random.RandomState(1).randn(5, 4)
    for s in (t.train, t.val, t.test):
        np.testing.assert_array_equal(s.x, expect)
        np.testing.assert_array_equal(s.y, [0, 1, 2, 2, 1])
    assert t.image_shape is None and set(DATASETS) >= {"cifar10", "imagefolder", "mnist",
                                                       "fashion-mnist", "digits", "toy"}


def test_second_load_comes_from_the_cache_and_matches(tmp_path, cache):
    cifar_tree(tmp_path / "tree")
    archive = pack(tmp_path / "tree", tmp_path / "c.tar.gz")
    a = load_dataset("cifar10", archive, progress=False)
    b = load_dataset("cifar10", archive, progress=False)
    assert (a.meta["cache"], b.meta["cache"]) == ("miss", "hit")
    assert a.checksum == b.checksum == hashlib.sha256(archive.read_bytes()).hexdigest()
    for part in ("train", "test"):
        np.testing.assert_array_equal(a.parts[part].x, b.parts[part].x)
        np.testing.assert_array_equal(a.parts[part].y, b.parts[part].y)
    entries = cache_leftovers(cache)
    assert len(entries) == 1 and entries[0].startswith("decoded/cifar10-")
    assert entries[0].endswith(".npz")
    np.load(cache / entries[0], allow_pickle=False).close()  # plain arrays, no pickle
    moved = archive.rename(tmp_path / "elsewhere.tar.gz")  # same content, same entry
    c = load_dataset("cifar10", moved, progress=False)
    assert c.meta["cache"] == "hit" and c.source == str(moved)


def test_cache_is_invalidated_when_the_source_changes(tmp_path):
    cifar_tree(tmp_path / "tree")
    load_dataset("cifar10", tmp_path / "tree", progress=False)
    (tmp_path / "tree" / "train" / "cat" / "000.png").unlink()
    ds = load_dataset("cifar10", tmp_path / "tree", progress=False)
    assert ds.meta["cache"] == "miss" and ds.parts["train"].n == 29


def test_damaged_cache_entry_is_rebuilt(tmp_path, cache):
    cifar_tree(tmp_path / "tree")
    first = load_dataset("cifar10", tmp_path / "tree", progress=False)
    (entry,) = (cache / "decoded").iterdir()
    entry.write_bytes(entry.read_bytes()[:100])
    again = load_dataset("cifar10", tmp_path / "tree", progress=False)
    assert again.meta["cache"] == "miss"
    np.testing.assert_array_equal(first.parts["train"].x, again.parts["train"].x)


def test_download_verifies_md5_then_serves_from_cache(tmp_path, cache, monkeypatch):
    src = cifar_batches(tmp_path / "d" / "cifar-10-batches-py")
    archive = pack(tmp_path / "d", tmp_path / "served.tar.gz")
    monkeypatch.setattr(cifar_mod, "URL", archive.as_uri())
    monkeypatch.setattr(cifar_mod, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    ds = load_dataset("cifar10", progress=False)
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    np.testing.assert_array_equal(ds.parts["test"].x, rows_to_images(src["test_rows"]))
    archive.unlink()  # no second download: the cached archive is used
    assert load_dataset("cifar10", progress=False).meta["cache"] == "hit"


def test_no_network_says_where_to_put_the_file(cache, monkeypatch):
    monkeypatch.setattr(cifar_mod, "URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    from fcnet.errors import FcnetError

    with pytest.raises(FcnetError) as e:
        load_dataset("cifar10", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(cache) in msg and "--path" in msg
    assert "cifar-10-python.tar.gz" in msg and cache_leftovers(cache) == []


def test_cache_dir_defaults_to_user_cache(monkeypatch, tmp_path):
    from fcnet.data import cache_dir

    monkeypatch.delenv("FCNET_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "fcnet"
    monkeypatch.setenv("FCNET_DATA", os.fspath(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
