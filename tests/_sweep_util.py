"""Helpers shared by the sweep tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FCNET = [sys.executable, "-m", "fcnet"]
# digits trains in milliseconds: a sweep's time is mostly process start and data loading
DIGITS = ["--dataset", "digits", "--batch-size", "50", "--lr", "1e-2", "--std", "1e-2",
          "--reg", "1e-3", "--no-figures"]


def cli(*args: str, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FCNET, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def attempts(run_dir: Path) -> list[dict]:
    """The lines of a run dir's attempt log: one at each start, one at each end."""
    path = Path(run_dir) / "sweep-attempts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def starts(run_dir: Path) -> list[dict]:
    return [a for a in attempts(run_dir) if "start" in a]


def trained_ends(run_dir: Path) -> list[dict]:
    return [a for a in attempts(run_dir) if "end" in a and a["trained"]]


def run_dirs(sweep_dir: Path) -> list[Path]:
    runs = Path(sweep_dir) / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


def summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None
