"""`fcnet grade`: check students' two_layernet.py against study.md, safely."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "grade",
        help="grade students' two_layernet.py submissions against study.md (sandboxed)",
        description="Run the exercise's checks (Q1 toy probabilities and loss, Q1c vectorisation, "
        "Q2 gradients, Q3 toy training and training on digits or CIFAR-10) on each submission, "
        "each in its own sandboxed process, and write grades.json, grades.csv and HTML pages.",
        epilog="examples:\n  fcnet grade alice/two_layernet.py\n"
        "  fcnet grade submissions/ --out grades --jobs 2 --template course/two_layernet.py\n"
        "  fcnet grade hw.zip --dataset cifar10 --path cifar-10-python.tar.gz --timeout 900",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="a .py file, a folder with two_layernet.py, a .zip of one, or a folder of them")
    p.add_argument("--out", default="grades", metavar="DIR", help="output folder (default grades/)")
    p.add_argument("--rubric", metavar="FILE", help="TOML rubric replacing the default one")
    p.add_argument("--dataset", default="digits", choices=["digits", "cifar10"],
                   help="the Q3 training check's data (default digits, offline)")
    p.add_argument("--path", help="CIFAR-10 source for --dataset cifar10 (folder or .tar.gz)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="wall-clock seconds per submission (default 300; CPU limit the same)")
    p.add_argument("--memory", type=int, default=2048, metavar="MB",
                   help="address-space limit per submission in MB (default 2048, plus the data)")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="submissions graded at once (default: CPU count, at most 4)")
    p.add_argument("--sandbox", default="auto", choices=["auto", "bwrap", "none"],
                   help="auto: bubblewrap when it works, else limits only with a warning (default)")
    p.add_argument("--template", metavar="FILE",
                   help="the course's template every student received: its code never counts as shared "
                   "when similar submissions are listed")
    p.add_argument("--similar", type=float, default=0.8, metavar="FRACTION",
                   help="list two submissions as similar when each has at least this share of its code "
                   "in the other (default 0.8)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=run)


def run(args) -> int:
    from fcnet.errors import FcnetError
    from fcnet.grade.grade import grade_all
    from fcnet.grade.output import table, write_outputs
    from fcnet.grade.rubric import load_rubric
    from fcnet.grade.sandbox import Limits
    from fcnet.grade.similar import similar_pairs
    from fcnet.grade.submissions import collect

    if args.timeout <= 0 or args.memory < 256 or args.jobs < 1:
        raise FcnetError("--timeout must be > 0, --memory at least 256 and --jobs at least 1")
    if args.path and args.dataset != "cifar10":
        raise FcnetError("--path is only for --dataset cifar10 (digits are built in)")
    if not 0 < args.similar <= 1:
        raise FcnetError(f"--similar must be in (0, 1], got {args.similar:g}")
    template = None
    if args.template is not None:
        try:
            template = Path(args.template).read_text(errors="replace")
        except OSError as err:
            raise FcnetError(f"--template {args.template}: {err.strerror or err}") from None
    rubric = load_rubric(args.rubric)
    subs = collect(args.submissions, exclude=[Path(args.out)])
    t0 = time.perf_counter()

    def progress(n: int, g) -> None:
        print(f"[{n}/{len(subs)}] {g.submission}: {g.score:.1f} ({g.seconds:.1f} s)",
              file=sys.stderr, flush=True)

    grades, ran = grade_all(subs, rubric, args.dataset, args.path,
                            Limits(timeout=args.timeout, memory_mb=args.memory), args.jobs, args.sandbox,
                            None if args.quiet else progress)
    meta = {"dataset": args.dataset, "rubric": rubric.source, **ran}
    if template is not None:
        meta["template"] = args.template
    pairs = similar_pairs({g.submission: g.source for g in grades}, template, args.similar)
    paths = write_outputs(grades, args.out, meta, pairs)
    print(table(grades))
    print(f"\n{len(grades)} submission(s) in {time.perf_counter() - t0:.1f} s; wrote "
          + ", ".join(str(p) for p in paths.values()))
    return 0
