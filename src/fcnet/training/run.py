"""One training run into one run directory (layout: fcnet.training.rundir).

``train_run`` decides what to do with the directory (reuse a finished intact
run, resume from the last intact checkpoint, or train from the start) and
hands the NumPy backend to ``_train_numpy``, a flat loop: step, evaluate at
epoch ends, checkpoint, log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.nn.fpenv import flush_denormals
from fcnet.nn.model import MLP
from fcnet.nn.solver import Solver
from fcnet.training import rundir
from fcnet.training.prepare import Prepared, prepare
from fcnet.training.rundir import read_run_config
from fcnet.training.tensorboard import RunLogger, weight_matrices

__all__ = ["train_run", "read_run_config", "build_model", "num_iterations", "finish_run"]

CHECKPOINT = "checkpoint.npz"


def num_iterations(config: RunConfig, n_train: int) -> int:
    """Training length in iterations: epochs * max(N // B, 1), else iters."""
    if config.epochs is not None:
        return config.epochs * max(n_train // config.batch_size, 1)
    return int(config.iters)


def build_model(config: RunConfig, input_size: int, num_classes: int) -> MLP:
    return MLP(input_size, config.hidden, num_classes, std=config.init_std(),
               dropout_keep=config.dropout_keep, seed=config.seed, dtype=config.dtype)


def checkpoint_name(config: RunConfig) -> str:
    if config.backend == "torch":
        from fcnet.training.torch_run import CHECKPOINT as TORCH_CHECKPOINT

        return TORCH_CHECKPOINT
    return CHECKPOINT


def train_run(
    config: RunConfig,
    run_dir: Path,
    quiet: bool = True,
    resume: bool = True,
    eval_at: list[int] | None = None,
    checkpoint_seconds: float = 5.0,
    figures: bool = True,
) -> dict:
    """Train one run into ``run_dir`` and return its summary.

    A finished run with the same config whose files all keep their recorded
    checksums is returned as is (reuse).  An interrupted or damaged one
    continues from its last intact checkpoint when ``resume``, else trains
    from the start; a notice on stderr says which.  ``eval_at`` lists
    iterations at which validation accuracy is recorded along the way
    (``summary['val_acc_at']``).
    """
    run_dir = Path(run_dir)
    eval_at = list(eval_at or [])
    if (run_dir / rundir.CONFIG).exists():
        if read_run_config(run_dir) != config:
            raise FcnetError(f"{run_dir}: holds a run with a different config; "
                             "choose another --name or delete it")
        old = rundir.read_summary(run_dir)
        if old is None and (run_dir / rundir.SUMMARY).exists():
            rundir.say(f"{run_dir / rundir.SUMMARY}: unreadable; resuming from the last "
                       "checkpoint if it is intact, else from the start")
        if rundir.is_finished(old):
            bad = rundir.damaged(run_dir, old)
            if not bad:
                if rundir.covers(old, eval_at):
                    return old
                resume = False  # points along the way can only come from a fresh run
            else:
                ckpt = checkpoint_name(config)
                resume = resume and ckpt not in bad and (run_dir / ckpt).exists()
                rundir.say(f"{run_dir}: {rundir.describe(bad)}; " + (
                    f"resuming from the last intact checkpoint ({ckpt})" if resume
                    else "training again from the start"))
    prepared = prepare(config, progress=not quiet)  # bad data fails before anything is written
    if config.backend == "torch":
        from fcnet.training.torch_run import train_torch

        return train_torch(config, run_dir, prepared, quiet=quiet, resume=resume,
                           eval_at=eval_at, figures=figures, checkpoint_seconds=checkpoint_seconds)
    with np.errstate(over="ignore", invalid="ignore"), blas_threads(config, prepared):
        # divergence is detected from the loss, not warned about
        return _train_numpy(config, run_dir, prepared, quiet, resume, eval_at,
                            checkpoint_seconds, figures)


def blas_threads(config: RunConfig, prepared: Prepared):
    """One BLAS thread for small products: below a few MFLOP per matmul, thread
    start-up costs more than it saves (measured 5-50x slower on 2 shared cores)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    flops = config.batch_size * prepared.X_train.shape[1] * max(config.hidden)
    return threadpool_limits(1, user_api="blas") if flops < 4_000_000 else nullcontext()


def read_checkpoint(path: Path) -> dict[str, np.ndarray] | None:
    """The checkpoint's arrays, or None (with a notice) when it cannot be read."""
    if not path.exists():
        return None
    try:
        return files.load_npz(path)
    except FcnetError as err:
        rundir.say(f"{err}; training again from the start")
        return None


def _new_solver(config: RunConfig, P: Prepared, n_iters: int) -> Solver:
    model = build_model(config, P.X_train.shape[1], len(P.classes))
    return Solver(model, P.X_train, P.y_train, P.X_val, P.y_val, learning_rate=config.lr,
                  learning_rate_decay=config.decay, reg=config.reg, num_iters=n_iters,
                  batch_size=config.batch_size, seed=config.seed, optimizer=config.optimizer,
                  optim_config=config.optim_config(), sampling=config.sampling)


def _save_checkpoint(path: Path, solver: Solver, val_at: dict, best_acc: float,
                     best_epoch: int, best_params: dict | None) -> None:
    state = solver.state()
    state.update({f"val_at.{k}": np.array(v) for k, v in val_at.items()})
    state.update({"best.acc": np.array(best_acc), "best.epoch": np.array(best_epoch)})
    if best_params is not None:
        state.update({f"best.params.{k}": v for k, v in best_params.items()})
    files.save_npz(path, state)


def _history(solver: Solver) -> dict:
    return {**solver.history(), "lr_history": solver.lr_history}


def _train_numpy(config, run_dir, P, quiet, resume, eval_at, checkpoint_seconds, figures):
    n_iters = num_iterations(config, P.X_train.shape[0])
    ckpt = run_dir / CHECKPOINT
    solver = _new_solver(config, P, n_iters)
    val_at: dict[str, float] = {}
    best_acc, best_epoch, best_params = -1.0, -1, None
    state = read_checkpoint(ckpt) if resume else None
    if state is not None:
        try:
            solver.load_state(state)
        except (KeyError, ValueError) as err:
            rundir.say(f"{ckpt}: does not fit this run ({err}); training again from the start")
            solver, state = _new_solver(config, P, n_iters), None
    if state is not None:
        val_at = {k[7:]: float(v) for k, v in state.items() if k.startswith("val_at.")}
        if "best.acc" in state:
            best_acc, best_epoch = float(state["best.acc"]), int(state["best.epoch"])
            best_params = {k[12:]: v for k, v in state.items()
                           if k.startswith("best.params.")} or None
    summary = rundir.start(run_dir, config, P)
    tb = RunLogger.open(run_dir, enabled=config.tensorboard, start_step=solver.it,
                        total_steps=n_iters)
    model, wanted = solver.model, set(eval_at)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=n_iters, initial=solver.it, desc=f"train {run_dir.name}",
                   unit="it", dynamic_ncols=True)

    t0, clock = time.monotonic(), rundir.CheckpointClock(checkpoint_seconds)
    start_it = solver.it
    with flush_denormals(solver.flush_denormals):
        while solver.it < n_iters and solver.diverged_at is None:
            # step: one minibatch; at an epoch's end the solver also records
            # train/val accuracy and decays the learning rate
            epochs, it = len(solver.val_acc_history), solver.it
            loss = solver.step()
            tb.scalars(it, loss=loss)  # the diverged step's loss too, as in loss.csv
            if solver.diverged_at is not None:
                break  # the last good parameters are kept
            if solver.it in wanted:  # before a checkpoint, so a resume keeps the point
                val_at[str(solver.it)] = solver.val_accuracy()
            if len(solver.val_acc_history) > epochs:
                # evaluate: keep the best epoch
                acc = solver.val_acc_history[-1]
                tb.epoch(it, solver.train_acc_history[-1], acc, solver.lr_history[-1],
                         weights=lambda: weight_matrices(model.params), image_shape=P.image_shape,
                         last=solver.it + solver.iters_per_epoch > n_iters)
                if acc > best_acc:
                    best_acc, best_epoch = acc, len(solver.val_acc_history) - 1
                    if config.keep_best:
                        best_params = model.state()
                # checkpoint: at an epoch end, checkpoint_seconds apart at least
                if clock.due():
                    started = time.monotonic()
                    tb.flush()  # first: a resume from this checkpoint leaves no gap in tb/
                    _save_checkpoint(ckpt, solver, val_at, best_acc, best_epoch, best_params)
                    rundir.write_metrics(run_dir, _history(solver), solver.iters_per_epoch)
                    clock.saved(started)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", val_acc=f"{acc:.3f}", refresh=False)
            # log
            if bar is not None and (solver.it % 20 == 0 or solver.it == n_iters):
                bar.n = solver.it
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update(0)
    seconds = time.monotonic() - t0
    if bar is not None:
        bar.close()

    if solver.it in wanted:
        val_at[str(solver.it)] = solver.val_accuracy()
    _save_checkpoint(ckpt, solver, val_at, best_acc, best_epoch, best_params)
    written = [CHECKPOINT]
    if config.keep_best and best_params is not None:
        files.save_npz(run_dir / "best_params.npz", best_params)
        written.append("best_params.npz")
    return finish_run(config, run_dir, model, P, _history(solver), summary,
                      diverged_at=solver.diverged_at, iterations=solver.it,
                      iters_per_epoch=solver.iters_per_epoch, seconds=seconds,
                      done_iters=solver.it - start_it, val_at=val_at, best_epoch=best_epoch,
                      figures=figures, written=written, tb=tb)


def finish_run(config: RunConfig, run_dir: Path, model: MLP, P: Prepared, hist: dict,
               summary: dict, *, diverged_at: int | None, iterations: int,
               iters_per_epoch: int, seconds: float, done_iters: int, val_at: dict,
               best_epoch: int, figures: bool, written: Sequence[str] = (),
               tb: RunLogger | None = None) -> dict:
    """Write a finished NumPy run's parameters, metrics, figures and summary."""
    if not all(np.isfinite(v).all() for v in model.params.values()):
        raise FcnetError(f"{run_dir}: parameters became non-finite")  # never saved
    files.save_npz(run_dir / "params.npz", model.params)
    written = [*written, "params.npz", *rundir.write_metrics(run_dir, hist, iters_per_epoch)]
    final_val = _accuracy(model, P.X_val, P.y_val)
    losses = hist["loss_history"]
    final_loss = float(losses[-1]) if losses else None
    summary.update({
        "status": "diverged" if diverged_at is not None else "completed",
        "diverged_at": diverged_at,
        "iterations": iterations,
        "iters_per_epoch": iters_per_epoch,
        "epochs_recorded": len(hist["val_acc_history"]),
        "final_loss": final_loss if final_loss is not None and math.isfinite(final_loss) else None,
        "final_val_acc": final_val,
        "best_val_acc": max([final_val, *hist["val_acc_history"]]),
        "best_epoch": best_epoch,
        "final_train_acc": _accuracy(model, P.X_train, P.y_train),
        "train_seconds": seconds,
        "samples_per_second": (done_iters * config.batch_size / seconds) if seconds > 0 else None,
        "val_acc_at": val_at,
    })
    if figures:
        pred = np.argmax(model.scores(P.X_val), axis=1)
        written += rundir.write_figures(run_dir, hist, model.params["W1"], P, pred)
    if tb is not None:  # tb/ is a log, not in the checksums: it goes before the last write
        tb.finish(config.model_dump(), summary)
    return rundir.complete(run_dir, summary, written)


def _accuracy(model: MLP, X: np.ndarray, y: np.ndarray, chunk: int = 8192) -> float:
    correct = 0
    for s in range(0, X.shape[0], chunk):
        correct += int((np.argmax(model.scores(X[s : s + chunk]), axis=1) == y[s : s + chunk]).sum())
    return correct / max(X.shape[0], 1)
