"""Training a sweep's trials, in the sweep's process or in worker processes.

A *task* is a list of jobs (one trial each) handed to one call of
:func:`run_task`; a task of several population mates is one call of
``fcnet.training.train_population``. Worker processes are started with the
'spawn' method and BLAS thread counts set in their environment, so the
variables are in place before NumPy loads; this module imports NumPy only
inside functions for the same reason.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from fcnet.errors import FcnetError

ATTEMPTS = "sweep-attempts.jsonl"  # one line when a trial starts in a run dir, one when it ends
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _log_attempt(run_dir: Path, record: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ATTEMPTS, "a") as f:  # O_APPEND: whole lines, even across processes
        f.write(json.dumps(record) + "\n")


def _summary_mtime(run_dir: Path) -> float | None:
    try:
        return (run_dir / "summary.json").stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _error(job: dict, err: BaseException) -> dict:
    if isinstance(err, FcnetError):
        return {**job, "error": str(err), "kind": "user"}
    return {**job, "error": f"{type(err).__name__}: {err}", "kind": "bug",
            "traceback": traceback.format_exc()}


def run_task(jobs: list[dict], figures: bool = True) -> list[dict]:
    """Train every job of a task; returns one result per job, in order.

    A job is ``{"trial", "key", "config" (JSON), "run_dir", "eval_at"}``;
    its result adds ``"summary"`` (train_run's dict, plus ``"trained"``: False when
    the run directory already held the finished run) or ``"error"`` and ``"kind"``
    ('user' for an FcnetError, 'bug' for anything else).
    """
    from fcnet.config import RunConfig
    from fcnet.experiments.storage import DirLock

    host, pid = socket.gethostname(), os.getpid()
    locks, results = [], []
    try:
        configs, run_dirs = [], []
        for job in jobs:
            run_dir = Path(job["run_dir"])
            # a second sweep sharing this runs dir waits here instead of training the same run
            locks.append(DirLock(run_dir, "this run directory").acquire(wait=True))
            configs.append(RunConfig.model_validate_json(job["config"]))
            run_dirs.append(run_dir)
        before = [_summary_mtime(d) for d in run_dirs]
        for job, run_dir in zip(jobs, run_dirs, strict=True):
            _log_attempt(run_dir, {"trial": job["trial"], "host": host, "pid": pid,
                                   "start": time.time(), "batch": len(jobs),
                                   "threads": os.environ.get("OMP_NUM_THREADS")})
        eval_at = sorted({i for job in jobs for i in job["eval_at"]})
        outcomes: list[tuple[bool, dict]] = []  # (ok, summary or error result)
        if len(jobs) > 1:
            from fcnet.training import train_population

            try:
                summaries = train_population(configs, run_dirs, quiet=True, resume=True,
                                             eval_at=eval_at or None, figures=figures)
                outcomes = [(True, s) for s in summaries]
            except Exception as err:  # the whole population failed
                outcomes = [(False, _error(job, err)) for job in jobs]
        else:
            from fcnet.training import train_run

            for job, config, run_dir in zip(jobs, configs, run_dirs, strict=True):
                try:
                    outcomes.append((True, train_run(config, run_dir, quiet=True, resume=True,
                                                     eval_at=job["eval_at"] or None,
                                                     figures=figures)))
                except Exception as err:
                    outcomes.append((False, _error(job, err)))
        for job, run_dir, old, (ok, s) in zip(jobs, run_dirs, before, outcomes,
                                                  strict=True):
            if not ok:
                results.append(s)
                continue
            trained = old is None or _summary_mtime(run_dir) != old
            _log_attempt(run_dir, {"trial": job["trial"], "host": host, "pid": pid,
                                   "end": time.time(), "trained": trained,
                                   "status": s.get("status")})
            results.append({**job, "summary": {**s, "trained": trained}})
    except Exception as err:  # e.g. an unreadable config: report it on every job
        return [_error(job, err) for job in jobs]
    finally:
        for lock in locks:
            lock.release()
    return results


# ------------------------------------------------------------------ worker processes
def die_with_parent(parent_pid: int) -> None:
    """Exit when the sweep process dies (even by SIGKILL), so no orphan keeps
    training into a run directory that a restarted sweep will resume."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # also where prctl is missing, and for the race before it
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def thread_env(threads: int) -> dict[str, str]:
    return {v: str(threads) for v in THREAD_VARS}


@contextmanager
def environ(values: dict[str, str]):
    """Set environment variables for the duration of the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
