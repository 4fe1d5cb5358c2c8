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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fcnet.errors import FcnetError
from fcnet.grade.checks import Check, checks_for
from fcnet.grade.judge import JUDGE, Failed, Seen
from fcnet.grade.plan import Plan, make_plan, save_arrays
from fcnet.grade.rubric import Rubric
from fcnet.grade.sandbox import Limits, RunResult, Sandbox
from fcnet.grade.submissions import ENTRY, Submission, stage

MAX_SOURCE = 256 << 10


@dataclass
class CheckResult:
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


@dataclass
class Grade:
    submission: str
    path: str
    score: float
    checks: list[CheckResult]
    seconds: float = 0.0
    output: str = ""
    output_bytes: int = 0
    detail: dict = field(default_factory=dict)
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


def judge(check: Check, rec: dict | None, seen: Seen, plan: Plan, threshold: float | None, points: float,
          stopped: str | None) -> CheckResult:
    """One check's result from the child's record (None: it never reported): pass or fail
    against the threshold, with a one-line message."""
    fail = lambda why: CheckResult(check.name, False, None, threshold, why[:400], points)  # noqa: E731
    if check.name == "own_code":
        if seen.imports is None:
            return fail(f"not checked: {stopped or 'stopped'} before its imports were recorded")
    elif rec is None:
        return fail(stopped or "not run")
    elif "error" in rec:
        return fail(str(rec["error"])[:300])
    try:
        value, note, detail = (None, "TwoLayerNet from two_layernet.py", None) if check.name == "load" \
            else JUDGE[check.name](seen, plan)
    except Failed as err:
        return fail(str(err))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, FloatingPointError) as err:
        return fail(f"the child's outputs do not fit the check ({type(err).__name__})")
    value, note = None if value is None else float(value), str(note or "")[:300]
    passed = bool(check.passes(value, threshold))
    tail = f"; {note}" if note else ""
    if check.op == "ok":
        msg = note or "ok"
    elif value is None or not math.isfinite(value):
        msg = f"{fmt(value)}: not a finite number{tail}"
    else:
        rel = check.op if passed else {"<": ">=", "<=": ">", ">=": "<"}[check.op]
        msg = f"{fmt(value)} {rel} {fmt(threshold)}{tail}"
    return CheckResult(check.name, passed, value, threshold, msg[:400], points, detail)


def grade_run(sub: Submission, checks: list[Check], rubric: Rubric, result: RunResult | None,
              reason: str | None, limits: Limits, mode: str, plan: Plan, folder: Path | None) -> Grade:
    """Judge the child's outputs check by check, in the grader's process, and score them."""
    records = result.records if result else []
    recs = {r["check"]: r for r in records if isinstance(r.get("check"), str)}
    started = [r["start"] for r in records if "start" in r]
    lists = [r["imports"] for r in records if isinstance(r.get("imports"), list)]
    imports = [x for xs in lists for x in xs if isinstance(x, list) and len(x) == 2
               and all(isinstance(v, str) for v in x)] if lists else None
    stop = reason or (result.stop_reason(limits, mode) if result else "not run")
    running = started[-1] if started and started[-1] not in recs else None
    seen = Seen([], {}, folder, imports)
    during = f"not run: the submission was stopped during {running}"
    out = []
    for c in checks:
        why = during if stop and running and c.name != running else stop
        rec = recs.get(c.name)
        outputs = (rec or {}).get("outputs")
        seen.outputs = outputs if isinstance(outputs, list) else []
        r = judge(c, rec, seen, plan, rubric.threshold(c), rubric.points.get(c.name, 0.0), why)
        seen.passed[c.name] = r.passed
        out.append(r)
    total = sum(r.points for r in out)
    gated = any(c.gate and not r.passed for c, r in zip(checks, out))
    score = round(100.0 * sum(r.points for r in out if r.passed) / total, 1) if total and not gated else 0.0
    ran = (result.seconds, result.output, result.output_bytes) if result else ()
    return Grade(sub.name, str(sub.path), score, out, *ran)


