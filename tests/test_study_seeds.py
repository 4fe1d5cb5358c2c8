"""Studies with error bars (issue 24): intervals against scipy/statsmodels on known inputs,
claims that come out supported, within noise and contradicted on small digits studies, seeds
reused after a kill and when seeds are added, and a sweep's Optuna value as the mean over
seeds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _sweep_util import DIGITS, cli, run_dirs, summary, trained_ends
from scipy import stats as sps

from fcnet.experiments import stats
from fcnet.experiments.stats import Cell


# ------------------------------------------------------------------ intervals, known inputs
def test_mean_ci_is_the_t_interval():
    x = [0.91, 0.93, 0.90, 0.95, 0.92]
    m, lo, hi = stats.mean_ci(x)
    ref = sps.t.interval(0.95, 4, loc=np.mean(x), scale=sps.sem(x))
    assert m == pytest.approx(0.922) and (lo, hi) == pytest.approx(ref, abs=1e-12)
    # by hand: mean ± t(0.975, 4) * s / sqrt(5), t = 2.7764451
    half = 2.7764451052 * np.std(x, ddof=1) / np.sqrt(5)
    assert hi - m == pytest.approx(half, rel=1e-8)
    assert stats.mean_ci([0.5]) == (0.5, None, None)
    assert stats.mean_ci([0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_sampling_ci_is_wilson():
    lo, hi = stats.sampling_ci(0.5, 1000)
    # Wilson's formula: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z, p, n = sps.norm.ppf(0.975), 0.5, 1000
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert 100 * half == pytest.approx(3.1, abs=0.05)  # the issue's ±3.1 points at 50%
    ref = sps.binomtest(97, 144).proportion_ci(0.95, method="wilson")
    assert stats.sampling_ci(97 / 144, 144) == pytest.approx((ref.low, ref.high))


def test_difference_is_welch_over_seeds_else_two_proportions():
    a, b = Cell("a", [0.90, 0.92, 0.91], 144), Cell("b", [0.85, 0.86, 0.88], 144)
    d = stats.difference(a, b)
    r = sps.ttest_ind(a.values, b.values, equal_var=False)
    assert d.d == pytest.approx(0.0466667, abs=1e-6) and d.p == pytest.approx(r.pvalue)
    assert (d.low, d.high) == pytest.approx(tuple(r.confidence_interval(0.95)))
    assert "Welch" in d.test
    one = stats.difference(Cell("a", [0.6], 100), Cell("b", [0.5], 100))
    assert (one.low, one.high) == pytest.approx((-0.0373021, 0.2321231), abs=1e-6)  # Newcombe
    assert one.p > 0.05 and "two-proportion" in one.test


def test_beyond_noise_is_holm_corrected():
    from statsmodels.stats.multitest import multipletests

    cells = [Cell(str(i), list(v), 100) for i, v in enumerate(
        ([0.5, 0.51, 0.52], [0.60, 0.62, 0.61], [0.505, 0.515, 0.52], [0.9, 0.91, 0.9]))]
    pairs = stats.beyond_noise(cells)
    raw = [sps.ttest_ind(cells[p.i].values, cells[p.j].values, equal_var=False).pvalue
           for p in pairs]
    reject, holm, _, _ = multipletests(raw, method="holm")
    assert [p.p_holm for p in pairs] == pytest.approx(list(holm))
    assert [p.beyond for p in pairs] == list(reject)
    by = {(p.i, p.j): p.beyond for p in pairs}
    assert by[(0, 3)] and not by[(0, 2)]


# ------------------------------------------------------------------ claims on small studies
STUDY = """\
title = "Claims on digits"
seeds = 3
[base]
dataset = "digits"
batch_size = 50
lr = 1e-2
std = 1e-2
reg = 1e-4
iters = 500
dtype = "float64"

[[table]]
name = "Table 1: hidden units"
id = "hid"
vary = { hidden = [[2], [40]] }

