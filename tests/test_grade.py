"""`fcnet grade`: student-style submissions, correct and broken, graded in the sandbox.

Every submission here is written by the test itself.  GOOD is a plain student
implementation of the course contract (it does not import fcnet); each broken
one changes one thing, and the test names exactly the checks that must fail.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from fcnet.cli import main

pytestmark = pytest.mark.slow  # one grading of 16 submissions in the sandbox, two of them timing out

GOOD = '''\
import numpy as np


class TwoLayerNet:
    def __init__(self, input_size, hidden_size, output_size, std=1e-4):
        self.params = {
            "W1": std * np.random.randn(input_size, hidden_size),
            "b1": np.zeros(hidden_size),
            "W2": std * np.random.randn(hidden_size, output_size),
            "b2": np.zeros(output_size),
        }

    def loss(self, X, y=None, reg=0.0):
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        N = X.shape[0]
        z2 = X.dot(W1) + b1
        a2 = np.maximum(z2, 0)
        z3 = a2.dot(W2) + b2
        z3 = z3 - z3.max(axis=1, keepdims=True)
        e = np.exp(z3)
        a3 = e / e.sum(axis=1, keepdims=True)
        if y is None:
            return a3
        loss = -np.log(a3[np.arange(N), y]).mean() + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
        dz3 = a3.copy()
        dz3[np.arange(N), y] -= 1
        dz3 /= N
        grads = {"W2": a2.T.dot(dz3) + 2 * reg * W2, "b2": dz3.sum(axis=0)}
        dz2 = dz3.dot(W2.T) * (z2 > 0)
        grads["W1"] = X.T.dot(dz2) + 2 * reg * W1
        grads["b1"] = dz2.sum(axis=0)
        return loss, grads

    def train(self, X, y, X_val, y_val, learning_rate=1e-3, learning_rate_decay=0.95,
              reg=5e-6, num_iters=100, batch_size=200, verbose=False):
        num_train = X.shape[0]
        iterations_per_epoch = max(num_train // batch_size, 1)
        loss_history, train_acc_history, val_acc_history = [], [], []
        for it in range(num_iters):
            idx = np.random.choice(num_train, batch_size)
            loss, grads = self.loss(X[idx], y=y[idx], reg=reg)
            loss_history.append(loss)
            for k in self.params:
                self.params[k] -= learning_rate * grads[k]
            if it % iterations_per_epoch == 0:
                train_acc_history.append((self.predict(X[idx]) == y[idx]).mean())
                val_acc_history.append((self.predict(X_val) == y_val).mean())
                learning_rate *= learning_rate_decay
        return {"loss_history": loss_history, "train_acc_history": train_acc_history,
                "val_acc_history": val_acc_history}

    def predict(self, X):
        return np.argmax(self.loss(X), axis=1)
'''


def variant(old: str, new: str, src: str = GOOD) -> str:
    assert old in src, old
    return src.replace(old, new)


NO_SHIFT = variant("        z3 = z3 - z3.max(axis=1, keepdims=True)\n", "")
NO_REG_GRAD = variant("+ 2 * reg * W2", "").replace("+ 2 * reg * W1", "")
HALF_REG = variant("+ reg * (np.sum(W1 * W1)", "+ 0.5 * reg * (np.sum(W1 * W1)")
LOOPED = variant(
    "        z3 = z3 - z3.max(axis=1, keepdims=True)\n        e = np.exp(z3)\n"
    "        a3 = e / e.sum(axis=1, keepdims=True)\n",
    "        a3 = np.empty_like(z3)\n        for i in range(N):\n"
    "            e = np.exp(z3[i] - z3[i].max())\n            a3[i] = e / e.sum()\n")
SYNTAX = variant("    def predict(self, X):", "    def predict(self, X)")
CRASH = variant("        loss = -np.log", "        1 / 0\n        loss = -np.log")
EXITS = variant("        num_train = X.shape[0]\n", "        import os\n        os._exit(3)\n")
SEGV = variant("        num_train = X.shape[0]\n", "        import ctypes\n        ctypes.string_at(0)\n")
SPIN = "while True:\n    pass\n" + GOOD
SLEEP = "import time\ntime.sleep(10**6)\n" + GOOD
FORK = ("import os, time\nfor _ in range(300):\n    if os.fork() == 0:\n"
        "        time.sleep(30)\n        os._exit(0)\n" + GOOD)
HOG = "hog = bytearray(16 * 1024**3)\n" + GOOD
LOUD = "import sys\nfor _ in range(6000):\n    sys.stdout.write('x' * 1000 + '\\n')\n" + GOOD

# what must fail, exactly, for each broken submission
EXPECTED_FAILURES = {
    "good": set(),
    "no_shift": {"q1_stable"},  # feedback only: 0 points in the default rubric
    "no_reg_grad": {"q2_gradients", "q2_loops"},  # q2_loops is judged once the gradients are right
    "half_reg": {"q1_loss"},  # Q2 is judged on its own: these gradients are right
    "looped": {"q1c_loops", "q1c_scaling"},
    "crash": {"q1_loss", "q2_gradients", "q2_loops", "q1c_scaling", "q3_toy_training", "q3_digits"},
    "loud": set(),
}
SCORES = {"good": 100.0, "no_shift": 100.0, "no_reg_grad": 75.0, "half_reg": 85.0, "looped": 90.0,
          "crash": 25.0, "loud": 100.0}
ALL = {"load", "own_code", "init", "q1_scores", "q1_stable", "q1_loss", "q1c_loops", "q1c_scaling",
       "q2_gradients", "q2_loops", "q3_toy_training", "q3_digits"}


def escaping(target: Path, port: int) -> str:
    """Tries to write outside its folder and to connect to the test's socket at import,
    prints what happened, and is otherwise GOOD (so it must still score 100)."""
    return (
        "import socket\n"
        "open('scratch.txt', 'w').write('own folder is writable')\n"
        f"for path in ({str(target)!r}, '/etc/fcnet-grade-escape'):\n"
        "    try:\n"
        "        open(path, 'w').write('escaped')\n"
        "        print('WROTE', path)\n"
        "    except OSError as err:\n"
        "        print('write blocked:', err)\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    print('CONNECTED')\n"
        "except OSError as err:\n"
        "    print('socket blocked:', err)\n"
        + GOOD)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading of a folder of submissions: every kind at once (2 jobs)."""
    root = tmp_path_factory.mktemp("grade")
    subs = root / "subs"
    subs.mkdir()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    escape_target = root / "escaped.txt"
    # outside /tmp (bwrap hides the host's /tmp), in a folder that exists: the tests' own
    writer_target = Path(__file__).with_name(".fcnet-grade-escape.txt")
    writer_target.unlink(missing_ok=True)
    files = {"writer": f"open({str(writer_target)!r}, 'w').write('escaped')\n" + GOOD,
             "good": GOOD, "no_shift": NO_SHIFT, "no_reg_grad": NO_REG_GRAD, "half_reg": HALF_REG,
             "looped": LOOPED, "syntax": SYNTAX, "crash": CRASH, "spin": SPIN, "sleep": SLEEP,
             "fork": FORK, "hog": HOG, "loud": LOUD, "exits": EXITS, "segv": SEGV,
             "escape": escaping(escape_target, server.getsockname()[1])}
    for name, src in files.items():
        (subs / f"{name}.py").write_text(src)
    out = root / "out"
    rc = main(["grade", str(subs), "--out", str(out), "--timeout", "6", "--jobs", "2", "--quiet"])
    try:
        server.accept()
        connected = True
    except BlockingIOError:
        connected = False
    finally:
        server.close()
    grades = {g["submission"]: g for g in json.loads((out / "grades.json").read_text())}
    from fcnet.grade.sandbox import Sandbox

    escaped_write = writer_target.exists()
    writer_target.unlink(missing_ok=True)
    return {"rc": rc, "grades": grades, "out": out, "escape_target": escape_target,
            "escaped_write": escaped_write, "connected": connected, "mode": Sandbox.detect("auto").mode}


