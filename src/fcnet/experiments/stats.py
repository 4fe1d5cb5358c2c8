"""The statistics of a study's tables (accuracies as fractions; docs/study.md): ``mean_ci``
over seeds (Student's t), ``sampling_ci`` of one run (Wilson), ``difference`` of two cells and
``beyond_noise`` over every pair (Holm). ``difference`` is Welch's t-test when both cells have
2+ seeds that spread, else (where Welch's variance is 0 and its p-value would claim certainty)
the two-proportion test of the validation counts (Newcombe's interval)."""

from __future__ import annotations

import gc
import math
from typing import NamedTuple

import numpy as np

LEVEL = 0.95


class Cell(NamedTuple):
    """One cell of a table: its per-seed accuracies on a validation split of n images."""

    label: str
    values: list[float]
    n: int

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def mean_ci(values: list[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the t-interval of the mean over seeds; (mean, None, None) for one
    value, and a zero-width interval when all values are equal."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, None, None
    sem = float(stats.sem(x))
    if sem == 0:
        return m, m, m
    lo, hi = stats.t.interval(level, len(x) - 1, loc=m, scale=sem)
    return m, float(lo), float(hi)


def sampling_ci(acc: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson interval of one run's accuracy ``acc`` measured on ``n`` images."""
    from scipy import stats

    k = int(round(acc * n))
    ci = stats.binomtest(k, n).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


class Difference(NamedTuple):
    d: float  # mean(a) - mean(b)
    low: float
    high: float
    p: float
    test: str  # the test's name, for the report


def difference(a: Cell, b: Cell, level: float = LEVEL) -> Difference:
    """a - b with its ``level`` interval and two-sided p-value (see the module docstring)."""
    xa, xb = np.asarray(a.values, float), np.asarray(b.values, float)
    if len(xa) >= 2 and len(xb) >= 2 and (np.ptp(xa) > 0 or np.ptp(xb) > 0):
        from scipy import stats

        d = float(xa.mean() - xb.mean())
        r = stats.ttest_ind(xa, xb, equal_var=False)
        ci = r.confidence_interval(level)
        return Difference(d, float(ci.low), float(ci.high), float(r.pvalue), "Welch t-test over seeds")
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    ka, kb = int(round(a.mean * a.n)), int(round(b.mean * b.n))
    lo, hi = confint_proportions_2indep(ka, a.n, kb, b.n, method="newcomb", alpha=1 - level)
    p = test_proportions_2indep(ka, a.n, kb, b.n).pvalue
    p = 1.0 if not math.isfinite(float(p)) else float(p)
    return Difference(ka / a.n - kb / b.n, float(lo), float(hi), p,
                      "two-proportion test of one run each (Newcombe interval)")


class Pair(NamedTuple):
    i: int
    j: int
    diff: Difference
    p_holm: float
    beyond: bool  # the Holm-corrected p-value < 1 - level


def beyond_noise(cells: list[Cell], level: float = LEVEL) -> list[Pair]:
    """Every pair (i < j) of cells, tested as ``difference``, Holm-corrected over all pairs."""
    from statsmodels.stats.multitest import multipletests

    pairs = [(i, j, difference(cells[i], cells[j], level))
             for i in range(len(cells)) for j in range(i + 1, len(cells))]
    if not pairs:
        return []
    gc.freeze()  # statsmodels' Holm calls gc.collect(): 0.2 s each over a study's heap
    try:
        reject, p_holm, _, _ = multipletests([d.p for _, _, d in pairs], alpha=1 - level, method="holm")
    finally:
        gc.unfreeze()
    return [Pair(i, j, d, float(p), bool(r)) for (i, j, d), p, r in zip(pairs, p_holm, reject)]
