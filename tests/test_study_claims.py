"""Verdicts of every claim kind on synthetic cells (no training): the rules of docs/study.md,
"Claims", each able to come out supported, within noise and contradicted."""

from __future__ import annotations

import pytest

from fcnet.experiments.claims import Axes, Claim, evaluate
from fcnet.experiments.stats import Cell

ROWS = Axes(["x"], [[1, 2, 3, 4]], [["x1", "x2", "x3", "x4"]])


def _cells(*means, spread=0.002, n=1000):
    """One column of cells, 5 seeds each around the given means."""
    offsets = [-2 * spread, -spread, 0.0, spread, 2 * spread]
    return [Cell(f"x{k + 1}", [m + o for o in offsets], n) for k, m in enumerate(means)]


def _verdict(kind, cells, **kw) -> str:
    claim = Claim("c", "a claim", "t", kind, **kw)
    return evaluate(claim, lambda t, r, c: cells[r], ROWS, "digits").verdict


@pytest.mark.parametrize("kind, means, kw, verdict", [
    ("better", (0.90, 0.80, 0.80, 0.80), {"a": (0, 0)}, "supported"),  # b: the other rows
    ("better", (0.90, 0.899, 0.80, 0.80), {"a": (0, 0)}, "within noise"),
    ("better", (0.80, 0.90, 0.80, 0.80), {"a": (0, 0)}, "contradicted"),
    ("better", (0.90, 0.86, 0.80, 0.80), {"a": (0, 0), "b": [(1, 0)], "margin": 5.0},
     "contradicted"),  # better, but by less than 5 points
    ("unbeaten", (0.90, 0.899, 0.80, 0.80), {"a": (0, 0), "margin": 1.0}, "supported"),
    ("unbeaten", (0.90, 0.91, 0.80, 0.80), {"a": (0, 0), "margin": 1.0}, "within noise"),
    ("unbeaten", (0.90, 0.95, 0.80, 0.80), {"a": (0, 0), "margin": 1.0}, "contradicted"),
    ("no_better", (0.80, 0.90, 0, 0), {"a": (0, 0), "b": [(1, 0)], "margin": 0.0}, "supported"),
    ("no_better", (0.90, 0.90, 0, 0), {"a": (0, 0), "b": [(1, 0)], "margin": 0.0},
     "within noise"),
    ("no_better", (0.95, 0.90, 0, 0), {"a": (0, 0), "b": [(1, 0)], "margin": 0.0},
     "contradicted"),
    ("equal", (0.90, 0.901, 0, 0), {"a": (0, 0), "b": [(1, 0)], "margin": 2.0}, "supported"),
    ("equal", (0.90, 0.918, 0, 0), {"a": (0, 0), "b": [(1, 0)], "margin": 2.0},
     "within noise"),
    ("equal", (0.90, 0.95, 0, 0), {"a": (0, 0), "b": [(1, 0)], "margin": 2.0}, "contradicted"),
    ("grows_then_flat", (0.70, 0.90, 0.902, 0.901),
     {"up_to": 1, "at": {"axis": 0, "other": 0}, "margin": 1.0}, "supported"),
    ("grows_then_flat", (0.70, 0.90, 0.91, 0.905),
     {"up_to": 1, "at": {"axis": 0, "other": 0}, "margin": 1.0}, "within noise"),
    ("grows_then_flat", (0.70, 0.90, 0.95, 0.97),
     {"up_to": 1, "at": {"axis": 0, "other": 0}, "margin": 1.0}, "contradicted"),
])
def test_verdicts(kind, means, kw, verdict):
    assert _verdict(kind, _cells(*means), **kw) == verdict


def test_overfits_and_reproduces_on_single_runs():
    axes = Axes(["layers"], [[2, 4]], [["2 layers", "4 layers"]])
    val = [Cell("", [0.50], 1000), Cell("", [0.10], 1000)]
    train = [Cell("", [0.90], 49000), Cell("", [0.101], 49000)]

    def run(kind, **kw):
        claim = Claim("c", "text", "depth", kind, **kw)
        return evaluate(claim, lambda t, r, c: val[r], axes, "cifar10",
                        lambda r, c: train[r])

    assert run("overfits", a=(0, 0), margin=5.0).verdict == "supported"
    v = run("overfits", a=(1, 0), margin=5.0)  # at chance on train too: not overfitting
    assert v.verdict == "contradicted" and "train 10.1, val 10.0" in v.numbers
    assert run("reproduces", a=(0, 0), value=51.0).verdict == "supported"  # within ±3.1
    assert run("reproduces", a=(0, 0), value=55.0).verdict == "contradicted"
    assert run("reproduces", a=(0, 0), value=51.0, dataset="digits").verdict == "not tested"


def test_a_cell_without_a_result_is_not_tested():
    cells = _cells(0.9, 0.8, 0.8, 0.8)
    cells[2] = Cell("x3", [], 1000)
    assert _verdict("better", cells, a=(0, 0)) == "not tested"
