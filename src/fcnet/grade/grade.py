"""Grading: prepare the training data once, run every submission's child in the
sandbox (a few at a time), turn what it measured into pass/fail with the
rubric's thresholds, and score it."""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcnet.errors import FcnetError
from fcnet.grade.checks import Check, checks_for
from fcnet.grade.judge import JUDGE, Failed, Seen
from fcnet.grade.plan import Plan, make_plan, set_training_dims
from fcnet.grade.rubric import Rubric
from fcnet.grade.sandbox import Limits, RunResult, Sandbox
from fcnet.grade.submissions import Submission, stage

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
        v = self.value
        return {"name": self.name, "passed": self.passed,
                "value": v if v is None or math.isfinite(v) else str(v),
                "threshold": self.threshold, "message": self.message}


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
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    return f"{v:.2e}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.4g}"


def verdict(check: Check, value: float | None, note: str, threshold: float | None, points: float,
            detail: dict | None = None) -> CheckResult:
    """Pass or fail against the threshold, with the one-line message."""
    value = None if value is None else float(value)
    passed = bool(check.passes(value, threshold))
    if check.op == "ok":
        msg = note or "ok"
    elif value is None or not math.isfinite(value):
        msg = f"{fmt(value)}: not a finite number" + (f"; {note}" if note else "")
    else:
        rel = check.op if passed else {"<": ">=", "<=": ">", ">=": "<"}[check.op]
        msg = f"{fmt(value)} {rel} {fmt(threshold)}" + (f"; {note}" if note else "")
    return CheckResult(check.name, passed, value, threshold, msg[:400], points, detail)


def judge(check: Check, rec: dict | None, seen: Seen, plan: Plan, threshold: float | None, points: float,
          stopped: str | None) -> CheckResult:
    """One check's result from the child's record (None: it never reported)."""
    fail = lambda why: CheckResult(check.name, False, None, threshold, why[:400], points)  # noqa: E731
    if check.name == "own_code":
        if seen.imports is None:
            return fail(f"not checked: {stopped or 'stopped'} before its imports were recorded")
    elif rec is None:
        return fail(stopped or "not run")
    elif "error" in rec:
        return fail(str(rec["error"])[:300])
    if check.name == "load":
        return verdict(check, None, "TwoLayerNet from two_layernet.py", threshold, points)
    try:
        value, note, detail = JUDGE[check.name](seen, plan)
    except Failed as err:
        return fail(str(err))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, FloatingPointError) as err:
        return fail(f"the child's outputs do not fit the check ({type(err).__name__})")
    return verdict(check, value, str(note or "")[:300], threshold, points, detail)


def score_of(results: list[CheckResult], checks: list[Check]) -> float:
    total = sum(r.points for r in results)
    if any(c.gate and not r.passed for c, r in zip(checks, results)):
        return 0.0
    return round(100.0 * sum(r.points for r in results if r.passed) / total, 1) if total else 0.0


def grade_run(sub: Submission, checks: list[Check], rubric: Rubric, result: RunResult | None,
              reason: str | None, limits: Limits, mode: str, plan: Plan, folder: Path | None) -> Grade:
    """Judge the child's outputs check by check, in the grader's process, and score them."""
    records = result.records if result else []
    recs = {r["check"]: r for r in records if isinstance(r.get("check"), str)}
    started = [r["start"] for r in records if "start" in r]
    imports = None
    for r in records:
        if isinstance(r.get("imports"), list):
            imports = (imports or []) + [x for x in r["imports"] if isinstance(x, list) and len(x) == 2
                                         and all(isinstance(v, str) for v in x)]
    stop = reason or (result.stop_reason(limits, mode) if result else "not run")
    running = started[-1] if started and started[-1] not in recs else None
    seen = Seen([], {}, folder, imports)
    out = []
    for c in checks:
        why = stop
        if stop and running and c.name != running:
            why = f"not run: the submission was stopped during {running}"
        rec = recs.get(c.name)
        outputs = rec.get("outputs") if isinstance(rec, dict) else None
        seen.outputs = outputs if isinstance(outputs, list) else []
        r = judge(c, rec, seen, plan, rubric.threshold(c), rubric.points.get(c.name, 0.0), why)
        seen.passed[c.name] = r.passed
        out.append(r)
    g = Grade(sub.name, str(sub.path), score_of(out, checks), out)
    if result:
        g.seconds, g.output, g.output_bytes = result.seconds, result.output, result.output_bytes
    return g


