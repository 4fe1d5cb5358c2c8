"""`fcnet evaluate` and its printing."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a run",
                       description="Evaluate a finished run on a split with the run's own "
                       "saved preprocessing (mean image, PCA) and parameters.")
    p.add_argument("run_dir", help="a run directory, e.g. runs/baseline")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true",
                   help='print {"split", "n", "accuracy", "per_class", "confusion"}')
    p.set_defaults(handler=run)


def run(args) -> int:
    from fcnet.training import evaluate_run

    r = evaluate_run(args.run_dir, args.split)
    width = max(map(len, r["per_class"]), default=0)
    lines = [f"{args.run_dir} on {r['split']} ({r['n']} samples): accuracy {r['accuracy']:.4f}",
             *(f"  {c:<{width}}  {'-' if a is None else f'{a:.3f}'}" for c, a in r["per_class"].items()),
             "confusion (rows true, columns predicted):",
             *("  " + " ".join(f"{v:5d}" for v in row) for row in r["confusion"])]
    print(json.dumps(r, indent=2) if args.json else "\n".join(lines))
    return 0
