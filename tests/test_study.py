"""`fcnet study --dataset digits`: the offline default, end to end, in a real browser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _browser_util import open_page_check

EXPECTED_ROWS = {"t-toy": 7, "t-baseline": 1, "t1": 10, "t2": 5, "t3": 12, "t4": 5, "t5": 5,
                 "t6": 4, "t7": 2, "t-chosen": 2, "t-depth": 8, "t-claims": 20}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("study")
    r = subprocess.run([sys.executable, "-m", "fcnet", "study", "--dataset", "digits", "--out",
                        str(out), "--json"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, json.loads(r.stdout)


def test_study_writes_markdown_and_self_contained_html(study):
    out, res = study
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for title in ("Table 1: iterations", "Table 7: PCA", "Depth study", "Chosen model"):
        assert title in md and title in html
    assert "held fixed" in md
    assert "src=\"figures/" not in html and "data:image/png;base64," in html
    assert res["checks_ok"] is True
    assert 0.0 < res["chosen_test"] <= 1.0
    # every weight picture the report shows, the chosen model's too: a study's runs draw
    # no PNGs of their own (no --figures), so the report draws the ones it shows
    for caption in ("Baseline: first-layer weights", "First-layer weights: baseline",
                    "First-layer weights: hidden 50", "First-layer weights: the chosen model"):
        assert caption in md
    drawn = list((out / "runs").glob("*/confusion.png"))
    assert len(drawn) == 2 < len(list((out / "runs").glob("*/summary.json")))  # own runs only


def test_study_report_renders_in_headless_chromium(study):
    out, _ = study
    page = open_page_check(out / "report.html")
    assert page["console_errors"] == []
    assert page["n_images"] >= 10 and page["images_loaded"] == page["n_images"]
    for table_id, rows in EXPECTED_ROWS.items():
        assert page["table_rows"].get(table_id) == rows, (table_id, page["table_rows"])


def test_study_tables_carry_the_reports_numbers_beside_fcnets(study):
    _, res = study
    t1 = res["tables"]["t1"]
    assert [row[0] for row in t1] == list(range(1000, 10001, 1000))
    assert [row[3] for row in t1][:2] == [28.19, 35.80]  # the report's column, from study.md
    assert all(isinstance(row[1], str) for row in t1)
    assert all(row[2].startswith("±") for row in t1)  # one run's sampling interval


def test_every_claim_has_a_verdict_and_the_header_names_the_study(study):
    out, res = study
    verdicts = {c["id"]: c["verdict"] for c in res["claims"]}
    assert len(verdicts) == 20
    assert set(verdicts.values()) <= {"supported", "within noise", "contradicted",
                                      "not tested"}
    assert verdicts["chosen-test"] == "not tested"  # the source's number is CIFAR-10's
    assert sum(v != "not tested" for v in verdicts.values()) == 19
    # fcnet's depth study shows chance-level training accuracy: not overfitting
    assert verdicts["q4-overfit-4"] == "contradicted"
    md = (out / "report.md").read_text()
    assert "- **study**: exercise" in md and "src/fcnet/studies" not in md
    assert "Claims and verdicts" in md and "Wilson" in md


def test_the_header_holds_wall_and_floor_timed_before_training_and_after(study):
    out, res = study
    md = (out / "report.md").read_text()
    floor = next(line for line in md.splitlines() if line.startswith("- **floor seconds**"))
    assert "timed before training and after" in floor
    ratio = next(line for line in md.splitlines() if line.startswith("- **wall / floor**"))
    assert float(ratio.split()[-1]) == pytest.approx(res["wall_seconds"] / res["floor_seconds"], abs=0.006)


def test_study_tables_fit_at_1280_px(study):
    from test_report_browser import _table_overflow

    out, _ = study
    for table_id, right, scroll in _table_overflow(out / "report.html", 1280):
        assert right <= 1280 and scroll <= 0, (table_id, right, scroll)


def test_study_rerun_reuses_finished_runs(study):
    out, _ = study
    params = sorted((out / "runs").glob("*/params.npz"))
    before = {p: p.stat().st_mtime_ns for p in params}
    r = subprocess.run([sys.executable, "-m", "fcnet", "study", "--dataset", "digits", "--out",
                        str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in params} == before


def test_the_work_beside_the_sweep_takes_one_blas_thread(monkeypatch, tmp_path):
    """The report's own runs train in the main process while the workers hold the cores: on one
    BLAS thread (two only wait for each other there: 3x slower on CIFAR-10), restored afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import fcnet.training
    from fcnet.experiments import study as study_mod

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    seen = []
    monkeypatch.setattr(fcnet.training, "train_run", lambda config, run_dir: seen.append(blas_threads()))
    s = study_mod.load_study("exercise", dataset="digits")
    errors: list = []
    with threadpool_limits(2, user_api="blas"):
        study_mod._beside_the_sweep(s, tmp_path, False, errors)
        assert blas_threads() == {2}
    assert not errors and seen and all(t == {1} for t in seen)
