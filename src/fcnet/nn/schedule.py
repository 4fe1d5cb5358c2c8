"""The learning-rate schedule: one function for every backend and population member."""

from __future__ import annotations

import numpy as np


def lr_at(it: int, *, lr, decay, schedule: str, iters_per_epoch: int, total: int):
    """Learning rate of iteration ``it`` (0-based) of ``total``; ``lr`` and ``decay`` floats
    or per-member arrays (K,), the result shaped alike.  'step' (study.md Q3) decays once per
    epoch, the first time right after iteration 0: ``lr * decay ** ceil(it / iters_per_epoch)``.
    'cosine' warms up linearly over min(an epoch, a tenth of the run), then follows half a
    cosine down to 0 at iteration ``total``."""
    if schedule == "step":
        return lr * np.power(decay, -(-it // iters_per_epoch))
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    warm = max(min(iters_per_epoch, total // 10), 1)
    if it < warm:
        return lr * ((it + 1) / warm)
    return lr * (0.5 * (1 + np.cos(np.pi * (it - warm) / max(total - warm, 1))))


def lr_period(it: int, *, schedule: str, iters_per_epoch: int) -> int:
    """What ``lr_at``'s rate depends on besides the settings: the epoch's count of decays for
    'step' (one rate an epoch, so a stepper derives its coefficients once an epoch), else ``it``."""
    return -(-it // iters_per_epoch) if schedule == "step" else it