[[table]]
name = "Table 2: regularisation"
id = "reg"
vary = { reg = [0.0, 1e-6] }

[[claim]]
id = "wide-wins"
text = "40 hidden units beat 2"
table = "hid"
kind = "better"
a = { hidden = 40 }
b = { hidden = 2 }

[[claim]]
id = "narrow-wins"
text = "2 hidden units beat 40"
table = "hid"
kind = "better"
a = { hidden = 2 }
b = { hidden = 40 }

[[claim]]
id = "tiny-reg-wins"
text = "reg 1e-6 beats reg 0"
table = "reg"
kind = "better"
a = { reg = 1e-6 }
b = { reg = 0.0 }

[[claim]]
id = "tiny-reg-equal"
text = "reg 1e-6 and 0 are equal within 5 points"
table = "reg"
kind = "equal"
a = { reg = 1e-6 }
b = { reg = 0.0 }
margin = 5.0
"""


def _run(f, out, *extra, timeout=300) -> dict:
    r = subprocess.run([sys.executable, "-m", "fcnet", "study", str(f), "--out", str(out),
                        "--json", *extra], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def claims_study(tmp_path_factory):
    d = tmp_path_factory.mktemp("claims")
    f = d / "study.toml"
    f.write_text(STUDY)
    return f, d / "out", _run(f, d / "out")


def test_claims_come_out_supported_within_noise_and_contradicted(claims_study):
    _, out, res = claims_study
    verdicts = {c["id"]: c["verdict"] for c in res["claims"]}
    assert verdicts == {"wide-wins": "supported", "narrow-wins": "contradicted",
                        "tiny-reg-wins": "within noise", "tiny-reg-equal": "supported"}, \
        res["claims"]
    # the numbers behind a verdict are the cells' own, recomputed here with scipy
    cells = res["cells"]["hid"]
    wide, narrow = cells[1][0]["values"], cells[0][0]["values"]
    assert len(wide) == len(narrow) == 3 and len(set(wide)) > 1  # seeds differ
    ci = sps.ttest_ind(wide, narrow, equal_var=False).confidence_interval(0.95)
    numbers = next(c["numbers"] for c in res["claims"] if c["id"] == "wide-wins")
    assert f"[{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]" in numbers
    # every table shows mean ± CI and one run's sampling interval; the report says which
    row = res["tables"]["hid"][1]
    m, lo, hi = stats.mean_ci(wide)
    assert row[1] == f"{100 * m:.1f} ± {100 * (hi - lo) / 2:.1f}" and row[2].startswith("±")
    md = (out / "report.md").read_text()
    for words in ("mean ± 95% CI, 3 seeds", "Wilson interval", "Welch t-test over seeds",
                  "Holm", "Claims and verdicts", "contradicted"):
        assert words in md, words
    assert (out / "figures" / "intervals-hid.png").exists()


def test_adding_seeds_trains_only_the_new_ones(claims_study, tmp_path):
    f, out, res = claims_study
    before = {d.name: (d / "summary.json").stat().st_mtime_ns for d in run_dirs(out)}
    assert len(before) == 4 * 3  # 4 cells x 3 seeds
    more = _run(f, out, "--seeds", "4")
    after = {d.name: (d / "summary.json").stat().st_mtime_ns for d in run_dirs(out)}
    assert len(after) == 4 * 4 and all(after[k] == v for k, v in before.items())
    first = [c["values"][:3] for row in more["cells"]["hid"] for c in row]
    assert first == [c["values"] for row in res["cells"]["hid"] for c in row]


def test_seeds_reused_after_a_kill(tmp_path):
    import signal
    import time

    f = tmp_path / "study.toml"
    one_table = STUDY[:STUDY.index("[[table]]\nname = \"Table 2")]
    f.write_text(one_table.replace("iters = 500", "iters = 3000"))
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "fcnet", "study", str(f), "--out", str(out),
                          "--quiet", "--seeds", "3"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    finished = {}
    deadline = time.monotonic() + 240
    while not finished and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        finished = {d: (d / "params.npz").stat().st_mtime_ns for d in run_dirs(out)
                    if (summary(d) or {}).get("status") == "completed"}
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert finished and len(finished) < 6, "no seed had finished, or all had, at the kill"
    res = _run(f, out, "--seeds", "3")
    dirs = run_dirs(out)
    assert len(dirs) == 6
    assert all((d / "params.npz").stat().st_mtime_ns == t for d, t in finished.items())
    assert all(len(trained_ends(d)) <= 1 for d in dirs)  # no seed trained twice
    assert all(len(c["values"]) == 3 for row in res["cells"]["hid"] for c in row)


def test_bad_seeds_and_claims_are_one_line(tmp_path):
    f = tmp_path / "study.toml"
    for text, words in [(STUDY.replace("seeds = 3", "seeds = 0"), "seeds: must be >= 1"),
                        (STUDY.replace('table = "reg"\nkind = "equal"',
                                       'table = "regs"\nkind = "equal"'), "no table 'regs'"),
                        (STUDY.replace("a = { reg = 1e-6 }\nb = { reg = 0.0 }\nmargin",
                                       "a = { reg = 0.5 }\nb = { reg = 0.0 }\nmargin"),
                         "reg = 0.5 is not a row"),
                        (STUDY.replace('kind = "equal"', 'kind = "same"'),
                         "'same' is not one of")]:
        f.write_text(text)
        r = cli("study", str(f), "--out", str(tmp_path / "out"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert words in r.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ sweeps
def test_sweep_trial_value_is_the_mean_over_seeds(tmp_path):
    import optuna

    d = tmp_path / "s"
    r = cli("sweep", *DIGITS, "--iters", "40", "--grid", "hidden=10,20", "--seeds", "3",
            "--dir", str(d), "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(run_dirs(d)) == 6  # 2 trials x 3 seeds
    finals = {(tuple(s["config"]["hidden"]), s["config"]["seed"]): s["final_val_acc"]
              for s in (summary(x) | {"config": _config(x)} for x in run_dirs(d))}
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{d}/sweep.db")
    assert len(study.trials) == 2
    for t in study.trials:
        h = tuple(json.loads(t.user_attrs["config"])["hidden"])
        values = [finals[(h, s)] for s in range(3)]
        assert t.value == pytest.approx(np.mean(values))
        assert t.user_attrs["seed_values"] == pytest.approx(values)
        assert len(set(values)) > 1  # the seeds differ, so the interval below has a width
        lo, hi = sps.t.interval(0.95, 2, loc=np.mean(values), scale=sps.sem(values))
        assert t.user_attrs["seed_ci"] == pytest.approx([lo, hi])
    rows = json.loads(r.stdout)
    assert sorted(x["val_acc"] for x in rows) == pytest.approx(sorted(t.value
                                                                      for t in study.trials))


def _config(run_dir) -> dict:
    import tomllib

    return tomllib.loads((run_dir / "config.toml").read_text())


def test_seeds_that_all_score_alike_do_not_make_a_one_image_gap_certain():
    # 5 seeds each, no spread: Welch's variance is 0 and its p-value would be 0 for any
    # gap; the validation-sampling test says a 1-in-1,000 gap is noise
    same_a, same_b = Cell("a", [0.979] * 5, 1000), Cell("b", [0.978] * 5, 1000)
    d = stats.difference(same_a, same_b)
    assert d.p > 0.5 and d.low < 0 < d.high and "two-proportion" in d.test
    assert not any(p.beyond for p in stats.beyond_noise([same_a, same_b]))
    # a gap of 30 points is beyond noise either way
    assert stats.beyond_noise([Cell("a", [0.9] * 5, 1000), Cell("b", [0.6] * 5, 1000)])[0].beyond
