"""The torch backend inside the same run directory, metrics and figures as NumPy's."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.training import files
from fcnet.training.prepare import Prepared

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"


def _trainer(config: RunConfig, input_size: int, num_classes: int, image_shape, classes):
    from fcnet.torch_backend import require_torch

    require_torch()
    from fcnet.torch_backend.train import TorchTrainer

    return TorchTrainer(config, input_size, num_classes, image_shape, classes)


def train_torch(config: RunConfig, run_dir: Path, P: Prepared, quiet: bool = True,
                resume: bool = True, eval_at: list[int] | None = None, figures: bool = True,
                checkpoint_seconds: float = 5.0) -> dict:
    from fcnet.training.run import _base_summary, confusion, write_metrics

    if eval_at:
        raise FcnetError("evaluation along the way (eval_at) needs the numpy backend")
    image_shape = P.image_shape if P.X_train.shape[1] == int(np.prod(P.image_shape or [0])) else None
    t = _trainer(config, P.X_train.shape[1], len(P.classes), image_shape, P.classes)
    ckpt = run_dir / CHECKPOINT
    if resume and ckpt.exists():
        t.load_checkpoint(ckpt)
    summary = _base_summary(config, P)
    files.save_npz(run_dir / "preprocess.npz", P.prep.state())
    files.write_json(run_dir / "summary.json", summary)
    last = [time.monotonic()]

    def on_epoch(record: dict) -> None:
        if time.monotonic() - last[0] >= checkpoint_seconds:
            t.save_checkpoint(ckpt)
            write_metrics(run_dir, t.history, record["iteration"] // max(record["epoch"] + 1, 1))
            last[0] = time.monotonic()

    out = t.fit(P.X_train, P.y_train, P.X_val, P.y_val, callback=on_epoch, progress=not quiet)
    t.save_checkpoint(ckpt)
    t.save(run_dir / WEIGHTS)
    write_metrics(run_dir, out, out["iters_per_epoch"])
    final_val = t.score(P.X_val, P.y_val)
    seconds = out["train_seconds"]
    summary.update({
        "status": "diverged" if out["diverged_at"] is not None else "completed",
        "diverged_at": out["diverged_at"],
        "iterations": out["iterations"],
        "iters_per_epoch": out["iters_per_epoch"],
        "epochs_recorded": out["epochs"],
        "final_loss": out["loss_history"][-1] if out["loss_history"] else None,
        "final_val_acc": final_val,
        "best_val_acc": max([final_val, *out["val_acc_history"]]),
        "final_train_acc": out["final_train_acc"],
        "train_seconds": seconds,
        "samples_per_second": out["iterations"] * config.batch_size / seconds if seconds else None,
        "device": str(t.device),
        "precision": t.precision,  # bfloat16-mixed, float32 or float64 as trained
        "bf16_fallback": t.bf16_fallback,  # why a bfloat16 run trained in float32
        "val_acc_at": {},
    })
    if figures:
        from fcnet.report import plots

        plots.loss_curve(out["loss_history"], run_dir / "loss.png")
        if out["val_acc_history"]:
            plots.accuracy_curves(out["train_acc_history"], out["val_acc_history"],
                                  run_dir / "accuracy.png")
        W1 = t.model.linears[0].weight.detach().cpu().double().numpy().T  # (D, H)
        if image_shape is not None:
            plots.weight_grid(W1, tuple(image_shape), run_dir / "weights.png")
        pred = np.argmax(t.predict_proba(P.X_val), axis=1)
        plots.confusion_matrix(confusion(P.y_val, pred, len(P.classes)), P.classes,
                               run_dir / "confusion.png")
    files.write_json(run_dir / "summary.json", summary)
    return summary


def load_torch_model(run_dir: Path, config: RunConfig, summary: dict):
    """predict_proba of a finished torch run, its weights loaded with weights_only=True."""
    from fcnet.torch_backend import require_torch

    require_torch()
    from fcnet.torch_backend.train import TorchTrainer

    shape = summary.get("image_shape")
    if shape is not None and summary["input_size"] != int(np.prod(shape)):
        shape = None
    t = TorchTrainer.load(run_dir / WEIGHTS, config, summary["input_size"],
                          len(summary["classes"]), shape, summary["classes"])
    return t.predict_proba
