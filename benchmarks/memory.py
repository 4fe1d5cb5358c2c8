"""Peak memory of whole fcnet commands, each run in a fresh subprocess:

- ``fcnet train`` with the exercise's baseline (3072-50-10, 1,000 iterations) on
  CIFAR-10, in float64 (the default) and in float32;
- ``fcnet study --dataset digits`` (the offline study, Q4 depth study included).

Runs and study folders go to a temporary folder deleted at the end. Before the
CIFAR-10 runs, ``fcnet data info cifar10 --path P`` fills the decoded-data cache (in
``$FCNET_DATA`` or ``~/.cache/fcnet``, untimed), so the trainings load warm. Reported:
``peak_rss_mib``, the largest peak of any one process of the command's tree (from
``wait4``; what ``/usr/bin/time -v`` calls "Maximum resident set size"), and the
command's wall time.

    .venv/bin/python benchmarks/memory.py                 # about a minute on 2 cores
    .venv/bin/python benchmarks/memory.py --json results/memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _proc import (
    DEFAULT_CIFAR,
    check_source,
    emit,
    fcnet_cmd,
    last_line,
    progress_bar,
    run_measured,
)


def commands(path: str, tmp: Path, which: list[str]) -> dict[str, list[str]]:
    runs = str(tmp / "runs")
    train = ["train", "--dataset", "cifar10", "--path", path, "--runs-dir", runs, "--quiet",
             "--json"]
    out = {
        "train_cifar10_float64": fcnet_cmd(*train, "--dtype", "float64", "--name", "f64"),
        "train_cifar10_float32": fcnet_cmd(*train, "--dtype", "float32", "--name", "f32"),
        "study_digits": fcnet_cmd("study", "--dataset", "digits", "--out",
                                  str(tmp / "study-digits"), "--quiet"),
    }
    return {k: v for k, v in out.items() if k in which}


def shown(cmd: list[str], tmp: Path) -> str:
    """The command as a user would type it (``fcnet ...``, temporary folder as $TMP)."""
    args = cmd[3:] if cmd[1:3] == ["-m", "fcnet"] else cmd
    return " ".join(["fcnet", *args]).replace(str(tmp), "$TMP")


def run(path: str | None, which: list[str], progress=None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="fcnet-mem-bench-"))
    results = {}
    try:
        if path and any(k.startswith("train_cifar10") for k in which):
            prime = run_measured(fcnet_cmd("data", "info", "cifar10", "--path", path, "--quiet"))
            if prime["rc"] != 0:
                sys.exit(f"error: fcnet data info failed: {last_line(prime['stderr'])}")
        for name, cmd in commands(path or "", tmp, which).items():
            r = run_measured(cmd, timeout_s=1800)
            if r["rc"] != 0:
                sys.exit(f"error: {name} failed (rc {r['rc']}): {last_line(r['stderr'])}")
            entry = {"command": shown(cmd, tmp), "wall_s": r["wall_s"],
                     "peak_rss_mib": r["peak_rss_mib"]}
            if name.startswith("train"):
                s = json.loads(r["stdout"])
                entry.update({k: s.get(k) for k in ("final_val_acc", "train_seconds",
                                                    "samples_per_second", "iterations")})
            results[name] = entry
            if progress:
                progress()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from fcnet.bench import machine_info

    return {"source": path, "results": results, "machine": machine_info()}


def format_table(r: dict) -> str:
    lines = [f"{'command':<24} {'peak RSS MiB':>12} {'wall s':>8}  exact command"]
    for name, e in r["results"].items():
        lines.append(f"{name:<24} {e['peak_rss_mib']:>12.0f} {e['wall_s']:>8.1f}  {e['command']}")
    return "\n".join(lines)


WHICH = ("train_cifar10_float64", "train_cifar10_float32", "study_digits")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Peak resident memory and wall time of `fcnet train` (the baseline on "
        "CIFAR-10, float64 and float32) and `fcnet study --dataset digits`, each in a fresh "
        "subprocess.")
    p.add_argument("--path", default=DEFAULT_CIFAR, metavar="P",
                   help=f"local CIFAR-10 copy (default {DEFAULT_CIFAR}, relative to the current "
                   "folder); its decoded cache is filled first, untimed")
    p.add_argument("--only", nargs="+", choices=WHICH, default=list(WHICH), metavar="NAME",
                   help=f"measure only these ({', '.join(WHICH)}; default all)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the results as JSON to PATH ('-' = stdout, instead of the "
                   "table)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    which = list(dict.fromkeys(a.only))
    needs_data = any(k.startswith("train_cifar10") for k in which)
    path = check_source(a.path) if needs_data else None
    bar = progress_bar(len(which), "commands", "cmd", a.quiet)
    result = run(path, which, bar.update if bar else None)
    if bar:
        bar.close()
    emit(result, a.json, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
