"""The catalogue of `fcnet grade`'s checks: names, what each measures and its
pass rule.  The measuring happens in the sandboxed child (``fcnet.grade.child``);
the grader compares the value it reports with the threshold here (or the
rubric's override), so a threshold never travels into student code."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fcnet.check import THRESHOLDS


@dataclass(frozen=True)
class Check:
    """One check: ``op`` is "<" / "<=" / ">=" (value against threshold) or "ok"
    (passes when it ran without error)."""

    name: str
    question: str
    title: str
    op: str
    threshold: float | None
    source: str  # where the threshold comes from

    def passes(self, value: float | None, threshold: float | None) -> bool:
        if self.op == "ok":
            return True
        if value is None or not math.isfinite(value) or threshold is None:
            return False
        return {"<": value < threshold, "<=": value <= threshold, ">=": value >= threshold}[self.op]


CHECKS: list[Check] = [
    Check("load", "-", "two_layernet.py imports and defines TwoLayerNet", "ok", None, "-"),
    Check("init", "Q1", "TwoLayerNet(4, 10, 3, std=0.1) after np.random.seed(0): params W1 b1 W2 b2 "
          "drawn from the global generator (max |diff|)", "<", 1e-12, "study.md toy init"),
    Check("q1_scores", "Q1", "toy probabilities: sum |p - expected|", "<", THRESHOLDS["scores_diff"],
          "study.md"),
    Check("q1_stable", "Q1", "probabilities for scores in the thousands (softmax shifted by the row "
          "max): sum |p - fcnet's|", "<", 1e-7, "study.md threshold on large inputs"),
    Check("q1_loss", "Q1", "toy loss with reg 0.05: |loss - 1.30378789133|", "<",
          THRESHOLDS["loss_diff"], "study.md"),
    Check("q1c_loops", "Q1c", "Python loops over samples, units or classes in loss (static)", "<=", 0,
          "study.md: everything vectorised"),
    Check("q1c_scaling", "Q1c", "per-sample time of loss(X, y) for N 500 -> 8000, relative to fcnet's",
          "<", 10.0, "fcnet (a per-sample loop is ~100x or more)"),
    Check("q2_gradients", "Q2", "max relative error of the analytic gradients vs numerical (h 1e-5, "
          "reg 0.05)", "<", THRESHOLDS["rel_error"], "study.md"),
    Check("q3_toy_training", "Q3", "final loss of the toy SGD run (lr 0.1, reg 5e-6, 100 iterations)",
          "<", THRESHOLDS["toy_final_loss"], "study.md"),
    Check("q3_digits", "Q3", "validation accuracy on digits (hidden 50, lr 1e-2, reg 0.05, "
          "300 iterations, batch 200)", ">=", 0.90, "fcnet (its own net reaches 0.97)"),
    Check("q3_cifar10", "Q3", "validation accuracy on CIFAR-10, the baseline (hidden 50, lr 1e-4, "
          "reg 0.25, 1,000 iterations, batch 200)", ">=", 0.22, "study.md: about 29% (report 28.4%)"),
]
BY_NAME = {c.name: c for c in CHECKS}
TRAINING_CHECK = {"digits": "q3_digits", "cifar10": "q3_cifar10"}


def checks_for(dataset: str) -> list[Check]:
    """The checks one grading runs: all but the training check of the other dataset."""
    skip = {v for k, v in TRAINING_CHECK.items() if k != dataset}
    return [c for c in CHECKS if c.name not in skip]
