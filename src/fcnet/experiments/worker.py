"""Training a sweep's trials, in the sweep's process or in worker processes. A *task* is the
jobs one :func:`run_task` call trains (population mates as one ``train_population``)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

import optuna
from optuna.trial import TrialState

import fcnet.files
import fcnet.training
from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.experiments import seeds, space
from fcnet.experiments.plan import plan, pop_key
from fcnet.experiments.storage import heartbeat, retry

ATTEMPTS = "sweep-attempts.jsonl"  # one line when a trial starts in a run dir, one when it ends
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")  # set before a spawned worker loads NumPy


def _log_attempt(run_dir: Path, job: dict, **record) -> None:
    record = {"trial": job["trial"], "host": socket.gethostname(), "pid": os.getpid(), **record}
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ATTEMPTS, "a") as f:  # O_APPEND: whole lines, even across processes
        f.write(json.dumps(record) + "\n")


def _summary_mtime(run_dir: Path) -> int | None:
    path = run_dir / "summary.json"
    return path.stat().st_mtime_ns if path.exists() else None


def run_task(jobs: list[dict], figures: bool = True) -> list[dict]:
    """Train a task's jobs (``{"trial", "key", "config" (JSON), "run_dir", "eval_at"}``), several as one
    population: each job plus ``"summary"`` (train_run's, ``"trained"`` False if the run directory held
    the finished run) or, on every job, ``"error"`` and ``"kind"`` ('user' for an FcnetError, else 'bug')."""
    try:
        with contextlib.ExitStack() as locks:
            configs = [RunConfig.model_validate_json(job["config"]) for job in jobs]
            run_dirs = [Path(job["run_dir"]) for job in jobs]
            for config, run_dir in zip(configs, run_dirs, strict=True):
                # a second sweep sharing this runs dir waits here instead of training the run
                locks.enter_context(fcnet.training.rundir.locked(run_dir, config))
            before = [_summary_mtime(d) for d in run_dirs]
            for job, run_dir in zip(jobs, run_dirs, strict=True):
                _log_attempt(run_dir, job, start=time.time(), batch=len(jobs),
                             threads=os.environ.get("OMP_NUM_THREADS"))
            kw = {"quiet": True, "resume": True, "figures": figures,
                  "eval_at": sorted({i for job in jobs for i in job["eval_at"]}) or None}
            summaries = (fcnet.training.train_population(configs, run_dirs, **kw) if len(jobs) > 1 else
                         [fcnet.training.train_run(configs[0], run_dirs[0], **kw)])
            results = []
            for job, s, run_dir, old in zip(jobs, summaries, run_dirs, before, strict=True):
                trained = old is None or _summary_mtime(run_dir) != old
                _log_attempt(run_dir, job, end=time.time(), trained=trained, status=s.get("status"))
                results.append({**job, "summary": {**s, "trained": trained}})
            return results
    except Exception as err:  # e.g. an unreadable config, a failed run: on every job
        if isinstance(err, FcnetError):
            return [{**job, "error": str(err), "kind": "user"} for job in jobs]
        error, tb = f"{type(err).__name__}: {err}", traceback.format_exc()
        return [{**job, "error": error, "kind": "bug", "traceback": tb} for job in jobs]


# how often a worker waiting on other processes' trials looks again: a sweep's workers exit up to
# this long after its last trial (1 s was a tenth of the digits study's tail)
POLL_S = 0.25
RESULT_KEYS = ("status", "final_val_acc", "best_val_acc", "val_acc_at", "train_seconds",
               "samples_per_second", "iterations", "diverged_at", "trained", "seeds",
               "seed_values", "seed_ci")


def work(st, spec, runs_dir: Path, population: int = 8, workers: int = 1,
         figures: bool = True, on_tell=lambda: None) -> str | None:
    """One worker: Optuna's ``_run_trial`` for a trial and its queued mates (fail stale, ask, heartbeat,
    train, tell) until nothing is left or may fail back into the queue; None, or the user error."""
    if spec.search:  # a restarted or joining process must not replay the first one's proposals
        sampler = optuna.samplers.RandomSampler if spec.search == "random" else optuna.samplers.TPESampler
        st.study.sampler = sampler(seed=spec.seed + len(st.trials()) + (0 if st.created else os.getpid()))
    owner, held = f"{socket.gethostname()}:{os.getpid()}", {}  # held: trial -> stop its heartbeat
    # SQLite: one ask at a time (pysqlite begins at the UPDATE: two could pop one WAITING trial)
    one_ask = (fcnet.files.lock(st.url.removeprefix("sqlite:///") + ".ask.lock")
               if st.url.startswith("sqlite:") else contextlib.nullcontext())

    def tell(trial, state, attrs: dict, value: float | None = None) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # failed as stale meanwhile
            for k, v in attrs.items():
                st.storage.set_trial_user_attr(trial._trial_id, k, v)
            st.study.tell(trial, value, state=state, skip_if_finished=True)
        held.pop(trial).set()

    try:
        while True:
            fail_stale(st)
            task = []  # a trial and its population mates; asked while the queue or budget lasts
            while (not task or _wants_mate(st, spec, task, population, workers)) and _left(st, spec) > 0:
                with one_ask:
                    trial = st.study.ask()
                st.storage.set_trial_user_attr(trial._trial_id, "owner", owner)
                held[trial] = heartbeat(st.storage, trial._trial_id)
                if spec.search is None and "key" not in trial.user_attrs:  # queue emptied first
                    tell(trial, TrialState.PRUNED, {"error": "queue was empty"})
                    break
                _suggest(trial, spec)
                task.append(trial)
            if not task:
                if not st.trials(TrialState.RUNNING, TrialState.WAITING):
                    return None
                time.sleep(POLL_S)
                continue
            jobs = [{"trial": t.number, "key": t.user_attrs["key"], "config": t.user_attrs["config"],
                     "eval_at": list(t.user_attrs.get("eval_at") or []),
                     "run_dir": str(runs_dir / t.user_attrs["key"])} for t in task]
            results = seeds.run_trials(jobs, spec.seeds, lambda js: run_task(js, figures))
            for trial, result in zip(task, results, strict=True):
                tell(trial, *_outcome(st, trial, result))
            on_tell()
            if errors := [r["error"] for r in results if r.get("kind") == "user"]:
                return errors[0]
    except BaseException:  # interrupted: give the trials back, so a rerun takes them at once
        for t in held:
            fail(st, t._trial_id, "interrupted")
        raise
    finally:
        for stop in held.values():
            stop.set()


def _suggest(trial, spec) -> None:
    """A grid trial's queued values as params; a search's sample, with its job's attributes if new."""
    if spec.search is None:
        points = plan(spec)[0]
        for n in spec.varied():  # each varied field's values over the grid
            trial.suggest_categorical(n, list(dict.fromkeys(space._choice_key(getattr(p.config, n))
                                                            for p in points)))
        return
    changes = {n: p.suggest(trial) for n, p in spec.params.items()}
    have = trial.user_attrs  # a retried trial's; a write that failed (a full disk) may have left some out
    for k, v in job_attrs(space.with_changes(spec.base, changes, where="--param")).items():
        if k not in have:
            trial.set_user_attr(k, v)


