"""Sweeps over a grid or a random/TPE search. Every job (one run, ``runs/<key>``) is an Optuna trial: params
the varied fields, value the validation accuracy; configs differing only in ``iters`` (step schedule, no
keep_best) are one job, read along the way. A dead process's trial is queued again; its retry resumes."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
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
from fcnet.experiments.plan import Point, SweepSpec, load_sweep_file, plan, pop_key  # noqa: F401  (re-exported)
from fcnet.experiments.results import Row, SweepResult

STORAGE_LOST = 3  # a worker process's exit status when the storage failed under it
FORMAT = 2  # sweeps since run keys hash only the fields that differ from their defaults


def refuse_old(where: str, name: str, attrs: dict) -> None:
    """Refuse a sweep an earlier fcnet made: its run keys differ (reusing them would mix engines)."""
    if "spec" in attrs and attrs.get("format") != FORMAT:
        raise FcnetError(f"{where}: study {name!r} was made by an earlier fcnet, whose run keys "
                         "differ, so none of its runs would be reused: move it away, or give "
                         "another --dir (sweep) or --out (study)")


class _Study:
    """The Optuna study behind a sweep, by default named 'sweep' in SQLite, else after its directory."""

    def __init__(self, url: str, name: str | None, sweep_dir: Path | None = None, create: bool = True):
        name = self.name = name or ("sweep" if url.startswith("sqlite:") else Path(sweep_dir).resolve().name)
        self.url, self.created, self.storage = url, False, db.open_storage(url)
        if create:  # exactly one process creates a study: the name is a unique key
            with contextlib.suppress(optuna.exceptions.DuplicatedStudyError):
                self.study = optuna.create_study(study_name=name, storage=self.storage, direction="maximize")
                self.study.set_user_attr("format", FORMAT)
                self.created = True
        if not self.created:
            try:
                self.study = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:
                raise FcnetError(f"no study {name!r} in {url.split('://')[0]} storage") from None
            refuse_old(url, name, self.study.user_attrs)

    def trials(self, *states) -> list:
        return self.study.get_trials(deepcopy=False, states=states or None)


def _enqueue_missing(st: _Study, spec: SweepSpec) -> None:
    """Queue every grid job without a trial (mates side by side, so ``ask()`` hands them out together)
    and each whose last trial failed; one read of the trials (18 s less than skip_if_exists's)."""
    _, jobs = plan(spec)
    trials = st.trials()
    known = {t.user_attrs.get("key") for t in trials}
    group = {k: pop_key(job.config) or k for k, job in jobs.items()}
    cost: dict[str, float] = defaultdict(float)  # longest first: no worker idles alone at the end
    for job in jobs.values():
        c = job.config
        cost[group[job.key]] += (c.iters or c.epochs or 1) * c.batch_size * (sum(c.hidden) + 10)
    order = {g: i for i, g in enumerate(cost)}  # ties: in plan order, mates together
    for job in sorted(jobs.values(), key=lambda j: (-cost[group[j.key]], order[group[j.key]])):
        if job.key not in known:
            params = {n: space._choice_key(getattr(job.config, n)) for n in spec.varied()}
            st.study.enqueue_trial(params, {**worker.job_attrs(job.config), "eval_at": job.eval_at})
    alive = {t.user_attrs.get("key") for t in trials if t.state != TrialState.FAIL}  # PRUNED: no key
    for t in sorted(trials, key=lambda t: -t.number):  # the last failure of each job
        if t.state == TrialState.FAIL and t.user_attrs.get("key") in set(jobs) - alive:
            db.retry(st.study, t)
            alive.add(t.user_attrs["key"])


def _run_workers(st: _Study, spec: SweepSpec, runs_dir: Path, workers: int, population: int,
                 figures: bool, bar) -> str | None:
    """``workers`` processes, each one worker loop on the study; None or a user error."""

    def progress() -> None:
        if not bar.disable:
            done = {t.user_attrs.get("key") for t in st.trials(TrialState.COMPLETE)}
            bar.n = len(done & set(plan(spec)[1])) if spec.search is None else min(len(done), spec.trials)
            bar.refresh()

    if workers == 1:
        return worker.work(st, spec, runs_dir, population, 1, figures, on_tell=progress)
    threads = max(1, worker.cores() // workers)
    args = (st.url, st.name, spec, runs_dir, population, workers, figures, os.getpid(), threads)
    with mock.patch.dict(os.environ, dict.fromkeys(worker.THREAD_VARS, str(threads))):  # spawn copies it
        procs = [mp.get_context("spawn").Process(target=worker_main, args=args, daemon=True,
                                                 name=f"fcnet-sweep-{i}") for i in range(workers)]
        for p in procs:
            p.start()
    try:
        while any(p.is_alive() for p in procs):
            progress()
            for p in procs:
                p.join(timeout=worker.POLL_S / len(procs))
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)
        worker.fail_stale(st, why="the sweep was interrupted")
        raise
    progress()
    died = [p.exitcode for p in procs if p.exitcode not in (0, 2)]
    if STORAGE_LOST in died:
        worker.fail_stale(st)  # a storage error of its own here, or the worker's lost connection
        return (f"sweep storage {st.url}: a worker lost it (its line above says why); "
                "run the same command again")
    if 2 in (p.exitcode for p in procs):
        errs = {t.number: t.user_attrs["error"] for t in st.trials(TrialState.FAIL)
                if t.user_attrs.get("error_kind") == "user"}
        return errs[max(errs)] if errs else "a worker stopped on an error"
    if died:
        worker.fail_stale(st)  # their trials, queued again for the next run
        return (f"{len(died)} worker process(es) died (exit code {died[0]}); "
                "run the same command again to continue")
    return None


def worker_main(url: str, name: str, spec: SweepSpec, runs_dir: Path, population: int, workers: int,
                figures: bool, parent_pid: int, threads: int) -> None:
    """A worker process: exit 2 on a user error, STORAGE_LOST (its line printed) if the storage failed."""
    worker.die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle
    threadpool_limits(threads)
    try:
        if worker.work(_Study(url, name, create=False), spec, runs_dir, population, workers, figures):
            sys.exit(2)
    except (FcnetError, *db.STORAGE_ERRORS) as err:  # one line; the sweep exits non-zero too
        print(f"fcnet: error: {err if isinstance(err, FcnetError) else db.storage_error(url, err)}",
              file=sys.stderr)
        sys.exit(STORAGE_LOST)


def _rows(st: _Study, spec: SweepSpec, runs_dir: Path) -> list[Row]:
    # a key's trial: the first finished, else running, ..., else the last failed (sorted in reverse:
    # the last one set wins)
    rank = {TrialState.COMPLETE: 0, TrialState.RUNNING: 1, TrialState.WAITING: 2, TrialState.FAIL: 3}
    by_key = {t.user_attrs["key"]: t for t in sorted(
        (t for t in st.trials() if t.state in rank and t.user_attrs.get("key") is not None), reverse=True,
        key=lambda t: (rank[t.state], -t.number if t.state == TrialState.FAIL else t.number))}

    def row(p: Point, duplicate: bool = False) -> Row:
        t, run_dir = by_key.get(p.job), str((runs_dir / p.job).resolve())
        state = t.state if t else TrialState.WAITING  # no trial yet: pending
        if state != TrialState.COMPLETE:
            status = {TrialState.RUNNING: "running", TrialState.WAITING: "pending"}.get(state, "error")
            error = t.user_attrs.get("error") if status == "error" else None
            return Row(p.config, p.changes, None, status, p.key, run_dir, p.iteration,
                       t.number if t else None, error=error)
        a = t.user_attrs
        if p.iteration is None:
            val, status = a.get("final_val_acc"), a.get("status", "completed")
        else:
            val = (a.get("val_acc_at") or {}).get(str(p.iteration))
            status = "shared" if val is not None else a.get("status", "missing")
        if duplicate or "reused_from" in a:
            status = "reused"
        return Row(p.config, p.changes, val, status, p.key, a.get("run_dir", run_dir), p.iteration,
                   t.number, train_seconds=a.get("train_seconds"))

    if spec.search is None:
        points = plan(spec)[0]
        first = {p.key: p for p in reversed(points)}
        return [row(p, duplicate=first[p.key] is not p) for p in points]
    configs = {k: RunConfig.model_validate_json(t.user_attrs["config"]) for k, t in by_key.items()}
    return [row(Point({n: getattr(c, n) for n in spec.params}, c, k, k, None))
            for k, c in sorted(configs.items(), key=lambda kc: by_key[kc[0]].number)]


def _spec_for(st: _Study, spec: SweepSpec | None, join: bool, wait_s: float) -> SweepSpec:
    """The study's spec, set when new, else checked; a joiner first waits for its creator's queue."""
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
    """Run (or finish, or join) a sweep; its table (docs/sweep.md). ``spec=None`` reopens the stored one;
    ``on_start()`` runs before the workers. FcnetError for a user-caused problem, else 'error' rows."""
    sweep_dir = Path(sweep_dir)
    if spec is not None and spec.search is None:
        plan(spec)  # every config valid before anything is written
    given, url = spec is not None, storage or db.default_url(sweep_dir)
    sqlite = url.startswith("sqlite:")  # this process then holds the sweep's lock: nobody else runs it
    if not given and storage is None and not (sweep_dir / "sweep.db").exists():
        raise FcnetError(f"{sweep_dir}: no sweep here (no sweep.db): give --grid, "
                         "--search or a sweep --config to start one")
    try:  # read-only, full, damaged, a server gone: one line
        with contextlib.ExitStack() as stack:
            if sqlite:
                stack.callback(db.lock_sweep(sweep_dir).release)
                if (sweep_dir / "sweep.db").exists():  # a study file's sweep is named anew
                    for summary in optuna.get_all_study_summaries(url, include_best_trial=False):
                        refuse_old(str(sweep_dir / "sweep.db"), summary.study_name, summary.user_attrs)
            else:
                sweep_dir.mkdir(parents=True, exist_ok=True)
            st = _Study(url, study, sweep_dir)
            spec = _spec_for(st, spec, join, join_wait_s)
            if trials is not None:
                spec.trials = trials
            if spec.search and not join and (given or trials is not None):
                st.study.set_user_attr("trials", spec.trials)
            if sqlite:  # its RUNNING trials are leftovers
                worker.fail_stale(st, everyone=True)
            if spec.search is None and (st.created or not join):
                _enqueue_missing(st, spec)
            st.study.set_user_attr("ready", True)
            runs = Path(runs_dir or sweep_dir / "runs")
            with tqdm(total=len(plan(spec)[1]) if spec.search is None else spec.trials, desc="sweep",
                      unit="trial", file=sys.stderr, dynamic_ncols=True, disable=quiet) as bar:
                if on_start is not None:
                    on_start()
                error = _run_workers(st, spec, runs, max(1, workers), population, figures, bar)
            result = SweepResult(sweep_dir, spec, _rows(st, spec, runs))
            # a killed write's temp files; on a shared storage only old ones (another may be writing)
            files.remove_temps(sweep_dir, min_age_s=0 if sqlite else 600)
            result.write(st.study if plots else None)
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
        st = _Study(url, study, sweep_dir, create=False)
        spec = _spec_for(st, None, False, 0.0)
        return SweepResult(sweep_dir, spec, _rows(st, spec, Path(runs_dir or sweep_dir / "runs")))
    except db.STORAGE_ERRORS as err:
        raise db.storage_error(url, err) from None


def best_test_accuracy(result: SweepResult, quiet: bool = True) -> dict:
    """Test accuracy of the best row by validation accuracy (chosen before reading the test split)."""
    if (best := result.best()) is None:
        raise FcnetError(f"{result.sweep_dir}: no finished trial to test")
    return test_accuracy(result.sweep_dir, best, quiet=quiet)


def test_accuracy(sweep_dir: Path, row: Row, quiet: bool = True) -> dict:
    """One row's test accuracy, cached in ``sweep_dir/test.json``; a 'shared' row is first trained alone."""
    from fcnet.training import evaluate_run, train_run

    cache_path = Path(sweep_dir) / "test.json"
    cache = files.read_json(cache_path) if cache_path.exists() else {}
    if row.key in cache:
        return cache[row.key]
    run_dir = Path(row.run_dir)
    record: dict = {"key": row.key, "params": row.params, "val_acc": row.val_acc}
    if row.iteration is not None:  # read along a longer run: trained alone for its own iterations
        run_dir = run_dir.parent / row.key
        s = train_run(row.config, run_dir, quiet=quiet, resume=True)
        record["own_run_val_acc"] = s.get("final_val_acc")
    ev = evaluate_run(run_dir, split="test")
    record.update(run_dir=str(run_dir), split=ev["split"], n=ev["n"], test_acc=ev["accuracy"])
    files.write_json(cache_path, {**cache, row.key: record})
    return record
