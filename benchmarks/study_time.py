"""Wall time of the whole study: ``fcnet study`` into a fresh, empty output folder
(so no finished run is reused), in a subprocess, with its peak memory.

- ``cifar10``: ``fcnet study --dataset cifar10 --path P --out <tmp>``: the toy checks,
  the baseline, Tables 1-7, the figures, the chosen model's test accuracy and the Q4
  depth table (about 5 minutes on 2 cores). The decoded-data cache is filled first,
  untimed (``fcnet data info``), so the figure is for a warm cache, unless ``--cold``
  points ``FCNET_DATA`` at a new empty folder for the study.
- ``digits``: ``fcnet study --out <tmp>`` (the offline default, about a minute).

    .venv/bin/python benchmarks/study_time.py --datasets digits
    .venv/bin/python benchmarks/study_time.py --datasets cifar10 digits \\
        --json results/study_time_cpu.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _proc import DEFAULT_CIFAR, check_source, emit, fcnet_cmd, last_line, run_measured

DATASETS = ("cifar10", "digits")


def run(datasets: list[str], path: str | None, cold: bool, no_depth: bool,
        keep: str | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="fcnet-study-bench-"))
    results = {}
    try:
        for ds in datasets:
            env = dict(os.environ)
            args = ["study", "--dataset", ds, "--quiet"]
            if ds == "cifar10":
                args += ["--path", path]
                if cold:
                    env["FCNET_DATA"] = str(tmp / "data-cache")
                else:
                    prime = run_measured(fcnet_cmd("data", "info", "cifar10", "--path", path,
                                                   "--quiet"))
                    if prime["rc"] != 0:
                        sys.exit(f"error: fcnet data info failed: {last_line(prime['stderr'])}")
            if no_depth:
                args.append("--no-depth")
            out = tmp / f"study-{ds}"
            print(f"running the {ds} study ...", file=sys.stderr, flush=True)
            r = run_measured(fcnet_cmd(*args, "--out", str(out)), env=env, timeout_s=3 * 3600)
            if r["rc"] != 0:
                sys.exit(f"error: study on {ds} failed (rc {r['rc']}): {last_line(r['stderr'])}")
            shown = " ".join(["fcnet", *args, "--out", "$TMP/study-" + ds])
            results[ds] = {"command": shown, "wall_s": r["wall_s"],
                           "peak_rss_mib": r["peak_rss_mib"],
                           "data_cache": "cold" if ds == "cifar10" and cold else "warm"
                           if ds == "cifar10" else "n/a (built in)"}
            if keep:
                shutil.copytree(out, Path(keep) / f"study-{ds}", dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from fcnet.bench import machine_info

    return {"source": path, "results": results, "machine": machine_info()}


def _minsec(s: float) -> str:
    return f"{int(s // 60)} min {s % 60:.0f} s" if s >= 60 else f"{s:.0f} s"


def format_table(r: dict) -> str:
    lines = [f"{'study':<8} {'wall':>12} {'peak RSS MiB':>13}  {'data cache':<14}  command"]
    for ds, e in r["results"].items():
        lines.append(f"{ds:<8} {_minsec(e['wall_s']):>12} {e['peak_rss_mib']:>13.0f}  "
                     f"{e['data_cache']:<14}  {e['command']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Wall time and peak memory of `fcnet study`, run in a fresh empty "
        "output folder (nothing reused) in a subprocess.")
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=["cifar10"],
                   help="which studies to run, in order (default cifar10; digits is the "
                   "offline one)")
    p.add_argument("--path", default=DEFAULT_CIFAR, metavar="P",
                   help=f"local CIFAR-10 copy for the cifar10 study (default {DEFAULT_CIFAR}, "
                   "relative to the current folder)")
    p.add_argument("--cold", action="store_true",
                   help="cifar10: start from an empty decoded-data cache (a new FCNET_DATA), "
                   "so the time includes decoding the archive; default: cache filled first")
    p.add_argument("--no-depth", action="store_true",
                   help="pass --no-depth to the study (skip the Q4 torch depth study)")
    p.add_argument("--keep", metavar="DIR",
                   help="copy each finished study folder (report.html, runs) into DIR")
    p.add_argument("--json", metavar="PATH",
                   help="also write the results as JSON to PATH ('-' = stdout, instead of the "
                   "table)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    datasets = list(dict.fromkeys(a.datasets))
    path = check_source(a.path) if "cifar10" in datasets else None
    result = run(datasets, path, a.cold, a.no_depth, a.keep)
    emit(result, a.json, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
