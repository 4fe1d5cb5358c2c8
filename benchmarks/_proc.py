"""Shared by the benchmark scripts: run a command as a child process and measure its
wall time and peak resident memory; write JSON results.

Peak memory comes from ``os.wait4`` on the child, the same figure ``/usr/bin/time -v``
prints as "Maximum resident set size": the largest peak of any one process in the
child's tree (the child itself, or a descendant it waited for, such as a decode
worker), not the sum of processes running at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_CIFAR = "../shared/datasets/cifar10-jpeg/cifar10-jpeg.tar.gz"


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | None = None,
                 timeout_s: float | None = None) -> dict:
    """Run ``cmd`` to its end; {"cmd", "rc", "wall_s", "peak_rss_mib", "stdout", "stderr"}.

    ``wall_s`` runs from just before the fork to the child's exit (Python start-up and
    imports included). A child still running after ``timeout_s`` is killed (rc -9).
    Linux keeps ru_maxrss across fork and exec, so the peak is at least this process's
    own size at the fork: call it from a small process (the benchmark scripts are).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        timer = threading.Timer(timeout_s, proc.kill) if timeout_s else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return {
            "cmd": cmd,
            "rc": proc.returncode,
            "wall_s": wall,
            "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def fcnet_cmd(*args: str) -> list[str]:
    """``fcnet ARGS`` run by this interpreter (the venv that has fcnet installed)."""
    return [sys.executable, "-m", "fcnet", *args]


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def check_source(path: str) -> str:
    """The absolute path of a dataset source, or exit with one line if it is missing."""
    p = Path(path).expanduser()
    if not p.exists():
        sys.exit(f"error: {path}: no such file (pass --path, the local CIFAR-10 copy)")
    return str(p.resolve())


def write_json(path: str | None, obj: dict) -> None:
    """Write ``obj`` to ``path`` ('-' = stdout); creates the parent folder."""
    if path is None:
        return
    text = json.dumps(obj, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    print(f"wrote {p}", file=sys.stderr)


def progress_bar(total: int, desc: str, unit: str, quiet: bool):
    """A tqdm bar on stderr, or None when quiet."""
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)


def emit(result: dict, json_path: str | None, format_table) -> None:
    """Print the table (unless the JSON goes to stdout), then write the JSON."""
    if json_path != "-":
        print(format_table(result))
    write_json(json_path, result)
