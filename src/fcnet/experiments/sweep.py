"""Sweeps: many runs of one base config, over a grid or a random/TPE search.

Every job (one training run) is an Optuna trial: params the varied fields, value the
validation accuracy, config and run key user attributes. Identical configs are one job
(``runs/<key>``); configs that differ only in ``iters`` (step schedule, no keep_best: the
rate decays per epoch) are one job at the largest count, read along the way. A trial whose
process died is failed and queued again; its retry resumes the run directory.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from fcnet import files
from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.experiments import space, worker
from fcnet.experiments import storage as db
from fcnet.experiments.plan import SweepSpec, load_sweep_file, plan  # noqa: F401  (re-exported)
from fcnet.experiments.results import Row, SweepResult

STORAGE_LOST = 3  # a worker process's exit status when the storage failed under it
FORMAT = 2  # sweeps since run keys hash only the fields that differ from their defaults


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
        self.url, self.name = url, name
        self.storage = db.open_storage(url)
        self.created = False
        try:  # exactly one process creates a study: the name is a unique key
            if not create:
                raise optuna.exceptions.DuplicatedStudyError
            self.study = optuna.create_study(study_name=name, storage=self.storage,
                                             direction="maximize")
            self.study.set_user_attr("format", FORMAT)
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            try:
                self.study = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:
                raise FcnetError(f"no study {name!r} in {url.split('://')[0]} storage") from None
            refuse_old(url, name, self.study.user_attrs)

    def trials(self, *states) -> list:
        return self.study.get_trials(deepcopy=False, states=states or None)


def _enqueue_missing(st: _Study, spec: SweepSpec) -> None:
    """Queue every grid job that has no trial yet, mates (equal population keys) next to
    each other so that ``ask()`` hands them out together; Optuna's retry callback queues
    again a job whose last trial failed. (One read of the trials, not the read per job of
    ``enqueue_trial(skip_if_exists=True)``: 18 s less for 160 jobs on 2 busy cores.)"""
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
            st.study.enqueue_trial(params, user_attrs={**worker.job_attrs(job.config),
                                                       "eval_at": job.eval_at})
    alive = {t.user_attrs.get("key") for t in trials if t.state in (
        TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
    for t in sorted(trials, key=lambda t: -t.number):  # the last failure of each job
        if t.state == TrialState.FAIL and t.user_attrs.get("key") in set(jobs) - alive:
            db.retry(st.study, t)
            alive.add(t.user_attrs["key"])


def _run_workers(st: _Study, spec: SweepSpec, runs_dir: Path, workers: int, population: int,
                 figures: bool, bar) -> str | None:
    """``workers`` processes, each one worker loop on the study; None or a user error."""
    if workers == 1:
        return worker.work(st, spec, runs_dir, population, 1, figures,
                           on_tell=lambda: _progress(st, spec, bar))
    threads = max(1, worker.cores() // workers)
    args = (st.url, st.name, json.dumps(spec.identity()), spec.trials, str(runs_dir),
            population, workers, figures, os.getpid(), threads)
    # a spawned child copies this environment (patch.dict restores it after the block)
    with mock.patch.dict(os.environ, dict.fromkeys(worker.THREAD_VARS, str(threads))):
        procs = [mp.get_context("spawn").Process(target=worker_main, args=args, daemon=True,
                                                 name=f"fcnet-sweep-{i}") for i in range(workers)]
        for p in procs:
            p.start()
    try:
        while any(p.is_alive() for p in procs):
            _progress(st, spec, bar)
            for p in procs:
                p.join(timeout=worker.POLL_S / len(procs))
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)
        worker.fail_stale(st, why="the sweep was interrupted")
        raise
    _progress(st, spec, bar)
    died = [p.exitcode for p in procs if p.exitcode not in (0, 2)]
    if STORAGE_LOST in died:
        worker.fail_stale(st)  # a storage error of its own here, or the worker's lost connection
        return f"sweep storage {st.url}: a worker lost it (its line above says why); " \
               "run the same command again"
    if 2 in (p.exitcode for p in procs):
        errs = [t for t in st.trials(TrialState.FAIL) if t.user_attrs.get("error_kind") == "user"]
        if not errs:
            return "a worker stopped on an error"
        return max(errs, key=lambda t: t.number).user_attrs["error"]
    if died:
        worker.fail_stale(st)  # their trials, queued again for the next run
        return (f"{len(died)} worker process(es) died (exit code {died[0]}); "
                "run the same command again to continue")
    return None


def worker_main(url: str, name: str, identity: str, trials: int, runs_dir: str,
                population: int, workers: int, figures: bool, parent_pid: int,
                threads: int) -> None:
    """One worker process: a sweep worker loop on the study. Exit 2 on a user error,
    STORAGE_LOST when the storage failed (its one line printed here)."""
    worker.die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle
    threadpool_limits(threads)
    try:
        st = _Study(url, name, create=False)
        spec = SweepSpec.from_identity(json.loads(identity), trials=trials)
        if worker.work(st, spec, Path(runs_dir), population, workers, figures):
            sys.exit(2)
    except (FcnetError, *db.STORAGE_ERRORS) as err:  # one line; the sweep exits non-zero too
        if not isinstance(err, FcnetError):
            err = db.storage_error(url, err)
        print(f"fcnet: error: {err}", file=sys.stderr)
        sys.exit(STORAGE_LOST)


def _progress(st: _Study, spec: SweepSpec, bar) -> None:
    if bar is None:
        return
    done = {t.user_attrs.get("key") for t in st.trials(TrialState.COMPLETE)}
    bar.n = len(done & set(plan(spec)[1])) if spec.search is None else min(len(done), spec.trials)
    bar.refresh()


def _rows(st: _Study, spec: SweepSpec, runs_dir: Path) -> list[Row]:
    rank = {TrialState.COMPLETE: 0, TrialState.RUNNING: 1, TrialState.WAITING: 2,
            TrialState.FAIL: 3}
    by_key: dict[str, Any] = {}
    for t in sorted(st.trials(), key=lambda t: t.number):  # the trial that speaks for a key:
        k = t.user_attrs.get("key")  # finished, else running, ..., else the last failure
        if k is None or t.state not in rank:
            continue
        cur = by_key.get(k)
        if cur is None or rank[t.state] < rank[cur.state] or t.state == cur.state == TrialState.FAIL:
            by_key[k] = t

    def row(config, params, key, job_key, iteration, t, duplicate=False) -> Row:
        run_dir = str((runs_dir / job_key).resolve())
        if t is None:
            return Row(config, params, None, "pending", key, run_dir, iteration)
        a = t.user_attrs
        if t.state != TrialState.COMPLETE:
            status = {TrialState.RUNNING: "running", TrialState.WAITING: "pending"}.get(
                t.state, "error")
            return Row(config, params, None, status, key, run_dir, iteration, t.number,
                       error=a.get("error") if status == "error" else None)
        if iteration is None:
            val, status = a.get("final_val_acc"), a.get("status", "completed")
        else:
            val = (a.get("val_acc_at") or {}).get(str(iteration))
            status = "shared" if val is not None else a.get("status", "missing")
        if duplicate or "reused_from" in a:
            status = "reused"
        return Row(config, params, val, status, key, a.get("run_dir", run_dir), iteration,
                   t.number, train_seconds=a.get("train_seconds"))

    if spec.search is None:
        points = plan(spec)[0]
        first = {p.key: p for p in reversed(points)}
        return [row(p.config, p.changes, p.key, p.job, p.iteration, by_key.get(p.job),
                    duplicate=first[p.key] is not p) for p in points]
    rows = []
    for t in sorted(by_key.values(), key=lambda t: t.number):
        config = RunConfig.model_validate_json(t.user_attrs["config"])
        key = t.user_attrs["key"]
        rows.append(row(config, {n: getattr(config, n) for n in spec.params}, key, key, None, t))
    return rows


def _open(sweep_dir: Path, url: str, study: str | None, must_exist: bool) -> tuple[_Study, Any]:
    """The sweep's study and, for SQLite, its lock (held), refusing an old sweep.db."""
    lock = None
    if db.is_sqlite(url):
        if must_exist and not (sweep_dir / "sweep.db").exists():
            raise FcnetError(f"{sweep_dir}: no sweep here (no sweep.db): give --grid, "
                             "--search or a sweep --config to start one")
        lock = db.lock_sweep(sweep_dir)
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        if lock and (sweep_dir / "sweep.db").exists():  # a study file's sweep is named anew
            for summary in optuna.get_all_study_summaries(url, include_best_trial=False):
                refuse_old(str(sweep_dir / "sweep.db"), summary.study_name, summary.user_attrs)
        return _Study(url, study or _default_study(url, sweep_dir)), lock
    except BaseException:
        if lock:
            lock.release()
        raise


