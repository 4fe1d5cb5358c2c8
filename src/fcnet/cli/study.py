"""`fcnet study`: reproduce study.md with one command."""

from __future__ import annotations

import json
import os


def register(sub) -> None:
    p = sub.add_parser(
        "study",
        help="run the whole study of study.md and write report.md + report.html",
        description="Runs the toy checks, the baseline, Tables 1-7, the batch-noise and PCA "
        "figures, the weight pictures, the chosen model's test accuracy and the Q4 depth "
        "table, and writes <out>/report.md and a self-contained <out>/report.html. Finished "
        "runs are reused on a rerun. The offline default is --dataset digits (~1 minute); "
        "--dataset cifar10 --path <local copy> runs the full study.",
    )
    p.add_argument("--dataset", default="digits", help="dataset (default digits, offline)")
    p.add_argument("--path", help="local copy of the dataset (file or directory)")
    p.add_argument("--out", help="study directory (default study/<dataset>)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="training precision (default float32: fast, same accuracies)")
    p.add_argument("--no-depth", action="store_true", help="skip the Q4 depth study (torch)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    p.set_defaults(handler=run)


def run(args) -> int:
    from fcnet.experiments.study import check_dataset, run_study

    check_dataset(args.dataset)
    res = run_study(args.dataset, args.path, args.out, quiet=args.quiet or args.json,
                    depth=not args.no_depth, dtype=args.dtype)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(f"report: {os.path.abspath(res['report_html'])}")
    return 0
