"""The catalogue of `fcnet grade`'s checks: names, what each measures and its
pass rule.  The sandboxed child (``fcnet.grade.child``) only runs the student's
code on the grader's inputs; the grader turns its outputs into a value
(``fcnet.grade.judge``) and compares it with the threshold here (or the
rubric's override)."""

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
    gate: bool = False  # failing it makes the score 0 (load, own_code)

    def passes(self, value: float | None, threshold: float | None) -> bool:
        if self.op == "ok":
            return True
        if value is None or not math.isfinite(value) or threshold is None:
            return False
        return {"<": value < threshold, "<=": value <= threshold, ">=": value >= threshold}[self.op]


CHECKS: list[Check] = [
    Check("load", "-", "two_layernet.py imports and defines TwoLayerNet", "ok", None, "-", gate=True),
    Check("own_code", "-", "the submission does not import fcnet (a reference implementation) nor any "
          "module of fcnet's installation", "ok", None, "-", gate=True),
    Check("init", "Q1", "TwoLayerNet(D, H, C, std) after np.random.seed(s): params W1 b1 W2 b2 drawn from "
          "the global generator, toy and random sizes (max |diff|)", "<", 1e-12, "study.md toy init"),
    Check("q1_scores", "Q1", "probabilities loss(X), toy and random inputs: sum |p - expected|", "<",
          THRESHOLDS["scores_diff"], "study.md"),
    Check("q1_stable", "Q1", "feedback: probabilities for scores in the thousands (softmax shifted by "
          "the row max; the course does not ask for it): sum |p - fcnet's|", "<", 1e-7,
          "study.md threshold on large inputs"),
    Check("q1_loss", "Q1", "loss at reg 0.05 (toy: |loss - 1.30378789133|) and at two random regs on "
          "random inputs (|loss - fcnet's|)", "<", THRESHOLDS["loss_diff"], "study.md"),
    Check("q1c_loops", "Q1c", "Python loops over samples, units or classes in the forward pass and loss "
          "(static; needs q1_scores and q1_loss)", "<=", 0, "study.md: everything vectorised"),
    Check("q1c_scaling", "Q1c", "per-sample time of a correct loss(X, y) for N 500 -> 8000, relative to "
          "a plain vectorised loss", "<", 10.0, "fcnet (a per-sample loop is ~100x or more)"),
    Check("q2_gradients", "Q2", "max relative error of the gradients vs fcnet's exact ones (toy at reg "
          "0.05, random inputs at a random reg)", "<", THRESHOLDS["rel_error"], "study.md"),
    Check("q2_loops", "Q2", "feedback: Python loops over data in the backward pass (static; the course "
          "asks Q1c of the forward pass and loss)", "<=", 0, "-"),
    Check("q3_toy_training", "Q3", "toy SGD (lr 0.1, reg 5e-6, 100 iterations): the larger of the final "
          "loss reported and the loss of the trained weights", "<", THRESHOLDS["toy_final_loss"],
          "study.md"),
    Check("q3_digits", "Q3", "test accuracy on digits after training (hidden 50, lr 1e-2, reg 0.05, "
          "300 iterations, batch 200; labels never shown to the submission)", ">=", 0.90,
          "fcnet (its own net reaches 0.95)"),
    Check("q3_cifar10", "Q3", "test accuracy on CIFAR-10 after the baseline (hidden 50, lr 1e-4, "
          "reg 0.25, 1,000 iterations, batch 200)", ">=", 0.22, "study.md: about 29% (report 28.4%)"),
]
BY_NAME = {c.name: c for c in CHECKS}
TRAINING_CHECK = {"digits": "q3_digits", "cifar10": "q3_cifar10"}


def checks_for(dataset: str) -> list[Check]:
    """The checks one grading runs: all but the training check of the other dataset."""
    skip = {v for k, v in TRAINING_CHECK.items() if k != dataset}
    return [c for c in CHECKS if c.name not in skip]