def _default_study(url: str, sweep_dir: Path) -> str:
    return "sweep" if db.is_sqlite(url) else Path(sweep_dir).resolve().name


def _spec_for(st: _Study, spec: SweepSpec | None, join: bool, wait_s: float) -> SweepSpec:
    """The study's spec: set it when new; check it matches when given. A joining process
    waits (up to ``wait_s``) until the process that set the sweep up has queued its jobs."""
    # a process that created the study with a spec queues the jobs itself: no waiting
    deadline, kind = time.monotonic() + wait_s, st.url.split("://")[0]
    while join and "ready" not in st.study.user_attrs and not (st.created and spec is not None):
        if time.monotonic() >= deadline:
            raise FcnetError(f"study {st.name!r} in {kind} storage was not set up within "
                             f"{wait_s:.0f} s by the process that created it: start that sweep "
                             "again (the same command without --join)")
        time.sleep(worker.POLL_S / 4)  # soon after it is queued: the creator is asking already
    stored = st.study.user_attrs.get("spec")
    if spec is None:
        if stored is None:
            raise FcnetError(f"study {st.name!r} in {kind} storage holds no sweep yet: "
                             "give --grid, --search or a sweep --config")
        return SweepSpec.from_identity(stored, trials=st.study.user_attrs.get("trials", 20))
    ident = json.loads(json.dumps(spec.identity()))
    if stored is None:
        st.study.set_user_attr("spec", ident)
    elif stored != ident:
        what = [k for k in sorted(set(stored) | set(ident)) if stored.get(k) != ident.get(k)]
        raise FcnetError(f"study {st.name!r} holds a different sweep ({', '.join(what)} "
                         "differ): use another --dir or --study, or run it with the same flags")
    return spec


