"""`fcnet train`: one training run into runs/<name>/."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fcnet.cli.options import add_config_flags, config_from_args


def register(sub) -> None:
    p = sub.add_parser("train", help="train one network and write its run directory",
                       description="Train one fully-connected network. Defaults are the exercise's baseline "
                       "(hidden 50, std 1e-4, 1000 iterations, batch 200, lr 1e-4, decay 0.95, reg 0.25, "
                       "mean-image subtraction) on CIFAR-10. Writes runs/<name>/: config.toml, summary.json, "
                       "loss.csv, epochs.csv, params.npz, checkpoint, figures.")
    add_config_flags(p)
    p.add_argument("--name", help="run name (default: a timestamp)")
    p.add_argument("--runs-dir", default="runs", help="where run directories go (default runs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted or damaged run from its "
                   "last intact checkpoint (or from the start, saying so)")
    p.add_argument("--checkpoint-every", type=float, default=5.0, metavar="SECONDS", help="write a "
                   "checkpoint at the first epoch end after this many seconds (default 5; 0 = every epoch)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print summary.json on stdout at the end")
    p.set_defaults(handler=run)


def run(args) -> int:
    from fcnet.training import read_run_config, train_run

    run_dir = Path(args.resume or Path(args.runs_dir) / (args.name or time.strftime("%Y%m%d-%H%M%S")))
    config = read_run_config(run_dir) if args.resume else config_from_args(args)
    summary = train_run(config, run_dir, quiet=args.quiet, checkpoint_seconds=args.checkpoint_every)
    if args.json:
        print(json.dumps(summary, indent=2))
    if summary["status"] == "diverged":
        print(f"fcnet: run diverged at iteration {summary['diverged_at']} (non-finite loss); "
              f"kept the last finite parameters in {run_dir}", file=sys.stderr)
        return 1
    if not args.json:
        speed = summary.get("samples_per_second")
        print(f"{run_dir}: val acc {summary['final_val_acc']:.4f} (best "
              f"{summary['best_val_acc']:.4f}), {summary['train_seconds']:.1f} s"
              + (f", {speed:.0f} samples/s" if speed else ""))
    return 0