def prepare_data(dataset: str, path: str | None, dest: Path) -> tuple[int, np.ndarray, int, int]:
    """X_train, y_train, X_val, y_val and X_test as .npy files in ``dest`` (the child loads
    them without pickle); returns their size in bytes, y_test (which stays here), D and C."""
    from fcnet.data import Preprocessor, get_CIFAR10_data, load_splits

    if dataset == "digits":
        d = load_splits("digits", progress=False, cache=False)
        prep = Preprocessor("mean").fit(d.train.x)
        splits = [a for s in (d.train, d.val, d.test) for a in (prep.transform(s.x), s.y)]
    else:  # CIFAR-10's images as float32, its labels as they are
        splits = [a.astype(np.float32) if i % 2 == 0 else a
                  for i, a in enumerate(get_CIFAR10_data(path=path, progress=False))]
    arrays = dict(zip(("X_train", "y_train", "X_val", "y_val", "X_test"), splits))
    y_test = np.asarray(splits[5])
    dest.mkdir(mode=0o755)
    save_arrays(dest, arrays)
    C = int(max(np.max(arrays["y_train"]), np.max(arrays["y_val"]), y_test.max())) + 1
    nbytes = sum(int(np.asarray(v).nbytes) for v in arrays.values())
    return nbytes, y_test, int(arrays["X_train"].shape[1]), C


def grade_all(subs: list[Submission], rubric: Rubric, dataset: str = "digits", data_path: str | None = None,
              limits: Limits | None = None, jobs: int = 1, sandbox: str = "auto",
              on_done: Callable[[int, Grade], None] | None = None) -> list[Grade]:
    """Grade each submission in its own sandboxed child; grades in the order given."""
    limits = limits or Limits()
    checks = checks_for(dataset)
    if not sum(rubric.points.get(c.name, 0.0) for c in checks):
        raise FcnetError(f"rubric {rubric.source}: no points for the checks --dataset {dataset} runs")
    box = Sandbox.detect(sandbox)
    for w in box.warnings:
        print(f"fcnet: warning: {w}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fcnet-grade-", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        data_bytes, y_test, D, C = prepare_data(dataset, data_path, tmp / "data")
        plan = make_plan(dataset, tmp / "data", D, C, y_test)
        lim = replace(limits, memory_mb=limits.memory_mb + 2 * (data_bytes >> 20))
        # a slot per worker thread (its own uid when the grader drops root); next() on a count is atomic
        worker, slots, done = threading.local(), itertools.count(), itertools.count(1)

        def one(i: int, sub: Submission) -> Grade:
            run_dir = tmp / f"s{i}"
            run_dir.mkdir(mode=0o755)
            result, reason = None, sub.problem
            try:
                if reason is None:
                    stage(sub, run_dir / "src")
                    cfg = {"plan": [{"name": c.name, "steps": plan.steps.get(c.name, [])}
                                    for c in checks if c.name != "own_code"]}
                    result = box.run(cfg, run_dir / "src", tmp / "data", lim, worker.slot)
                folder = run_dir / "src" if (run_dir / "src").is_dir() else None
                g = grade_run(sub, checks, rubric, result, reason, lim, box.mode, plan, folder)
                if folder is not None:
                    g.source = (folder / ENTRY).read_bytes()[:MAX_SOURCE].decode("utf-8", "replace")
            except (FcnetError, OSError) as err:
                g = grade_run(sub, checks, rubric, None, str(err), lim, box.mode, plan, None)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            g.detail = {"sandbox": box.mode, "inputs_seed": plan.seed}
            if on_done is not None:
                on_done(next(done), g)
            return g

        with ThreadPoolExecutor(max(1, jobs),
                                initializer=lambda: setattr(worker, "slot", next(slots))) as pool:
            return list(pool.map(one, range(len(subs)), subs))
