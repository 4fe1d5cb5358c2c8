"""`fcnet grade` on a class: the corpus of course-template submissions in
``tests/grade_corpus`` graded with and without bubblewrap, and judged as a teacher
would (issue 21's criteria): every correct submission >= 90, the untouched template
<= 10, a hard-coded reg loses the reg-dependent points, an exact loss without
gradients keeps q1_loss, forged measurements and fcnet handed in earn nothing,
similar submissions are listed, and the overview's numbers lay out at 1280 px.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from fcnet.cli import main

sys.path.insert(0, str(Path(__file__).with_name("grade_corpus")))
import corpus  # noqa: E402

pytestmark = pytest.mark.slow  # two gradings of 15 submissions, one per sandbox mode

SRC = str(Path(__file__).resolve().parents[1] / "src")
REG_POINTS = {"q1_loss", "q2_gradients", "q3_toy_training"}  # what depends on reg being used
FORGERIES = ["patch_numpy", "always_equal", "memorised", "forger"]
EARNED_BY_THE_TEMPLATE = {"load", "own_code", "init"}  # the course hands out __init__


def has_bwrap() -> bool:
    return shutil.which("bwrap") is not None and subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module", params=["bwrap", "none"])
def graded(request, tmp_path_factory):
    mode = request.param
    if mode == "bwrap" and not has_bwrap():
        pytest.fail("bubblewrap is needed for this test (apt-get install bubblewrap; bin/test does)",
                    pytrace=False)
    root = tmp_path_factory.mktemp(f"corpus-{mode}")
    by_path = {"fcnet_by_path": {"two_layernet.py": corpus.fcnet_by_path(SRC)}}
    subs = corpus.write(root / "subs", extra=by_path)
    out = root / "out"
    rc = main(["grade", str(subs), "--out", str(out), "--jobs", "2", "--quiet", "--sandbox", mode,
               "--template", str(Path(corpus.__file__).with_name("template.txt"))])
    grades = {g["submission"]: g for g in json.loads((out / "grades.json").read_text())}
    return {"mode": mode, "rc": rc, "grades": grades, "out": out}


def checks(g: dict) -> dict[str, dict]:
    return {c["name"]: c for c in g["checks"]}


def passed(g: dict) -> set[str]:
    return {c["name"] for c in g["checks"] if c["passed"]}


def test_every_submission_is_graded_without_a_traceback(graded):
    assert graded["rc"] == 0
    assert set(graded["grades"]) == set(corpus.CORPUS) | {"fcnet_by_path"}
    for g in graded["grades"].values():
        for c in g["checks"]:
            assert "Traceback" not in c["message"] and c["message"]


@pytest.mark.parametrize("name", corpus.CORRECT)
def test_every_correct_submission_scores_at_least_90(graded, name):
    g = graded["grades"][name]
    assert g["score"] >= 90, [(c["name"], c["message"]) for c in g["checks"] if not c["passed"]]


def test_helper_modules_beside_the_submission_import(graded):
    g = graded["grades"]["helpers"]
    assert checks(g)["load"]["passed"] and g["score"] == 100.0


def test_the_untouched_template_scores_at_most_10(graded):
    g = graded["grades"]["template"]
    assert g["score"] <= 10 and passed(g) == EARNED_BY_THE_TEMPLATE
    c = checks(g)
    assert "training did not reduce the loss" in c["q3_toy_training"]["message"]
    assert "nothing is computed yet" in c["q1_loss"]["message"]
    assert c["q1c_loops"]["message"].startswith("not judged: q1_scores must pass first")
    assert c["q1c_scaling"]["message"].startswith("not timed:")


def test_a_hard_coded_reg_loses_the_reg_dependent_points_and_says_why(graded):
    g = graded["grades"]["hardcoded_reg"]
    assert REG_POINTS <= {c["name"] for c in g["checks"] if not c["passed"]}
    assert {"q1_scores", "init", "q1c_loops", "q1c_scaling", "q3_digits"} <= passed(g)
    c = checks(g)
    assert "is reg hard-coded?" in c["q1_loss"]["message"]
    assert "is reg hard-coded?" in c["q2_gradients"]["message"]


def test_an_exact_loss_without_gradients_keeps_q1(graded):
    g = graded["grades"]["loss_only"]
    assert {"q1_scores", "q1_loss", "q1c_loops", "q1c_scaling"} <= passed(g)
    assert not checks(g)["q2_gradients"]["passed"]
    assert "grads lacks W1" in checks(g)["q2_gradients"]["message"]


def test_backward_loops_are_feedback_worth_0_points_forward_loops_cost_q1c(graded):
    g = graded["grades"]["backward_loop"]
    c = checks(g)
    assert g["score"] == 100.0 and c["q1c_loops"]["passed"] and not c["q2_loops"]["passed"]
    assert "for i in range(N):" in c["q2_loops"]["message"]
    assert "0 points in the default rubric" in c["q2_loops"]["message"]
    f = checks(graded["grades"]["forward_loop"])
    assert not f["q1c_loops"]["passed"] and "for i in range(N):" in f["q1c_loops"]["message"]


def test_the_row_max_shift_is_feedback_worth_0_points(graded):
    g = graded["grades"]["course_style"]  # the course's exact numbers, no shift
    c = checks(g)
    assert g["score"] == 100.0 and not c["q1_stable"]["passed"]
    assert "0 points in the default rubric" in c["q1_stable"]["message"]


@pytest.mark.parametrize("name", ["fcnet_import", "fcnet_by_path"])
def test_a_submission_that_hands_in_fcnet_is_flagged_and_scores_0(graded, name):
    g = graded["grades"][name]
    c = checks(g)
    assert g["score"] == 0 and not c["own_code"]["passed"]
    assert "fcnet is a reference implementation" in c["own_code"]["message"]
    if graded["mode"] == "bwrap":  # fcnet is not even importable there
        assert not c["load"]["passed"]
        assert c["load"]["message"].startswith(("ModuleNotFoundError", "ImportError"))


@pytest.mark.parametrize("name", FORGERIES)
def test_patched_numpy_always_true_eq_memorised_numbers_and_forged_records_earn_nothing(graded, name):
    g = graded["grades"][name]
    assert passed(g) <= EARNED_BY_THE_TEMPLATE | {"q1_stable"}, sorted(passed(g))
    assert g["score"] <= 10


def test_near_identical_submissions_are_listed_and_independent_ones_are_not(graded):
    md = (graded["out"] / "report.md").read_text()
    section = md.split("Similar pairs: the share", 1)[1]
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2])
            for line in section.splitlines() if line.startswith("| ")}
    assert ("course_style", "course_style_copy") in rows
    assert not any("independent" in r or "helpers" in r for r in rows)
    page = (graded["out"] / "submissions" / "course_style_copy" / "report.md").read_text()
    assert "shared lines of this file" in page and "e = np.exp(z3)" in page
    assert "TODO: Perform the forward pass" not in page.split("## 2. Similar submissions", 1)[1]


def test_similarity_without_the_template_still_keeps_independent_work_apart():
    from fcnet.grade.similar import similar_pairs

    sources = {n: corpus.CORPUS[n]["two_layernet.py"] for n in ("course_style", "course_style_copy",
                                                                 "independent", "helpers")}
    pairs = {(p.a, p.b) for p in similar_pairs(sources)}
    assert pairs == {("course_style", "course_style_copy")}
    with_template = similar_pairs(sources, corpus.TEMPLATE)
    assert {(p.a, p.b) for p in with_template} == {("course_style", "course_style_copy")}
    assert len(with_template[0].lines_a) < len(similar_pairs(sources)[0].lines_a)


# ------------------------------------------------------------------ the course's own driver
def _load(name: str, tmp_path: Path):
    import importlib.util

    folder = corpus.write(tmp_path / name, [name]) / name
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"corpus_{name}", folder / "two_layernet.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(folder))
    return mod.TwoLayerNet


@pytest.mark.parametrize("name", corpus.CORRECT)
def test_the_correct_ones_reproduce_the_reference_numbers_with_the_course_driver(name, tmp_path):
    """What makes them "correct": study.md's toy numbers from their own code (numerical gradients)."""
    from fcnet.check import EXPECTED_LOSS, EXPECTED_PROBS, toy_data, toy_model
    from fcnet.gradcheck import check_model_gradients

    cls = _load(name, tmp_path)
    X, y = toy_data()
    np.random.seed(0)
    net = cls(4, 10, 3, std=1e-1)
    for k, v in toy_model().params.items():
        net.params[k] = v.copy()
    assert np.sum(np.abs(net.loss(X) - EXPECTED_PROBS)) < 1e-7
    assert abs(net.loss(X, y, reg=0.05)[0] - EXPECTED_LOSS) < 1e-12
    assert max(check_model_gradients(net, X, y, reg=0.05).values()) < 1e-8
    np.random.seed(0)
    net = cls(4, 10, 3, std=1e-1)
    stats = net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100, verbose=False)
    assert stats["loss_history"][-1] < 0.02


