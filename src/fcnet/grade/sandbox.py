"""Running one submission's child process, isolated and limited (docs/grade.md, "The sandbox").
Mode ``bwrap``: bubblewrap namespaces, a read-only file system, a private /tmp, fcnet's package
hidden.  Mode ``none`` (bubblewrap missing or unable to start, or ``--sandbox none``): no namespaces;
as root, an unused uid (61000 + worker slot) when Landlock is missing.  Either mode: ``python -I -S
child.py`` with a clean environment and the wall clock here; the child sets rlimits, Landlock and
seccomp on itself before student code runs."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy

import fcnet
from fcnet.errors import FcnetError

DROP_UID = 61000  # + worker slot; ids no account uses
OUTPUT_TAIL = 16 * 1024
MAX_RESULT = 32 << 20
HERE = Path(__file__).resolve().parent
# the child's whole environment (plus HOME, TMPDIR, MPLCONFIGDIR): nothing of the grader's (tokens,
# proxies) reaches student code; one BLAS thread per submission keeps timings fair and the task count small
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
       "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
       **dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"),
       **{k: v for k, v in os.environ.items() if k == "OPENBLAS_CORETYPE"}}
SITE = str(Path(numpy.__file__).resolve().parent.parent)  # the one site-packages folder the child needs


class Limits(NamedTuple):
    timeout: float = 300.0
    memory_mb: int = 2048
    nproc: int = 64
    fsize_mb: int = 64
    nofile: int = 256
    tmpfs_mb: int = 256

    def for_child(self, uid: int) -> dict:
        tasks = 0  # what ``uid`` runs now, processes and threads: RLIMIT_NPROC counts them all
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    if d.stat().st_uid == uid:
                        tasks += sum(1 for _ in (d / "task").iterdir())
        return {"cpu_s": int(self.timeout) + 1, "memory_mb": self.memory_mb, "nproc": self.nproc + tasks,
                "fsize_mb": self.fsize_mb, "nofile": self.nofile}


class RunResult(NamedTuple):
    records: list[dict]
    output: str
    output_bytes: int
    returncode: int
    timed_out: bool
    seconds: float

    def stop_reason(self, limits: Limits, mode: str) -> str | None:
        """Why the child stopped early, or None when it finished."""
        if any(r.get("end") for r in self.records):
            return None
        if self.timed_out:
            return f"killed at the wall-clock limit of {limits.timeout:g} s"
        rc = self.returncode
        sig = rc - 128 if mode == "bwrap" and rc > 128 else -rc  # bwrap reports a signal as 128 + signum
        if sig > 0:
            if sig == signal.SIGXCPU:
                return f"killed at the CPU limit of {int(limits.timeout) + 1} s"
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            return f"killed by {name}" + (" (memory or CPU limit)" if sig == signal.SIGKILL else "")
        tail = [ln for ln in self.output.strip().splitlines() if ln.strip()]
        last = f": {tail[-1].strip()[:200]}" if tail else ""
        return f"exited with status {rc} before the checks finished{last}"


def _hidden_by_tmp() -> list[str]:
    """The interpreter's folders that bwrap's private /tmp would hide (a venv under /tmp)."""
    found = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                         SITE)}
    found |= {Path(sys.executable).parent.parent, Path(sys.executable).resolve().parent.parent}
    tmp = Path("/tmp").resolve()
    inside = sorted(p for p in found if p.is_relative_to(tmp) and p != tmp)
    return [str(p) for p in inside if not any(p != q and p.is_relative_to(q) for q in inside)]


@dataclass
class Sandbox:
    mode: str  # "bwrap" | "none"
    drop_uid: bool  # run as DROP_UID + slot (the grader is root)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def detect(cls, requested: str = "auto") -> Sandbox:
        """The strongest sandbox that works here, found by running a probe child in each candidate."""
        why = "--sandbox none"
        if requested in ("auto", "bwrap"):
            if not shutil.which("bwrap"):
                why = "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
            else:
                box = cls("bwrap", False)
                caps, output = box.probe()
                if caps is not None:
                    return box
                why = _bwrap_failure(output)
            if requested == "bwrap":
                raise FcnetError(f"--sandbox bwrap: {why}")
        for drop in ([True, False] if os.geteuid() == 0 else [False]):
            box = cls("none", drop)
            caps, _ = box.probe()
            if caps is not None:
                who = f"uid {DROP_UID}+" if drop else "the grader's user"
                fs = ("writes outside its own folder are blocked (Landlock), but it can read the file system "
                      "and see other processes" if caps["landlock"]
                      else f"the file system is NOT isolated: it runs as {who} (no Landlock)")
                box.warnings.insert(0, f"{why}: submissions run with resource limits only; {fs}")
                return box
        raise FcnetError(f"cannot start the grader's child process ({sys.executable} {HERE / 'child.py'})")

    def probe(self) -> tuple[dict | None, str]:
        """A probe child's report ({"landlock": abi, "seccomp": bool}; None: it failed) and output."""
        with tempfile.TemporaryDirectory(prefix="fcnet-grade-probe-", ignore_cleanup_errors=True) as tmp:
            os.chmod(tmp, 0o755)
            (Path(tmp) / "src").mkdir(mode=0o755)
            r = self.run({"probe": True}, Path(tmp) / "src", Path(tmp) / "src", Limits(timeout=60))  # no data
        if r.returncode != 0 or r.timed_out or not r.records:
            return None, r.output
        caps = r.records[0]
        if not caps["seccomp"]:
            self.warnings = [f"the seccomp filter is not available on {platform.machine()}: forks and "
                             "sockets of submissions are not blocked"]
        return caps, r.output

    def run(self, cfg: dict, stage: Path, data: Path, limits: Limits, slot: int = 0) -> RunResult:
        """Run the child on the submission copied in ``stage`` (mode "none": ``work`` is made beside it)."""
        uid = DROP_UID + slot if self.drop_uid else None
        r_fd, w_fd = os.pipe()
        cfg = dict(cfg, result_fd=w_fd, site=[SITE],
                   limits=limits.for_child(os.getuid() if uid is None else uid))
        if self.mode == "bwrap":
            cfg.update(src="/tmp/submission", work="/tmp/work", data="/tmp/data")
            home, runner, cwd = "/tmp/work", "/tmp/runner", "/"
            argv = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev",
                    "--proc", "/proc", "--size", str(limits.tmpfs_mb * (1 << 20)), "--tmpfs", "/tmp"]
            for path in _hidden_by_tmp():  # a venv under /tmp: the interpreter must stay visible
                argv += ["--ro-bind", path, path]
            argv += ["--tmpfs", str(Path(fcnet.__file__).resolve().parent)]  # fcnet is not importable
            for name in ("child.py", "landlock.py", "seccomp.py"):  # the standard library and NumPy only
                argv += ["--ro-bind", str(HERE / name), f"{runner}/{name}"]
            argv += ["--ro-bind", str(stage), "/tmp/submission", "--ro-bind", str(data), "/tmp/data"]
            argv += ["--unshare-all", "--die-with-parent", "--new-session", "--chdir", "/tmp"]
            if os.geteuid() == 0:
                argv += ["--cap-drop", "ALL"]
        else:
            work = stage.parent / "work"
            work.mkdir(exist_ok=True)
            if uid is not None:
                os.chown(work, uid, uid)
            os.chmod(work, 0o700)
            cfg.update(src=str(stage), work=str(work), data=str(data))
            home, argv, cwd, runner = str(work), [], str(work), str(HERE)
        argv += [sys.executable, "-I", "-S", f"{runner}/child.py", json.dumps(cfg)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(w_fd,), cwd=cwd, env=ENV | dict.fromkeys(("HOME", "TMPDIR", "MPLCONFIGDIR"), home),
                start_new_session=True, user=uid, group=uid, extra_groups=[] if uid is not None else None,
            )
        except OSError:
            os.close(r_fd)
            return RunResult([], "", 0, 127, False, 0.0)
        finally:
            os.close(w_fd)  # the child's end
        records: list[dict] = []
        tail = bytearray()
        total = [0]

        def read_records() -> None:
            with os.fdopen(r_fd, "rb") as f:
                got = 0
                for line in f:
                    got += len(line)
                    if got > MAX_RESULT:
                        break
                    with contextlib.suppress(ValueError):
                        rec = json.loads(line)
                        if isinstance(rec, dict):
                            records.append(rec)

        def read_output() -> None:
            while chunk := proc.stdout.read1(1 << 16):
                total[0] += len(chunk)
                tail.extend(chunk)
                del tail[:-OUTPUT_TAIL]

        readers = [threading.Thread(target=f, daemon=True) for f in (read_records, read_output)]
        for t in readers:
            t.start()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=limits.timeout)
        timed_out = proc.returncode is None  # still running at the wall-clock limit
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # also whatever the child left behind in its session
        proc.wait()
        for t in readers:
            t.join(timeout=5)
        return RunResult(records, tail.decode("utf-8", "replace"), total[0], proc.returncode,
                         timed_out, round(time.perf_counter() - t0, 3))


def _bwrap_failure(probe_output: str) -> str:
    """Why the bubblewrap sandbox did not start: bwrap's own words."""
    try:
        r = subprocess.run([shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--unshare-all",
                            "--die-with-parent", "true"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        code, said = r.returncode, (r.stderr or r.stdout).strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        code, said = 1, str(err)
    if code != 0:
        said = (said.splitlines() or [f"exit status {code}"])[-1]
        return f"bubblewrap cannot start a sandbox here: {said}"
    lines = [ln.strip() for ln in probe_output.splitlines() if ln.strip()]
    last = lines[-1][:300] if lines else "no output"
    return f"bubblewrap starts, but the grader's child fails inside it: {last}"
