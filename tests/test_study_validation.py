"""Study files are validated as one model before anything trains (issue 23, item 1).

Each bad file ends in one line naming the file, the key and the problem, exit 2, no
traceback, and nothing trained (the study's --out is never created). The corpus:

- the issue's cases: ``depths = ["two"]``, ``dataset = "digits"`` at the top level,
  ``base = "digits"``, a ``[dataset]`` entry that is a string, ``column_labels = 5``, a
  ``batch_noise`` block without ``runs``, a non-UTF-8 file, duplicate table ids, two
  blocks of a once-only kind;
- variations: a table that is a string, ``vary`` a list, a string in ``reference``,
  ``reference`` of the wrong length, ``row_labels`` without rows, ``column_labels`` on a
  one-axis table, ``depths`` with a duplicate or 0, an unknown ``init``, a block without
  ``kind``, ``weight_labels`` of the wrong length, ``labels`` a number, ``seeds = 0``,
  ``seeds = "5"``, a table's ``seeds = 1000``, ``title`` a number, an id with spaces,
  non-UTF-8 bytes in a comment, a claim on a table or row that does not exist, a claim
  with an unknown comparison, an ``equal`` claim without its margin, a claim key its
  comparison does not take, a claim that compares a cell with itself, ``--seeds 0``;
- and files that are not files: a directory, a missing path, invalid TOML.
"""

from __future__ import annotations

import pytest
from _sweep_util import cli

from fcnet.errors import FcnetError
from fcnet.experiments.study import load_study

GOOD = """\
title = "Good"
seeds = 2
[base]
dataset = "digits"
iters = 20

[dataset.digits]
note = "digits"

[[table]]
name = "Table 3: hidden"
id = "tab3"
vary = { hidden = [[10], [20]] }
reference = [1.0, 2.0]

[[table]]
name = "Table 4: two axes"
id = "tab4"
vary = { reg = [0.0, 0.5], hidden = [[10], [20]] }
column_labels = ["small", "large"]

[[block]]
kind = "batch_noise"
runs = [{ batch_size = 100 }]

[[block]]
kind = "depth"
depths = [2, 3]

[[claim]]
text = "20 beats 10"
table = "tab3"
kind = "better"
a = { hidden = 20 }
b = { hidden = 10 }
"""

CASES = [
    # (old, new, words in the message)
    ("depths = [2, 3]", 'depths = ["two", "three"]',
     ["block 'depth'", "depths[0]", "expected an integer", "'two'"]),
    ('[dataset.digits]\nnote = "digits"', '[dataset]\nnote = "x"',
     ["dataset.note", "expected a table of config fields", "'x'"]),
    ("[base]\n", 'base = "digits"\n[base2]\n', ["base", "expected a table", "'digits'"]),
    ('[dataset.digits]\nnote = "digits"', '[dataset]\ndigits = "fast"',
     ["dataset.digits", "expected a table of config fields", "'fast'"]),
    ('column_labels = ["small", "large"]', "column_labels = 5",
     ["table 'tab4'", "column_labels", "expected a list", "5"]),
    ("runs = [{ batch_size = 100 }]", "", ["block 'batch_noise'", "missing required key 'runs'"]),
    ('id = "tab4"', 'id = "tab3"', ["table[1]", "'tab3' is used twice", "table[0]"]),
    ('kind = "depth"\ndepths = [2, 3]', 'kind = "batch_noise"\nruns = [{}]',
     ["block[1]", "second 'batch_noise' block", "once"]),
    # variations
    ('title = "Good"', 'title = "Good"\ntables = 1', ["unknown key 'tables'", "'table'"]),
    ("vary = { hidden = [[10], [20]] }\nreference", 'vary = ["hidden"]\nreference',
     ["table 'tab3'", "vary", "expected a table"]),
    ("reference = [1.0, 2.0]", 'reference = [1.0, "x"]',
     ["table 'tab3'.reference[1]: expected a number or \"-\", got a string 'x'"]),
    ("reference = [1.0, 2.0]", "reference = [1.0]", ["table 'tab3'", "1 values for 2 cells"]),
    ('id = "tab3"', 'id = "tab3"\nrow_labels = ["a", "b"]', ["tab3", "row_labels: only with rows"]),
    ('id = "tab3"', 'id = "tab3"\ncolumn_labels = ["a"]', ["tab3", "column_labels: only for"]),
    ("depths = [2, 3]", "depths = [2, 2]", ["block 'depth'", "listed twice"]),
    ("depths = [2, 3]", "depths = [0, 3]", ["block 'depth'", "depths[0]", "must be >= 1, got 0"]),
    ("depths = [2, 3]", 'depths = [2, 3]\ninit = ["glorot"]', ["block 'depth'", "init"]),
    ('kind = "depth"\n', "", ["block[1]", "missing 'kind'"]),
    ('kind = "batch_noise"', 'kind = "batch_noise"\nlabels = 3',
     ["block 'batch_noise'", "labels", "expected a list"]),
    ('kind = "batch_noise"', 'kind = "batch_noise"\nlabels = ["a", "b"]',
     ["labels: 2 labels for 1 runs"]),
    ("seeds = 2", "seeds = 0", ["seeds: must be >= 1, got 0"]),
    ("seeds = 2", 'seeds = "5"', ["seeds", "expected an integer"]),
    ('id = "tab3"', 'id = "tab3"\nseeds = 1000', ["table 'tab3'.seeds: must be <= 100, got 1000"]),
    ('title = "Good"', "title = 5", ["title", "expected a string"]),
    ('id = "tab3"', 'id = "tab 3"', ["table 'tab 3'.id", "an id starts with a letter"]),
    ('table = "tab3"', 'table = "tab9"', ["claim[0]", "no table 'tab9'", "tab3, tab4"]),
    ("a = { hidden = 20 }", "a = { hidden = 30 }", ["claim[0].a", "hidden = 30", "not a row"]),
    ("a = { hidden = 20 }", "a = { lr = 1e-3 }", ["claim[0].a", "'lr' is not an axis"]),
    ('kind = "better"', 'kind = "larger"', ["claim[0].kind", "'larger' is not one of"]),
    ('kind = "better"', 'kind = "equal"', ["claim[0]", "needs 'margin'"]),
    ('kind = "better"', 'kind = "better"\nup_to = 3', ["claim[0]", "'up_to' is not a key"]),
    ("b = { hidden = 10 }", "b = { hidden = 20 }", ["claim[0].b", "with itself"]),
    ('table = "tab3"', 'table = "tab4"', ["claim[0].a", "give 'reg' too"]),
    ('[[claim]]', '[[claim]]\nwho = "me"', ["claim[0]", "unknown key 'who'"]),
    ("iters = 20", "iters = 0", ["base", "iters"]),
    ('[dataset.digits]', '[dataset.cifar10]\nval_sise = 1000\n[dataset.digits]',
     ["dataset.cifar10: unknown config field 'val_sise' (did you mean 'val_size'?)"]),
    ("vary = { hidden = [[10], [20]] }", "vary = { seed = [1, 2] }",
     ["table 'tab3'", "seeds = 2 and a table that sets 'seed'"]),
    ("vary = { hidden = [[10], [20]] }", "vary = { hidden = [[10], [-20]] }",
     ["table 'tab3'", "hidden"]),
]


