"""`fcnet data info` and `fcnet data show`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _data_util import CIFAR, cifar_tree, pack
from PIL import Image

from fcnet.cli import main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FCNET_DATA", str(tmp_path / "cache"))


@pytest.fixture
def tree(tmp_path):
    cifar_tree(tmp_path / "tree", n_train=4, n_test=2)
    return pack(tmp_path / "tree", tmp_path / "cifar.tar.gz")


def test_info_json_reports_every_split(tree, capsys):
    rc = main(["data", "info", "cifar10", "--path", str(tree), "--val-size", "10", "--json",
               "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["dataset"] == "cifar10" and out["classes"] == CIFAR
    assert {k: v["n"] for k, v in out["splits"].items()} == {"train": 30, "val": 10, "test": 20}
    assert out["splits"]["val"]["class_counts"] == [1] * 10
    assert out["splits"]["test"]["shape"] == [4, 4, 3]
    assert out["split"]["seed"] == 0 and len(out["split"]["hash"]) == 16
    assert len(out["checksum"]) == 64


def test_info_text_has_the_per_class_table(tree, capsys):
    assert main(["data", "info", "cifar10", "--path", str(tree), "--val-size", "10",
                 "--seed", "3", "--test-size", "10", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "seed 3" in out and "4x4x3 uint8 images" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["truck"] == ["3", "1", "1"] and rows["total"] == ["30", "10", "10"]


def test_show_writes_a_grid_image(tree, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "show", "cifar10", "--path", str(tree), "--val-size", "10",
                 "--out", str(out), "--per-class", "3", "--split", "test", "--quiet"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 100
        assert np.asarray(im.convert("L")).std() > 10  # not a blank picture


def test_show_refuses_feature_datasets_and_missing_folders(tmp_path, capsys):
    assert main(["data", "show", "toy", "--out", str(tmp_path / "g.png"), "--quiet"]) == 2
    assert "feature rows" in capsys.readouterr().err
    assert main(["data", "show", "digits", "--out", str(tmp_path / "no" / "g.png"),
                 "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("action", ["info", "show"])
def test_help_explains_every_flag(action, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", action, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    flags = ["--path", "--val-size", "--test-size", "--seed", "--quiet", "--no-cache"]
    flags += ["--json"] if action == "info" else ["--out", "--split", "--per-class"]
    for flag in flags:
        assert flag in text
    assert "cifar-10-batches-py" in text and "default" in text


def test_real_process_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00broken")
    r = subprocess.run([sys.executable, "-m", "fcnet", "data", "info", "cifar10", "--path",
                        str(bad)], capture_output=True, text=True,
                       env={"FCNET_DATA": str(tmp_path / "c"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "bad.tar.gz" in r.stderr
    assert "Traceback" not in r.stderr
