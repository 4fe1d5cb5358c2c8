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
import math
import os
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from fcnet.errors import FcnetError
from fcnet.experiments import seeds, space
from fcnet.experiments.space import run_key

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
    from contextlib import ExitStack

    from fcnet.config import RunConfig
    from fcnet.training import rundir

    host, pid = socket.gethostname(), os.getpid()
    results = []
    try:
        with ExitStack() as locks:
            configs = [RunConfig.model_validate_json(job["config"]) for job in jobs]
            run_dirs = [Path(job["run_dir"]) for job in jobs]
            for config, run_dir in zip(configs, run_dirs, strict=True):
                # a second sweep sharing this runs dir waits here instead of training the run
                locks.enter_context(rundir.locked(run_dir, config))
            before = [_summary_mtime(d) for d in run_dirs]
            for job, run_dir in zip(jobs, run_dirs, strict=True):
                _log_attempt(run_dir, {"trial": job["trial"], "host": host, "pid": pid,
                                       "start": time.time(), "batch": len(jobs),
                                       "threads": os.environ.get("OMP_NUM_THREADS")})
            outcomes = _train(jobs, configs, run_dirs, figures)
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
    return results


def _train(jobs, configs, run_dirs, figures) -> list[tuple[bool, dict]]:
    """(ok, summary or error result) per job: one population, or lone runs."""
    if len(jobs) > 1:
        from fcnet.training import train_population

        eval_at = sorted({i for job in jobs for i in job["eval_at"]})
        try:
            return [(True, s) for s in train_population(
                configs, run_dirs, quiet=True, resume=True, eval_at=eval_at or None,
                figures=figures)]
        except Exception as err:  # the whole population failed
            return [(False, _error(job, err)) for job in jobs]
    from fcnet.training import train_run

    out = []
    for job, config, run_dir in zip(jobs, configs, run_dirs, strict=True):
        try:
            out.append((True, train_run(config, run_dir, quiet=True, resume=True,
                                        eval_at=job["eval_at"] or None, figures=figures)))
        except Exception as err:
            out.append((False, _error(job, err)))
    return out


# ------------------------------------------------------------------ a trial's life
POLL_S = 1.0  # how often a worker waiting on other processes' trials looks again
RESULT_KEYS = ("status", "final_val_acc", "best_val_acc", "val_acc_at", "train_seconds",
               "samples_per_second", "iterations", "diverged_at", "trained", "seeds",
               "seed_values", "seed_ci")


