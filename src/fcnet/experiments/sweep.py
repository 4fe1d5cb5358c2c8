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
  and queued again by Optuna's ``RetryFailedTrialCallback``; the retry resumes
  its run directory.

Python API (what `fcnet sweep` and `fcnet study` call)::

    spec = SweepSpec(base=make_config({"dataset": "digits"}), grid={"reg": [0, 0.25]})
    result = run_sweep(spec, Path("sweeps/reg"), workers=2)
    result.rows        # grid order; result.ranked() by validation accuracy
    best_test_accuracy(result)  # the best row's test accuracy, computed once
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

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
from fcnet.experiments.space import run_key
from fcnet.experiments.storage import (
    GRACE_S,
    DirLock,
    Heartbeat,
    default_url,
    is_sqlite,
    open_storage,
    retry,
)

POLL_S = 1.0  # how often a worker waiting on other processes' trials looks again
RESULT_KEYS = ("status", "final_val_acc", "best_val_acc", "val_acc_at", "train_seconds",
               "samples_per_second", "iterations", "diverged_at", "trained")


# ------------------------------------------------------------------------- the study
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
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            try:
                self.study = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:
                raise FcnetError(f"no study {name!r} in {url.split('://')[0]} storage") from None

    @property
    def attrs(self) -> dict:
        return self.study.user_attrs

    def set_attr(self, key: str, value) -> None:
        self.study.set_user_attr(key, value)

    def trials(self, *states) -> list:
        return self.study.get_trials(deepcopy=False, states=states or None)


def _distributions(spec: SweepSpec) -> dict:
    """A grid's params: each varied field, categorical over the values its points take."""
    from optuna.distributions import CategoricalDistribution

    points, _ = plan(spec)
    choices: dict[str, list] = {n: [] for n in spec.varied()}
    for p in points:
        for n, values in choices.items():
            v = space._choice_key(getattr(p.config, n))
            if v not in values:
                values.append(v)
    return {n: CategoricalDistribution(v) for n, v in choices.items()}


