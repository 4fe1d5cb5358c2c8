"""The catalogue of `fcnet grade`'s checks and their pass rules (docs/grade.md says
what each measures); the grader computes each value in ``fcnet.grade.judge``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fcnet.check import THRESHOLDS


@dataclass(frozen=True)
class Check:
    """``op``: "<" / "<=" / ">=" (value against threshold) or "ok" (passes when it ran)."""

    name: str
    op: str
    threshold: float | None
    gate: bool = False  # failing it makes the score 0

    def passes(self, value: float | None, threshold: float | None) -> bool:
        if self.op == "ok":
            return True
        if value is None or not math.isfinite(value) or threshold is None:
            return False
        return {"<": value < threshold, "<=": value <= threshold, ">=": value >= threshold}[self.op]


CHECKS: list[Check] = [
    Check("load", "ok", None, gate=True),
    Check("own_code", "ok", None, gate=True),
    Check("init", "<", 1e-12),
    Check("q1_scores", "<", THRESHOLDS["scores_diff"]),
    Check("q1_stable", "<", 1e-7),
    Check("q1_loss", "<", THRESHOLDS["loss_diff"]),
    Check("q1c_loops", "<=", 0),
    Check("q1c_scaling", "<", 10.0),  # a per-sample loop is ~100x or more
    Check("q2_gradients", "<", THRESHOLDS["rel_error"]),
    Check("q2_loops", "<=", 0),
    Check("q3_toy_training", "<", THRESHOLDS["toy_final_loss"]),
    Check("q3_digits", ">=", 0.90),  # fcnet's own net reaches 0.95
    Check("q3_cifar10", ">=", 0.22),  # study.md: about 29%
]
BY_NAME = {c.name: c for c in CHECKS}


def checks_for(dataset: str) -> list[Check]:
    """The checks one grading runs: all but the training check of the other dataset."""
    other = "q3_cifar10" if dataset == "digits" else "q3_digits"
    return [c for c in CHECKS if c.name != other]
