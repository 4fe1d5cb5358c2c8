"""Where a sweep keeps its trials: Optuna's RDB storage.

By default an SQLite file in the sweep directory, used by one `fcnet sweep`
process (and its workers) at a time: a lock file enforces it, so every RUNNING
trial found on start belongs to a process that died. A server URL
(postgresql://...) lets processes on several machines share one sweep. On both,
every process records a heartbeat for the trials it runs (Optuna's own runs only
inside ``optimize()``), a trial whose heartbeat stops for ``GRACE_S`` seconds is
failed by ``optuna.storages.fail_stale_trials``, and :func:`retry` queues it again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import time
import warnings
from pathlib import Path

from fcnet.errors import FcnetError

HEARTBEAT_S = 10  # how often a live process touches each trial it runs
GRACE_S = 60  # silence after which another process may take the trial over
DB_NAME = "sweep.db"


def default_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / DB_NAME).resolve()}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO and warns that heartbeats are experimental."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # fcnet records the heartbeat itself, around ask -> train -> tell
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def driver_url(url: str) -> str:
    """``postgresql://`` with a driver that is installed.

    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3); fcnet's extra
    installs psycopg2, so pick it when psycopg is missing."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def open_storage(url: str):
    """An Optuna RDBStorage for ``url``; FcnetError when it cannot be reached."""
    import optuna
    import sqlalchemy.exc

    quiet_optuna()
    given, url = url, driver_url(url)
    kwargs: dict = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
                    "heartbeat_stale_trial_callback": retry}
    if is_sqlite(url):
        # worker processes and other readers (e.g. `optuna-dashboard`) share the file
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.SQLAlchemyError as err:
            # workers starting together on an empty database race to create its
            # tables; the loser finds them there on the next try
            if attempt == 3 or not isinstance(err, sqlalchemy.exc.IntegrityError |
                                              sqlalchemy.exc.ProgrammingError):
                raise FcnetError(f"--storage {_safe(given)}: cannot open "
                                 f"({_first_line(err)})") from None
            time.sleep(0.2 + random.random())
        except (ImportError, ValueError) as err:
            raise FcnetError(f"--storage {_safe(given)}: cannot open ({_first_line(err)})"
                             ) from None
    raise AssertionError("unreachable")


JOB_ATTRS = ("key", "config", "eval_at", "pop")  # what a trial needs to run again


def retry(study, trial) -> None:
    """Queue a failed trial again: Optuna's RetryFailedTrialCallback (same params and
    distributions, ``retry_history`` kept), carrying only the job's user attributes, not
    the dead process's owner or error."""
    import copy

    import optuna

    job = copy.deepcopy(trial)
    job.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in JOB_ATTRS}
    optuna.storages.RetryFailedTrialCallback(max_retry=None)(study, job)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        cred, _, host = rest.rpartition("@")
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in cred else url
    return url


class DirLock:
    """An exclusive lock on a directory, held by an open file (released when the
    process exits, however it exits)."""

    def __init__(self, directory: Path, what: str):
        self.path = Path(directory) / ".lock"
        self.what = what
        self._f = None

    def acquire(self, wait: bool = False) -> DirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise FcnetError(f"{self.path.parent}: {self.what} is in use by {holder}") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Heartbeat:
    """A thread that records a heartbeat for every trial this process holds."""

    def __init__(self, storage, interval: float = HEARTBEAT_S):
        self.storage = storage
        self.interval = interval
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fcnet-heartbeat", daemon=True)
        self._thread.start()

    def add(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.add(trial_id)
        self._beat([trial_id])

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _beat(self, ids) -> None:
        for tid in ids:
            try:
                self.storage.record_heartbeat(tid)
            except Exception:  # a blip in the connection: the next beat retries
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            self._beat(ids)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
