"""The torch backend into the NumPy backend's run directory, metrics and figures (rundir's)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.training import rundir
from fcnet.training.prepare import Prepared
from fcnet.training.tensorboard import RunLogger

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
BUDGET_FILL = 0.95  # of a time budget planned for epochs; the rest absorbs noise and saves


def flat_images(shape, input_size: int):
    """``shape`` when rows are images flattened (not, say, PCA components), else None."""
    return shape if shape is not None and input_size == int(np.prod(shape)) else None


def trainer(config: RunConfig, P: Prepared):
    """A ``TorchTrainer`` for ``config`` on the prepared data."""
    from fcnet.torch_backend.train import TorchTrainer  # without torch: one FcnetError

    D = P.X_train.shape[1]
    return TorchTrainer(config, D, len(P.classes), flat_images(P.image_shape, D), P.classes)


def measure_budget(t, P: Prepared) -> None:
    """Fix ``t``'s length from its ``time_budget``: time whole epochs of a throw-away
    copy (at least one, and a fiftieth of the budget), then plan as many epochs of
    the measured time, evaluation included, as fill ``BUDGET_FILL`` of what is left."""
    probe = trainer(t.config.model_copy(update={"epochs": 10**6}), P)
    data = (P.X_train, P.y_train, P.X_val, P.y_val)
    t0 = time.perf_counter()
    probe.run(*data, until=2)  # warm-up: kernels, caches, workspaces
    t1 = time.perf_counter()
    probe.run(*data, until=2 + probe.per_epoch)  # an epoch's steps and its evaluation
    more = math.ceil(t.config.time_budget / 50 / (time.perf_counter() - t1)) - 1
    if more > 0:
        probe.run(*data, until=probe.it + more * probe.per_epoch)
    now = time.perf_counter()
    epoch_s = (now - t1) * probe.per_epoch / (probe.it - 2)
    epochs = int(BUDGET_FILL * (t.config.time_budget - (now - t0)) / epoch_s)
    t.set_budget(max(1, epochs), epoch_s, now - t0)


def train_torch(config: RunConfig, run_dir: Path, P: Prepared, quiet: bool = True,
                resume: bool = True, eval_at: list[int] | None = None, figures: bool = True,
                checkpoint_seconds: float = 5.0) -> dict:
    t = trainer(config, P)
    if t.bf16_fallback and not quiet:
        rundir.say(f"{t.bf16_fallback}: training in float32 (emulated bf16 would be far slower)")
    ckpt = run_dir / CHECKPOINT
    if resume and ckpt.exists():
        try:
            t.load_checkpoint(ckpt)
        except FcnetError as err:  # damaged or foreign: the partly loaded trainer is dropped
            rundir.say(f"{err}; training again from the start")
            t = trainer(config, P)
    extra = {}
    if config.time_budget is not None:
        if t.budget is None:
            measure_budget(t, P)
        extra["time_budget"] = {"seconds": config.time_budget, **t.budget}
        if not quiet:
            rundir.say(f"time budget {config.time_budget:g} s: {t.budget['epochs']} epochs of "
                       f"{t.budget['epoch_seconds']:.3g} s (measured at the start)")
    summary = rundir.start(run_dir, config, P, **extra)

    total, per_epoch = t.config.length(P.X_train.shape[0])
    tb = RunLogger.open(run_dir, enabled=config.tensorboard, start_step=t.it, total_steps=total)
    clock, logged = rundir.CheckpointClock(checkpoint_seconds), len(t.history["loss_history"])

    def on_epoch(record: dict) -> None:
        nonlocal logged  # losses already in tb/
        losses = t.history["loss_history"]
        tb.losses(logged, losses[logged:])
        logged = len(losses)
        tb.epoch((len(t.history["val_acc_history"]) - 1) * per_epoch, record["train_acc"],
                 record["val_acc"], record["lr"], image_shape=t.image_shape,
                 weights=lambda: {f"W{i + 1}": m.weight.detach().cpu().double().numpy().T  # (in, out)
                                  for i, m in enumerate(t.model.linears)},
                 last=record["iteration"] == total)
        if clock.due():
            started = time.monotonic()
            tb.flush()  # first: a resume from this checkpoint leaves no gap in tb/
            t.save_checkpoint(ckpt)
            rundir.write_metrics(run_dir, t.history, per_epoch)
            clock.saved(started)

    out = t.fit(P.X_train, P.y_train, P.X_val, P.y_val, callback=on_epoch, progress=not quiet,
                eval_at=eval_at or ())
    tb.losses(logged, out["loss_history"][logged:])  # a diverged epoch's losses get no callback
    return finish_torch(config, run_dir, t, P, out, summary, tb, figures)


def finish_torch(config: RunConfig, run_dir: Path, t, P: Prepared, out: dict, summary: dict,
                 tb: RunLogger, figures: bool) -> dict:
    """A trained torch run's files (checkpoint, weights, metrics, summary, figures) from
    ``out``, ``TorchTrainer.fit``'s result; lone runs and population members alike."""
    t.save_checkpoint(run_dir / CHECKPOINT)
    t.save(run_dir / WEIGHTS)
    written = [CHECKPOINT, WEIGHTS, *rundir.write_metrics(run_dir, out, out["iters_per_epoch"])]
    final_val, seconds = t.score(P.X_val, P.y_val), out["train_seconds"]
    return rundir.complete(
        run_dir, config, summary, tb, written,
        (out, t.model.linears[0].weight.detach().cpu().double().numpy().T,  # W1 (D, H)
         P, np.argmax(t.predict_proba(P.X_val), axis=1)) if figures else None,
        **{k: out[k] for k in ("diverged_at", "iterations", "iters_per_epoch")},
        epochs_recorded=out["epochs"],
        final_loss=out["loss_history"][-1] if out["loss_history"] else None,
        final_val_acc=final_val, best_val_acc=max([final_val, *out["val_acc_history"]]),
        final_train_acc=out["final_train_acc"], train_seconds=seconds,
        samples_per_second=out["iterations"] * config.batch_size / seconds if seconds else None,
        # precision as trained, and why a bfloat16 run trained in float32
        device=str(t.device), precision=t.precision, bf16_fallback=t.bf16_fallback,
        val_acc_at=out["val_acc_at"])