def work(st, spec, runs_dir: Path, population: int = 8, workers: int = 1,
         figures: bool = True, on_tell=None) -> str | None:
    """One worker: Optuna's ``_run_trial`` for up to K trials at a time. Fail stale
    trials, ask for a trial and the population mates queued right after it, heartbeat
    them, train them as one task, tell. Returns when nothing is left to ask for and no
    other process runs a trial that may yet fail back into the queue, or with the
    message of a user-caused error that stopped it."""
    import optuna
    from optuna.trial import TrialState as S

    from fcnet.experiments.storage import Heartbeat

    owner, beat, held = f"{socket.gethostname()}:{os.getpid()}", Heartbeat(st.storage), []
    if spec.search:
        st.study.sampler = _sampler(st, spec)

    def ask():  # a RUNNING trial with its job, held here; None: queue empty, budget spent
        if not (st.trials(S.WAITING) if spec.search is None else _budget_left(st, spec) > 0):
            return None
        trial = st.study.ask()
        st.storage.set_trial_user_attr(trial._trial_id, "owner", owner)
        beat.add(trial._trial_id)
        held.append(trial)
        if spec.search is None:
            if "key" not in trial.user_attrs:  # another worker emptied the queue first
                return tell(trial, S.PRUNED, {"error": "queue was empty"})
            for n, d in _grid_distributions(spec).items():  # the queued values' distributions
                trial.suggest_categorical(n, d.choices)
            return trial
        changes = {n: p.suggest(trial) for n, p in spec.params.items()}
        if "key" not in trial.user_attrs:  # a new sample, not a retry
            for k, v in job_attrs(space.with_changes(spec.base, changes, where="--param")
                                  ).items():
                trial.set_user_attr(k, v)
        return trial

    def tell(trial, state, attrs: dict, value: float | None = None) -> None:
        try:
            for k, v in attrs.items():
                st.storage.set_trial_user_attr(trial._trial_id, k, v)
            st.study.tell(trial, value, state=state, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # failed as stale and queued again meanwhile: the retry reads the run back
        beat.discard(trial._trial_id)
        held.remove(trial)

    try:
        while True:
            fail_stale(st)
            task = [t] if (t := ask()) else []
            while task and _wants_mate(st, spec, task, population, workers) and (t := ask()):
                task.append(t)
            if not task:
                if not st.trials(S.RUNNING, S.WAITING):
                    return None
                time.sleep(POLL_S)
                continue
            jobs = [{"trial": t.number, "key": t.user_attrs["key"],
                     "config": t.user_attrs["config"], "eval_at": list(
                         t.user_attrs.get("eval_at") or []),
                     "run_dir": str(runs_dir / t.user_attrs["key"])} for t in task]
            results = seeds.run_trials(jobs, spec.seeds, lambda js: run_task(js, figures))
            for trial, result in zip(task, results, strict=True):
                tell(trial, *_outcome(st, trial, result))
            if on_tell:
                on_tell()
            for r in results:
                if r.get("kind") == "user":
                    return r["error"]
    except BaseException:  # interrupted: give the trials back, so a rerun takes them at once
        for t in list(held):
            fail(st, t._trial_id, "interrupted")
        raise
    finally:
        beat.stop()


def job_attrs(config) -> dict:
    """The user attributes a trial needs to train (and to be queued again)."""
    from fcnet.experiments.plan import pop_key

    return {"key": run_key(config), "config": config.model_dump_json(), "eval_at": [],
            "pop": pop_key(config)}


def _outcome(st, trial, result: dict) -> tuple:
    """(state, user attributes, value) of a trained trial; intermediate values reported."""
    from optuna.trial import TrialState as S

    if "error" in result:
        if result["kind"] == "bug":
            print(result.get("traceback", ""), file=sys.stderr)
        return S.FAIL, {"error": result["error"], "error_kind": result["kind"]}
    s = result["summary"]
    attrs = {k: s.get(k) for k in RESULT_KEYS}
    attrs.update(run_dir=str(Path(result["run_dir"]).resolve()), host=socket.gethostname())
    twins = [t.number for t in st.trials(S.COMPLETE) if t.user_attrs.get("key") ==
             result["key"] and "reused_from" not in t.user_attrs]
    if not s.get("trained") and twins:  # a twin's run, read back
        attrs["reused_from"] = min(twins)
    for it, acc in (s.get("val_acc_at") or {}).items():
        if acc is not None and math.isfinite(acc):
            trial.report(float(acc), int(it))
    value = s.get("final_val_acc")
    return S.COMPLETE, attrs, float(value) if value is not None and math.isfinite(value) else 0.0


def _wants_mate(st, spec, task: list, population: int, workers: int) -> bool:
    """Whether to ask for one more population mate of ``task``: the next queued trial is
    one (or a search's samples all are), and fewer than K are taken (fewer still when
    that keeps every worker busy)."""
    from optuna.trial import TrialState as S

    pop = task[0].user_attrs["pop"]
    if population <= 1 or pop is None:
        return False
    waiting = sorted(st.trials(S.WAITING), key=lambda t: t.number)
    if waiting:
        if waiting[0].user_attrs.get("pop") != pop:
            return False
        mates = sum(1 for t in waiting if t.user_attrs.get("pop") == pop)
    elif spec.search and _shape_free(spec):
        mates = _budget_left(st, spec)
    else:
        return False
    return len(task) < min(population, math.ceil((len(task) + mates) / workers))


def _budget_left(st, spec) -> int:
    from optuna.trial import TrialState as S

    used = len(st.trials(S.COMPLETE, S.RUNNING, S.WAITING))
    return spec.trials - used + len(st.trials(S.WAITING))


def _sampler(st, spec):
    import optuna

    # a restarted or joining process must not replay the first process's proposals
    seed = spec.seed + len(st.trials()) + (0 if st.created else os.getpid())
    if spec.search == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _shape_free(spec) -> bool:
    """Do all of a search's samples train together (its ranges change no shapes)?"""
    from fcnet.experiments.plan import pop_key

    pops = set()
    for p in spec.params.values():
        for v in p.choices if p.choices is not None else (p.low, p.high):
            v = int(v) if p.integer else space._choice_value(p.name, v)
            pops.add(pop_key(space.with_changes(spec.base, {p.name: v})))
    return len(pops) == 1 and None not in pops


def _grid_distributions(spec) -> dict:
    """A grid's params: each varied field, categorical over the values its points take."""
    from optuna.distributions import CategoricalDistribution

    from fcnet.experiments.plan import plan

    points, _ = plan(spec)
    choices: dict[str, list] = {n: [] for n in spec.varied()}
    for p in points:
        for n, values in choices.items():
            v = space._choice_key(getattr(p.config, n))
            if v not in values:
                values.append(v)
    return {n: CategoricalDistribution(v) for n, v in choices.items()}


# ------------------------------------------------------------------ stale trials
def fail_stale(st, everyone: bool = False, why: str = "its process died") -> None:
    """Optuna's ``fail_stale_trials`` (heartbeat silent for the grace period; its retry
    callback queues the trial again), plus what it cannot know: a trial whose owner is a
    dead pid on this machine, or every RUNNING trial when ``everyone`` (the SQLite lock
    proves nobody else runs), is failed and queued again at once."""
    import optuna
    from optuna.trial import TrialState as S

    host = socket.gethostname()
    for t in st.trials(S.RUNNING):
        o_host, _, o_pid = t.user_attrs.get("owner", "").rpartition(":")
        if everyone or (o_host == host and o_pid.isdigit() and not _pid_alive(int(o_pid))):
            fail(st, t._trial_id, f"interrupted ({why})")
    optuna.storages.fail_stale_trials(st.study)


def fail(st, trial_id: int, error: str) -> None:
    """Fail a RUNNING trial and queue it again (Optuna's RetryHeartbeatStaleTrialCallback)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from fcnet.experiments.storage import retry

    try:
        st.storage.set_trial_user_attr(trial_id, "error", error)
        if st.storage.set_trial_state_values(trial_id, TrialState.FAIL):
            retry(st.study, st.storage.get_trial(trial_id))
    except UpdateFinishedTrialError:
        pass  # finished (or failed) by another process meanwhile


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


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