def failed(g: dict) -> set[str]:
    return {c["name"] for c in g["checks"] if not c["passed"]}


def message(g: dict, name: str) -> str:
    return next(c["message"] for c in g["checks"] if c["name"] == name)


@pytest.mark.parametrize("name", sorted(EXPECTED_FAILURES))
def test_each_submission_fails_exactly_the_expected_checks(graded, name):
    g = graded["grades"][name]
    assert failed(g) == EXPECTED_FAILURES[name], [(c["name"], c["message"]) for c in g["checks"]
                                                   if not c["passed"]]
    assert g["score"] == SCORES[name]
    assert {c["name"] for c in g["checks"]} == ALL


def test_the_correct_submission_scores_100_with_the_reference_numbers(graded):
    g = graded["grades"]["good"]
    assert graded["rc"] == 0 and g["score"] == 100.0
    checks = {c["name"]: c for c in g["checks"]}
    assert checks["q1_scores"]["value"] < 1e-7 and checks["q1_loss"]["value"] < 1e-12
    assert checks["q3_toy_training"]["value"] == pytest.approx(0.01714960793873205, abs=1e-12)
    assert checks["q3_digits"]["value"] >= 0.9
    assert set(checks["q1_scores"]) == {"name", "passed", "value", "threshold", "message"}