def job_attrs(config) -> dict:
    """The user attributes a trial needs to train (and to be queued again)."""
    return {"key": space.run_key(config), "config": config.model_dump_json(), "eval_at": [],
            "pop": pop_key(config)}


def _outcome(st, trial, result: dict) -> tuple:
    """(state, user attributes, value) of a trained trial; intermediate values reported."""
    if "error" in result:
        if result["kind"] == "bug":
            print(result.get("traceback", ""), file=sys.stderr)
        return TrialState.FAIL, {"error": result["error"], "error_kind": result["kind"]}
    s = result["summary"]
    attrs = {k: s.get(k) for k in RESULT_KEYS}
    attrs.update(run_dir=str(Path(result["run_dir"]).resolve()), host=socket.gethostname())
    twins = [t.number for t in st.trials(TrialState.COMPLETE) if t.user_attrs.get("key") ==
             result["key"] and "reused_from" not in t.user_attrs]
    if not s.get("trained") and twins:  # a twin's run, read back
        attrs["reused_from"] = min(twins)
    for it, acc in (s.get("val_acc_at") or {}).items():
        if acc is not None and math.isfinite(acc):
            trial.report(float(acc), int(it))
    value = s.get("final_val_acc")
    return TrialState.COMPLETE, attrs, float(value) if value is not None and math.isfinite(value) else 0.0


def _wants_mate(st, spec, task: list, population: int, workers: int) -> bool:
    """Ask for one more population mate of ``task``? The next queued trial is one (or a search's
    samples all are), and fewer than K are taken (fewer still if that keeps every worker busy)."""
    pop = task[0].user_attrs["pop"]
    if population <= 1 or pop is None:
        return False
    waiting = sorted(st.trials(TrialState.WAITING), key=lambda t: t.number)
    if waiting and waiting[0].user_attrs.get("pop") == pop:
        mates = sum(1 for t in waiting if t.user_attrs.get("pop") == pop)
    elif not waiting and spec.search and {pop_key(space.with_changes(spec.base, {p.name: v}))
                                          for p in spec.params.values() for v in p.ends()} == {pop}:
        mates = _left(st, spec)
    else:
        return False
    return len(task) < min(population, math.ceil((len(task) + mates) / workers))


def _left(st, spec) -> int:
    """How many trials are left to ask for: a grid's queued ones, or a search's unspent budget."""
    return (len(st.trials(TrialState.WAITING)) if spec.search is None
            else spec.trials - len(st.trials(TrialState.COMPLETE, TrialState.RUNNING)))


def fail_stale(st, everyone: bool = False, why: str = "its process died") -> None:
    """Optuna's ``fail_stale_trials``, and at once a dead local pid's trials (every RUNNING one when
    ``everyone``: the SQLite lock proves nobody else runs); the retry callback queues them again."""
    for t in st.trials(TrialState.RUNNING):
        o_host, _, o_pid = t.user_attrs.get("owner", "").rpartition(":")
        if everyone or (o_host == socket.gethostname() and o_pid.isdigit() and not _pid_alive(int(o_pid))):
            fail(st, t._trial_id, f"interrupted ({why})")
    optuna.storages.fail_stale_trials(st.study)


def fail(st, trial_id: int, error: str) -> None:
    """Fail a RUNNING trial and queue it again, unless another process finished (or failed) it."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        st.storage.set_trial_user_attr(trial_id, "error", error)
        if st.storage.set_trial_state_values(trial_id, TrialState.FAIL):
            retry(st.study, st.storage.get_trial(trial_id))


def _pid_alive(pid: int) -> bool:
    try:
        with contextlib.suppress(PermissionError):  # another user's process
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def die_with_parent(parent_pid: int) -> None:
    """Exit when the sweep process dies (even by SIGKILL): no orphan trains on in its run dirs."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:  # also where prctl is missing, and for the race before it
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
