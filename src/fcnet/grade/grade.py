"""Grading: prepare the training data once, run every submission's child in the
sandbox (a few at a time), judge what it measured with the rubric's thresholds, and score it."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from fcnet.errors import FcnetError
from fcnet.grade.checks import CHECKS, OPS, Check
from fcnet.grade.judge import JUDGE, Failed, Seen
from fcnet.grade.plan import Plan, make_plan
from fcnet.grade.rubric import Rubric
from fcnet.grade.sandbox import Limits, RunResult, Sandbox
from fcnet.grade.submissions import ENTRY, Submission, stage

MAX_SOURCE = 256 << 10


class CheckResult(NamedTuple):
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str
    points: float
    detail: dict | None = None

    def to_json(self) -> dict:
        v = self.value if self.value is None or math.isfinite(self.value) else str(self.value)
        return {"name": self.name, "passed": self.passed, "value": v, "threshold": self.threshold,
                "message": self.message}


class Grade(NamedTuple):
    submission: str
    path: str
    score: float
    checks: list[CheckResult]
    seconds: float = 0.0
    output: str = ""
    output_bytes: int = 0
    source: str = ""  # two_layernet.py, for the similarity report

    def to_json(self) -> dict:
        return {"submission": self.submission, "score": self.score,
                "checks": [c.to_json() for c in self.checks]}

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def fmt(v: float | None) -> str:
    """A number for a one-line message: 4 significant digits, exponent for tiny ones."""
    if v is None or not math.isfinite(v):
        return "-" if v is None else str(v)
    if v == 0:
        return "0"
    return f"{v:.2e}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.4g}"


def judge(check: Check, rec: dict | None, seen: Seen, plan: Plan, rubric: Rubric,
          stopped: str | None) -> CheckResult:
    """One check's result and one-line message from the child's record (None: it never reported)."""
    threshold, points = rubric.thresholds.get(check.name, check.threshold), rubric.points.get(check.name, 0.0)
    try:
        if check.name == "own_code":  # the grader's own check: the child has no record of it
            if seen.imports is None:
                raise Failed(f"not checked: {stopped or 'stopped'} before its imports were recorded")
        elif rec is None:
            raise Failed(stopped or "not run")
        elif "error" in rec:
            raise Failed(str(rec["error"])[:300])
        value, note, detail = JUDGE[check.name](seen, plan)
    except (Failed, ValueError, TypeError, KeyError, IndexError, AttributeError, FloatingPointError) as err:
        why = str(err) if isinstance(err, Failed) else \
            f"the child's outputs do not fit the check ({type(err).__name__})"
        return CheckResult(check.name, False, None, threshold, why[:400], points)
    value, note = None if value is None else float(value), str(note or "")[:300]
    tail = f"; {note}" if note else ""
    if check.op == "ok":
        passed, msg = True, note or "ok"
    elif value is None or not math.isfinite(value):
        passed, msg = False, f"{fmt(value)}: not a finite number{tail}"
    else:  # every check with a comparison has a threshold (the rubric cannot remove it)
        compare, failing = OPS[check.op]
        passed = compare(value, threshold)
        msg = f"{fmt(value)} {check.op if passed else failing} {fmt(threshold)}{tail}"
    return CheckResult(check.name, passed, value, threshold, msg[:400], points, detail)


def grade_run(sub: Submission, checks: list[Check], rubric: Rubric, result: RunResult | None,
              stop: str | None, plan: Plan, folder: Path | None, source: str) -> Grade:
    """Judge and score the child's outputs (``stop``: why it stopped early or did not run, or None)."""
    records = result.records if result else []
    recs = {r["check"]: r for r in records if isinstance(r.get("check"), str)}
    started = [r["start"] for r in records if "start" in r]
    lists = [r["imports"] for r in records if isinstance(r.get("imports"), list)]
    imports = [x for xs in lists for x in xs if isinstance(x, list) and len(x) == 2
               and all(isinstance(v, str) for v in x)] if lists else None
    running = started[-1] if started and started[-1] not in recs else None
    seen = Seen([], {}, folder, imports)
    during = f"not run: the submission was stopped during {running}"
    out = []
    for c in checks:
        rec = recs.get(c.name)
        outputs = (rec or {}).get("outputs")
        seen.outputs = outputs if isinstance(outputs, list) else []
        why = during if stop and running and c.name != running else stop
        out.append(judge(c, rec, seen, plan, rubric, why))
        seen.passed[c.name] = out[-1].passed
    total = sum(r.points for r in out)
    gated = any(c.op == "ok" and not r.passed for c, r in zip(checks, out))
    score = round(100.0 * sum(r.points for r in out if r.passed) / total, 1) if total and not gated else 0.0
    ran = (result.seconds, result.output, result.output_bytes) if result else ()
    return Grade(sub.name, str(sub.path), score, out, *ran, source=source)


def grade_all(subs: list[Submission], rubric: Rubric, dataset: str, data_path: str | None, limits: Limits,
              jobs: int, sandbox: str, on_done: Callable[[int, Grade], None] | None,
              ) -> tuple[list[Grade], dict]:
    """Grade each submission in its own sandboxed child: the grades in order, and the run's meta."""
    other = "q3_cifar10" if dataset == "digits" else "q3_digits"
    checks = [c for c in CHECKS if c.name != other]  # the other dataset's training check does not run
    if not sum(rubric.points.get(c.name, 0.0) for c in checks):
        raise FcnetError(f"rubric {rubric.source}: no points for the checks --dataset {dataset} runs")
    box = Sandbox.detect(sandbox)
    for w in box.warnings:
        print(f"fcnet: warning: {w}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fcnet-grade-", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        data_bytes, plan = make_plan(dataset, data_path, tmp / "data")
        lim = limits._replace(memory_mb=limits.memory_mb + 2 * (data_bytes >> 20))
        cfg = {"plan": [{"name": c.name, "steps": plan.steps.get(c.name, [])} for c in checks
                        if c.name != "own_code"]}
        # a slot per worker thread (its own uid when the grader drops root); next() on a count is atomic
        worker, slots, done = threading.local(), itertools.count(), itertools.count(1)

        def one(i: int, sub: Submission) -> Grade:
            src = tmp / f"s{i}" / "src"
            src.parent.mkdir(mode=0o755)
            result, stop, folder, source = None, sub.problem, None, ""
            try:
                if stop is None:
                    stage(sub, src)
                    source = (src / ENTRY).read_bytes()[:MAX_SOURCE].decode("utf-8", "replace")
                    result, folder = box.run(cfg, src, tmp / "data", lim, worker.slot), src
                    stop = result.stop_reason(lim, box.mode)
            except (FcnetError, OSError) as err:
                result, stop, folder, source = None, str(err), None, ""
            g = grade_run(sub, checks, rubric, result, stop, plan, folder, source)
            shutil.rmtree(src.parent, ignore_errors=True)
            if on_done is not None:
                on_done(next(done), g)
            return g

        with ThreadPoolExecutor(jobs, initializer=lambda: setattr(worker, "slot", next(slots))) as pool:
            return list(pool.map(one, range(len(subs)), subs)), {"sandbox": box.mode,
                                                                 "random inputs seed": plan.seed}
