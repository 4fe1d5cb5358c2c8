"""Where a sweep keeps its trials: Optuna's RDB storage, an SQLite file one `fcnet sweep` uses at a
time (a lock file enforces it) or a server (postgresql://...) that several machines share."""

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
# the exceptions a failing storage raises: Optuna's wrapper and SQLAlchemy's own
STORAGE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


def default_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / 'sweep.db').resolve()}"


def driver_url(url: str) -> str:
    """``postgresql://`` with an installed driver: SQLAlchemy 2.1 reads a bare one as psycopg (3);
    fcnet's extra installs psycopg2, so pick it when psycopg is missing."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def open_storage(url: str):
    """An Optuna RDBStorage for ``url``; FcnetError when it cannot be reached."""
    # errors only: Optuna logs trials, warns of heartbeats (fcnet beats itself), logs lost connections
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    given, url = url, driver_url(url)
    # an SQLite file's timeout: worker processes and other readers (e.g. `optuna-dashboard`) share it
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    kwargs: dict = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
                    "heartbeat_stale_trial_callback": retry, "engine_kwargs": engine}
    for attempt in range(4):
        try:
            storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite:"):  # the tables were made on a plain connection: new ones get WAL
                sqlalchemy.event.listen(storage.engine, "connect", _wal)
                storage.engine.dispose()
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            cause = err  # workers racing to create an empty database's tables: the loser retries
            if attempt < 3:
                time.sleep(0.2 + random.random())
                continue
        except sqlalchemy.exc.DatabaseError as err:
            raise storage_error(given, err) from None
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
            cause = err
        raise FcnetError(f"--storage {_safe(given)}: cannot open ({_first_line(cause)})") from None


def _wal(dbapi_connection, _record) -> None:
    """SQLite in WAL mode, synced at checkpoints (160 queued trials: 6.6 -> 1.8 s). A machine crash
    may lose the last commits, never a finished run: those trials run again and read it back."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def retry(study, trial) -> None:
    """Queue a failed trial again (Optuna's retry callback) with only what its job needs to run again."""
    job = copy.deepcopy(trial)
    job.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in ("key", "config", "eval_at", "pop")}
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
    """The SQLite sweep's lock, held; FcnetError naming the holder when another process runs it."""
    path = files.ensure_dir(sweep_dir) / ".lock"
    lock = files.lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FcnetError(f"{sweep_dir}: this sweep is in use by {files.lock_holder(path)}") from None
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
    """One line for a storage that failed under a sweep: which, why, what to do (finished runs are kept)."""
    text = " ".join(str(e) for e in (err, err.__cause__, err.__context__) if e).lower()
    sqlite = url.startswith("sqlite:")
    where = url.split(":///", 1)[-1] if sqlite else _safe(url)
    if sqlite and "disk i/o error" in text:  # a full disk (under 4 MiB free), seen from the WAL
        with contextlib.suppress(OSError):
            fs = os.statvfs(os.path.dirname(where.split("?")[0].removeprefix("file:")) or ".")
            text = "disk is full" if fs.f_bavail * fs.f_frsize < 4 << 20 else text
    for words, cause, todo in _CAUSES if sqlite else _CAUSES[:2]:
        if any(w in text for w in words):
            return FcnetError(f"sweep storage {where} {cause}: {todo}")
    if not sqlite:
        host = where.partition("://")[2].rpartition("@")[2].split("/")[0] or where
        return FcnetError(f"sweep storage {where}: the server at {host} stopped or cannot be "
                          "reached: start it and run the same command again")
    return FcnetError(f"sweep storage {where} failed ({_first_line(err)}): run the same command again")


def heartbeat(storage, trial_id: int) -> threading.Event:
    """Record the trial's heartbeat every HEARTBEAT_S s (riding out blips) until the event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a blip in the connection: the next beat retries
                storage.record_heartbeat(trial_id)
            stop.wait(HEARTBEAT_S)

    threading.Thread(target=loop, name="fcnet-heartbeat", daemon=True).start()
    return stop