def _write(tmp_path, text: str | bytes):
    f = tmp_path / "study.toml"
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text)
    return f


def test_the_good_file_loads():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        s = load_study(_write(Path(d), GOOD))
    assert [t.id for t in s.tables] == ["tab3", "tab4"] and s.seeds == 2
    assert len(s.claims) == 1 and s.claims[0].a == (1, 0) and s.claims[0].b == [(0, 0)]
    # every cell twice (2 seeds), plus the batch-noise run
    assert len(s.runs) == 2 * 2 + 4 * 2 + 1
    assert sorted({r.get("seed", 0) for r in s.runs}) == [0, 1]


@pytest.mark.parametrize("old, new, words", CASES, ids=[c[2][0] + "-" + str(i)
                                                         for i, c in enumerate(CASES)])
def test_bad_study_file_is_one_line_naming_file_and_key(tmp_path, old, new, words):
    assert old in GOOD, old
    f = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(FcnetError) as err:
        load_study(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: ") and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def _refused(tmp_path, f, *extra) -> str:
    out = tmp_path / "out"
    r = cli("study", str(f), "--out", str(out), *extra)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcnet: error: "), r.stderr
    assert not out.exists()  # nothing trained, nothing written
    return lines[0]


def test_top_level_dataset_string(tmp_path):
    text = GOOD.replace('[dataset.digits]\nnote = "digits"\n', "").replace(
        'seeds = 2', 'seeds = 2\ndataset = "digits"')
    with pytest.raises(FcnetError) as err:
        load_study(_write(tmp_path, text))
    assert "study.toml: dataset: expected tables [dataset.NAME], got a string 'digits'" in str(
        err.value)


@pytest.mark.parametrize("k", [0, 4, 5, 6, 7, 25, 28])
def test_cli_refuses_bad_files_before_training(tmp_path, k):
    old, new, words = CASES[k]
    line = _refused(tmp_path, _write(tmp_path, GOOD.replace(old, new, 1)))
    assert "study.toml: " in line and all(w in line for w in words)


def test_non_utf8_file_and_not_files(tmp_path):
    bad = GOOD.replace("# ", "").encode().replace(b'"Good"', b'"G\xe9od"')
    line = _refused(tmp_path, _write(tmp_path, bad))
    assert "not UTF-8" in line and "0xe9" in line
    comment = GOOD.encode() + b"\n# caf\xe9\n"
    assert "not UTF-8" in _refused(tmp_path, _write(tmp_path, comment))
    (tmp_path / "dir.toml").mkdir()
    assert "is a directory" in _refused(tmp_path, tmp_path / "dir.toml")
    assert "not found" in _refused(tmp_path, tmp_path / "missing.toml")
    assert "not valid TOML" in _refused(tmp_path, _write(tmp_path, "title = \n"))


def test_cli_seeds_zero_is_refused(tmp_path):
    line = _refused(tmp_path, _write(tmp_path, GOOD), "--seeds", "0")
    assert "--seeds must be between 1 and 100, got 0" in line
