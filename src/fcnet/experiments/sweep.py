"""Sweeps: many runs of one base config, over a grid or a random/TPE search.

Built on Optuna's storage: every *job* (one training run) is an Optuna trial
whose user attributes hold its config, so any process that can reach the
storage can run it, and a finished one is never run again. Rows of the result
are derived from the spec and the finished trials:

- identical configs are one job (one run directory, ``runs/<key>``);
- configs that differ only in ``iters`` (step schedule, no keep_best) are one
  job at the largest count, evaluated along the way at the smaller ones: the
  learning rate decays per epoch, not per fraction of the total, so the state
  after k updates of a long run is the state a k-update run ends in;
- a trial left RUNNING by a process that died is marked FAIL and run again,
  resuming its run directory from the last checkpoint.

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
from contextlib import contextmanager
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
)
from fcnet.experiments.worker import POPULATION_FIELDS, population_fn, run_task

POLL_S = 1.0  # how often a process waiting on other machines' trials looks again
RESULT_KEYS = ("status", "final_val_acc", "best_val_acc", "val_acc_at", "train_seconds",
               "samples_per_second", "iterations", "diverged_at", "trained")


@contextmanager
def _environ(values: dict[str, str]):
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


# ------------------------------------------------------------------------- storage glue
def _trials(study, states=None) -> list:
    return study.get_trials(deepcopy=False, states=states)


def _attrs(config: RunConfig, key: str, eval_at: list[int], pop: str | None) -> dict:
    return {"key": key, "config": config.model_dump_json(), "eval_at": eval_at, "pop": pop}


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Study:
    """The Optuna study behind a sweep, with the operations the sweep needs."""

    def __init__(self, url: str, name: str, create: bool = True):
        import optuna

        self.url = url
        self.name = name
        self.storage = open_storage(url)
        self.shared = not is_sqlite(url)
        self.created = False
        try:  # exactly one process creates a study: the name is a unique key
            if not create:
                raise optuna.exceptions.DuplicatedStudyError
            self.study = optuna.create_study(study_name=name, storage=self.storage,
                                             direction="maximize", load_if_exists=False)
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            try:
                self.study = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:
                raise FcnetError(f"no study {name!r} in {url.split('://')[0]} storage") from None

    @property
    def attrs(self) -> dict:
        return self.storage.get_study_user_attrs(self.study._study_id)

    def set_attr(self, key: str, value) -> None:
        self.storage.set_study_user_attr(self.study._study_id, key, value)

    def trials(self, states=None) -> list:
        return _trials(self.study, states)

    def take(self, trial_id: int) -> bool:
        """WAITING -> RUNNING, atomically (another process may take it first)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            return self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        except UpdateFinishedTrialError:
            return False

    def finish(self, trial_id: int, attrs: dict, state, value: float | None = None) -> bool:
        """Record a trial's results; False when it was already finished elsewhere."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(trial_id, k, v)
            self.storage.set_trial_state_values(
                trial_id, state, None if value is None else [value])
        except UpdateFinishedTrialError:
            return False
        return True


# ------------------------------------------------------------------------- the coordinator
class _Coordinator:
    """Claims trials from the study, runs them (here or in worker processes),
    records results. Several coordinators may share one study (server storage)."""

    def __init__(self, st: _Study, spec: SweepSpec, sweep_dir: Path, runs_dir: Path,
                 workers: int, population: int, figures: bool, quiet: bool):
        self.st = st
        self.spec = spec
        self.sweep_dir = sweep_dir
        self.runs_dir = runs_dir
        self.workers = max(1, int(workers))
        self.population = population if population > 1 and population_fn() else 1
        self.figures = figures
        self.quiet = quiet
        self.held: dict[int, int] = {}  # trial_id -> trial number, trials this process runs
        self.errored: set[str] = set()  # keys that failed in this process: not retried here
        self.stop_error: str | None = None
        self.heartbeat = Heartbeat(st.storage) if st.shared else None
        self.owner = _owner()
        self.bar = None
        self.pool: list[dict] = []
        if spec.search is None:
            self.points, self.jobs = plan(spec)
        else:
            self.points, self.jobs = [], {}
            self.sampler = self._sampler()

    # ---- recovery
    def recover(self) -> None:
        """Mark trials whose process died as FAIL (they are requeued by reconcile)."""
        from optuna.trial import TrialState

        running = self.st.trials((TrialState.RUNNING,))
        host = socket.gethostname()
        now = datetime.datetime.now()
        for t in running:
            if t._trial_id in self.held:
                continue
            owner = t.user_attrs.get("owner", "")
            o_host, _, o_pid = owner.rpartition(":")
            dead = not self.st.shared  # the sweep-dir lock says nobody else is running
            if o_host == host and o_pid.isdigit() and not _pid_alive(int(o_pid)):
                dead = True  # its process on this machine is gone
            if not owner and t.datetime_start and (
                    now - t.datetime_start).total_seconds() > GRACE_S:
                dead = True  # taken by a process that died before its first heartbeat
            if dead:
                self.st.finish(t._trial_id, {"error": "interrupted (its process died)"},
                               TrialState.FAIL)
        if self.st.shared:
            import optuna

            optuna.storages.fail_stale_trials(self.st.study)

    def reconcile(self) -> None:
        """Enqueue every job that has no finished, running or waiting trial."""
        from optuna.trial import TrialState

        trials = self.st.trials()
        alive = {t.user_attrs.get("key") for t in trials
                 if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
        if self.spec.search is None:
            for job in self.jobs.values():
                if job.key not in alive and job.key not in self.errored:
                    self.st.study.enqueue_trial(
                        {}, user_attrs=_attrs(job.config, job.key, job.eval_at, job.pop))
            return
        seen = set()
        for t in trials:  # failed search trials run again with the same params
            k = t.user_attrs.get("key")
            if (t.state == TrialState.FAIL and k and k not in alive and k not in seen
                    and k not in self.errored):
                seen.add(k)
                self.st.study.enqueue_trial(
                    t.params, user_attrs={a: t.user_attrs[a] for a in
                                          ("key", "config", "eval_at", "pop")
                                          if a in t.user_attrs})

    # ---- claiming
    def _hold(self, trial_id: int, number: int) -> None:
        self.held[trial_id] = number
        self.st.storage.set_trial_user_attr(trial_id, "owner", self.owner)
        if self.heartbeat:
            self.heartbeat.add(trial_id)

    def _release(self, trial_id: int) -> None:
        self.held.pop(trial_id, None)
        if self.heartbeat:
            self.heartbeat.discard(trial_id)

    def _dedupe(self, trial_id: int, number: int, key: str) -> bool:
        """Settle a just-taken trial whose config another trial has or is running.

        A finished twin: copy its result. A live twin with a smaller number:
        drop this one (PRUNED). The smallest live trial of a key never drops,
        so every key runs exactly once. True when settled (nothing to run)."""
        from optuna.trial import TrialState

        twins = [t for t in self.st.trials() if t.user_attrs.get("key") == key
                 and t._trial_id != trial_id]
        done = [t for t in twins if t.state == TrialState.COMPLETE
                and "reused_from" not in t.user_attrs]
        if done:
            src = done[0]
            attrs = {k: src.user_attrs[k] for k in (*RESULT_KEYS, "run_dir")
                     if k in src.user_attrs}
            self.st.finish(trial_id, {**attrs, "reused_from": src.number}, TrialState.COMPLETE,
                           src.value)
            self._release(trial_id)
            if self.spec.search:  # a grid's bar counts jobs, and this one was done already
                self._advance(1)
            return True
        if any(t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < number
               for t in twins):
            twin = min(t.number for t in twins
                       if t.state in (TrialState.RUNNING, TrialState.WAITING))
            self.st.finish(trial_id, {"duplicate_of": twin}, TrialState.PRUNED)
            self._release(trial_id)
            return True
        return False

    def _job(self, trial_id: int, number: int, attrs: dict) -> dict:
        return {"trial": number, "trial_id": trial_id, "key": attrs["key"],
                "config": attrs["config"], "eval_at": list(attrs.get("eval_at") or []),
                "run_dir": str(self.runs_dir / attrs["key"])}

    def _batch_cap(self, compatible: int) -> int:
        if self.population <= 1:
            return 1
        return max(1, min(self.population, math.ceil(compatible / self.workers)))

    def claim(self) -> list[dict] | None:
        """Take the next task (one job, or a batch of population-compatible ones)."""
        if self.stop_error:
            return None
        return self._claim_grid() if self.spec.search is None else self._claim_search()

    def _claim_grid(self) -> list[dict] | None:
        from optuna.trial import TrialState

        waiting = sorted(self.st.trials((TrialState.WAITING,)), key=lambda t: t.number)
        for i, t in enumerate(waiting):
            if not self.st.take(t._trial_id):
                continue
            self._hold(t._trial_id, t.number)
            if self._dedupe(t._trial_id, t.number, t.user_attrs["key"]):
                continue
            task = [self._job(t._trial_id, t.number, t.user_attrs)]
            pop = t.user_attrs.get("pop")
            mates = [u for u in waiting[i + 1:] if pop and u.user_attrs.get("pop") == pop]
            cap = self._batch_cap(1 + len(mates))
            for u in mates:
                if len(task) >= cap:
                    break
                if self.st.take(u._trial_id):
                    self._hold(u._trial_id, u.number)
                    if not self._dedupe(u._trial_id, u.number, u.user_attrs["key"]):
                        task.append(self._job(u._trial_id, u.number, u.user_attrs))
            return task
        return None

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

        trials = self.st.trials()
        used = sum(t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        return waiting + max(0, self.spec.trials - used - waiting)

    def _claim_search(self) -> list[dict] | None:
        left = self._budget_left()
        if left <= 0:
            return None
        all_shape_free = set(self.spec.params) <= set(POPULATION_FIELDS)
        cap = self._batch_cap(left) if all_shape_free else 1
        task: list[dict] = []
        while len(task) < cap and left > 0:
            self.st.study.sampler = self.sampler
            trial = self.st.study.ask()
            self._hold(trial._trial_id, trial.number)
            changes = {n: p.suggest(trial) for n, p in self.spec.params.items()}
            config = space.with_changes(self.spec.base, changes, where="--param")
            key = run_key(config)
            job = Job(key, config, [])
            attrs = _attrs(config, key, [], job.pop)
            for k, v in attrs.items():
                self.st.storage.set_trial_user_attr(trial._trial_id, k, v)
            left -= 1
            if not self._dedupe(trial._trial_id, trial.number, key):
                task.append(self._job(trial._trial_id, trial.number, attrs))
        return task or ([] if left > 0 else None)

    # ---- results
    def _advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def record(self, result: dict) -> None:
        from optuna.trial import TrialState

        tid = result["trial_id"]
        if "error" in result:
            self.errored.add(result["key"])
            attrs = {"error": result["error"], "error_kind": result["kind"]}
            self.st.finish(tid, attrs, TrialState.FAIL)
            if result["kind"] == "user" and self.stop_error is None:
                self.stop_error = result["error"]
            elif result["kind"] == "bug" and not self.quiet:
                print(result.get("traceback", ""), file=sys.stderr)
        else:
            s = result["summary"]
            attrs = {k: s.get(k) for k in RESULT_KEYS}
            attrs.update(run_dir=str(Path(result["run_dir"]).resolve()),
                         host=socket.gethostname())
            value = s.get("final_val_acc")
            value = float(value) if value is not None and math.isfinite(value) else 0.0
            self.st.finish(tid, attrs, TrialState.COMPLETE, value)
        self._release(tid)
        self._advance(1)

    # ---- the loop
    def _total(self) -> tuple[int, int]:
        from optuna.trial import TrialState

        done_keys = {t.user_attrs.get("key") for t in self.st.trials((TrialState.COMPLETE,))}
        if self.spec.search is None:
            return len(self.jobs), sum(k in done_keys for k in self.jobs)
        return self.spec.trials, min(self.spec.trials,
                                     len(self.st.trials((TrialState.COMPLETE,))))

    def _others_running(self) -> bool:
        from optuna.trial import TrialState

        return any(t._trial_id not in self.held
                   for t in self.st.trials((TrialState.RUNNING, TrialState.WAITING)))

    def run(self) -> None:
        self.recover()
        self.reconcile()
        if not self.quiet:
            from tqdm import tqdm

            total, done = self._total()
            self.bar = tqdm(total=total, initial=done, desc="sweep", unit="trial",
                            file=sys.stderr, dynamic_ncols=True)
        try:
            if self.workers > 1:
                self._start_pool()
            while True:
                if self._step():
                    continue
                if self.stop_error:
                    break
                if self._others_running():  # on other machines, or queued by one
                    time.sleep(POLL_S)
                    self.recover()
                    self.reconcile()
                    continue
                self.reconcile()  # anything that went missing (a dropped twin whose twin failed)
                if not self._claimable():
                    break
        except BaseException:
            self._abandon()
            raise
        finally:
            self._stop_pool()
            if self.heartbeat:
                self.heartbeat.stop()
            if self.bar is not None:
                self.bar.close()
        if self.stop_error:
            raise FcnetError(self.stop_error)

    def _claimable(self) -> bool:
        from optuna.trial import TrialState

        if self.stop_error:
            return False
        if self.st.trials((TrialState.WAITING,)):
            return True
        return self.spec.search is not None and self._budget_left() > 0

    def _abandon(self) -> None:
        """Interrupted: give back the trials this process holds, so a rerun takes them at once."""
        from optuna.trial import TrialState

        for tid in list(self.held):
            try:
                self.st.finish(tid, {"error": "interrupted"}, TrialState.FAIL)
            except Exception:
                pass
            self._release(tid)

    def _step(self) -> bool:
        """Claim and run work; False when nothing could be done right now."""
        if self.workers == 1:
            task = self.claim()
            if task is None:
                return False
            for r in run_task(task, figures=self.figures) if task else []:
                self.record(r)
            return True
        return self._step_pool()

    # ---- worker processes
    def _start_pool(self) -> None:
        import multiprocessing as mp

        from fcnet.experiments.worker import thread_env

        ctx = mp.get_context("spawn")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        threads = max(1, cores // self.workers)
        self.results = ctx.Queue()
        with _environ(thread_env(threads)):  # a spawned child copies this environment
            for i in range(self.workers):
                self.pool.append(self._spawn(ctx, i, threads))
        self.ctx, self.threads = ctx, threads

    def _spawn(self, ctx, i: int, threads: int) -> dict:
        from fcnet.experiments.worker import worker_main

        q = ctx.Queue()
        p = ctx.Process(target=worker_main, name=f"fcnet-sweep-{i}", daemon=True,
                        args=(i, q, self.results, os.getpid(), threads, self.figures))
        p.start()
        return {"proc": p, "tasks": q, "task": None}

    def _stop_pool(self) -> None:
        for w in self.pool:
            if w["proc"].is_alive():
                if w["task"] is None:
                    w["tasks"].put(None)
                else:
                    w["proc"].terminate()
        for w in self.pool:
            w["proc"].join(timeout=5)
            if w["proc"].is_alive():
                w["proc"].kill()
        self.pool = []

    def _step_pool(self) -> bool:
        import queue

        progressed = False
        for w in self.pool:
            if w["task"] is None:
                task = self.claim()
                if task is None:
                    break
                if not task:
                    progressed = True
                    continue
                w["task"] = task
                w["tasks"].put(task)
                progressed = True
        if not any(w["task"] is not None for w in self.pool):
            return progressed
        try:
            self._collect(self.results.get(timeout=1.0))
        except queue.Empty:
            pass
        self._check_workers()
        return True

    def _collect(self, message: tuple[int, list[dict]]) -> None:
        i, results = message
        for r in results:
            self.record(r)
        self.pool[i]["task"] = None

    def _check_workers(self) -> None:
        """A worker that died (killed, out of memory) fails its task and is replaced."""
        import queue

        if not any(w["task"] is not None and not w["proc"].is_alive() for w in self.pool):
            return
        try:  # results it sent before dying still count
            while True:
                self._collect(self.results.get(timeout=0.2))
        except queue.Empty:
            pass
        for i, w in enumerate(self.pool):
            if w["task"] is not None and not w["proc"].is_alive():
                code = w["proc"].exitcode
                for job in w["task"]:
                    self.record({**job, "error": f"worker process died (exit code {code})",
                                 "kind": "bug"})
                self.pool[i] = self._spawn_again(i)

    def _spawn_again(self, i: int) -> dict:
        from fcnet.experiments.worker import thread_env

        with _environ(thread_env(self.threads)):
            return self._spawn(self.ctx, i, self.threads)


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
        if k is None or t.state not in rank:
            continue
        if t.state == TrialState.FAIL and by_key.get(k) is not t:
            continue  # failed, then run again by a later trial
        if t.state != TrialState.COMPLETE and by_key.get(k) is not t:
            continue
        config = RunConfig.model_validate_json(t.user_attrs["config"])
        params = {n: getattr(config, n) for n in spec.params}
        rows.append(row(config, params, k, k, None, t))
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
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = DirLock(sweep_dir, "this sweep").acquire()
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        name = study or _default_study(url, sweep_dir)
        return _Study(url, name), lock
    except BaseException:
        if lock:
            lock.release()
        raise


def _default_study(url: str, sweep_dir: Path) -> str:
    if is_sqlite(url):
        return "sweep"
    return Path(sweep_dir).resolve().name


def _spec_for(st: _Study, spec: SweepSpec | None, join: bool, wait_s: float) -> SweepSpec:
    """The study's spec: set it when new; check it matches when given."""
    deadline = time.monotonic() + wait_s
    stored = st.attrs.get("spec")
    while stored is None and spec is None and time.monotonic() < deadline:
        time.sleep(POLL_S)  # a joining worker may start before the sweep is set up
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
    ``workers`` > 1 trains in that many spawned processes, BLAS threads divided
    among them. ``population`` > 1 batches shape-compatible trials into one
    population call when ``fcnet.training.train_population`` exists. ``storage``:
    an SQLAlchemy URL (default: SQLite ``sweep_dir/sweep.db``); with a server, any
    number of processes on any machines may run the same sweep. ``runs_dir``
    (default ``sweep_dir/runs``) may be shared between sweeps: identical configs
    then train once. ``trials`` changes a search's budget (e.g. to extend a
    reopened one). Raises FcnetError for a user-caused problem (bad config,
    missing data); other trial errors are rows with status 'error'.
    """
    sweep_dir = Path(sweep_dir)
    if spec is not None and spec.search is None:
        plan(spec)  # every config valid before anything is written
    st, lock = _open(sweep_dir, storage, study, must_exist=spec is None)
    try:
        if spec is not None and trials is not None:
            spec.trials = trials
        spec = _spec_for(st, spec, join, join_wait_s if join else 0.0)
        if trials is not None and spec.search:
            spec.trials = trials
            if not join:
                st.set_attr("trials", trials)
        runs = Path(runs_dir) if runs_dir else sweep_dir / "runs"
        _Coordinator(st, spec, sweep_dir, runs, workers, population, figures, quiet).run()
        result = SweepResult(sweep_dir, spec, _rows(st, spec, runs), st.name, st.url)
        result.write()
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
    from fcnet.training import evaluate_run, files, train_run

    best = result.best()
    if best is None:
        raise FcnetError(f"{result.sweep_dir}: no finished trial to test")
    cache_path = result.sweep_dir / "test.json"
    cache = files.read_json(cache_path) if cache_path.exists() else {}
    if best.key in cache:
        return cache[best.key]
    run_dir = Path(best.run_dir)
    record: dict[str, Any] = {"key": best.key, "params": best.params, "val_acc": best.val_acc}
    if best.iteration is not None:
        run_dir = Path(best.run_dir).parent / best.key
        s = train_run(best.config, run_dir, quiet=quiet, resume=True)
        record["own_run_val_acc"] = s.get("final_val_acc")
    ev = evaluate_run(run_dir, split="test")
    record.update(run_dir=str(run_dir), split=ev["split"], n=ev["n"], test_acc=ev["accuracy"])
    cache[best.key] = record
    files.write_json(cache_path, cache)
    return record
