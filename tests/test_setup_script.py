"""bin/setup's steps: one line each on stderr, the tools' own output in a log file that
the error names when a step fails (a fresh clone's `bin/fcnet study` shows no pip chatter)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_steps(tmp_path: Path, steps: str) -> subprocess.CompletedProcess:
    script = f'. "{ROOT}/bin/setup-steps.sh"; setup_log="{tmp_path}/setup.log"; {steps}'
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60)


def test_a_step_prints_one_line_and_sends_the_tools_output_to_the_log(tmp_path):
    proc = run_steps(tmp_path, 'step "installing things" sh -c "echo chatter; '
                               'echo WARNING: Location ignored >&2"; echo after')
    assert proc.returncode == 0
    assert proc.stderr == "fcnet: set-up: installing things\n"
    assert proc.stdout == "after\n"
    assert (tmp_path / "setup.log").read_text() == "chatter\nWARNING: Location ignored\n"


def test_a_failing_step_stops_with_one_error_line_naming_the_log(tmp_path):
    proc = run_steps(tmp_path, 'step "first" true; step "second" sh -c "echo boom; exit 3"; '
                               'echo never')
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "fcnet: set-up: first", "fcnet: set-up: second",
        f"fcnet: error: set-up step failed: second (its output: {tmp_path}/setup.log)"]
    assert "boom" in (tmp_path / "setup.log").read_text()


def test_the_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"  # a table is deprecated (setuptools' banner)
    assert "setuptools>=77.0.3" in meta["build-system"]["requires"]  # 77.0.0 rejects it