def test_broken_maths_explain_themselves(graded):
    G = graded["grades"]
    assert "2 * reg * W" in message(G["no_reg_grad"], "q2_gradients")
    assert "0.5 * reg" in message(G["half_reg"], "q1_loss")
    assert "subtract each row's max" in message(G["no_shift"], "q1_stable")
    assert "for i in range(N):" in message(G["looped"], "q1c_loops")
    scaling = next(c for c in G["looped"]["checks"] if c["name"] == "q1c_scaling")
    assert scaling["value"] > 10  # per-sample time vs a plain vectorised loss
    assert "0 points in the default rubric" in message(G["no_shift"], "q1_stable")


def test_a_crash_is_a_failed_check_with_the_exceptions_last_line(graded):
    G = graded["grades"]
    assert "ZeroDivisionError: division by zero (two_layernet.py, line" in message(G["crash"], "q1_loss")
    g = G["syntax"]
    assert g["score"] == 0 and failed(g) == ALL - {"own_code"}  # its imports (none) were recorded
    line = GOOD.splitlines().index("    def predict(self, X):") + 1
    assert message(g, "load").startswith("SyntaxError:")
    assert message(g, "load").endswith(f"(two_layernet.py, line {line})")
    assert message(g, "q1_scores") == "not run: two_layernet.py did not load"


@pytest.mark.parametrize("name, reason", [
    ("exits", "exited with status 3 before the checks finished"),
    ("segv", "killed by SIGSEGV"),
])
def test_a_process_that_dies_mid_check_keeps_the_checks_before_it(graded, name, reason):
    g = graded["grades"][name]
    assert failed(g) == {"q3_toy_training", "q3_digits"}
    assert message(g, "q3_toy_training") == reason
    assert message(g, "q3_digits") == "not run: the submission was stopped during q3_toy_training"
    assert message(g, "own_code") == "imports nothing of fcnet's"  # recorded at load, before the death
    assert g["score"] == 70.0


@pytest.mark.parametrize("name", ["spin", "sleep"])
def test_a_submission_that_never_returns_is_killed_at_the_timeout_and_scores_0(graded, name):
    g = graded["grades"][name]
    assert g["score"] == 0 and failed(g) == ALL
    assert message(g, "load") == "killed at the wall-clock limit of 6 s"
    assert message(g, "init") == "not run: the submission was stopped during load"


def test_a_fork_bomb_is_stopped_by_the_limits(graded):
    from fcnet.grade import seccomp

    if not seccomp.supported():  # RLIMIT_NPROC alone does not bind root
        pytest.skip("the seccomp filter supports x86-64 and arm64 Linux only")
    g = graded["grades"]["fork"]
    assert g["score"] == 0
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable (two_layernet.py, line 3)" \
        == message(g, "load")