def run_sweep(spec: SweepSpec | None, sweep_dir: str | Path, *, workers: int = 1,
              population: int = 8, storage: str | None = None, study: str | None = None,
              join: bool = False, runs_dir: str | Path | None = None, figures: bool = True,
              quiet: bool = True, join_wait_s: float = 60.0, trials: int | None = None,
              plots: bool = True, on_start: Callable[[], None] | None = None) -> SweepResult:
    """Run (or finish, or join) a sweep and return its table (docs/sweep.md).

    ``spec=None`` reopens the stored sweep. ``workers`` processes with cores/N BLAS threads
    each train up to ``population`` queued mates at once. ``storage``: an SQLAlchemy URL
    (default: SQLite ``sweep_dir/sweep.db``). ``on_start()`` runs right before the workers
    start. FcnetError for a user-caused problem; other trial errors are 'error' rows."""
    sweep_dir = Path(sweep_dir)
    if spec is not None and spec.search is None:
        plan(spec)  # every config valid before anything is written
    given = spec is not None
    url = storage or db.default_url(sweep_dir)
    try:  # read-only, full, damaged, a server gone: one line
        st, lock = _open(sweep_dir, url, study, must_exist=not given and storage is None)
        try:
            spec = _spec_for(st, spec, join, join_wait_s)
            if trials is not None:
                spec.trials = trials
            if spec.search and not join and (given or trials is not None):
                st.study.set_user_attr("trials", spec.trials)
            if lock:  # nobody else runs this sweep: its RUNNING trials are leftovers
                worker.fail_stale(st, everyone=True)
            if spec.search is None and (st.created or not join):
                _enqueue_missing(st, spec)
            st.study.set_user_attr("ready", True)
            runs = Path(runs_dir) if runs_dir else sweep_dir / "runs"
            bar = None if quiet else tqdm(
                total=len(plan(spec)[1]) if spec.search is None else spec.trials, desc="sweep",
                unit="trial", file=sys.stderr, dynamic_ncols=True)
            with contextlib.nullcontext() if bar is None else bar:  # closes the bar
                if on_start is not None:
                    on_start()
                error = _run_workers(st, spec, runs, max(1, workers), population, figures, bar)
            result = SweepResult(sweep_dir, spec, _rows(st, spec, runs))
            # a killed write's temp files (results.md, importance.png, ...); on a shared
            # storage another process may be writing here: only old ones then
            files.remove_temps(sweep_dir, min_age_s=0 if lock else 600)
            result.write(st.study if plots else None)
        finally:
            if lock:
                lock.release()
    except db.STORAGE_ERRORS as err:
        raise db.storage_error(url, err) from None
    if error:
        raise FcnetError(error)
    return result


