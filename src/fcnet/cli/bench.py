"""`fcnet bench`: one SGD step of 3072-100-10 at batch 200, fcnet vs its floor and peers."""

from __future__ import annotations

import json

from fcnet.cli.study import add_study_flags


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time one SGD training step: fcnet vs the BLAS floor, PyTorch and scikit-learn",
        description="Times, interleaved in one process, one SGD step of 3072-100-10 at batch 200: fcnet "
        "in float32 and float64, the BLAS floor, PyTorch, scikit-learn, and 8 configurations one by "
        "one vs as one population; each figure the median of its timed steps, each target (a system "
        "against its floor, timed back to back) with a 95% bootstrap interval (docs/bench.md).",
    )
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the table; peers not installed are null")
    p.add_argument("--steps", type=int, default=60, metavar="N",
                   help="timed steps per system, at least 30 (default 60)")
    p.add_argument("--rows", type=int, default=49_000, metavar="N",
                   help="rows of synthetic data to gather batches from (default 49000: 1.8 GB)")
    p.add_argument("--rounds", type=int, default=6, metavar="R",
                   help="interleaved rounds the timed steps are spread over (default 6)")
    p.add_argument("--no-peers", action="store_true",
                   help="skip PyTorch and scikit-learn (their figures are null)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "a study's floor", "--study [FILE] computes instead a whole study's floor on this machine: "
        "iterations x the floor step of every training its plan executes, summed (docs/bench.md)")
    g.add_argument("--study", nargs="?", const="exercise", metavar="FILE",
                   help="a study file or a bundled study's name (default: exercise)")
    add_study_flags(g)
    g.add_argument("--out", metavar="DIR",
                   help="the study's directory: runs finished there are reused, not counted")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tqdm import tqdm

    from fcnet.bench import BenchSettings, format_table, machine_info, run_bench

    if args.study is not None:
        from fcnet.experiments.floor import study_floor
        from fcnet.experiments.study import load_study

        dataset = args.dataset or ("digits" if args.study == "exercise" else None)
        study = load_study(args.study, dataset=dataset, data_path=args.path, dtype=args.dtype,
                           backend=args.backend)
        with tqdm(desc="floor shapes", disable=args.quiet or args.json, leave=False) as bar:
            floor = study_floor(study, out=args.out, depth=not args.no_depth, progress=lambda: bar.update(1))
        if args.json:
            print(json.dumps({"study": study.source, "dataset": study.base.dataset,
                              "floor": floor.to_json(), "machine": machine_info()}, indent=2))
        else:
            print(f"{study.title} on {study.base.dataset}: the floor on this machine\n{floor.table()}")
        return 0
    s = BenchSettings(rows=args.rows, steps=args.steps, rounds=args.rounds,
                      peers=() if args.no_peers else ("torch", "sklearn"))
    s.validate()  # before the bar: the error is its one line
    with tqdm(total=s.rounds, desc="bench rounds", disable=args.quiet, leave=False) as bar:
        r = run_bench(s, progress=lambda: bar.update(1))
    print(json.dumps(r, indent=2) if args.json else format_table(r))
    return 0
