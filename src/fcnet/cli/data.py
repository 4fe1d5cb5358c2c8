"""`fcnet data`: inspect a dataset as a training run would load it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPLITS = ("train", "val", "test")


def register(sub) -> None:
    from fcnet.data import DATASETS

    source = argparse.ArgumentParser(add_help=False)  # what `info` and `show` both take
    source.add_argument("dataset", metavar="DATASET", help=" | ".join(DATASETS))
    source.add_argument("--path", metavar="P",
                        help="local copy: a folder or a .tar/.tar.gz/.zip archive (cifar10: a "
                        "cifar-10-batches-py folder, its .tar.gz or an image-folder tree; default: "
                        "the cache, $FCNET_DATA or ~/.cache/fcnet, downloading CIFAR-10 if absent)")
    source.add_argument("--val-size", type=int, metavar="N",
                        help="validation rows (default: cifar10 1000, others 10%% of train)")
    source.add_argument("--test-size", type=int, metavar="N",
                        help="test rows (default: the whole test split; digits: 20%% carved out)")
    source.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the stratified split (default 0; CIFAR-10's batches ignore it)")
    source.add_argument("--no-cache", action="store_true",
                        help="decode the source again instead of using (and writing) the cache")
    source.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser("data", help="inspect datasets: sizes, classes, splits, sample images",
                       description="Load a dataset exactly as a training run does and describe "
                       "it or draw samples of it.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    info = dsub.add_parser(
        "info", parents=[source], help="sizes, image shape, classes and per-class counts of each split",
        description="Load DATASET as a training run would (any problem a run would meet is reported), "
        "then print each split's size and per-class counts, the image shape, the split's seed and hash "
        "and the source's checksum.")
    info.add_argument("--json", action="store_true",
                      help='print one JSON object: {"dataset", "classes", "splits": {"train"|"val"|"test": '
                      '{"n", "shape", "class_counts"}}, ...}')
    info.set_defaults(handler=run_info)
    show = dsub.add_parser("show", parents=[source], help="write a grid of sample images, one row per class",
                           description="Draw --per-class random images of each class of one "
                           "split of DATASET, loaded as a training run would, into an image.")
    show.add_argument("--out", required=True, metavar="FILE",
                      help="image to write (.png, .jpg, .pdf or .svg)")
    show.add_argument("--split", choices=SPLITS, default="train",
                      help="the split to draw from (default train)")
    show.add_argument("--per-class", type=int, default=8, metavar="K", help="images per class (default 8)")
    show.set_defaults(handler=run_show)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _load(args):
    from fcnet.data import load_splits

    return load_splits(args.dataset, args.path, val_size=args.val_size, test_size=args.test_size,
                       seed=args.seed, progress=not args.quiet, cache=not args.no_cache)


def format_info(s: dict) -> str:
    shape = "x".join(map(str, s["image_shape"])) + " uint8 images" if s["image_shape"] else \
        f"{s['splits']['train']['shape'][0]} features per row"
    lines = [f"dataset   {s['dataset']} ({s['format']})", f"source    {s['source']}",
             f"checksum  {s['checksum']} ({s['checksum_kind']})", f"rows      {shape}",
             f"classes   {len(s['classes'])}",
             f"split     {s['split']['method']}, seed {s['split']['seed']}, hash {s['split']['hash']}",
             f"loaded    in {s['load_s']:.2f} s (cache {s.get('cache') or 'off'})", ""]
    width = max(12, *(len(c) for c in s["classes"])) + 2
    counts = [[s["splits"][n]["class_counts"][i] for n in SPLITS] for i in range(len(s["classes"]))]
    table = [("class", SPLITS), *zip(s["classes"], counts), ("total", [s["splits"][n]["n"] for n in SPLITS])]
    lines += [f"{label:<{width}}" + "".join(f"{v:>9}" for v in values) for label, values in table]
    return "\n".join(lines)


def run_info(args) -> int:
    data = _load(args)
    splits = {n: {"n": s.n, "shape": list(s.x.shape[1:]), "class_counts": s.class_counts(len(data.classes))}
              for n in SPLITS for s in [getattr(data, n)]}
    keys = ("image_shape", "source", "format", "checksum", "checksum_kind", "split", "cache", "load_s")
    info = {"dataset": data.meta["dataset"], "classes": data.classes, "splits": splits,
            **{k: data.meta.get(k) for k in keys}}
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def run_show(args) -> int:
    from fcnet.cli.options import check_flags
    from fcnet.data.grid import save_grid

    check_flags(args, "per_class")
    data = _load(args)
    out = save_grid(getattr(data, args.split), data.classes, Path(args.out), args.per_class,
                    seed=args.seed, title=f"{data.meta['dataset']} {args.split}")
    if not args.quiet:
        print(f"{out}: {args.per_class} {args.split} images per class", file=sys.stderr)
    return 0
