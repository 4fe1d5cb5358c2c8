"""The catalogue of `fcnet grade`'s checks and their pass rules (docs/grade.md says
what each measures); the grader computes each value in ``fcnet.grade.judge``."""

from __future__ import annotations

import operator
from typing import NamedTuple

from fcnet.check import THRESHOLDS

# each rule's comparison, and the relation a failing value shows in its message
OPS = {"<": (operator.lt, ">="), "<=": (operator.le, ">"), ">=": (operator.ge, "<")}


class Check(NamedTuple):
    """``op``: a key of OPS (value against threshold) or "ok": passes when it ran, and is a gate
    (failing it makes the score 0)."""

    name: str
    op: str
    threshold: float | None


CHECKS: list[Check] = [
    Check("load", "ok", None),
    Check("own_code", "ok", None),
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
