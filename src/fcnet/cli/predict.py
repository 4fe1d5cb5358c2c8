"""`fcnet predict`: top classes of image files."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("predict", help="top classes with probabilities for image files",
                       description="Classify image files with a trained run.  Images must "
                       "have the training size unless --resize is given.")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", help="image files (png, jpg, ...)")
    p.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    p.add_argument("--resize", action="store_true", help="resize images to the training size")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def run(args) -> int:
    from fcnet.training import predict_files

    rows = predict_files(args.run_dir, args.images, top=args.top, resize=args.resize)
    lines = (f"{r['file']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
             for r in rows)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(lines))
    return 0
