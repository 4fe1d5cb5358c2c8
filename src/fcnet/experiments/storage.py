"""Where a sweep keeps its trials: Optuna's RDB storage, by default an SQLite file that
one `fcnet sweep` process (and its workers) uses at a time (a lock file enforces it, so
RUNNING trials found on start are leftovers), or a server (postgresql://...) shared by
processes on several machines. Every process records a heartbeat for the trials it
runs; a trial silent for ``GRACE_S`` seconds is failed and :func:`retry` queues it again.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
import random
import threading
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from filelock import Timeout

from fcnet import files
from fcnet.errors import FcnetError

HEARTBEAT_S = 10  # how often a live process touches each trial it runs
GRACE_S = 60  # silence after which another process may take the trial over
DB_NAME = "sweep.db"
# the exceptions a failing storage raises: Optuna's wrapper and SQLAlchemy's own
STORAGE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


def default_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / DB_NAME).resolve()}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO, warns that heartbeats are experimental and
    logs a storage's lost connection before fcnet names it in one line: errors only."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
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
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def open_storage(url: str):
    """An Optuna RDBStorage for ``url``; FcnetError when it cannot be reached."""
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
            storage = optuna.storages.RDBStorage(url, **kwargs)
            if is_sqlite(url):
                _fast_commits(storage)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            # workers starting together on an empty database race to create its
            # tables; the loser finds them there on the next try
            cause = err
            if attempt < 3:
                time.sleep(0.2 + random.random())
                continue
        except sqlalchemy.exc.DatabaseError as err:
            raise storage_error(given, err) from None
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
            cause = err
        raise FcnetError(f"--storage {_safe(given)}: cannot open ({_first_line(cause)})") from None


def _fast_commits(storage) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints rather than at every commit:
    160 queued trials took 6.6 s with a sync per commit, 1.8 s so (2 busy cores).  A
    crash of the machine itself may lose the last commits, never a finished run: those
    trials run again and read their run directories back."""
    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # the tables were made on a plain connection: new ones get it


JOB_ATTRS = ("key", "config", "eval_at", "pop")  # what a trial needs to run again


def retry(study, trial) -> None:
    """Queue a failed trial again: Optuna's RetryHeartbeatStaleTrialCallback (same params and
    distributions, ``retry_history`` kept), carrying only the job's user attributes, not
    the dead process's owner or error."""
    job = copy.deepcopy(trial)
    job.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in JOB_ATTRS}
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, job)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    cred, at, host = rest.rpartition("@")
    if sep and at and ":" in cred:
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def lock_sweep(sweep_dir: Path):
    """The SQLite sweep's lock (``filelock``), held by this process; FcnetError naming
    the holder when another process runs the sweep."""
    path = files.ensure_dir(sweep_dir) / ".lock"
    lock = files.lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FcnetError(f"{sweep_dir}: this sweep is in use by {files.lock_holder(path)}"
                         ) from None
    except OSError as err:
        raise files.write_error(path, err) from None
    return lock


_CAUSES = (  # (words in the driver's message, cause, what to do); first match wins
    (("readonly", "read-only", "permission denied"), "cannot be written (read-only)",
     "make it writable and run the same command again"),
    (("disk is full", "no space left", "disk full", "could not extend file"), "is full",
     "free space and run the same command again"),
    (("malformed", "not a database", "file is encrypted"), "is damaged",
     "move it away and run the same command again (finished runs in runs/ are reused)"),
    (("disk i/o error",), "cannot be written (disk I/O error)",
     "check the disk and run the same command again"),
    (("unable to open database",), "cannot be opened",
     "check the folder exists and is writable, then run the same command again"),
)


def storage_error(url: str, err: BaseException) -> FcnetError:
    """One line for a storage that failed under a sweep: which storage, why, what to do.
    Whatever it was, finished runs stay on disk and are reused by the next run."""
    text = " ".join(str(e) for e in (err, err.__cause__, err.__context__) if e).lower()
    sqlite = is_sqlite(url)
    where = url.split(":///", 1)[-1] if sqlite else _safe(url)
    if sqlite and "disk i/o error" in text and _nearly_full(where):  # a full disk, seen from the WAL
        text = "disk is full"
    for words, cause, todo in _CAUSES if sqlite else _CAUSES[:2]:
        if any(w in text for w in words):
            return FcnetError(f"sweep storage {where} {cause}: {todo}")
    if not sqlite:
        host = where.partition("://")[2].rpartition("@")[2].split("/")[0] or where
        return FcnetError(f"sweep storage {where}: the server at {host} stopped or cannot be "
                          "reached: start it and run the same command again")
    return FcnetError(f"sweep storage {where} failed ({_first_line(err)}): "
                      "run the same command again")


def _nearly_full(db_path: str) -> bool:
    try:
        st = os.statvfs(os.path.dirname(db_path.split("?")[0].removeprefix("file:")) or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 4 << 20


class Heartbeat:
    """A thread that records a heartbeat for every trial this process holds."""

    def __init__(self, storage):
        self.storage = storage
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
            with contextlib.suppress(Exception):  # a blip in the connection: the next beat retries
                self.storage.record_heartbeat(tid)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                ids = list(self.trial_ids)
            self._beat(ids)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
