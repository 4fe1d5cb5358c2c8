"""Running one submission's child process, isolated and limited.

Isolation (``mode``):

- ``bwrap``: bubblewrap gives the child new user, PID, network, IPC and UTS
  namespaces (no network at all, no view of other processes), the whole file
  system read-only, a private size-capped tmpfs on /tmp holding its copy of the
  submission, and no capabilities.  Killing bwrap kills everything inside.
- ``none`` (bubblewrap missing or unable to start, or ``--sandbox none``): no
  namespaces.  The child confines its own writes to its private folder with
  Landlock where the kernel has it; otherwise the file system is not isolated
  (when the grader is root it then tries an unused uid, 61000 + worker slot).

Either mode: wall clock (the grader kills the process group), then limits the
child sets on itself before any student code runs: CPU seconds, address
space, process count, file size and open files (``child.set_limits``), Landlock
(``fcnet.grade.landlock``) and a seccomp filter (``fcnet.grade.seccomp``: no new
processes, no sockets but AF_UNIX, which also holds for root, whom
RLIMIT_NPROC exempts).  The grader prints once what is not isolated.
"""

from __future__ import annotations

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

import fcnet

DROP_UID = 61000  # + worker slot; ids no account uses
OUTPUT_TAIL = 16 * 1024
MAX_RESULT = 32 << 20


@dataclass
class Limits:
    timeout: float = 300.0
    memory_mb: int = 2048
    nproc: int = 64
    fsize_mb: int = 64
    nofile: int = 256
    tmpfs_mb: int = 256

    def for_child(self, uid: int | None) -> dict:
        return {"cpu_s": int(self.timeout) + 1, "memory_mb": self.memory_mb,
                "nproc": self.nproc + _processes_of(os.getuid() if uid is None else uid),
                "fsize_mb": self.fsize_mb, "nofile": self.nofile}


@dataclass
class RunResult:
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
        if mode == "bwrap" and rc > 128:  # bwrap reports a signal as 128 + signum
            rc = -(rc - 128)
        if rc < 0:
            sig = -rc
            if sig == signal.SIGXCPU:
                return f"killed at the CPU limit of {int(limits.timeout) + 1} s"
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            return f"killed by {name}" + (" (memory or CPU limit)" if sig == signal.SIGKILL else "")
        tail = [ln for ln in self.output.strip().splitlines() if ln.strip()]
        last = f": {tail[-1].strip()[:200]}" if tail else ""
        return f"exited with status {rc} before the checks finished{last}"


def _processes_of(uid: int) -> int:
    """How many tasks (processes and threads) ``uid`` runs now: RLIMIT_NPROC counts them all."""
    n = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if d.stat().st_uid == uid:
                n += sum(1 for _ in (d / "task").iterdir())
        except OSError:
            continue
    return n


def _python_path() -> str:
    return str(Path(fcnet.__file__).resolve().parent.parent)


