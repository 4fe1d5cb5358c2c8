"""The grader's child process: ``python -m fcnet.grade.child CONFIG_JSON``.

It runs inside the sandbox, one process per submission.  It lowers its own
resource limits before any student code runs (hard limits: no way back up),
copies the submission into its private folder, imports ``two_layernet.py`` and
measures each check, writing one JSON line per event to the result file
descriptor the grader passed: ``{"start": name}`` before a check,
``{"check": name, "value"|"error": ...}`` after it, ``{"end": true}`` at the end.
If the process dies mid-check the grader knows which check was running.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

MB = 1 << 20


def set_limits(lim: dict) -> None:
    """CPU seconds, address space, processes, file size, open files; no core dumps;
    SIGKILL when the grader dies (PR_SET_PDEATHSIG)."""
    for name, soft, hard in (
        ("RLIMIT_CPU", lim["cpu_s"], lim["cpu_s"] + 5),
        ("RLIMIT_AS", lim["memory_mb"] * MB, lim["memory_mb"] * MB),
        ("RLIMIT_NPROC", lim["nproc"], lim["nproc"]),
        ("RLIMIT_FSIZE", lim["fsize_mb"] * MB, lim["fsize_mb"] * MB),
        ("RLIMIT_NOFILE", lim["nofile"], lim["nofile"]),
        ("RLIMIT_CORE", 0, 0),
    ):
        res = getattr(resource, name)
        cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard, soft = min(hard, cur_hard), min(soft, cur_hard)
        resource.setrlimit(res, (soft, hard))
    # die with the grader (without bwrap nothing else would end a sleeping child)
    import ctypes

    ctypes.CDLL(None).prctl(1, ctypes.c_ulong(9), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def describe(err: BaseException, work: Path) -> str:
    """The exception's last line, with the deepest place in the submission's own files."""
    from fcnet.grade.measure import GradeFailure

    if isinstance(err, GradeFailure):
        return str(err)
    last = traceback.format_exception_only(type(err), err)[-1].strip()
    if isinstance(err, SyntaxError):
        return last if not err.filename else f"{last} ({Path(err.filename).name}, line {err.lineno})"
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        try:
            if Path(frame.filename).resolve().is_relative_to(work):
                where = f" ({Path(frame.filename).name}, line {frame.lineno})"
        except (OSError, ValueError):
            continue
    text = last + where
    return text if len(text) <= 300 else text[:297] + "..."


def load_submission(work: Path) -> type:
    path = work / "two_layernet.py"
    spec = importlib.util.spec_from_file_location("two_layernet", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["two_layernet"] = module
    spec.loader.exec_module(module)
    cls = getattr(module, "TwoLayerNet", None)
    if not isinstance(cls, type):
        from fcnet.grade.measure import GradeFailure

        raise GradeFailure("two_layernet.py defines no class TwoLayerNet")
    return cls


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    # everything the grader needs is imported before student code can shadow it
    import numpy as np  # noqa: F401

    from fcnet.grade import landlock, measure, seccomp

    work = Path(cfg["work"])
    work.mkdir(parents=True, exist_ok=True)
    if cfg.get("probe"):  # report what confinement works here, on stdout
        caps = {"landlock": 0, "seccomp": False}
        try:
            caps["landlock"] = landlock.restrict_writes([work])
        except OSError:
            pass
        try:
            seccomp.install()
            caps["seccomp"] = True
        except (OSError, KeyError, AttributeError):
            pass
        print("FCNET-PROBE " + json.dumps(caps), flush=True)
        return 0
    set_limits(cfg["limits"])
    me = os.getpid()
    out = os.fdopen(cfg["result_fd"], "w", buffering=1)

    def emit(record: dict) -> None:
        if os.getpid() == me:  # a fork of the student's is not the grader's child
            out.write(json.dumps(record) + "\n")
            out.flush()

    shutil.copytree(cfg["src"], work, dirs_exist_ok=True)
    work = work.resolve()
    try:
        landlock.restrict_writes([work])  # writes only in its own folder
    except OSError:
        pass  # the grader's probe found this out and said so
    if seccomp.supported():
        seccomp.install()  # no new processes, no sockets but AF_UNIX
    os.chdir(work)
    sys.path.insert(0, str(work))
    sys.argv = ["two_layernet.py"]
    data = Path(cfg["data"]) if cfg.get("data") else None
    ctx = None
    for name in cfg["checks"]:
        emit({"start": name})
        t0 = time.perf_counter()
        try:
            if name == "load":
                ctx = measure.Context(load_submission(work), data, cfg["dataset"])
            elif ctx is None:
                emit({"check": name, "error": "not run: two_layernet.py did not load"})
                continue
            value, note, detail = measure.RUN[name](ctx)
            emit({"check": name, "value": value, "note": note, "detail": detail,
                  "seconds": round(time.perf_counter() - t0, 3)})
        except BaseException as err:  # noqa: BLE001 - student code may raise anything, SystemExit too
            emit({"check": name, "error": describe(err, work), "seconds": round(time.perf_counter() - t0, 3)})
    emit({"end": True})
    out.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)  # no atexit handlers or lingering threads of the student's


if __name__ == "__main__":
    sys.exit(main(sys.argv))