def load_result(sweep_dir: str | Path, storage: str | None = None, study: str | None = None,
                runs_dir: str | Path | None = None) -> SweepResult:
    """The table of an existing sweep, running nothing."""
    sweep_dir = Path(sweep_dir)
    url = storage or db.default_url(sweep_dir)
    if storage is None and not (sweep_dir / "sweep.db").exists():
        raise FcnetError(f"{sweep_dir}: not a sweep directory (no sweep.db)")
    try:
        st = _Study(url, study or _default_study(url, sweep_dir), create=False)
        spec = _spec_for(st, None, False, 0.0)
        runs = Path(runs_dir) if runs_dir else sweep_dir / "runs"
        return SweepResult(sweep_dir, spec, _rows(st, spec, runs))
    except db.STORAGE_ERRORS as err:
        raise db.storage_error(url, err) from None


def best_test_accuracy(result: SweepResult, quiet: bool = True) -> dict:
    """Test accuracy of the best row (by validation accuracy, chosen before the test split
    is read), computed once (see test_accuracy)."""
    best = result.best()
    if best is None:
        raise FcnetError(f"{result.sweep_dir}: no finished trial to test")
    return test_accuracy(result.sweep_dir, best, quiet=quiet)


def test_accuracy(sweep_dir: Path, row: Row, quiet: bool = True) -> dict:
    """One row's test accuracy, cached by run key in ``sweep_dir/test.json``. A row read
    along a longer run (status 'shared') is first trained on its own for exactly its
    iteration count, so the tested parameters are those its validation accuracy describes."""
    from fcnet.training import evaluate_run, train_run

    cache_path = Path(sweep_dir) / "test.json"
    cache = files.read_json(cache_path) if cache_path.exists() else {}
    if row.key in cache:
        return cache[row.key]
    run_dir = Path(row.run_dir)
    record: dict[str, Any] = {"key": row.key, "params": row.params, "val_acc": row.val_acc}
    if row.iteration is not None:
        run_dir = run_dir.parent / row.key
        s = train_run(row.config, run_dir, quiet=quiet, resume=True)
        record["own_run_val_acc"] = s.get("final_val_acc")
    ev = evaluate_run(run_dir, split="test")
    record.update(run_dir=str(run_dir), split=ev["split"], n=ev["n"], test_acc=ev["accuracy"])
    cache[row.key] = record
    files.write_json(cache_path, cache)
    return record


test_accuracy.__test__ = False  # not a pytest test, despite its name
