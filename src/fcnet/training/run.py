"""One training run into one run directory.

runs/<name>/
  config.toml        the resolved, validated config
  summary.json       status (running | completed | diverged), accuracies, timing, provenance
  loss.csv           per-iteration loss
  epochs.csv         per-epoch iteration, lr, train accuracy (batch), val accuracy
  checkpoint.npz     everything to resume bit for bit (NumPy backend; torch: checkpoint.pt)
  preprocess.npz     the fitted preprocessing (mean image, PCA), for evaluate/predict
  params.npz         final parameters (best_params.npz with keep_best)
  *.png              loss, accuracy, first-layer weights, confusion matrix
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import numpy as np

from fcnet.config import RunConfig, load_config
from fcnet.errors import FcnetError
from fcnet.nn.model import MLP
from fcnet.nn.solver import Solver
from fcnet.training import files
from fcnet.training.prepare import Prepared, prepare
from fcnet.training.tensorboard import RunLogger, first_layer_image, weight_matrices

CHECKPOINT = "checkpoint.npz"


def _version() -> str:
    from fcnet import __version__

    return __version__


def num_iterations(config: RunConfig, n_train: int) -> int:
    """Training length in iterations: epochs * max(N // B, 1), else iters."""
    if config.epochs is not None:
        return config.epochs * max(n_train // config.batch_size, 1)
    return int(config.iters)


def build_model(config: RunConfig, input_size: int, num_classes: int) -> MLP:
    return MLP(input_size, config.hidden, num_classes, std=config.init_std(),
               dropout_keep=config.dropout_keep, seed=config.seed, dtype=config.dtype)


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.toml"
    if not path.exists():
        raise FcnetError(f"{run_dir}: not a run directory (no config.toml)")
    return load_config(path)


def _csv(rows: list[list], header: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_metrics(run_dir: Path, hist: dict, iters_per_epoch: int) -> None:
    loss = hist["loss_history"]
    files.write_text(run_dir / "loss.csv",
                     _csv([[i, repr(float(v))] for i, v in enumerate(loss)], ["iteration", "loss"]))
    rows = []
    for e, (tr, va) in enumerate(zip(hist["train_acc_history"], hist["val_acc_history"])):
        lr = hist["lr_history"][e] if e < len(hist.get("lr_history", [])) else ""
        rows.append([e, e * iters_per_epoch, lr, tr, va])
    files.write_text(run_dir / "epochs.csv",
                     _csv(rows, ["epoch", "iteration", "lr", "train_acc", "val_acc"]))


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

    A completed run with the same config is returned as is (reuse); an
    interrupted one continues from its last checkpoint when ``resume``.
    ``eval_at`` lists iterations at which validation accuracy is recorded
    along the way (``summary['val_acc_at']``).
    """
    run_dir = Path(run_dir)
    config_text = config.to_toml()
    cfg_path = run_dir / "config.toml"
    if cfg_path.exists():
        if read_run_config(run_dir) != config:
            raise FcnetError(f"{run_dir}: holds a run with a different config; "
                             "choose another --name or delete it")
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            old = files.read_json(summary_path)
            wanted = {str(i) for i in eval_at or []}
            if old.get("status") in ("completed", "diverged"):
                if wanted <= set(old.get("val_acc_at", {})):
                    return old
                resume = False  # points along the way can only come from a fresh run
    prepared = prepare(config, progress=not quiet)  # bad data fails before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(cfg_path, config_text)
    if config.backend == "torch":
        from fcnet.training.torch_run import train_torch

        return train_torch(config, run_dir, prepared, quiet=quiet, resume=resume,
                           eval_at=eval_at, figures=figures, checkpoint_seconds=checkpoint_seconds)
    with np.errstate(over="ignore", invalid="ignore"), blas_threads(config, prepared):
        # divergence is detected from the loss, not warned about
        return _train_numpy(config, run_dir, prepared, quiet, resume, eval_at or [],
                            checkpoint_seconds, figures)


def blas_threads(config: RunConfig, prepared: Prepared):
    """One BLAS thread for small products: below a few MFLOP per matmul, thread
    start-up costs more than it saves (measured 5-50x slower on 2 shared cores)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    flops = config.batch_size * prepared.X_train.shape[1] * max(config.hidden)
    return threadpool_limits(1, user_api="blas") if flops < 4_000_000 else nullcontext()


def _base_summary(config: RunConfig, prepared: Prepared) -> dict:
    meta = prepared.data.meta
    return {
        "status": "running",
        "backend": config.backend,
        "dataset": config.dataset,
        "source_checksum": meta.get("checksum"),
        "split_hash": meta.get("split", {}).get("hash"),
        "split": meta.get("split"),
        "n_train": int(prepared.X_train.shape[0]),
        "n_val": int(prepared.X_val.shape[0]),
        "input_size": int(prepared.X_train.shape[1]),
        "seed": config.seed,
        "classes": list(prepared.classes),
        "image_shape": list(prepared.image_shape) if prepared.image_shape is not None else None,
        "fcnet_version": _version(),
    }


def _train_numpy(config, run_dir, prepared, quiet, resume, eval_at, checkpoint_seconds, figures):
    P = prepared
    C = len(P.classes)
    model = build_model(config, P.X_train.shape[1], C)
    n_iters = num_iterations(config, P.X_train.shape[0])
    val_at: dict[str, float] = {}
    best = {"acc": -1.0, "epoch": -1, "params": None}
    solver = Solver(model, P.X_train, P.y_train, P.X_val, P.y_val, learning_rate=config.lr,
                    learning_rate_decay=config.decay, reg=config.reg, num_iters=n_iters,
                    batch_size=config.batch_size, seed=config.seed, optimizer=config.optimizer,
                    momentum=config.momentum, sampling=config.sampling)
    ckpt = run_dir / CHECKPOINT
    summary = _base_summary(config, P)
    if resume and ckpt.exists():
        state = files.load_npz(ckpt)
        solver.load_state(state)
        val_at = {k[7:]: float(v) for k, v in state.items() if k.startswith("val_at.")}
        if "best.acc" in state:
            kept = {k[12:]: v for k, v in state.items() if k.startswith("best.params.")}
            best = {"acc": float(state["best.acc"]), "epoch": int(state["best.epoch"]),
                    "params": kept or None}
    files.save_npz(run_dir / "preprocess.npz", P.prep.state())
    files.write_json(run_dir / "summary.json", summary)
    tb = RunLogger.open(run_dir, enabled=config.tensorboard, start_step=solver.it)
    wanted = set(eval_at)
    last_save = [time.monotonic()]
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=n_iters, initial=solver.it, desc=f"train {run_dir.name}",
                   unit="it", dynamic_ncols=True)

    def save_checkpoint():
        state = solver.state()
        state.update({f"val_at.{k}": np.array(v) for k, v in val_at.items()})
        state.update({"best.acc": np.array(best["acc"]), "best.epoch": np.array(best["epoch"])})
        if best["params"] is not None:
            state.update({f"best.params.{k}": v for k, v in best["params"].items()})
        files.save_npz(ckpt, state)
        write_metrics(run_dir, {**solver.history(), "lr_history": solver.lr_history},
                      solver.iters_per_epoch)
        last_save[0] = time.monotonic()

    def callback(s: Solver, event: str):
        if event == "epoch":
            acc = s.val_acc_history[-1]
            tb.epoch((len(s.val_acc_history) - 1) * s.iters_per_epoch, s.train_acc_history[-1], acc,
                     s.lr_history[-1], weights=weight_matrices(model.params),
                     first_layer_image=first_layer_image(model.params["W1"], P.image_shape))
            if acc > best["acc"]:
                best.update(acc=acc, epoch=len(s.val_acc_history) - 1)
                if config.keep_best:
                    best["params"] = model.state()
            if bar is not None:
                bar.set_postfix(loss=f"{s.loss_history[-1]:.4f}", val_acc=f"{acc:.3f}",
                                refresh=False)
            if time.monotonic() - last_save[0] >= checkpoint_seconds:
                save_checkpoint()
        elif event == "iter":
            tb.scalars(s.it - 1, loss=s.loss_history[-1])
            if s.it in wanted:
                val_at[str(s.it)] = s.val_accuracy()
            if bar is not None and (s.it % 20 == 0 or s.it == n_iters):
                bar.n = s.it
                bar.set_postfix(loss=f"{s.loss_history[-1]:.4f}", refresh=False)
                bar.update(0)

    solver.callback = callback
    t0 = time.perf_counter()
    start_it = solver.it
    solver.run()
    seconds = time.perf_counter() - t0
    if solver.diverged_at is not None:  # the step that diverged gets no 'iter' callback
        tb.scalars(solver.diverged_at, loss=solver.loss_history[-1])
    if bar is not None:
        bar.close()

    if solver.it in wanted:
        val_at[str(solver.it)] = solver.val_accuracy()
    save_checkpoint()
    if config.keep_best and best["params"] is not None:
        files.save_npz(run_dir / "best_params.npz", best["params"])
    hist = {**solver.history(), "lr_history": solver.lr_history}
    return finish_run(config, run_dir, model, P, hist, summary, diverged_at=solver.diverged_at,
                      iterations=solver.it, iters_per_epoch=solver.iters_per_epoch,
                      seconds=seconds, done_iters=solver.it - start_it, val_at=val_at,
                      best_epoch=best["epoch"], figures=figures, tb=tb)


def finish_run(config: RunConfig, run_dir: Path, model: MLP, P: Prepared, hist: dict,
               summary: dict, *, diverged_at: int | None, iterations: int,
               iters_per_epoch: int, seconds: float, done_iters: int, val_at: dict,
               best_epoch: int, figures: bool, tb: RunLogger | None = None) -> dict:
    """Write a finished NumPy run's parameters, metrics, figures and summary."""
    if not all(np.isfinite(v).all() for v in model.params.values()):
        raise FcnetError(f"{run_dir}: parameters became non-finite")  # never saved
    files.save_npz(run_dir / "params.npz", model.params)
    write_metrics(run_dir, hist, iters_per_epoch)
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
        write_figures(run_dir, model, hist, P)
    if tb is not None:
        tb.finish(config.model_dump(), summary)
    files.write_json(run_dir / "summary.json", summary)
    return summary


def _accuracy(model: MLP, X: np.ndarray, y: np.ndarray, chunk: int = 8192) -> float:
    correct = 0
    for s in range(0, X.shape[0], chunk):
        correct += int((np.argmax(model.scores(X[s : s + chunk]), axis=1) == y[s : s + chunk]).sum())
    return correct / max(X.shape[0], 1)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def write_figures(run_dir: Path, model: MLP, hist: dict, P: Prepared) -> None:
    """The pictures a person looks at: loss, accuracies, weights, confusion matrix."""
    from fcnet.report import plots

    plots.loss_curve(hist["loss_history"], run_dir / "loss.png")
    if hist["val_acc_history"]:
        plots.accuracy_curves(hist["train_acc_history"], hist["val_acc_history"],
                              run_dir / "accuracy.png")
    W1 = model.params["W1"]
    if P.image_shape is not None and W1.shape[0] == int(np.prod(P.image_shape)):
        plots.weight_grid(W1, tuple(P.image_shape), run_dir / "weights.png")
    pred = np.argmax(model.scores(P.X_val), axis=1)
    plots.confusion_matrix(confusion(P.y_val, pred, len(P.classes)), P.classes,
                           run_dir / "confusion.png")