def _env(home: str) -> dict[str, str]:
    """A clean environment: nothing of the grader's (tokens, proxies) reaches student code."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "MPLCONFIGDIR": home,
           "PYTHONPATH": _python_path(), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
           "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8", "MPLBACKEND": "Agg"}
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"  # one core per submission: timings stay fair and the task count small
    if "OPENBLAS_CORETYPE" in os.environ:
        env["OPENBLAS_CORETYPE"] = os.environ["OPENBLAS_CORETYPE"]
    return env


_NO_SECCOMP = (f"the seccomp filter is not available on {platform.machine()}: forks and sockets "
               "of submissions are not blocked")


@dataclass
class Sandbox:
    mode: str  # "bwrap" | "none"
    drop_uid: bool  # run as DROP_UID + slot (the grader is root)
    warnings: list[str] = field(default_factory=list)

    # ------------------------------------------------------------- detection
    @classmethod
    def detect(cls, requested: str = "auto") -> Sandbox:
        """The strongest sandbox that works here: each candidate runs a probe child,
        which also reports whether Landlock and seccomp work."""
        from fcnet.errors import FcnetError

        why = "--sandbox none"
        if requested in ("auto", "bwrap"):
            if not shutil.which("bwrap"):
                why = "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
            else:
                box = cls("bwrap", False)
                caps = box.probe()
                if caps is not None:
                    box.warnings = [] if caps["seccomp"] else [_NO_SECCOMP]
                    return box
                why = "bubblewrap cannot start a sandbox here (user namespaces disabled?)"
            if requested == "bwrap":
                raise FcnetError(f"--sandbox bwrap: {why}")
        for drop in ([True, False] if os.geteuid() == 0 else [False]):
            box = cls("none", drop)
            caps = box.probe()
            if caps is None:
                continue
            if caps["landlock"]:
                fs = ("writes outside its own folder are blocked (Landlock), but it can read "
                      "the file system and see other processes")
            elif drop:
                fs = f"the file system is NOT isolated: it runs as uid {DROP_UID}+ (no Landlock)"
            else:
                fs = "the file system is NOT isolated: it runs as the grader's user (no Landlock)"
            box.warnings = [f"{why}: submissions run with resource limits only; {fs}"]
            if not caps["seccomp"]:
                box.warnings.append(_NO_SECCOMP)
            return box
        raise FcnetError(f"cannot start the grader's child process ({sys.executable} -m fcnet.grade.child)")

    def probe(self) -> dict | None:
        """What a probe child reports ({"landlock": abi, "seccomp": bool}), None when it fails."""
        tmp = Path(tempfile.mkdtemp(prefix="fcnet-grade-probe-"))
        try:
            os.chmod(tmp, 0o755)
            (tmp / "src").mkdir(mode=0o755)
            r = self.run({"probe": True}, tmp / "src", None, Limits(timeout=60), slot=0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if r.returncode != 0 or r.timed_out:
            return None
        for line in r.output.splitlines():
            if line.startswith("FCNET-PROBE "):
                return json.loads(line.split(" ", 1)[1])
        return None

    # ------------------------------------------------------------------- run
    def run(self, cfg: dict, stage: Path, data: Path | None, limits: Limits, slot: int = 0) -> RunResult:
        """Run the child on the submission copied in ``stage``; ``cfg`` is completed here.

        ``stage`` must be readable by the child's uid; in mode "none" the private
        ``work`` folder is made beside it (so its parent must be the run's own folder).
        """
        uid = DROP_UID + slot if self.drop_uid else None
        r_fd, w_fd = os.pipe()
        cfg = dict(cfg, result_fd=w_fd, limits=limits.for_child(uid), dataset=cfg.get("dataset", "digits"))
        if self.mode == "bwrap":
            cfg.update(src="/tmp/submission", work="/tmp/work", data="/tmp/data" if data else None)
            home = "/tmp/work"
            argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                    "--size", str(limits.tmpfs_mb * (1 << 20)), "--tmpfs", "/tmp",
                    "--ro-bind", str(stage), "/tmp/submission"]
            if data:
                argv += ["--ro-bind", str(data), "/tmp/data"]
            argv += ["--unshare-all", "--die-with-parent", "--new-session", "--chdir", "/tmp"]
            if os.geteuid() == 0:
                argv += ["--cap-drop", "ALL"]
            cwd = "/"
        else:
            work = stage.parent / "work"
            work.mkdir(exist_ok=True)
            if uid is not None:
                os.chown(work, uid, uid)
            os.chmod(work, 0o700)
            cfg.update(src=str(stage), work=str(work), data=str(data) if data else None)
            home, argv, cwd = str(work), [], str(work)
        argv += [sys.executable, "-m", "fcnet.grade.child", json.dumps(cfg)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(w_fd,), cwd=cwd, env=_env(home), start_new_session=True,
                user=uid, group=uid, extra_groups=[] if uid is not None else None,
            )
        except OSError:
            os.close(r_fd)
            os.close(w_fd)
            return RunResult([], "", 0, 127, False, 0.0)
        os.close(w_fd)
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
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict):
                        records.append(rec)

        def read_output() -> None:
            while chunk := proc.stdout.read1(1 << 16):
                total[0] += len(chunk)
                tail.extend(chunk)
                del tail[:-OUTPUT_TAIL]

        readers = [threading.Thread(target=read_records, daemon=True),
                   threading.Thread(target=read_output, daemon=True)]
        for t in readers:
            t.start()
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid)  # also whatever the child left behind in its session
        proc.wait()
        for t in readers:
            t.join(timeout=5)
        return RunResult(records, tail.decode("utf-8", "replace"), total[0], proc.returncode,
                         timed_out, round(time.perf_counter() - t0, 3))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
