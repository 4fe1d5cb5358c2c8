"""`fcnet bench`: one SGD step of 3072-100-10 at batch 200, fcnet vs its floor and peers."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time one SGD training step: fcnet vs the BLAS floor, PyTorch and scikit-learn",
        description="Measures, in one process and interleaved (so machine drift cancels), "
        "one SGD step (forward, backward, update) of the net 3072-100-10 at batch 200 on "
        "CIFAR-sized inputs: fcnet in float32 and float64, the BLAS floor (gather plus the "
        "matrix products), PyTorch on the CPU and scikit-learn's MLPClassifier when "
        "installed; and 8 configurations trained one by one vs as one population. Each "
        "figure is the median of the timed steps, after warm-up.",
    )
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"step_ms", "population", "machine", ...} '
                   "instead of the table; peers not installed are null")
    p.add_argument("--steps", type=int, default=60, metavar="N",
                   help="timed steps per system, at least 30 (default 60)")
    p.add_argument("--rows", type=int, default=49_000, metavar="N",
                   help="rows of synthetic training data to gather batches from "
                   "(default 49000, CIFAR-10's training split; about 1.8 GB in float32 + "
                   "float64); scikit-learn's epoch covers all of them")
    p.add_argument("--rounds", type=int, default=6, metavar="R",
                   help="interleaved rounds the timed steps are spread over (default 6)")
    p.add_argument("--no-peers", action="store_true",
                   help="skip PyTorch and scikit-learn (their figures are null)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "a study's floor", "--study [FILE] computes instead the floor of a whole study on this "
        "machine: for every training run its plan executes (after sharing, and reuse with "
        "--out), iterations x the floor step (gather + matrix products, as above) at the run's "
        "shapes and precision, measured now, summed (docs/bench.md)")
    g.add_argument("--study", nargs="?", const="exercise", metavar="FILE",
                   help="a study file or a bundled study's name (default: exercise)")
    g.add_argument("--dataset", help="as fcnet study (default: the file's, else digits)")
    g.add_argument("--path", help="local copy of the dataset, as fcnet study")
    g.add_argument("--backend", choices=["numpy", "torch"], help="as fcnet study")
    g.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"],
                   help="as fcnet study (default float32)")
    g.add_argument("--out", metavar="DIR",
                   help="the study's directory: runs finished there are reused, not counted")
    g.add_argument("--no-depth", action="store_true", help="leave out the Q4 depth study")
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.study is not None:
        return run_study_floor(args)
    from tqdm import tqdm

    from fcnet.bench import BenchSettings, format_table, run_bench

    s = BenchSettings(rows=args.rows, steps=args.steps, rounds=args.rounds,
                      peers=() if args.no_peers else ("torch", "sklearn"))
    s.validate()
    with tqdm(total=s.rounds, desc="bench rounds", disable=args.quiet, leave=False) as bar:
        r = run_bench(s, progress=lambda: bar.update(1))
    print(json.dumps(r, indent=2) if args.json else format_table(r))
    return 0


def run_study_floor(args) -> int:
    from tqdm import tqdm

    from fcnet.bench import machine_info
    from fcnet.errors import FcnetError
    from fcnet.experiments.floor import study_floor
    from fcnet.experiments.study import load_study

    if args.dataset:
        from fcnet.data import DATASETS

        if args.dataset not in DATASETS:
            raise FcnetError(f"unknown dataset {args.dataset!r}; choose one of "
                             f"{', '.join(DATASETS)}")
    bundled_default = args.study == "exercise"
    study = load_study(args.study, dataset=args.dataset or ("digits" if bundled_default else None),
                       data_path=args.path, dtype=args.dtype, backend=args.backend)
    with tqdm(desc="floor shapes", disable=args.quiet or args.json, leave=False) as bar:
        floor = study_floor(study, out=args.out, depth=not args.no_depth,
                            progress=lambda: bar.update(1))
    if args.json:
        print(json.dumps({"study": study.source, "dataset": study.base.dataset,
                          "floor": floor.to_json(), "machine": machine_info()}, indent=2))
    else:
        print(f"{study.title} on {study.base.dataset}: the floor on this machine")
        print(floor.table())
    return 0