def _enqueue_missing(st: _Study, spec: SweepSpec) -> None:
    """Queue every grid job that has no finished, running or waiting trial, mates
    (equal population keys) next to each other so that ``ask()`` hands them out together."""
    from optuna.trial import TrialState

    _, jobs = plan(spec)
    alive = {t.user_attrs.get("key") for t in st.trials(
        TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
    order = {}
    for job in jobs.values():
        order.setdefault(job.pop or job.key, len(order))
    for job in sorted(jobs.values(), key=lambda j: order[j.pop or j.key]):
        if job.key not in alive:
            params = {n: space._choice_key(getattr(job.config, n)) for n in spec.varied()}
            st.study.enqueue_trial(params, user_attrs={
                "key": job.key, "config": job.config.model_dump_json(),
                "eval_at": job.eval_at, "pop": job.pop})


# ------------------------------------------------------------------------- one worker
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead(st: _Study, all_running: bool = False, why: str = "its process died") -> None:
    """Fail (and queue again) the trials whose process is gone: by heartbeat
    (``fail_stale_trials``), and at once for a dead pid on this machine, or for
    every RUNNING trial when ``all_running`` (the SQLite lock proves nobody runs)."""
    import optuna
    from optuna.trial import TrialState

    host, now = socket.gethostname(), datetime.datetime.now()
    for t in st.trials(TrialState.RUNNING):
        o_host, _, o_pid = t.user_attrs.get("owner", "").rpartition(":")
        dead = all_running or (o_host == host and o_pid.isdigit() and
                               not _pid_alive(int(o_pid)))
        if not o_pid and t.datetime_start and (now - t.datetime_start).total_seconds() > GRACE_S:
            dead = True  # taken by a process that died before it wrote its name
        if dead:
            _fail(st, t._trial_id, f"interrupted ({why})")
    optuna.storages.fail_stale_trials(st.study)


def _fail(st: _Study, trial_id: int, error: str) -> None:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        st.storage.set_trial_user_attr(trial_id, "error", error)
        if st.storage.set_trial_state_values(trial_id, TrialState.FAIL):
            retry(st.study, st.storage.get_trial(trial_id))
    except UpdateFinishedTrialError:
        pass  # finished (or failed) by another process meanwhile


class Worker:
    """One ask -> train -> tell loop on a sweep's study (see the module docstring)."""

    def __init__(self, st: _Study, spec: SweepSpec, runs_dir: Path, population: int = 8,
                 workers: int = 1, figures: bool = True, on_tell=None):
        self.st, self.spec, self.runs_dir = st, spec, runs_dir
        self.population, self.workers, self.figures = population, workers, figures
        self.on_tell = on_tell
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = Heartbeat(st.storage)
        self.held: list = []
        self.dists = _distributions(spec) if spec.search is None else None
        if spec.search:
            self.st.study.sampler = self._sampler()

    def _sampler(self):
        import optuna

        # a restarted or joining process must not replay the first process's proposals
        seed = self.spec.seed + len(self.st.trials())
        if not self.st.created:
            seed += os.getpid()
        if self.spec.search == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def _budget_left(self) -> int:
        from optuna.trial import TrialState

        used = len(self.st.trials(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
        return self.spec.trials - used + len(self.st.trials(TrialState.WAITING))

    def _ask(self):
        """One trial, RUNNING and held by this process, with its params and job; None when
        there is nothing to ask for (a grid's queue is empty, a search's budget spent)."""
        from optuna.trial import TrialState

        if self.spec.search is None and not self.st.trials(TrialState.WAITING):
            return None
        if self.spec.search and self._budget_left() <= 0:
            return None
        trial = self.st.study.ask()
        self.st.storage.set_trial_user_attr(trial._trial_id, "owner", self.owner)
        self.heartbeat.add(trial._trial_id)
        self.held.append(trial)
        if "key" not in trial.user_attrs:
            if self.spec.search is None:  # another worker emptied the queue first
                self._finish(trial, TrialState.PRUNED, {"error": "queue was empty"})
                return None
            changes = {n: p.suggest(trial) for n, p in self.spec.params.items()}
            config = space.with_changes(self.spec.base, changes, where="--param")
            for k, v in {"key": run_key(config), "config": config.model_dump_json(),
                         "eval_at": [], "pop": pop_key(config)}.items():
                trial.set_user_attr(k, v)
        elif self.spec.search is None:
            for n, d in self.dists.items():  # the queued values, with their distributions
                trial.suggest_categorical(n, d.choices)
        else:
            for p in self.spec.params.values():
                p.suggest(trial)
        return trial

    def _take(self) -> list:
        """A task: one trial, and up to K-1 mates that train with it as one population."""
        from optuna.trial import TrialState

        first = self._ask()
        if first is None:
            return []
        task, pop = [first], first.user_attrs["pop"]
        if self.population <= 1 or pop is None:
            return task
        while True:
            waiting = sorted(self.st.trials(TrialState.WAITING), key=lambda t: t.number)
            if waiting:
                mates = sum(1 for t in waiting if t.user_attrs.get("pop") == pop)
                if waiting[0].user_attrs.get("pop") != pop:
                    break
            elif self.spec.search and self._shape_free():
                mates = self._budget_left()
            else:
                break
            cap = min(self.population, math.ceil((len(task) + mates) / self.workers))
            if len(task) >= cap:
                break
            trial = self._ask()
            if trial is None:
                break
            task.append(trial)
        return task

    def _shape_free(self) -> bool:
        """Do all of a search's samples train together (its ranges change no shapes)?"""
        pops = set()
        for p in self.spec.params.values():
            for v in p.choices if p.choices is not None else (p.low, p.high):
                v = int(v) if p.integer else space._choice_value(p.name, v)
                pops.add(pop_key(space.with_changes(self.spec.base, {p.name: v})))
        return len(pops) == 1 and None not in pops

    def _finish(self, trial, state, attrs: dict, value: float | None = None) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            for k, v in attrs.items():
                self.st.storage.set_trial_user_attr(trial._trial_id, k, v)
            self.st.study.tell(trial, value, state=state, skip_if_finished=True)
        except UpdateFinishedTrialError:
            # another process found this trial stale and failed it, queueing a retry:
            # the retry reads this run back from disk, so nothing is lost or trained twice
            pass
        self.heartbeat.discard(trial._trial_id)
        self.held.remove(trial)

    def _tell(self, trial, result: dict) -> str | None:
        """Record a result; returns the message of a user-caused error."""
        from optuna.trial import TrialState

        if "error" in result:
            self._finish(trial, TrialState.FAIL, {"error": result["error"],
                                                  "error_kind": result["kind"]})
            if result["kind"] == "bug":
                print(result.get("traceback", ""), file=sys.stderr)
            return result["error"] if result["kind"] == "user" else None
        s = result["summary"]
        attrs = {k: s.get(k) for k in RESULT_KEYS}
        attrs.update(run_dir=str(Path(result["run_dir"]).resolve()), host=socket.gethostname())
        if not s.get("trained"):  # a twin's (or an earlier process's) run, read back
            twins = [t.number for t in self.st.trials(TrialState.COMPLETE)
                     if t.user_attrs.get("key") == result["key"]
                     and "reused_from" not in t.user_attrs]
            if twins:
                attrs["reused_from"] = min(twins)
        for it, acc in (s.get("val_acc_at") or {}).items():
            if acc is not None and math.isfinite(acc):
                trial.report(float(acc), int(it))
        value = s.get("final_val_acc")
        value = float(value) if value is not None and math.isfinite(value) else 0.0
        self._finish(trial, TrialState.COMPLETE, attrs, value)
        return None

    def run(self) -> str | None:
        """Loop until nothing is left to ask for and no other process runs a trial
        that may yet fail back into the queue; returns a user-caused error, if one stopped it."""
        from optuna.trial import TrialState

        from fcnet.experiments.worker import run_task

        try:
            while True:
                fail_dead(self.st)
                task = self._take()
                if task:
                    jobs = [{"trial": t.number, "key": t.user_attrs["key"],
                             "config": t.user_attrs["config"],
                             "eval_at": list(t.user_attrs.get("eval_at") or []),
                             "run_dir": str(self.runs_dir / t.user_attrs["key"])} for t in task]
                    errors = [self._tell(t, r) for t, r in
                              zip(task, run_task(jobs, figures=self.figures), strict=True)]
                    if self.on_tell:
                        self.on_tell()
                    if any(errors):
                        return next(e for e in errors if e)
                elif self.st.trials(TrialState.RUNNING, TrialState.WAITING):
                    time.sleep(POLL_S)
                else:
                    return None
        except BaseException:  # interrupted: give the trials back, so a rerun takes them at once
            for t in list(self.held):
                _fail(self.st, t._trial_id, "interrupted")
            raise
        finally:
            self.heartbeat.stop()


# ------------------------------------------------------------------------- processes
def _run_workers(st: _Study, spec: SweepSpec, runs_dir: Path, workers: int, population: int,
                 figures: bool, bar) -> str | None:
    """``workers`` processes, each one Worker loop on the study; None or a user error."""
    if workers == 1:
        return Worker(st, spec, runs_dir, population, 1, figures,
                      on_tell=lambda: _progress(st, spec, bar)).run()
    import multiprocessing as mp

    from fcnet.experiments.worker import environ, thread_env

    ctx = mp.get_context("spawn")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    threads = max(1, cores // workers)
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
        fail_dead(st, why="the sweep was interrupted")
        raise
    _progress(st, spec, bar)
    died = [p.exitcode for p in procs if p.exitcode not in (0, 2)]
    if any(p.exitcode == 2 for p in procs):
        return _last_user_error(st) or "a worker stopped on an error"
    if died:
        fail_dead(st)  # their trials, queued again for the next run
        return (f"{len(died)} worker process(es) died (exit code {died[0]}); "
                "run the same command again to continue")
    return None


def worker_main(url: str, name: str, identity: str, trials: int, runs_dir: str,
                population: int, workers: int, figures: bool, parent_pid: int,
                threads: int) -> None:
    """One worker process: a sweep Worker loop on the study. Exit 2 on a user error."""
    import signal

    from fcnet.experiments.worker import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    st = _Study(url, name, create=False)
    spec = SweepSpec.from_identity(json.loads(identity), trials=trials)
    if Worker(st, spec, Path(runs_dir), population, workers, figures).run():
        sys.exit(2)


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
          ) -> tuple[_Study, DirLock | None]:
    sweep_dir = Path(sweep_dir)
    url = storage or default_url(sweep_dir)
    lock = None
    if is_sqlite(url):
        if storage is None and must_exist and not (sweep_dir / "sweep.db").exists():
            raise FcnetError(f"{sweep_dir}: no sweep here (no sweep.db): give --grid, "
                             "--search or a sweep --config to start one")
        lock = DirLock(sweep_dir, "this sweep").acquire()
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
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
    a search's budget. Raises FcnetError for a user-caused problem (bad config,
    missing data); other trial errors are rows with status 'error'.
    """
    sweep_dir = Path(sweep_dir)
    if spec is not None and spec.search is None:
        plan(spec)  # every config valid before anything is written
    st, lock = _open(sweep_dir, storage, study, must_exist=spec is None)
    try:
        if spec is not None and trials is not None:
            spec.trials = trials
        spec = _spec_for(st, spec, join, join_wait_s)
        if trials is not None and spec.search:
            spec.trials = trials
            if not join:
                st.set_attr("trials", trials)
        if lock:  # nobody else runs this sweep: its RUNNING trials are leftovers
            fail_dead(st, all_running=True)
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
            error = _run_workers(st, spec, runs, max(1, workers), population, figures, bar)
        finally:
            if bar is not None:
                bar.close()
        result = SweepResult(sweep_dir, spec, _rows(st, spec, runs), st.name, st.url)
        result.write(st.study)
        if error:
            raise FcnetError(error)
        return result
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
    st = _Study(url, study or _default_study(url, sweep_dir), create=False)
    spec = _spec_for(st, None, False, 0.0)
    runs = Path(runs_dir) if runs_dir else sweep_dir / "runs"
    return SweepResult(sweep_dir, spec, _rows(st, spec, runs), st.name, st.url)


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
