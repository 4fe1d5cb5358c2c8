"""One training run into one run directory (layout: fcnet.training.rundir): ``train_run``
reuses, resumes or starts it; ``train_numpy`` is the NumPy backend's one flat loop (one run
or a population): step, evaluate at epoch ends, checkpoint, log, then finish each run."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.nn.fpenv import flush_denormals
from fcnet.nn.model import MLP
from fcnet.nn.solver import Hyper, Solver
from fcnet.training import rundir, torch_run
from fcnet.training.memory import check_fits
from fcnet.training.prepare import Prepared, prepare
from fcnet.training.tensorboard import RunLogger

CHECKPOINT = "checkpoint.npz"


def build_model(config: RunConfig, input_size: int, num_classes: int) -> MLP:
    return MLP(input_size, config.hidden, num_classes, std=config.init_std(),
               dropout_keep=config.dropout_keep, seed=config.seed, dtype=config.dtype,
               init=config.init.split(":")[0])


def train_run(config: RunConfig, run_dir: Path, quiet: bool = True, resume: bool = True,
              eval_at: list[int] | None = None, checkpoint_seconds: float = 5.0,
              figures: bool = True) -> dict:
    """Train one run into ``run_dir`` and return its summary.  A finished run of this config
    whose files keep their checksums is returned as is; an interrupted or damaged one
    continues from its last intact checkpoint when ``resume``, else trains from the start
    (a notice says which).  ``eval_at``: iterations whose val accuracy is kept (val_acc_at)."""
    run_dir, eval_at = Path(run_dir), list(eval_at or [])
    with rundir.locked(run_dir, config):  # one process writes a run directory at a time
        if (run_dir / rundir.CONFIG).exists():  # its config is this one (locked checked)
            old = rundir.read_summary(run_dir)
            if old is None and (run_dir / rundir.SUMMARY).exists():
                rundir.say(f"{run_dir / rundir.SUMMARY}: unreadable; resuming from the last "
                           "checkpoint if it is intact, else from the start")
            bad = rundir.damaged(run_dir, old) if rundir.is_finished(old) else None
            if bad == {}:  # finished and intact
                if rundir.covers(old, eval_at):
                    return old
                resume = False  # points along the way can only come from a fresh run
            elif bad:
                ckpt = torch_run.CHECKPOINT if config.backend == "torch" else CHECKPOINT
                resume = resume and ckpt not in bad and (run_dir / ckpt).exists()
                listed = ", ".join(f"{name} {why}" for name, why in bad.items())
                rundir.say(f"{run_dir}: {listed}; " + (
                    f"resuming from the last intact checkpoint ({ckpt})" if resume
                    else "training again from the start"))
        prepared = prepare(config, progress=not quiet)  # bad data fails before anything is written
        check_fits(config, *prepared.X_train.shape, len(prepared.classes))  # before allocating
        kw = dict(quiet=quiet, resume=resume, eval_at=eval_at, figures=figures,
                  checkpoint_seconds=checkpoint_seconds)
        if config.backend == "torch":
            return torch_run.train_torch(config, run_dir, prepared, **kw)
        return train_numpy([config], [run_dir], prepared, **kw)[0]


def blas_threads(config: RunConfig, input_size: int):
    """One BLAS thread for small products: below a few MFLOP per matmul, thread
    start-up costs more than it saves (measured 5-50x slower on 2 shared cores)."""
    from threadpoolctl import threadpool_limits

    flops = config.batch_size * input_size * max(config.hidden, default=10)
    return threadpool_limits(1, user_api="blas") if flops < 4_000_000 else nullcontext()


def hyper(configs: Sequence[RunConfig], n_train: int) -> Hyper:
    """The loop's settings for these configs (one value per member where they may differ)."""
    c = configs[0]
    return Hyper.of(len(configs), lr=[m.lr for m in configs], decay=[m.decay for m in configs],
                    reg=[m.reg for m in configs], keep=[m.dropout_keep for m in configs],
                    seeds=[m.seed for m in configs], num_iters=c.length(n_train)[0],
                    batch_size=c.batch_size, sampling=c.sampling, schedule=c.schedule,
                    optimizer=c.optimizer, optim_config=c.optim_config())


