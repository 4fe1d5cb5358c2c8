"""`fcnet check`: the toy checks of study.md Q1-Q3."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "check",
        help="run the exercise's toy checks (Q1-Q3) and print the report's Figure 1 block",
        description="Forward pass vs the expected probabilities, loss vs 1.30378789133, "
        "a numerical gradient check of W1 b1 W2 b2 and the toy SGD run. "
        "Exit 0 only when every threshold holds.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(handler=run)


def run(args) -> int:
    from fcnet.check import format_block, run_checks

    r = run_checks()
    keys = ("scores_diff", "loss_diff", "rel_error", "toy_final_loss", "passed", "ok")
    print(json.dumps({k: r[k] for k in keys}, indent=2) if args.json else format_block(r))
    return 0 if r["ok"] else 1
