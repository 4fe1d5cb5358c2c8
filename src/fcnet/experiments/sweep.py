"""Sweeps: many runs of one base config, over a grid or a random/TPE search.

Optuna schedules, fcnet trains. Every job (one training run) is an Optuna
trial whose params are the varied fields (grid values as categorical
distributions, search ranges as float/int ones) and whose value is the
validation accuracy; the resolved config and its run key are user attributes.
Grid jobs are queued with ``enqueue_trial`` and taken with ``ask()``; search
trials are sampled by ``ask()``. Each worker process runs one loop, like
Optuna's own ``_run_trial``: fail stale trials, ask, heartbeat, train, tell.
A worker asks for up to K queued mates (configs the population trainer can
train together) and trains them as one population. So:

- identical configs are one job (one run directory, ``runs/<key>``), and two
  trials of one key (a search's repeat, or two processes queueing the same
  job) train once: the run directory's lock and resume make the second a reuse;
- configs that differ only in ``iters`` (step schedule, no keep_best) are one
  job at the largest count, reported at the smaller ones as Optuna
  intermediate values: the learning rate decays per epoch, not per fraction of
  the total, so the state after k updates of a long run is the state a
  k-update run ends in;
- a trial whose process died is failed (heartbeat gone, or its local pid dead)
  and queued again by Optuna's ``RetryHeartbeatStaleTrialCallback``; the retry resumes
  its run directory.

Python API (what `fcnet sweep` and `fcnet study` call)::

    spec = SweepSpec(base=make_config({"dataset": "digits"}), grid={"reg": [0, 0.25]})
    result = run_sweep(spec, Path("sweeps/reg"), workers=2)
    result.rows        # grid order; result.ranked() by validation accuracy
    best_test_accuracy(result)  # the best row's test accuracy, computed once
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcnet import files
from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.experiments import space
from fcnet.experiments.plan import (  # noqa: F401  (re-exported: the sweep's API)
    SEARCHES,
    Job,
    Point,
    SweepSpec,
    load_sweep_file,
    plan,
    pop_key,
    shares_iterations,
)
from fcnet.experiments.results import Row, SweepResult  # noqa: F401
from fcnet.experiments.storage import (
    default_url,
    is_sqlite,
    lock_sweep,
    open_storage,
    retry,
    storage_error,
    storage_errors,
)
from fcnet.experiments.worker import POLL_S, fail_stale, work

STORAGE_LOST = 3  # a worker process's exit status when the storage failed under it
FORMAT = 2  # sweeps since run keys hash only the fields that differ from their defaults


# ------------------------------------------------------------------------- the study
def refuse_old(where: str, name: str, attrs: dict) -> None:
    """One line for a sweep an earlier fcnet made: its runs are keyed otherwise (reusing
    them silently would mix engines; training them again would hide the old ones)."""
    if "spec" in attrs and attrs.get("format") != FORMAT:
        raise FcnetError(f"{where}: study {name!r} was made by an earlier fcnet, whose run keys "
                         "differ, so none of its runs would be reused: move it away, or give "
                         "another --dir (sweep) or --out (study)")


class _Study:
    """The Optuna study behind a sweep."""

    def __init__(self, url: str, name: str, create: bool = True):
        import optuna

        self.url, self.name = url, name
        self.storage = open_storage(url)
        self.created = False
        try:  # exactly one process creates a study: the name is a unique key
            if not create:
                raise optuna.exceptions.DuplicatedStudyError
            self.study = optuna.create_study(study_name=name, storage=self.storage,
                                             direction="maximize")
            self.set_attr("format", FORMAT)
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            try:
                self.study = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:
                raise FcnetError(f"no study {name!r} in {url.split('://')[0]} storage") from None
            refuse_old(url, name, self.attrs)

    @property
    def attrs(self) -> dict:
        return self.study.user_attrs

    def set_attr(self, key: str, value) -> None:
        self.study.set_user_attr(key, value)

    def trials(self, *states) -> list:
        return self.study.get_trials(deepcopy=False, states=states or None)


def _enqueue_missing(st: _Study, spec: SweepSpec) -> None:
    """Queue every grid job that has no trial yet, mates (equal population keys) next to
    each other so that ``ask()`` hands them out together; a job whose last trial failed
    on an error (data since fixed, ...) is queued again by Optuna's retry callback.
    (A job's key fixes its params, so one read of the trials does what
    ``enqueue_trial(skip_if_exists=True)`` would with a read per job: 18 s more for
    the study's 160 jobs on 2 busy cores.)"""
    from optuna.trial import TrialState

    _, jobs = plan(spec)
    trials = st.trials()
    known = {t.user_attrs.get("key") for t in trials}
    cost: dict[str, float] = {}  # longest first, so no worker idles at the end alone
    order: dict[str, int] = {}
    for job in jobs.values():
        c, g = job.config, job.pop or job.key
        order.setdefault(g, len(order))
        cost[g] = cost.get(g, 0.0) + (c.iters or c.epochs or 1) * c.batch_size * (sum(c.hidden) + 10)
    for job in sorted(jobs.values(), key=lambda j: (-cost[j.pop or j.key], order[j.pop or j.key])):
        if job.key not in known:
            params = {n: space._choice_key(getattr(job.config, n)) for n in spec.varied()}
            st.study.enqueue_trial(params, user_attrs={
                "key": job.key, "config": job.config.model_dump_json(),
                "eval_at": job.eval_at, "pop": job.pop})
    alive = {t.user_attrs.get("key") for t in trials if t.state in (
        TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
    for t in sorted(trials, key=lambda t: -t.number):  # the last failure of each job
        if t.state == TrialState.FAIL and t.user_attrs.get("key") in set(jobs) - alive:
            retry(st.study, t)
            alive.add(t.user_attrs["key"])


# ------------------------------------------------------------------------- processes
def _run_workers(st: _Study, spec: SweepSpec, runs_dir: Path, workers: int, population: int,
                 figures: bool, bar) -> str | None:
    """``workers`` processes, each one worker loop on the study; None or a user error."""
    if workers == 1:
        return work(st, spec, runs_dir, population, 1, figures,
                    on_tell=lambda: _progress(st, spec, bar))
    import multiprocessing as mp

    from fcnet.experiments.worker import cores, environ, thread_env

    ctx = mp.get_context("spawn")
    threads = max(1, cores() // workers)
    args = (st.url, st.name, json.dumps(spec.identity()), spec.trials, str(runs_dir),
            population, workers, figures, os.getpid(), threads)
    with environ(thread_env(threads)):  # a spawned child copies this environment
        procs = [ctx.Process(target=worker_main, args=args, name=f"fcnet-sweep-{i}",
                             daemon=True) for i in range(workers)]
        for p in procs:
            p.start()
    try:
        while any(p.is_alive() for p in procs):
            _progress(st, spec, bar)
            for p in procs:
                p.join(timeout=POLL_S / len(procs))
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)
        fail_stale(st, why="the sweep was interrupted")
        raise
    _progress(st, spec, bar)
    died = [p.exitcode for p in procs if p.exitcode not in (0, 2)]
    if STORAGE_LOST in died:
        fail_stale(st)  # a storage error of its own here, or the worker's lost connection
        return f"sweep storage {st.url}: a worker lost it (its line above says why); " \
               "run the same command again"
    if any(p.exitcode == 2 for p in procs):
        return _last_user_error(st) or "a worker stopped on an error"
    if died:
        fail_stale(st)  # their trials, queued again for the next run
        return (f"{len(died)} worker process(es) died (exit code {died[0]}); "
                "run the same command again to continue")
    return None


def worker_main(url: str, name: str, identity: str, trials: int, runs_dir: str,
                population: int, workers: int, figures: bool, parent_pid: int,
                threads: int) -> None:
    """One worker process: a sweep worker loop on the study. Exit 2 on a user error
    (a storage failure included: its one line is printed here)."""
    import signal

    from fcnet.experiments.worker import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    try:
        st = _Study(url, name, create=False)
        spec = SweepSpec.from_identity(json.loads(identity), trials=trials)
        if work(st, spec, Path(runs_dir), population, workers, figures):
            sys.exit(2)
    except storage_errors() as err:  # one line; the sweep process exits non-zero too
        print(f"fcnet: error: {storage_error(url, err)}", file=sys.stderr)
        sys.exit(STORAGE_LOST)
    except FcnetError as err:
        print(f"fcnet: error: {err}", file=sys.stderr)
        sys.exit(STORAGE_LOST)


def _last_user_error(st: _Study) -> str | None:
    from optuna.trial import TrialState

    errs = [t for t in st.trials(TrialState.FAIL) if t.user_attrs.get("error_kind") == "user"]
    return max(errs, key=lambda t: t.number).user_attrs["error"] if errs else None


def _progress(st: _Study, spec: SweepSpec, bar) -> None:
    if bar is None:
        return
    from optuna.trial import TrialState

    done = {t.user_attrs.get("key") for t in st.trials(TrialState.COMPLETE)}
    bar.n = len(done & set(plan(spec)[1])) if spec.search is None else min(len(done),
                                                                            spec.trials)
    bar.refresh()


# ------------------------------------------------------------------------- rows
def _rows(st: _Study, spec: SweepSpec, runs_dir: Path) -> list[Row]:
    from optuna.trial import TrialState

    trials = sorted(st.trials(), key=lambda t: t.number)
    rank = {TrialState.COMPLETE: 0, TrialState.RUNNING: 1, TrialState.WAITING: 2,
            TrialState.FAIL: 3}
    by_key: dict[str, Any] = {}
    for t in trials:  # the trial that speaks for a key: finished, else running, ...
        k = t.user_attrs.get("key")
        if k is None or t.state not in rank:
            continue
        cur = by_key.get(k)
        if cur is None or rank[t.state] < rank[cur.state] or (
                t.state == cur.state == TrialState.FAIL):
            by_key[k] = t

    def row(config, params, key, job_key, iteration, t, duplicate=False) -> Row:
        run_dir = str((runs_dir / job_key).resolve())
        if t is None:
            return Row(config, params, None, "pending", key, run_dir, iteration)
        a = t.user_attrs
        if t.state == TrialState.COMPLETE:
            run_dir = a.get("run_dir", run_dir)
            if iteration is None:
                val, status = a.get("final_val_acc"), a.get("status", "completed")
            else:
                val = (a.get("val_acc_at") or {}).get(str(iteration))
                status = "shared" if val is not None else a.get("status", "missing")
            if duplicate or "reused_from" in a:
                status = "reused"
            return Row(config, params, val, status, key, run_dir, iteration, t.number,
                       train_seconds=a.get("train_seconds"))
        status = {TrialState.RUNNING: "running", TrialState.WAITING: "pending"}.get(
            t.state, "error")
        return Row(config, params, None, status, key, run_dir, iteration, t.number,
                   error=a.get("error") if status == "error" else None)

    if spec.search is None:
        points, _ = plan(spec)
        seen: set[str] = set()
        rows = []
        for p in points:
            rows.append(row(p.config, p.changes, p.key, p.job, p.iteration, by_key.get(p.job),
                            duplicate=p.key in seen))
            seen.add(p.key)
        return rows
    rows = []
    for t in trials:
        k = t.user_attrs.get("key")
        if k is None or by_key.get(k) is not t:
            continue  # e.g. failed, then run again by a later trial
        config = RunConfig.model_validate_json(t.user_attrs["config"])
        rows.append(row(config, {n: getattr(config, n) for n in spec.params}, k, k, None, t))
    return rows


# ------------------------------------------------------------------------- entry points
def _open(sweep_dir: Path, storage: str | None, study: str | None, must_exist: bool
          ) -> tuple[_Study, Any]:
    sweep_dir = Path(sweep_dir)
    url = storage or default_url(sweep_dir)
    lock = None
    if is_sqlite(url):
        if storage is None and must_exist and not (sweep_dir / "sweep.db").exists():
            raise FcnetError(f"{sweep_dir}: no sweep here (no sweep.db): give --grid, "
                             "--search or a sweep --config to start one")
        lock = lock_sweep(sweep_dir)
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        if lock and (sweep_dir / "sweep.db").exists():  # a study file's sweep is named anew
            import optuna

            for summary in optuna.get_all_study_summaries(url, include_best_trial=False):
                refuse_old(str(sweep_dir / "sweep.db"), summary.study_name, summary.user_attrs)
        return _Study(url, study or _default_study(url, sweep_dir)), lock
    except BaseException:
        if lock:
            lock.release()
        raise


def _default_study(url: str, sweep_dir: Path) -> str:
    return "sweep" if is_sqlite(url) else Path(sweep_dir).resolve().name


def _spec_for(st: _Study, spec: SweepSpec | None, join: bool, wait_s: float) -> SweepSpec:
    """The study's spec: set it when new; check it matches when given. A joining process
    waits (up to ``wait_s``) until the process that set the sweep up has queued its jobs."""
    # a process that created the study with a spec queues the jobs itself: no waiting
    deadline = time.monotonic() + wait_s
    while join and "ready" not in st.attrs and not (st.created and spec is not None):
        if time.monotonic() >= deadline:
            raise FcnetError(f"study {st.name!r} in {st.url.split('://')[0]} storage was not "
                             f"set up within {wait_s:.0f} s by the process that created it: "
                             "start that sweep again (the same command without --join)")
        time.sleep(POLL_S / 4)  # soon after it is queued: the creator is asking already
    stored = st.attrs.get("spec")
    if spec is None:
        if stored is None:
            raise FcnetError(f"study {st.name!r} in {st.url.split('://')[0]} storage holds no "
                             "sweep yet: give --grid, --search or a sweep --config")
        return SweepSpec.from_identity(stored, trials=st.attrs.get("trials", 20))
    ident = json.loads(json.dumps(spec.identity()))
    if stored is None:
        st.set_attr("spec", ident)
    elif stored != ident:
        what = [k for k in sorted(set(stored) | set(ident)) if stored.get(k) != ident.get(k)]
        raise FcnetError(f"study {st.name!r} holds a different sweep ({', '.join(what)} "
                         "differ): use another --dir or --study, or run it with the same flags")
    if spec.search and not join:
        st.set_attr("trials", spec.trials)
    return spec


def run_sweep(
    spec: SweepSpec | None,
    sweep_dir: str | Path,
    *,
    workers: int = 1,
    population: int = 8,
    storage: str | None = None,
    study: str | None = None,
    join: bool = False,
    runs_dir: str | Path | None = None,
    figures: bool = True,
    quiet: bool = True,
    join_wait_s: float = 60.0,
    trials: int | None = None,
    plots: bool = True,
    on_start: Callable[[], None] | None = None,
) -> SweepResult:
    """Run (or finish, or join) a sweep and return its table.

    ``spec=None`` reopens the sweep stored in ``sweep_dir`` / ``study``.
    ``workers``: that many processes, each an ask -> train -> tell loop with
    cores/N BLAS threads (1: this process). ``population`` > 1: a worker takes up
    to that many queued mates and trains them as one population. ``storage``: an
    SQLAlchemy URL (default: SQLite ``sweep_dir/sweep.db``); with a server, any
    number of processes on any machines may run the same sweep (``join``: take
    the sweep from the storage). ``runs_dir`` (default ``sweep_dir/runs``) may be
    shared between sweeps: identical configs then train once. ``trials`` changes
    a search's budget. ``plots``: Optuna's importance and parallel-coordinate figures
    beside results.md (a study's report has its own). ``on_start()`` runs once the sweep
    is open, checked and queued, right before its workers start. Raises FcnetError for a
    user-caused problem (bad config, missing data); other trial errors are rows with
    status 'error'.
    """
    sweep_dir = Path(sweep_dir)
    if spec is not None and spec.search is None:
        plan(spec)  # every config valid before anything is written
    url = storage or default_url(sweep_dir)
    try:
        st, lock = _open(sweep_dir, storage, study, must_exist=spec is None)
    except storage_errors() as err:
        raise storage_error(url, err) from None
    try:
        if spec is not None and trials is not None:
            spec.trials = trials
        spec = _spec_for(st, spec, join, join_wait_s)
        if trials is not None and spec.search:
            spec.trials = trials
            if not join:
                st.set_attr("trials", trials)
        if lock:  # nobody else runs this sweep: its RUNNING trials are leftovers
            fail_stale(st, everyone=True)
        if spec.search is None and (st.created or not join):
            _enqueue_missing(st, spec)
        st.set_attr("ready", True)
        runs = Path(runs_dir) if runs_dir else sweep_dir / "runs"
        bar = None
        if not quiet:
            from tqdm import tqdm

            bar = tqdm(total=len(plan(spec)[1]) if spec.search is None else spec.trials,
                       desc="sweep", unit="trial", file=sys.stderr, dynamic_ncols=True)
        try:
            if on_start is not None:
                on_start()
            error = _run_workers(st, spec, runs, max(1, workers), population, figures, bar)
        finally:
            if bar is not None:
                bar.close()
        result = SweepResult(sweep_dir, spec, _rows(st, spec, runs), st.name, st.url)
        # a killed write's temp files (results.md, importance.png, ...); on a shared
        # storage another process may be writing here: only old ones then
        files.remove_temps(sweep_dir, min_age_s=0 if lock else 600)
        result.write(st.study if plots else None)
        if error:
            raise FcnetError(error)
        return result
    except storage_errors() as err:  # read-only, full, damaged, a server gone: one line
        raise storage_error(url, err) from None
    finally:
        if lock:
            lock.release()


def load_result(sweep_dir: str | Path, storage: str | None = None, study: str | None = None,
                runs_dir: str | Path | None = None) -> SweepResult:
    """The table of an existing sweep, running nothing."""
    sweep_dir = Path(sweep_dir)
    url = storage or default_url(sweep_dir)
    if is_sqlite(url) and storage is None and not (sweep_dir / "sweep.db").exists():
        raise FcnetError(f"{sweep_dir}: not a sweep directory (no sweep.db)")
    try:
        st = _Study(url, study or _default_study(url, sweep_dir), create=False)
        spec = _spec_for(st, None, False, 0.0)
        runs = Path(runs_dir) if runs_dir else sweep_dir / "runs"
        return SweepResult(sweep_dir, spec, _rows(st, spec, runs), st.name, st.url)
    except storage_errors() as err:
        raise storage_error(url, err) from None


def best_test_accuracy(result: SweepResult, quiet: bool = True) -> dict:
    """Test accuracy of the best row (by validation accuracy), computed once.

    Cached in ``sweep_dir/test.json`` by run key, so asking again evaluates
    nothing. A row read along a longer run (status 'shared') is first trained
    on its own for exactly its iteration count, so the tested parameters are
    those the row's validation accuracy describes. The test split is never
    used to choose: the row is chosen before it is read.
    """
    best = result.best()
    if best is None:
        raise FcnetError(f"{result.sweep_dir}: no finished trial to test")
    return test_accuracy(result.sweep_dir, best, quiet=quiet)


def test_accuracy(sweep_dir: Path, row: Row, quiet: bool = True) -> dict:
    """One row's test accuracy, cached in ``sweep_dir/test.json`` (see best_test_accuracy)."""
    from fcnet import files
    from fcnet.training import evaluate_run, train_run

    cache_path = Path(sweep_dir) / "test.json"
    cache = files.read_json(cache_path) if cache_path.exists() else {}
    if row.key in cache:
        return cache[row.key]
    run_dir = Path(row.run_dir)
    record: dict[str, Any] = {"key": row.key, "params": row.params, "val_acc": row.val_acc}
    if row.iteration is not None:
        run_dir = Path(row.run_dir).parent / row.key
        s = train_run(row.config, run_dir, quiet=quiet, resume=True)
        record["own_run_val_acc"] = s.get("final_val_acc")
    ev = evaluate_run(run_dir, split="test")
    record.update(run_dir=str(run_dir), split=ev["split"], n=ev["n"], test_acc=ev["accuracy"])
    cache[row.key] = record
    files.write_json(cache_path, cache)
    return record


test_accuracy.__test__ = False  # not a pytest test, despite its name