def writes_confined(mode: str) -> bool:
    """bubblewrap makes the file system read-only; without it Landlock must confine writes."""
    from fcnet.grade import landlock

    return mode == "bwrap" or landlock.abi() > 0


def test_memory_beyond_the_limit_is_a_memory_error(graded):
    g = graded["grades"]["hog"]
    assert g["score"] == 0 and message(g, "load") == "MemoryError (two_layernet.py, line 1)"


def test_a_submission_cannot_write_outside_its_folder_nor_open_a_socket(graded):
    assert not graded["connected"]  # the seccomp filter (and bwrap's network namespace)
    if not writes_confined(graded["mode"]):
        pytest.skip("neither bubblewrap nor Landlock works on this machine: writes are not confined")
    assert not graded["escape_target"].exists()
    assert not Path("/etc/fcnet-grade-escape").exists()
    g = graded["grades"]["escape"]
    assert g["score"] == 100.0  # its own folder was writable; the escapes failed quietly
    page = (graded["out"] / "submissions" / "escape" / "report.html").read_text()
    assert page.count("write blocked:") == 2 and "socket blocked:" in page
    assert "WROTE" not in page and "CONNECTED" not in page


def test_an_import_that_writes_outside_its_folder_fails_to_load(graded):
    if not writes_confined(graded["mode"]):
        pytest.skip("neither bubblewrap nor Landlock works on this machine: writes are not confined")
    g = graded["grades"]["writer"]
    assert not graded["escaped_write"]
    assert g["score"] == 0 and failed(g) == ALL - {"own_code"}
    msg = message(g, "load")
    # a checkout under /tmp is not even visible inside bubblewrap's private /tmp
    assert msg.startswith(("OSError: [Errno 30] Read-only file system", "PermissionError: [Errno 13]",
                           "FileNotFoundError: [Errno 2]"))
    assert msg.endswith("(two_layernet.py, line 1)")


def test_megabytes_of_output_are_drained_and_cut_to_a_tail(graded):
    page = (graded["out"] / "submissions" / "loud" / "report.html").read_text()
    assert "of 6006000 bytes" in page
    assert len(page) < 200_000


def test_outputs_csv_and_html_overview(graded):
    out = graded["out"]
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert {r["submission"]: float(r["score"]) for r in rows} == \
        {k: g["score"] for k, g in graded["grades"].items()}
    assert rows[0].keys() >= {"submission", "score", "q2_gradients", "failed"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # the score distribution and the failures
    md = (out / "report.md").read_text()
    assert "Submissions failing each check" in md and "submissions/no_reg_grad/report.html" in md
    for name in graded["grades"]:
        page = (out / "submissions" / name / "report.html").read_text()
        assert "<script" not in page
    assert "data:image/png;base64," in (out / "submissions" / "good" / "report.html").read_text()


def test_without_bubblewrap_landlock_and_seccomp_still_hold_and_a_warning_says_what_is_open(
        tmp_path, capsys):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    target = tmp_path / "escaped.txt"
    (tmp_path / "escape.py").write_text(escaping(target, server.getsockname()[1]))
    (tmp_path / "fork.py").write_text(FORK)
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path / "escape.py"), str(tmp_path / "fork.py"), "--out", str(out),
                 "--sandbox", "none", "--quiet", "--jobs", "2"]) == 0
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()
    err = capsys.readouterr().err
    assert err.count("fcnet: warning: --sandbox none: submissions run with resource limits only") == 1
    grades = {g["submission"]: g for g in json.loads((out / "grades.json").read_text())}
    assert message(grades["fork"], "load").startswith("BlockingIOError: [Errno 11]")
    page = (out / "submissions" / "escape" / "report.html").read_text()
    assert "socket blocked:" in page and "CONNECTED" not in page
    if not writes_confined("none"):
        pytest.skip("Landlock is not available on this kernel: writes are not confined")
    assert not target.exists() and grades["escape"]["score"] == 100.0
    assert "blocked (Landlock)" in err
