"""The best plain MLP on CIFAR-10: train a preset, print test accuracy and wall time.

    python benchmarks/best_mlp.py                      # preset best-cpu, the CPU benchmark
    python benchmarks/best_mlp.py --preset best-gpu    # (or benchmarks/best_gpu.py)
    python benchmarks/best_mlp.py --set epochs=1 --train-size 2000   # a smoke run

The data are the local CIFAR-10 copy (--data, default $FCNET_CIFAR10 or
../shared/datasets/cifar10-jpeg/cifar10-jpeg.tar.gz): 49,000 training images,
1,000 validation, and the full 10,000-image test set.  "train" time is the
training loop alone (per-epoch validation included); "total" adds loading,
preprocessing and the test pass.  --json writes the numbers for a benchmark record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"


def parse_set(items: list[str]) -> dict:
    """['epochs=200', 'hidden=[1536, 768]'] -> {'epochs': 200, 'hidden': [1536, 768]} (TOML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare string
    return out


def main(argv: list[str] | None = None, default_preset: str = "best-cpu") -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=default_preset, help=f"preset name (default {default_preset})")
    p.add_argument("--data", default=os.environ.get("FCNET_CIFAR10", str(DEFAULT_DATA)),
                   help="CIFAR-10 archive or folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the preset's device")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (TOML value), e.g. --set epochs=2; repeatable")
    p.add_argument("--train-size", type=int, help="train on this many images only (smoke runs)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--log-every", type=int, default=0, metavar="N",
                   help="print a line every N epochs (0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from fcnet.config import make_config
    from fcnet.data import Preprocessor, load_splits
    from fcnet.presets import load_preset
    from fcnet.torch_backend import require_torch
    from fcnet.torch_backend.train import TorchTrainer

    torch = require_torch()
    t_start = time.perf_counter()
    values = {**load_preset(args.preset), **parse_set(args.set)}
    if args.device:
        values["device"] = args.device
    config = make_config(values)
    data = load_splits("cifar10", args.data, val_size=config.val_size, test_size=config.test_size,
                       seed=config.split_seed, progress=not args.quiet,
                       train_size=args.train_size)
    prep = Preprocessor(config.preprocess, dtype=config.dtype, zca_eps=config.zca_eps).fit(
        data.train.x)
    X_train, X_val, X_test = (prep.transform(s.x) for s in (data.train, data.val, data.test))
    trainer = TorchTrainer(config, X_train.shape[1], len(data.classes), data.image_shape,
                           data.classes)
    print(f"{args.preset}: {trainer!r}, {len(X_train)} training images, "
          f"{config.epochs} epochs, torch {torch.__version__}, {torch.get_num_threads()} threads",
          flush=True)
    epoch_seconds: list[float] = []

    def log(record: dict) -> None:
        epoch_seconds.append(record["seconds"])
        if args.log_every and record["epoch"] % args.log_every == 0:
            print(f"epoch {record['epoch']}: {record['seconds']:.1f} s, loss {record['loss']:.4f}, "
                  f"train {record['train_acc']:.4f}, val {record['val_acc']:.4f}", flush=True)

    hist = trainer.fit(X_train, data.train.y, X_val, data.val.y, callback=log,
                       progress=not args.quiet)
    t_test = time.perf_counter()
    test_acc = trainer.score(X_test, data.test.y)
    tta, trainer.tta = trainer.tta, False
    test_acc_plain = trainer.score(X_test, data.test.y)  # one forward pass per image
    trainer.tta = tta
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        device_name = torch.cuda.get_device_name()
    else:
        device_name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    result = {
        "preset": args.preset,
        "overrides": parse_set(args.set),
        "test_acc": test_acc,
        "test_acc_without_tta": test_acc_plain,
        "tta": tta,
        "test_images": int(len(X_test)),
        "final_val_acc": hist["val_acc_history"][-1] if hist["val_acc_history"] else None,
        "final_train_acc": hist["final_train_acc"],
        "epochs": hist["epochs"],
        "train_seconds": hist["train_seconds"],
        "epoch_seconds": epoch_seconds,
        "test_seconds": time.perf_counter() - t_test,
        "total_seconds": time.perf_counter() - t_start,
        "device": trainer.device.type,
        "device_name": device_name,
        "amp": trainer.amp,
        "torch": torch.__version__,
        "config": config.model_dump(),
    }
    print(f"test accuracy {100 * test_acc:.2f}% on {len(X_test)} images "
          f"({100 * test_acc_plain:.2f}% without flip averaging) | "
          f"train {result['train_seconds']:.1f} s ({result['train_seconds'] / 60:.2f} min) | "
          f"total {result['total_seconds']:.1f} s | val {100 * (result['final_val_acc'] or 0):.2f}% "
          f"| train acc {100 * hist['final_train_acc']:.2f}% | {device_name}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    from fcnet.errors import FcnetError

    try:
        main()
    except FcnetError as err:
        print(f"best_mlp: error: {err}", file=sys.stderr)
        sys.exit(2)
