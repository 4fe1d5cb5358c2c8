"""`fcnet grade`'s inputs: .py, folder, .zip and folders of them; the rubric; faults
in the grader's own input as one line; and the static loop finder on its own."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
from test_grade import GOOD, LOOPED

from fcnet.cli import main
from fcnet.errors import FcnetError
from fcnet.grade.rubric import load_rubric
from fcnet.grade.static import find_loops
from fcnet.grade.submissions import collect

FCNET_OWN = "from fcnet import TwoLayerNet  # fcnet's own net, handed in as a student file\n"


def test_zip_and_folder_score_100_and_fcnets_own_net_is_flagged(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "carol.zip", "w") as zf:
        zf.writestr("carol/two_layernet.py", GOOD)
        zf.writestr("carol/notes.txt", "helper files travel along")
    (tmp_path / "dave").mkdir()
    (tmp_path / "dave" / "two_layernet.py").write_text(GOOD)
    (tmp_path / "fcnet_own.py").write_text(FCNET_OWN)
    out = tmp_path / "out"
    rc = main(["grade", str(tmp_path / "carol.zip"), str(tmp_path / "dave"), str(tmp_path / "fcnet_own.py"),
               "--out", str(out), "--jobs", "2", "--quiet"])
    assert rc == 0
    grades = {g["submission"]: g["score"] for g in json.loads((out / "grades.json").read_text())}
    assert grades == {"carol": 100.0, "dave": 100.0, "fcnet_own": 0.0}
    printed = capsys.readouterr().out
    assert printed.startswith("submission  score  passed  failed")
    assert re.search(r"^carol +100\.0 +12/12  -$", printed, re.M)
    assert re.search(r"^fcnet_own +0\.0 .*own_code", printed, re.M)


def test_a_folder_of_submissions_grades_each_and_flags_a_bad_entry(tmp_path):
    root = tmp_path / "subs"
    root.mkdir()
    (root / "erin.py").write_text(GOOD)
    (root / "frank.zip").write_bytes(b"not a zip")
    (root / "gina").mkdir()  # a folder without two_layernet.py
    (root / "README.txt").write_text("ignored")
    (root / "grades").mkdir()  # an earlier run's output, inside the folder graded
    subs = collect([root], exclude=[root / "grades"])
    assert [(s.name, s.problem) for s in subs] == [
        ("erin", None), ("frank", "not a valid zip file (File is not a zip file)"),
        ("gina", "no two_layernet.py in the folder")]


@pytest.mark.parametrize("make, error", [
    (lambda p: p / "missing.py", "missing.py: no such file or directory"),
    (lambda p: (p / "bad.zip").write_bytes(b"PK\x03\x04junk") and p / "bad.zip", "bad.zip: not a valid zip"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "empty: no two_layernet.py in the folder, and no "
     "submissions"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "a submission is a .py file"),
])
def test_faults_in_the_graders_input_are_one_line_and_exit_2(tmp_path, capsys, make, error):
    assert main(["grade", str(make(tmp_path)), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcnet: error: ") and error in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, error", [
    (["--template", "no-such-template.py"], "--template no-such-template.py: No such file or directory"),
    (["--similar", "1.5"], "--similar must be in (0, 1], got 1.5"),
])
def test_a_bad_template_or_similarity_threshold_is_one_line(tmp_path, capsys, extra, error):
    (tmp_path / "a.py").write_text(GOOD)
    assert main(["grade", str(tmp_path / "a.py"), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err == f"fcnet: error: {error}\n"
    assert not (tmp_path / "o").exists()


def test_a_zip_that_escapes_its_folder_is_refused(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("two_layernet.py", GOOD)
        zf.writestr("../../outside.py", "x = 1")
    assert main(["grade", str(tmp_path / "evil.zip")]) == 2
    assert "would land outside" in capsys.readouterr().err


def test_the_default_rubric_sums_to_100_for_each_dataset():
    r = load_rubric()
    assert sum(v for k, v in r.points.items() if k != "q3_cifar10") == 100
    assert sum(v for k, v in r.points.items() if k != "q3_digits") == 100


@pytest.mark.parametrize("text, error", [
    ("[points\nq1_loss = 1", "not valid TOML"),
    ("[points]\nq9 = 1", "unknown check 'q9'"),
    ("[points]\nq1_loss = 'ten'", "q1_loss must be a number"),
    ("[points]\nq1_loss = -1", "must not be negative"),
    ("[points]\nq1_loss = 0", "no check is worth any points"),
    ("[points]\nq1_loss = 1\n[extra]\n", "unknown table 'extra'"),
])
def test_a_bad_rubric_is_one_clear_line(tmp_path, capsys, text, error):
    (tmp_path / "r.toml").write_text(text)
    (tmp_path / "a.py").write_text(GOOD)
    assert main(["grade", str(tmp_path / "a.py"), "--rubric", str(tmp_path / "r.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fcnet: error: rubric {tmp_path / 'r.toml'}") and error in err
    assert err.count("\n") == 1


def test_a_rubric_overrides_points_and_thresholds(tmp_path):
    (tmp_path / "r.toml").write_text("[points]\nq3_digits = 3\n[thresholds]\nq3_digits = 0.5\n")
    r = load_rubric(tmp_path / "r.toml")
    assert r.points == {"q3_digits": 3.0} and r.thresholds == {"q3_digits": 0.5}
    with pytest.raises(FcnetError, match="no such file"):
        load_rubric(tmp_path / "none.toml")


def _folder(src: str, tmp_path, **helpers: str):
    """A submission's folder: two_layernet.py and helper modules (read, never imported)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in {"two_layernet": src, **helpers}.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