# ------------------------------------------------------------------ data
def prepare_data(dataset: str, path: str | None, dest: Path) -> tuple[int, np.ndarray]:
    """X_train, y_train, X_val, y_val and X_test as .npy files in ``dest`` (the child loads
    them without pickle); returns their size in bytes and y_test, which stays here."""
    from fcnet.data import Preprocessor, get_CIFAR10_data, load_splits

    if dataset == "digits":
        if path is not None:
            raise FcnetError("--path is only for --dataset cifar10 (digits are built in)")
        d = load_splits("digits", progress=False, cache=False)
        prep = Preprocessor("mean").fit(d.train.x)
        arrays = {"X_train": prep.transform(d.train.x), "y_train": d.train.y,
                  "X_val": prep.transform(d.val.x), "y_val": d.val.y, "X_test": prep.transform(d.test.x)}
        y_test = d.test.y
    elif dataset == "cifar10":
        X_train, y_train, X_val, y_val, X_test, y_test = get_CIFAR10_data(path=path, progress=False)
        arrays = {"X_train": X_train.astype(np.float32), "y_train": y_train,
                  "X_val": X_val.astype(np.float32), "y_val": y_val, "X_test": X_test.astype(np.float32)}
    else:
        raise FcnetError(f"--dataset must be digits or cifar10, got {dataset!r}")
    dest.mkdir(mode=0o755)
    for k, v in arrays.items():
        np.save(dest / f"{k}.npy", np.ascontiguousarray(v))
        os.chmod(dest / f"{k}.npy", 0o644)
    return sum(int(np.asarray(v).nbytes) for v in arrays.values()), np.asarray(y_test)


# ------------------------------------------------------------------ the run
def grade_all(subs: list[Submission], rubric: Rubric, dataset: str = "digits", data_path: str | None = None,
              limits: Limits | None = None, jobs: int = 1, sandbox: str = "auto",
              on_done: Callable[[int, Grade], None] | None = None,
              warn: Callable[[str], None] | None = None, seed: int | None = None) -> list[Grade]:
    """Grade each submission in its own sandboxed child; grades in the order given."""
    limits = limits or Limits()
    checks = checks_for(dataset)
    if not sum(rubric.points.get(c.name, 0.0) for c in checks):
        raise FcnetError(f"rubric {rubric.source}: no points for the checks --dataset {dataset} runs")
    box = Sandbox.detect(sandbox)
    for w in box.warnings:
        (warn or (lambda m: print(f"fcnet: warning: {m}", file=sys.stderr)))(w)
    tmp = Path(tempfile.mkdtemp(prefix="fcnet-grade-"))
    os.chmod(tmp, 0o755)
    try:
        data_bytes, y_test = prepare_data(dataset, data_path, tmp / "data")
        plan = make_plan(dataset, tmp / "data", seed)
        plan.y_test = y_test
        X_train = np.load(tmp / "data" / "X_train.npy", mmap_mode="r")
        y_all = np.concatenate([np.load(tmp / "data" / f"{k}.npy") for k in ("y_train", "y_val")])
        set_training_dims(plan, int(X_train.shape[1]), int(max(y_all.max(), y_test.max())) + 1)
        lim = Limits(**{**limits.__dict__, "memory_mb": limits.memory_mb + 2 * (data_bytes >> 20)})
        slots = list(range(max(1, jobs)))
        lock = threading.Lock()
        done = [0]

        def attempt(i: int, sub: Submission, slot: int) -> Grade:
            run_dir = tmp / f"s{i}"
            run_dir.mkdir(mode=0o755)
            result, reason = None, sub.problem
            try:
                if reason is None:
                    stage(sub, run_dir / "src")
                    cfg = {"plan": plan.for_child([c.name for c in checks if c.name != "own_code"])}
                    result = box.run(cfg, run_dir / "src", tmp / "data", lim, slot)
                folder = run_dir / "src" if (run_dir / "src").is_dir() else None
                g = grade_run(sub, checks, rubric, result, reason, lim, box.mode, plan, folder)
                if folder is not None:
                    g.source = (folder / "two_layernet.py").read_bytes()[:MAX_SOURCE].decode("utf-8",
                                                                                           "replace")
            except (FcnetError, OSError) as err:
                g = grade_run(sub, checks, rubric, None, str(err), lim, box.mode, plan, None)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            g.detail["sandbox"] = box.mode
            g.detail["inputs_seed"] = plan.seed
            return g

        def one(i: int, sub: Submission) -> Grade:
            with lock:
                slot = slots.pop()
            try:
                g = attempt(i, sub, slot)
            finally:
                with lock:
                    slots.append(slot)
            with lock:
                done[0] += 1
                n = done[0]
            if on_done is not None:
                on_done(n, g)
            return g

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            grades = list(pool.map(one, range(len(subs)), subs))
        for g in grades:
            g.detail["total_seconds"] = round(time.perf_counter() - t0, 2)
        return grades
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