def _new_solver(configs: Sequence[RunConfig], P: Prepared) -> Solver:
    models = [build_model(c, P.X_train.shape[1], len(P.classes)) for c in configs]
    return Solver(models, P.X_train, P.y_train, P.X_val, P.y_val, hyper(configs, P.X_train.shape[0]))


def _save_checkpoint(path: Path, solver: Solver, val_at: dict, best: dict | None) -> None:
    files.save_npz(path, {**solver.state(), **{f"val_at.{k}": np.array(v) for k, v in val_at.items()},
                          **{f"best.params.{k}": v for k, v in (best or {}).items()}})


def train_numpy(configs: Sequence[RunConfig], run_dirs: Sequence[Path], P: Prepared, *,
                quiet: bool = True, resume: bool = False, eval_at: Sequence[int] = (),
                checkpoint_seconds: float = 5.0, figures: bool = True) -> list[dict]:
    """The NumPy loop: train K >= 1 configs at once (one ``Solver``), each into its own run
    directory; returns their summaries.  A lone run (K = 1) is checkpointed at epoch ends and
    resumes bit for bit; a population is not (killed, its members train again)."""
    from tqdm import tqdm

    k, run_dirs = len(configs), [Path(d) for d in run_dirs]
    # divergence is detected from the loss, not warned about
    with np.errstate(over="ignore", invalid="ignore"), blas_threads(configs[0], P.X_train.shape[1] * k):
        solver = _new_solver(configs, P)
        n_iters, per_epoch = solver.hp.num_iters, solver.iters_per_epoch
        ckpt = run_dirs[0] / CHECKPOINT if k == 1 else None
        val_at: list[dict[str, float]] = [{} for _ in configs]
        best: list[dict | None] = [None] * k  # keep_best: each member's params at its best val epoch
        if ckpt is not None and resume and ckpt.exists():
            try:
                state = files.load_npz(ckpt)
                solver.load_state(state)
                val_at[0] = {key[7:]: float(v) for key, v in state.items() if key.startswith("val_at.")}
                best[0] = {key[12:]: v for key, v in state.items() if key.startswith("best.params.")} or None
            except FcnetError as err:  # unreadable: the solver is untouched
                rundir.say(f"{err}; training again from the start")
            except (KeyError, ValueError) as err:
                rundir.say(f"{ckpt}: does not fit this run ({err}); training again from the start")
                solver = _new_solver(configs, P)
        summaries = [rundir.start(d, c, P, **({"population": k} if k > 1 else {}))
                     for c, d in zip(configs, run_dirs, strict=True)]
        tbs = [RunLogger.open(d, enabled=c.tensorboard, start_step=solver.it, total_steps=n_iters)
               for c, d in zip(configs, run_dirs, strict=True)]
        models, wanted, logged = solver.models, set(eval_at), solver.it
        bar = tqdm(total=n_iters, initial=solver.it, unit="it", dynamic_ncols=True, disable=quiet,
                   desc=f"train {run_dirs[0].name}" + (f" (+{k - 1})" if k > 1 else ""))

        t0, clock, start_it = time.monotonic(), rundir.CheckpointClock(checkpoint_seconds), solver.it
        with flush_denormals(solver.flush_denormals):
            while solver.it < n_iters and solver.active.any():
                # step: one minibatch for every member; at an epoch's first iteration
                # the solver also records train/val accuracy and the learning rate
                it = solver.it
                loss = solver.step()
                if solver.it == it:
                    break  # every member diverged: their last good parameters are kept
                if solver.it in wanted:  # before a checkpoint, so a resume keeps the point
                    for j, acc in enumerate(solver.val_accuracies()):
                        if solver.active[j]:
                            val_at[j][str(solver.it)] = float(acc)
                if it % per_epoch == 0:
                    # evaluate: log the epoch, keep each member's best (keep_best)
                    for j in np.flatnonzero(solver.active):
                        h = solver.hist[j]
                        tbs[j].losses(logged, solver.losses(j, logged))
                        tbs[j].epoch(it, h["train_acc"][-1], h["val_acc"][-1], h["lr"][-1],
                                     weights=lambda j=j: {n: w for n, w in models[j].params.items()
                                                          if n[0] == "W"},
                                     image_shape=P.image_shape, last=solver.it + per_epoch > n_iters)
                        if configs[j].keep_best and h["val_acc"][-1] > max(h["val_acc"][:-1], default=-1.0):
                            best[j] = {n: v.copy() for n, v in models[j].params.items()}
                    logged = solver.it
                    # checkpoint: at an epoch end, checkpoint_seconds apart at least
                    if ckpt is not None and clock.due():
                        started = time.monotonic()
                        tbs[0].flush()  # first: a resume from this checkpoint leaves no gap in tb/
                        _save_checkpoint(ckpt, solver, val_at[0], best[0])
                        rundir.write_metrics(run_dirs[0], solver.history(), per_epoch)
                        clock.saved(started)
                # log
                if not quiet and (solver.it % 20 == 0 or solver.it == n_iters):
                    bar.n = solver.it
                    bar.set_postfix(loss=f"{float(np.min(loss)):.4f}", refresh=False)
                    bar.update(0)
        seconds = (time.monotonic() - t0) / k  # each member's share
        bar.close()

        # finish: each member's files, then its summary with their checksums
        out = []
        for j, (c, d, summary, tb) in enumerate(zip(configs, run_dirs, summaries, tbs, strict=True)):
            hist, diverged, model = solver.history(j), solver.diverged_at[j], models[j]
            tb.losses(logged, hist["loss_history"][logged:])
            if diverged is None and solver.it in wanted:
                val_at[j][str(solver.it)] = float(solver.val_accuracies()[j])
            written = []
            if ckpt is not None:
                _save_checkpoint(ckpt, solver, val_at[0], best[0])
                written.append(CHECKPOINT)
            if c.keep_best and best[j] is not None:
                files.save_npz(d / "best_params.npz", best[j])
                written.append("best_params.npz")
            if not all(np.isfinite(v).all() for v in model.params.values()):
                raise FcnetError(f"{d}: parameters became non-finite")  # never saved
            files.save_npz(d / "params.npz", model.params)
            written += ["params.npz", *rundir.write_metrics(d, hist, per_epoch)]
            final_val, losses = _accuracy(model, P.X_val, P.y_val), hist["loss_history"]
            vals, iterations = hist["val_acc_history"], solver.it if diverged is None else diverged
            out.append(rundir.complete(
                d, c, summary, tb, written,
                (hist, model.params["W1"], P, np.argmax(model.scores(P.X_val), axis=1)) if figures else None,
                diverged_at=diverged, iterations=iterations, iters_per_epoch=per_epoch,
                epochs_recorded=len(vals),
                final_loss=losses[-1] if losses and math.isfinite(losses[-1]) else None,
                final_val_acc=final_val, best_val_acc=max([final_val, *vals]),
                best_epoch=int(np.argmax(vals)) if vals else -1,  # the first best
                final_train_acc=_accuracy(model, P.X_train, P.y_train), train_seconds=seconds,
                samples_per_second=(iterations - start_it) * c.batch_size / seconds if seconds > 0 else None,
                val_acc_at=val_at[j]))
        return out


def _accuracy(model: MLP, X: np.ndarray, y: np.ndarray, chunk: int = 8192) -> float:
    correct = sum(int((np.argmax(model.scores(X[s : s + chunk]), axis=1) == y[s : s + chunk]).sum())
                  for s in range(0, X.shape[0], chunk))
    return correct / max(X.shape[0], 1)
