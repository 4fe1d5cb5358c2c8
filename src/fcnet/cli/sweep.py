"""`fcnet sweep`: many runs over a grid or a random/TPE search, crash-safe, shareable."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fcnet.cli.options import add_config_flags, check_flags, config_from_args
from fcnet.config import RunConfig
from fcnet.errors import FcnetError

EPILOG = """\
grid values (--grid FIELD=VALUES, one FIELD per item, their product is run):
  lr=1e-3,1e-4            a list            hidden=50,100x50   [50] and [100, 50]
  iters=1000:10000:1000   a range START:STOP:STEP, inclusive

search ranges (--param FIELD=SPEC, with --search random|tpe --trials N):
  lr=1e-5:1e-2:log   log-uniform     reg=0:1   uniform     reg=0:1:0.25   stepped
  batch_size=100:500 integers (int field)      hidden=50,100  a choice

sweep file (--config sweep.toml): [base] run config keys; [grid] field = [values];
  optional [[points]] tables (each combined with the grid); or [search] with
  method, trials, seed and [search.params] field = "LOW:HIGH[:log]" or [choices].

examples:
  fcnet sweep --dataset digits --grid hidden=50,100 reg=0,0.25 --dir sweeps/h-reg
  fcnet sweep --dataset digits --search tpe --trials 30 --param lr=1e-4:1e-1:log \\
      --param reg=0:1 --dir sweeps/tpe --workers 2
  fcnet sweep --storage postgresql://user@db/fcnet --study big --join --dir sweeps/big
  fcnet sweep dashboard sweeps/h-reg          optuna-dashboard on 127.0.0.1:8080
