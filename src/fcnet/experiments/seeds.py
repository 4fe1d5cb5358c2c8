"""Seeds as a sweep axis: a trial of ``fcnet sweep --seeds N`` trains its config with N seeds
(the config's own, then the next N - 1), its Optuna value their mean. Each seed is an ordinary
run directory (added seeds train only the new ones); one ``run_task`` call trains them all."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from fcnet.config import RunConfig
from fcnet.experiments import stats
from fcnet.experiments.space import run_key


def expand(job: dict, seeds: int) -> list[dict]:
    """A trial's job -> one job per seed (the first is the job itself)."""
    config = RunConfig.model_validate_json(job["config"])
    copies = [config.model_copy(update={"seed": config.seed + s}) for s in range(1, seeds)]
    return [job] + [{**job, "key": run_key(c), "config": c.model_dump_json(),
                     "run_dir": str(Path(job["run_dir"]).parent / run_key(c))} for c in copies]


def combine(job: dict, results: list[dict]) -> dict:
    """The seeds' results -> the trial's: an error if any seed failed, else their mean summary
    with ``seed_values`` (each seed's final accuracy) and ``seed_ci`` (the 95% t-interval)."""
    if failed := next((r for r in results if "error" in r), None):
        return {**job, **{k: failed[k] for k in ("error", "kind", "traceback") if k in failed}}
    sums = [r["summary"] for r in results]

    def mean(values: list) -> float | None:
        xs = [float(v) for v in values if v is not None and math.isfinite(v)]
        return sum(xs) / len(xs) if xs else None

    finals = [s.get("final_val_acc") for s in sums]
    ok = [float(v) for v in finals if v is not None and math.isfinite(v)]
    _, lo, hi = stats.mean_ci(ok) if ok else (None, None, None)
    at = sums[0].get("val_acc_at") or {}
    status = next((s.get("status") for s in sums if s.get("status") != "completed"), sums[0].get("status"))
    summary = {**sums[0], "status": status, "final_val_acc": mean(finals),
               "best_val_acc": mean([s.get("best_val_acc") for s in sums]),
               "val_acc_at": {it: mean([(s.get("val_acc_at") or {}).get(it) for s in sums]) for it in at},
               "train_seconds": sum(s.get("train_seconds") or 0.0 for s in sums),
               "trained": any(s.get("trained") for s in sums),
               "seeds": len(sums), "seed_values": finals, "seed_ci": [lo, hi]}
    return {**job, "summary": summary}


def run_trials(jobs: list[dict], seeds: int, run: Callable[[list[dict]], list[dict]]) -> list[dict]:
    """Train a task's trials with ``seeds`` seeds each through ``run``: one result per trial."""
    if seeds <= 1:
        return run(jobs)
    groups = [expand(j, seeds) for j in jobs]
    flat = iter(run([j for g in groups for j in g]))
    return [combine(job, list(islice(flat, len(g)))) for job, g in zip(jobs, groups, strict=True)]