# ------------------------------------------------------------------ the sandbox itself
def test_bubblewrap_works_with_the_interpreter_in_a_venv_under_tmp(tmp_path):
    """bwrap's private /tmp used to hide such an interpreter: 'user namespaces disabled?'."""
    if not has_bwrap():
        pytest.fail("bubblewrap is needed for this test (apt-get install bubblewrap)", pytrace=False)
    env_dir = tmp_path / "venv"
    assert str(env_dir).startswith("/tmp/")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = next(env_dir.glob("lib/python3*/site-packages"))
    import numpy

    (site / "fcnet-dev.pth").write_text(f"{Path(numpy.__file__).resolve().parents[1]}\n{SRC}\n")
    subs = corpus.write(tmp_path / "subs", ["helpers"])
    r = subprocess.run([str(env_dir / "bin" / "python"), "-m", "fcnet", "grade", str(subs / "helpers"),
                        "--sandbox", "bwrap", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    grades = json.loads((tmp_path / "out" / "grades.json").read_text())
    assert grades[0]["score"] == 100.0


def test_when_bubblewrap_cannot_start_the_message_is_bwraps_own(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n"
                                "exit 1\n")
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    (tmp_path / "a.py").write_text(corpus.CORPUS["course_style"]["two_layernet.py"])
    assert main(["grade", str(tmp_path / "a.py"), "--sandbox", "bwrap", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == ("fcnet: error: --sandbox bwrap: bubblewrap cannot start a sandbox here: "
                   "bwrap: No permissions to create new namespace\n")
    assert main(["grade", str(tmp_path / "a.py"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "fcnet: warning: bubblewrap cannot start a sandbox here: bwrap: No permissions" in err


# ------------------------------------------------------------------ the HTML at 1280 px
_LAYOUT_JS = """() => {
  const lines = el => {
    const r = document.createRange(); r.selectNodeContents(el);
    return new Set(Array.from(r.getClientRects()).map(b => Math.round(b.top))).size;
  };
  const nums = Array.from(document.querySelectorAll('td.num, th.num'));
  return {
    page_overflow: document.documentElement.scrollWidth - window.innerWidth,
    wrapped: nums.filter(el => el.textContent.trim() && lines(el) > 1).map(el => el.textContent),
    tables_scrolling: Array.from(document.querySelectorAll('.table-wrap'))
      .filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.querySelector('table').id),
    numbers: nums.length,
  };
}"""


def test_the_overview_lays_out_numbers_without_wrapping_or_overflow_at_1280px(graded):
    from _browser_util import CHROMIUM_ARGS, chromium_path
    from playwright.sync_api import sync_playwright

    pages = [graded["out"] / "report.html", graded["out"] / "submissions" / "hardcoded_reg" / "report.html"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for html in pages:
                page.goto(html.resolve().as_uri(), wait_until="load")
                got = page.evaluate(_LAYOUT_JS)
                assert got["numbers"] > 20, got
                assert got["wrapped"] == [] and got["page_overflow"] <= 0, (html, got)
                assert got["tables_scrolling"] == [], (html, got)
        finally:
            browser.close()