"""


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid or random/TPE search of configs, in parallel, crash-safe",
                       description="Sweep config fields over a grid, or search ranges with random or Optuna "
                       "TPE sampling. Trials are stored with Optuna (SQLite in --dir, or --storage), so a "
                       "killed sweep continues when run again, identical configs run once, and runs that "
                       "differ only in --iters share one run. Prints the trials ranked by validation "
                       "accuracy and writes results.md, results.csv and results.json into --dir.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="*", metavar="dashboard [SWEEP_DIR]", help="`dashboard SWEEP_DIR` (or "
                   "--storage URL): browse the sweep's trials in optuna-dashboard on 127.0.0.1 (--port)")
    add_config_flags(p)
    g = p.add_argument_group("what to sweep")
    g.add_argument("--grid", nargs="+", action="extend", default=[], metavar="FIELD=VALUES",
                   help="grid values of a config field (below); several fields: their product")
    g.add_argument("--search", choices=["random", "tpe"],
                   help="sample the --param ranges at random or with Optuna's TPE")
    g.add_argument("--param", nargs="+", action="extend", default=[], metavar="FIELD=SPEC",
                   help="a search range or choice list (below)")
    g.add_argument("--trials", type=int, metavar="N", help="search trials in total (default 20)")
    g.add_argument("--search-seed", type=int, metavar="N", help="the sampler's seed (default 0)")
    g.add_argument("--seeds", type=int, metavar="N", help="train each trial with N seeds (its seed and the "
                   "next N-1): its value is their mean; user attributes seed_values and seed_ci hold each "
                   "seed's value and the 95%% interval")
    g = p.add_argument_group("where and how")
    g.add_argument("--dir", metavar="SWEEP_DIR",
                   help="the sweep's directory: storage (sweep.db), runs/<key>/, results.*")
    g.add_argument("--runs-dir", metavar="DIR", help="where run directories go (default SWEEP_DIR/runs); "
                   "sweeps sharing one train identical configs once")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="trials trained at once, each in a "
                   "process with cores/N BLAS threads (default 1: in this process)")
    g.add_argument("--population", type=int, default=8, metavar="K", help="train up to K trials that differ "
                   "only in lr, decay, reg, dropout, init or seed as one population (default 8; 1 = off)")
    g.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL (e.g. postgresql://user:pass@host/db) that processes "
                   "on several machines share (default: SQLite in --dir)")
    g.add_argument("--study", metavar="NAME", help="study name in the storage (default: 'sweep' in SQLite, "
                   "else the name of --dir)")
    g.add_argument("--join", action="store_true", help="work on an existing shared sweep, its grid or search "
                   "from the storage (waiting up to a minute for it); flags given must match")
    g = p.add_argument_group("output")
    g.add_argument("--test", action="store_true", help="also the best trial's test accuracy (once, cached in "
                   "SWEEP_DIR/test.json; never used to choose)")
    g.add_argument("--json", action="store_true",
                   help="print a JSON list, one object per trial (config, val_acc, status, ...)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--port", type=int, default=8080, help="dashboard: port on 127.0.0.1")
    g.add_argument("--no-figures", action="store_true",
                   help="skip each run's PNG figures (faster for many short runs)")
    p.set_defaults(handler=run)


def build_spec(args):
    """The SweepSpec the flags (and a sweep file) describe; None to reopen a stored sweep."""
    from fcnet.experiments.space import parse_grid, parse_params
    from fcnet.experiments.sweep import SweepSpec, load_sweep_file

    base_values, tables = load_sweep_file(args.config) if args.config else ({}, {})
    if tables:
        args.config = None  # a sweep file, consumed here: [base] goes in below
    grid = {**tables.get("grid", {}), **parse_grid(args.grid)}
    points = tables.get("points", [])
    params = {**tables.get("params", {}), **parse_params(args.param)}
    method = args.search or tables.get("search")
    if not (grid or points or method or params or tables or args.config):  # e.g. --dir only
        if args.preset or any(getattr(args, name) is not None for name in RunConfig.model_fields):
            raise FcnetError("nothing to sweep: give --grid, --search with --param, or a sweep --config file")
        return None  # reopen the sweep stored in --dir / --study
    if params and not method:
        raise FcnetError("--param needs --search random or --search tpe")
    base = config_from_args(args, extra=base_values if tables else {})  # else config_from_args reads it
    return SweepSpec(base, grid=grid, points=points, search=method, params=params,
                     trials=args.trials or tables.get("trials") or 20,
                     seed=args.search_seed if args.search_seed is not None else
                     (tables.get("seed") or 0), seeds=1 if args.seeds is None else args.seeds)


def dashboard(args) -> int:
    """optuna-dashboard on loopback for one sweep's storage (every study in it)."""
    from fcnet.experiments.storage import default_url, open_storage

    rest = args.action[1:]
    if len(rest) > 1 or (rest and args.dir) or not (rest or args.dir or args.storage):
        raise FcnetError("usage: fcnet sweep dashboard SWEEP_DIR (or --storage URL)")
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise FcnetError("optuna-dashboard is not installed: pip install 'fcnet[dashboard]'") from None
    d = Path(rest[0] if rest else args.dir or ".")
    if args.storage is None and not (d / "sweep.db").exists():
        raise FcnetError(f"{d}: not a sweep directory (no sweep.db)")
    storage = open_storage(default_url(d) if args.storage is None else args.storage)
    print(f"optuna-dashboard: http://127.0.0.1:{args.port}/dashboard/ (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    try:
        run_server(storage, host="127.0.0.1", port=args.port)
    except OSError as err:
        raise FcnetError(f"--port {args.port}: {err.strerror or err}") from None
    except KeyboardInterrupt:
        pass
    return 0


def run(args) -> int:
    from fcnet.experiments.sweep import best_test_accuracy, run_sweep

    if args.action:
        if args.action[0] != "dashboard":
            raise FcnetError(f"unknown sweep action {args.action[0]!r} (known: dashboard)")
        return dashboard(args)
    if not args.dir:
        raise FcnetError("--dir SWEEP_DIR is required")
    check_flags(args, "workers", "population", "trials")
    result = run_sweep(build_spec(args), args.dir, workers=args.workers, population=args.population,
                       storage=args.storage, study=args.study, join=args.join, runs_dir=args.runs_dir,
                       figures=not args.no_figures, quiet=args.quiet, trials=args.trials)
    test = best_test_accuracy(result, quiet=args.quiet) if args.test else None
    if args.json:
        print(json.dumps([{**r, "test_acc": test["test_acc"]} if test and r["key"] == test["key"] else r
                          for r in result.to_json()], indent=2))
    else:
        print(result.table("text"), end="")
        print(f"\n{len(result.rows)} trials; tables in {result.sweep_dir}/results.md, "
              f"results.csv, results.json", file=sys.stderr)
        if test is not None:
            print(f"best trial {test['key']} (val acc {test['val_acc']:.4f}): test acc "
                  f"{test['test_acc']:.4f} on {test['n']} test images "
                  "(computed once, not used to choose)")
    return 0 if result.ok else 1
