"""Study files: the format's errors in one line naming the key, --list, and a two-table study
of our own on digits run with --workers 2, killed at random moments and resumed: it trains
nothing twice and writes the tables an uninterrupted run writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _sweep_util import cli, run_dirs, trained_ends
from test_sweep_kill_loop import kill_at_random, one_finished_trial_per_key

from fcnet.errors import FcnetError
from fcnet.experiments.study import bundled, load_study

TWO_TABLES = """\
title = "Two tables on digits"
[base]
dataset = "digits"
batch_size = 50
lr = 1e-2
std = 1e-2
iters = 1500
dtype = "float64"

[[table]]
name = "Table 1: learning rate and regularisation"
id = "lr-reg"
vary = { lr = [1e-2, 3e-2], reg = [0.0, 1e-3] }
reference = [90.0, 91.0, 92.0, 93.0]
reference_label = "their val %"

[[table]]
name = "Table 2: hidden units, along one run"
id = "hidden"
base = { iters = 3000 }
vary = { hidden = [[10], [30]], iters = [1500, 3000] }
"""


def _study(tmp_path, text: str):
    f = tmp_path / "study.toml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("edit, words", [
    (("lr = 1e-2\nstd", "lrate = 1e-2\nstd"), ["base", "unknown config field 'lrate'"]),
    (("vary = { lr", "vary = { lrr"), ["table 'lr-reg': vary: unknown config field 'lrr'"]),
    (("[90.0, 91.0, 92.0, 93.0]", "[90.0, 91.0]"), ["table 'lr-reg'", "reference",
                                                      "2 values for 4"]),
    (("[90.0, 91.0, 92.0, 93.0]", "[90.0, nan, 92.0, 93.0]"), ["reference", "finite"]),
    (("std = 1e-2", "std = inf"), ["std", "finite"]),
    (("reg = [0.0, 1e-3]", "reg = [0.0, inf]"), ["reg", "finite"]),
    (("title", '[[block]]\nkind = "pca_curv"\n\ntitle'), ["unknown block 'pca_curv'", "pca_curve"]),
    (('id = "hidden"', 'id = "hidden"\nrefrence = [1]'), ["unknown key 'refrence'"]),
])
def test_a_bad_study_file_is_one_line_naming_the_key(tmp_path, edit, words):
    old, new = edit
    assert old in TWO_TABLES
    f = _study(tmp_path, TWO_TABLES.replace(old, new, 1))
    with pytest.raises(FcnetError) as err:
        load_study(f)
    for w in words:
        assert w in str(err.value)


def test_cli_bad_study_file_and_list(tmp_path):
    f = _study(tmp_path, TWO_TABLES.replace("[90.0, 91.0, 92.0, 93.0]", "[90.0]"))
    r = cli("study", str(f), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "reference" in r.stderr
    assert not (tmp_path / "out").exists()
    r = cli("study", "--list")
    assert r.returncode == 0 and "exercise:" in r.stdout
    assert set(bundled()) >= {"exercise"}


def test_bundled_study_has_the_reports_tables_and_blocks():
    s = load_study("exercise", dataset="digits")
    assert [t.id for t in s.tables] == ["t1", "t2", "t3", "t4", "t5", "t6", "t7"]
    assert s.tables[0].name == "Table 1: iterations"  # the source's own numbering
    assert set(s.blocks) == {"toy", "baseline", "batch_noise", "pca_curve", "chosen", "depth"}
    assert s.base.decay == pytest.approx(0.95 ** (6 / 245), abs=1e-6)  # digits' schedule
    assert load_study("exercise", dataset="cifar10").base.decay == 0.95


def _run(f, out, *extra) -> dict:
    r = subprocess.run([sys.executable, "-m", "fcnet", "study", str(f), "--out", str(out),
                        "--dtype", "float64", "--json", *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_two_table_study_with_two_workers_killed_and_resumed(tmp_path):
    f = _study(tmp_path, TWO_TABLES)
    out = tmp_path / "killed"
    args = ["study", str(f), "--out", str(out), "--dtype", "float64", "--workers", "2",
            "--quiet"]
    assert kill_at_random(args, kills=2, seed=5), "the study finished before every kill"
    res = _run(f, out, "--workers", "2")
    dirs = run_dirs(out)
    assert len(dirs) == 6  # 4 cells of table 1; table 2: one run per hidden size
    assert all(len(trained_ends(x)) <= 1 for x in dirs)
    db = out / "sweep.db"
    assert one_finished_trial_per_key(db, f"study-{load_study(f).identity()}") == {
        x.name: 1 for x in dirs}
    params = {x: (x / "params.npz").stat().st_mtime_ns for x in dirs}

    again = _run(f, out)  # a rerun trains nothing and writes the same tables
    assert {x: (x / "params.npz").stat().st_mtime_ns for x in dirs} == params
    assert again["tables"] == res["tables"]
    alone = _run(f, tmp_path / "alone")  # uninterrupted, one worker: the same numbers
    assert alone["tables"] == res["tables"]
    t1, t2 = res["tables"]["lr-reg"], res["tables"]["hidden"]
    # a row: lr, then per reg: fcnet's number, one run's sampling interval, the reference
    assert [row[0] for row in t1] == [0.01, 0.03] and [row[3] for row in t1] == [90.0, 92.0]
    assert len(t2) == 2 and len(t2[0]) == 5  # hidden x (1500, 3000) iterations
    md = (out / "report.md").read_text()
    assert "Table 1: learning rate and regularisation" in md
