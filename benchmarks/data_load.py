"""CIFAR-10 loading, cold and warm: ``fcnet.data.load_splits("cifar10", P,
val_size=1000)`` in a fresh Python process each time, with its peak memory.

- cold: ``FCNET_DATA`` points at a new, empty temporary folder, so the archive is read
  and its 60,000 JPEGs decoded (in forked worker processes), split, and the decoded
  arrays written to that cache;
- warm: the next process, with the same ``FCNET_DATA``: the archive's sha256, then the
  decoded ``.npz`` read back.

Each round is one cold load then ``--warm`` warm loads in the same fresh cache; the
folder is deleted after the round. Reported per load: ``load_s`` (the ``load_splits``
call, timed in the child), ``import_s`` (importing ``fcnet.data``), ``wall_s`` (the
whole process, Python start-up included) and ``peak_rss_mib`` (the largest peak of
any one process of the child's tree, from ``wait4``: the figure ``/usr/bin/time -v``
shows as "Maximum resident set size").

    .venv/bin/python benchmarks/data_load.py                      # 3 rounds, about 15 s
    .venv/bin/python benchmarks/data_load.py --json results/data_load_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

from _proc import DEFAULT_CIFAR, check_source, emit, last_line, progress_bar, run_measured

CHILD = """\
import json, sys, time
t0 = time.perf_counter()
from fcnet.data import load_splits
t1 = time.perf_counter()
d = load_splits(sys.argv[1], sys.argv[2], val_size=1000, progress=False)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "cache": d.meta.get("cache"),
                  "train": len(d.train.y), "val": len(d.val.y), "test": len(d.test.y)}))
"""


def load_once(dataset: str, path: str, cache: str) -> dict:
    env = dict(os.environ, FCNET_DATA=cache)
    r = run_measured([sys.executable, "-c", CHILD, dataset, path], env=env, timeout_s=900)
    if r["rc"] != 0:
        sys.exit(f"error: load failed (rc {r['rc']}): {last_line(r['stderr'])}")
    out = json.loads(last_line(r["stdout"]))
    return {**out, "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"]}


def run(dataset: str, path: str, rounds: int, warm: int, progress=None) -> dict:
    loads: dict[str, list[dict]] = {"cold": [], "warm": []}
    for _ in range(rounds):
        cache = tempfile.mkdtemp(prefix="fcnet-data-bench-")
        try:
            for kind in ["cold"] + ["warm"] * warm:
                r = load_once(dataset, path, cache)
                expected = "miss" if kind == "cold" else "hit"
                if r["cache"] != expected:
                    sys.exit(f"error: a {kind} load reported cache {r['cache']!r}, "
                             f"expected {expected!r}")
                loads[kind].append(r)
                if progress:
                    progress()
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    keys = ("load_s", "wall_s", "import_s", "peak_rss_mib")
    summary = {kind: {k: {"median": statistics.median(x[k] for x in rs),
                          "min": min(x[k] for x in rs), "max": max(x[k] for x in rs)}
                      for k in keys}
               for kind, rs in loads.items() if rs}
    from fcnet.bench import machine_info

    return {"dataset": dataset, "source": path, "summary": summary, "loads": loads,
            "settings": {"rounds": rounds, "warm_per_round": warm,
                         "FCNET_DATA_WORKERS": os.environ.get("FCNET_DATA_WORKERS")},
            "machine": machine_info()}


def format_table(r: dict) -> str:
    lines = [f"{r['dataset']} from {r['source']} (median, min-max over "
             f"{len(r['loads']['cold'])} cold / {len(r['loads']['warm'])} warm loads)",
             f"{'load':<5} {'load_splits s':>22} {'whole process s':>22} {'peak RSS MiB':>20}"]
    for kind, m in r["summary"].items():
        cells = [f"{m[k]['median']:.2f} ({m[k]['min']:.2f}-{m[k]['max']:.2f})"
                 for k in ("load_s", "wall_s")]
        rss = m["peak_rss_mib"]
        cells.append(f"{rss['median']:.0f} ({rss['min']:.0f}-{rss['max']:.0f})")
        lines.append(f"{kind:<5} {cells[0]:>22} {cells[1]:>22} {cells[2]:>20}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time cold loads (empty cache: read and decode the archive) and warm "
        "loads (decoded cache present) of CIFAR-10 through fcnet.data.load_splits, each in "
        "a fresh subprocess, and report each one's peak resident memory.")
    p.add_argument("--path", default=DEFAULT_CIFAR, metavar="P",
                   help=f"local CIFAR-10 copy (default {DEFAULT_CIFAR}, relative to the "
                   "current folder)")
    p.add_argument("--rounds", type=int, default=3, metavar="R",
                   help="rounds, each in a new temporary FCNET_DATA: one cold load then the "
                   "warm loads (default 3)")
    p.add_argument("--warm", type=int, default=2, metavar="W",
                   help="warm loads per round (default 2)")
    p.add_argument("--json", metavar="PATH",
                   help="also write every load and the summary as JSON to PATH ('-' = stdout, "
                   "instead of the table)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.warm < 0:
        p.error("--rounds must be at least 1 and --warm at least 0")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    path = check_source(a.path)
    bar = progress_bar(a.rounds * (1 + a.warm), "loads", "load", a.quiet)
    result = run("cifar10", path, a.rounds, a.warm, bar.update if bar else None)
    if bar:
        bar.close()
    emit(result, a.json, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
