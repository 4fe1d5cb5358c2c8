"""Every malformed input gets fcnet's own error: one line naming the file and the
problem, exit status 2, no traceback, nothing left in the cache."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _data_util import (
    CIFAR,
    cache_leftovers,
    cifar_batches,
    cifar_tree,
    idx_bytes,
    idx_set,
    image_tree,
    pack,
    png_bytes,
    tar_with,
)

from fcnet.cli import main
from fcnet.data import cifar10 as cifar_mod
from fcnet.data import load_dataset
from fcnet.errors import FcnetError
from fcnet.files import atomic_path


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FCNET_DATA", str(d))
    return d


def fails(capsys, cache: Path, args: list[str], *expect: str, leftovers=()) -> str:
    """Run `fcnet data info ARGS`; check exit 2, one line naming the problem, clean cache."""
    rc = main(["data", "info", *args, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcnet: error: "), err
    assert "Traceback" not in err
    for e in expect:
        assert e in lines[0], lines[0]
    if leftovers is None:  # the data itself was fine: only complete cache entries
        assert not [f for f in cache_leftovers(cache) if ".tmp-" in f]
    else:
        assert cache_leftovers(cache) == list(leftovers)
    return lines[0]


def tree_archive(tmp_path, name="c.tar.gz", **kw) -> Path:
    cifar_tree(tmp_path / "tree", **kw)
    return pack(tmp_path / "tree", tmp_path / name)


# --- truncated or corrupt archives -----------------------------------------------------

@pytest.mark.parametrize("name", ["c.tar.gz", "c.tar", "c.zip"])
def test_truncated_archive(tmp_path, capsys, cache, name):
    a = tree_archive(tmp_path, name)
    a.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
    fails(capsys, cache, ["cifar10", "--path", str(a), "--val-size", "5"],
          name, "truncated or corrupt archive")


def test_corrupt_gzip_data(tmp_path, capsys, cache):
    a = tree_archive(tmp_path)
    raw = bytearray(a.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[i] ^= 0x5A
    a.write_bytes(bytes(raw))
    fails(capsys, cache, ["cifar10", "--path", str(a), "--val-size", "5"], "c.tar.gz",
          "corrupt")


def test_corrupt_zip_member_fails_its_crc(tmp_path, capsys, cache):
    a = tree_archive(tmp_path, "c.zip")
    raw = bytearray(a.read_bytes())
    i = raw.index(b"IDAT") + 6
    raw[i] ^= 0xFF
    a.write_bytes(bytes(raw))
    fails(capsys, cache, ["cifar10", "--path", str(a), "--val-size", "5"], "c.zip",
          "truncated or corrupt archive")


# --- MD5 ---------------------------------------------------------------------------------

def test_download_with_wrong_md5_keeps_nothing(tmp_path, capsys, cache, monkeypatch):
    served = tree_archive(tmp_path, "served.tar.gz")
    monkeypatch.setattr(cifar_mod, "URL", served.as_uri())
    fails(capsys, cache, ["cifar10"], "served.tar.gz", "MD5",
          hashlib.md5(served.read_bytes()).hexdigest(), cifar_mod.MD5)


def test_cached_official_archive_with_wrong_md5(tmp_path, capsys, cache):
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(tree_archive(tmp_path).read_bytes())
    fails(capsys, cache, ["cifar10"], "cifar-10-python.tar.gz", "does not match the published",
          leftovers=["cifar-10-python.tar.gz"])


# --- images ------------------------------------------------------------------------------

def test_undecodable_image(tmp_path, capsys, cache):
    cifar_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "cat" / "001.png").write_bytes(b"\x89PNG not really")
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "tree")], "001.png",
          "cannot decode the image")


def test_undecodable_image_inside_archive(tmp_path, capsys, cache):
    cifar_tree(tmp_path / "tree")
    (tmp_path / "tree" / "test" / "dog" / "000.png").write_bytes(b"garbage")
    a = pack(tmp_path / "tree", tmp_path / "c.zip")
    fails(capsys, cache, ["cifar10", "--path", str(a)], "c.zip", "test/dog/000.png",
          "cannot decode")


def test_images_of_mixed_sizes(tmp_path, capsys, cache):
    cifar_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "dog" / "002.png").write_bytes(
        png_bytes(np.zeros((5, 7, 3), np.uint8)))
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "tree")], "002.png", "7x5",
          "mixed sizes")


def test_empty_class_folder(tmp_path, capsys, cache):
    image_tree(tmp_path / "t", {"train": {"a": 2, "b": 2}})
    (tmp_path / "t" / "train" / "c").mkdir()
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "t")], str(tmp_path / "t"),
          "class folder train/c/ is empty")


def test_empty_class_folder_in_archive(tmp_path, capsys, cache):
    a = tar_with(tmp_path / "e.tar.gz", [
        ("train/a/0.png", png_bytes(np.zeros((4, 4, 3), np.uint8)), "file"),
        ("train/b/", None, "dir")])
    fails(capsys, cache, ["imagefolder", "--path", str(a)], "e.tar.gz",
          "class folder train/b/ is empty")


def test_class_with_test_images_but_no_training_images(tmp_path, capsys, cache):
    image_tree(tmp_path / "t", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1, "c": 1}})
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "t")], "class 'c'",
          "test images but no training images", leftovers=None)


def test_class_with_val_images_but_no_training_images(tmp_path, capsys, cache):
    image_tree(tmp_path / "t", {"train": {"a": 2}, "val": {"a": 1, "zebra": 1}})
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "t")], "class 'zebra'",
          "val images but no training images", leftovers=None)


def test_empty_split_folder(tmp_path, capsys, cache):
    image_tree(tmp_path / "t", {"train": {"a": 2, "b": 2}})
    (tmp_path / "t" / "test").mkdir()
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "t")],
          "split folder test/ is empty")


def test_no_images_at_all(tmp_path, capsys, cache):
    (tmp_path / "t" / "train" / "a").mkdir(parents=True)
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "t")], "no images found")


def test_image_outside_split_class_layout(tmp_path, capsys, cache):
    image_tree(tmp_path / "t", {"train": {"a": 2}})
    (tmp_path / "t" / "train" / "stray.png").write_bytes(png_bytes(np.zeros((4, 4, 3), np.uint8)))
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "t")], "train/stray.png",
          "not inside a split/class/ folder")


def test_unknown_split_folder(tmp_path, capsys, cache):
    image_tree(tmp_path / "t", {"train": {"a": 2}, "extra": {"a": 1}})
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "t")], "'extra'",
          "not a split folder")


def test_unknown_class_folder_for_cifar10(tmp_path, capsys, cache):
    cifar_tree(tmp_path / "tree")
    image_tree(tmp_path / "tree", {"train": {"unicorn": 1}})
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "tree")],
          "unknown class folder train/unicorn/", "airplane")


def test_missing_class_folder_for_cifar10(tmp_path, capsys, cache):
    image_tree(tmp_path / "tree", {"train": {c: 2 for c in CIFAR[:-1]}})
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "tree")], "lacks", "truck")


# --- archive members that would escape the target ----------------------------------------

PNG = png_bytes(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("member,data,kind,expect", [
    ("train/a/../../../evil.png", PNG, "file", "outside the target"),
    ("../train/a/0.png", PNG, "file", "outside the target"),
    ("/abs/train/a/0.png", PNG, "file", "absolute path"),
    ("train/a/link.png", b"/etc/passwd", "sym", "is a link"),
    ("train/a/hard.png", b"train/a/0.png", "link", "is a link"),
])
def test_tar_member_escaping_the_target(tmp_path, capsys, cache, member, data, kind, expect):
    a = tar_with(tmp_path / "x.tar.gz", [("train/a/0.png", PNG, "file"), (member, data, kind)])
    fails(capsys, cache, ["imagefolder", "--path", str(a)], "x.tar.gz", repr(member), expect)
    assert not (tmp_path / "evil.png").exists() and not Path("/abs").exists()


@pytest.mark.parametrize("member,expect", [("../evil.png", "outside the target"),
                                           ("/abs.png", "absolute path"),
                                           ("C:/win.png", "absolute path"),
                                           ("train/a/ln.png", "is a link")])
def test_zip_member_escaping_the_target(tmp_path, capsys, cache, member, expect):
    a = tmp_path / "x.zip"
    with zipfile.ZipFile(a, "w") as zf:
        zf.writestr("train/a/0.png", PNG)
        info = zipfile.ZipInfo(member)
        if "ln" in member:
            info.external_attr = 0o120777 << 16  # a symlink entry
        zf.writestr(info, b"/etc/passwd" if "ln" in member else PNG)
    fails(capsys, cache, ["imagefolder", "--path", str(a)], "x.zip", expect)


# --- IDX ---------------------------------------------------------------------------------

def test_idx_wrong_magic_number(tmp_path, capsys, cache):
    idx_set(tmp_path / "m")
    x = np.zeros((12, 6, 6), np.uint8)
    (tmp_path / "m" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(x, magic=0x00000801)))
    fails(capsys, cache, ["mnist", "--path", str(tmp_path / "m")],
          "train-images-idx3-ubyte.gz", "wrong magic number 0x00000801", "0x00000803")


def test_idx_label_count_does_not_match_images(tmp_path, capsys, cache):
    idx_set(tmp_path / "m", gz=False)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    fails(capsys, cache, ["mnist", "--path", str(tmp_path / "m")], "t10k-labels-idx1-ubyte",
          "4 labels for the 5 images")


def test_idx_truncated_data(tmp_path, capsys, cache):
    idx_set(tmp_path / "m", gz=False)
    p = tmp_path / "m" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    fails(capsys, cache, ["fashion-mnist", "--path", str(tmp_path / "m")],
          "train-images-idx3-ubyte", "header announces 12x6x6")


def test_idx_corrupt_gzip(tmp_path, capsys, cache):
    idx_set(tmp_path / "m")
    p = tmp_path / "m" / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-6])
    fails(capsys, cache, ["mnist", "--path", str(tmp_path / "m")], "train-labels-idx1-ubyte.gz",
          "corrupt gzip")


def test_idx_labels_out_of_range(tmp_path, capsys, cache):
    idx_set(tmp_path / "m", gz=False)
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.full(12, 12, np.uint8)))
    fails(capsys, cache, ["mnist", "--path", str(tmp_path / "m")], "train-labels-idx1-ubyte",
          "label 12 out of range")


def test_idx_file_missing(tmp_path, capsys, cache):
    idx_set(tmp_path / "m")
    (tmp_path / "m" / "t10k-images-idx3-ubyte.gz").unlink()
    fails(capsys, cache, ["mnist", "--path", str(tmp_path / "m")], "t10k-images-idx3-ubyte",
          "missing")


# --- official pickles --------------------------------------------------------------------

def rewrite_batch(root: Path, name: str, **change) -> None:
    d = pickle.loads((root / name).read_bytes(), encoding="latin1")
    d.update(change)
    (root / name).write_bytes(pickle.dumps(d, protocol=2))


def test_pickle_labels_out_of_range(tmp_path, capsys, cache):
    cifar_batches(tmp_path / "b")
    rewrite_batch(tmp_path / "b", "data_batch_2", labels=[0, 1, 13, 2])
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "b"), "--val-size", "2"],
          "data_batch_2", "label 13 out of range")


def test_pickle_label_count_mismatch(tmp_path, capsys, cache):
    cifar_batches(tmp_path / "b")
    rewrite_batch(tmp_path / "b", "test_batch", labels=[0, 1])
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "b")], "test_batch",
          "2 labels for 6 images")


def test_pickle_with_wrong_data_type(tmp_path, capsys, cache):
    cifar_batches(tmp_path / "b")
    rewrite_batch(tmp_path / "b", "data_batch_1", data=np.zeros((4, 48), np.float32))
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "b")], "data_batch_1",
          "2-D uint8")


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("fn,name", [(os.system, "system"), (eval, "builtin__.eval")])
def test_pickle_asking_for_other_types_is_refused_unrun(tmp_path, capsys, cache, fn, name):
    cifar_batches(tmp_path / "b")
    marker = tmp_path / "ran"
    arg = f"touch {marker}" if fn is os.system else f"open({str(marker)!r}, 'w')"
    payload = {"data": np.zeros((4, 48), np.uint8), "labels": [0, 1, 2, 3], "x": _Evil(fn, arg)}
    (tmp_path / "b" / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=2))
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "b")], "data_batch_3", name,
          "refusing")
    assert not marker.exists()


def test_truncated_pickle(tmp_path, capsys, cache):
    cifar_batches(tmp_path / "b")
    p = tmp_path / "b" / "data_batch_4"
    p.write_bytes(p.read_bytes()[:50])
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "b")], "data_batch_4",
          "truncated or corrupt pickle")


def test_missing_batch(tmp_path, capsys, cache):
    cifar_batches(tmp_path / "b")
    (tmp_path / "b" / "data_batch_5").unlink()
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "b")], "data_batch_5 is missing")


def test_forbidden_pickle_inside_official_archive(tmp_path, capsys, cache):
    cifar_batches(tmp_path / "d" / "cifar-10-batches-py")
    (tmp_path / "d" / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps(_Evil(os.system, "true"), protocol=2))
    a = pack(tmp_path / "d", tmp_path / "cifar.tar.gz")
    fails(capsys, cache, ["cifar10", "--path", str(a)], "cifar.tar.gz", "test_batch", "system")


# --- split sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("flags,expect", [
    ([], "val_size 1000 is larger than"),  # cifar10's default on 30 training images
    (["--val-size", "30"], "val_size 30 is larger than the 29"),
    (["--val-size", "5", "--test-size", "21"], "test_size 21 is larger than the 20"),
    (["--val-size", "0"], "val_size must be at least 1"),
    (["--val-size", "5", "--seed", "-1"], "seed must be a whole number >= 0"),
])
def test_split_sizes_larger_than_the_data(tmp_path, capsys, cache, flags, expect):
    cifar_tree(tmp_path / "tree")
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "tree"), *flags],
          str(tmp_path / "tree"), expect, leftovers=None)


def test_split_sizes_on_official_batches_and_digits(tmp_path, capsys, cache):
    cifar_batches(tmp_path / "b")
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "b"), "--val-size", "20"],
          "val_size 20 is larger", leftovers=None)
    fails(capsys, cache, ["digits", "--test-size", "1797"], "test_size 1797 is larger",
          leftovers=None)
    fails(capsys, cache, ["toy", "--val-size", "2"], "toy", "do not apply", leftovers=None)


# --- paths -----------------------------------------------------------------------------------

def test_bad_paths(tmp_path, capsys, cache):
    fails(capsys, cache, ["cifar10", "--path", str(tmp_path / "nope")], "nope",
          "no such file")
    (tmp_path / "notes.txt").write_text("x")
    fails(capsys, cache, ["imagefolder", "--path", str(tmp_path / "notes.txt")], "notes.txt",
          "not a folder or a .tar")
    fails(capsys, cache, ["imagefolder"], "needs --path")
    fails(capsys, cache, ["mnist"], str(cache / "mnist"), "--path")
    fails(capsys, cache, ["cifar100"], "unknown dataset 'cifar100'")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "c" / "entry.npz"
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list((tmp_path / "c").iterdir()) == []


def test_errors_are_fcnet_errors_through_the_api(tmp_path):
    cifar_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "cat" / "001.png").write_bytes(b"junk")
    with pytest.raises(FcnetError, match="001.png"):
        load_dataset("cifar10", tmp_path / "tree", progress=False)
