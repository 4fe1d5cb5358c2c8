"""`fcnet study`: run a study file (by default the bundled exercise study, study.md)."""

from __future__ import annotations

import json
import os


def add_study_flags(g) -> None:
    """What `fcnet study` and `fcnet bench --study` share: the data, engine and precision."""
    from fcnet.data import DATASETS

    g.add_argument("--dataset", choices=list(DATASETS),
                   help="dataset (default: the file's, else digits, offline)")
    g.add_argument("--path", help="local copy of the dataset (file or directory)")
    g.add_argument("--backend", choices=["numpy", "torch"],
                   help="engine of every run (default: the file's, else numpy); torch trains the "
                   "exercise's runs as torch populations")
    g.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"],
                   help="training precision (default float32: fast, same accuracies; "
                   "bfloat16: torch's mixed precision, needs --backend torch)")
    g.add_argument("--no-depth", action="store_true", help="skip the Q4 depth study (torch)")


def register(sub) -> None:
    p = sub.add_parser(
        "study",
        help="run a study file (default: study.md's study) and write report.md + report.html",
        description="Runs a study: a TOML file of tables and blocks (format: docs/study.md). "
        "Without FILE, the bundled 'exercise' study reproduces study.md: the toy checks, the "
        "baseline, Tables 1-7, the batch-noise and PCA figures, the chosen model's test "
        "accuracy and the Q4 depth table. All runs are one sweep, so finished runs are "
        "reused on a rerun and --workers, --storage and --join work as for `fcnet sweep`. "
        "Writes <out>/report.md and a self-contained <out>/report.html. The offline default "
        "is --dataset digits (~30 s on 2 cores); --dataset cifar10 --path <local copy> runs the "
        "full study.",
    )
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="a study file, or the name of a bundled one (default: exercise)")
    p.add_argument("--list", action="store_true", help="list the bundled studies and exit")
    add_study_flags(p)
    p.add_argument("--out", help="study directory (default study/<dataset>)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train every cell with N seeds (overrides the file's `seeds`, its "
                   "tables' too): tables show the mean and a 95%% interval over seeds")
    p.add_argument("--workers", type=int, metavar="N",
                   help="train in N processes, as `fcnet sweep --workers` (default: one per "
                   "core, each with one BLAS thread)")
    p.add_argument("--figures", action="store_true",
                   help="also draw each run's own PNGs (loss, accuracy, weights, confusion); "
                   "the report draws its figures either way")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL shared by several machines (default: SQLite in --out)")
    p.add_argument("--join", action="store_true", help="work on a study another process started on --storage")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    p.set_defaults(handler=run)


def run(args) -> int:
    from fcnet.cli.options import check_flags
    from fcnet.config import read_toml
    from fcnet.experiments.study import bundled, load_study, run_study
    from fcnet.experiments.worker import cores

    if args.list:
        for name, path in sorted(bundled().items()):
            print(f"{name}: {read_toml(path).get('title', '')}  ({path})")
        return 0
    check_flags(args, "workers")
    dataset = args.dataset or (None if args.file else "digits")
    study = load_study(args.file or "exercise", dataset=dataset, data_path=args.path,
                       dtype=args.dtype, backend=args.backend, seeds=args.seeds)
    out = args.out or os.path.join("study", study.base.dataset)
    # many runs: a process per core with one BLAS thread each beats one with every thread (docs/study.md)
    res = run_study(study, out, workers=args.workers or cores(), storage=args.storage, join=args.join,
                    quiet=args.quiet or args.json, depth=not args.no_depth, figures=args.figures)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(f"report: {os.path.abspath(res['report_html'])}")
    return 0