def test_static_check_flags_loops_over_samples_units_and_classes(tmp_path):
    src = GOOD.replace("    def loss(self, X, y=None, reg=0.0):\n",
                       "    def loss(self, X, y=None, reg=0.0):\n"
                       "        for row in X:\n            pass\n"
                       "        C = self.params['W2'].shape[1]\n"
                       "        _ = [c for c in range(C)]\n"
                       "        self._units()\n")
    src += ("\n    def _units(self):\n        j = 0\n"
            "        while j < self.params['W1'].shape[1]:\n            j += 1\n")
    found = [f.code for f in find_loops(_folder(src, tmp_path))]
    assert found == ["for row in X:", "_ = [c for c in range(C)]",
                     "while j < self.params['W1'].shape[1]:"]
    assert [(f.code, f.part) for f in find_loops(_folder(LOOPED, tmp_path))] == [("for i in range(N):",
                                                                                 "forward")]


def test_static_check_allows_loops_over_parameters_and_layers(tmp_path):
    src = GOOD.replace("    def loss(self, X, y=None, reg=0.0):\n",
                       "    def loss(self, X, y=None, reg=0.0):\n"
                       "        for k, v in self.params.items():\n            pass\n"
                       "        for name in ('W1', 'W2'):\n            pass\n"
                       "        l2 = sum(np.sum(W * W) for W in (self.params['W1'], self.params['W2']))\n"
                       "        for i in range(1, 3):\n            pass\n")
    assert find_loops(_folder(src, tmp_path)) == []


def test_static_check_splits_the_backward_pass_from_the_forward_pass_and_loss(tmp_path):
    """A loop only the gradients need is the backward pass's; one the loss depends on is Q1c's,
    whether it sits in loss itself, in a method or in a helper module."""
    onehot_for_grads = GOOD.replace("        dz3 = a3.copy()\n        dz3[np.arange(N), y] -= 1\n",
                                    "        onehot = np.zeros_like(a3)\n        for i in range(N):\n"
                                    "            onehot[i, y[i]] = 1\n        dz3 = a3 - onehot\n")
    found = find_loops(_folder(onehot_for_grads, tmp_path / "a"))
    assert [(f.code, f.part) for f in found] == [("for i in range(N):", "backward")]
    onehot_for_loss = GOOD.replace(
        "        loss = -np.log(a3[np.arange(N), y]).mean()",
        "        onehot = np.zeros_like(a3)\n        for i in range(N):\n            onehot[i, y[i]] = 1\n"
        "        loss = -np.sum(onehot * np.log(a3)) / N")
    found = find_loops(_folder(onehot_for_loss, tmp_path / "b"))
    assert [(f.code, f.part) for f in found] == [("for i in range(N):", "forward")]
    helper = GOOD.replace("import numpy as np\n", "import numpy as np\nfrom helpers import backward\n", 1)
    helper = helper.replace("        grads = {\"W2\"",
                            "        grads = backward(dz3, N)\n        grads = {\"W2\"")
    found = find_loops(_folder(helper, tmp_path / "c", helpers="def backward(d, n):\n"
                               "    for i in range(n):\n        d[i] = d[i]\n    return {}\n"))
    assert [(f.file, f.code, f.part) for f in found] == [("helpers.py", "for i in range(n):", "backward")]
