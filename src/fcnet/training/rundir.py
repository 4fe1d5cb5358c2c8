"""The run directory, for both backends and population members alike.

runs/<name>/
  config.toml        the resolved, validated config
  summary.json       status (running | completed | diverged), accuracies, timing, provenance,
                     and ``files``: the sha256 of every other file the run wrote
  loss.csv           per-iteration loss
  epochs.csv         per-epoch iteration, lr, train accuracy, val accuracy
  checkpoint.npz     everything to resume bit for bit (NumPy; torch: checkpoint.pt)
  preprocess.npz     the fitted preprocessing (mean image, PCA), for evaluate/predict
  params.npz         final parameters (best_params.npz with keep_best; torch: model.pt)
  *.png              loss, accuracy, first-layer weights, confusion matrix
  tb/                TensorBoard event files (fcnet.training.tensorboard; not with --no-tensorboard)

Every file but tb/'s goes through ``fcnet.files`` (atomic, fsync'd).  A run is finished (and
reused) when its summary says completed or diverged *and* every recorded file keeps its checksum."""

from __future__ import annotations

import csv
import errno
import io
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.config import RunConfig, load_config
from fcnet.errors import FcnetError
from fcnet.training.prepare import Prepared

CONFIG = "config.toml"
SUMMARY = "summary.json"
PREPROCESS = "preprocess.npz"
WAIT_NOTICE_S = 2.0  # how long a second writer waits quietly before saying why


class CheckpointClock:
    """When to checkpoint: at epoch ends, ``seconds`` apart at least (0: every epoch end),
    and ``SPACING`` times as long apart as the last save took, so saving costs at most
    1/SPACING of the run (best-cpu's 71 MB every 5 s made its epochs 6.0 s, not 4.4)."""

    SPACING = 50

    def __init__(self, seconds: float):
        self.seconds, self.gap = float(seconds), float(seconds)
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.gap

    def saved(self, started: float) -> None:
        """A save that began at ``started`` (``time.monotonic()``) just ended."""
        self.last = time.monotonic()
        if self.seconds > 0:
            self.gap = max(self.seconds, self.SPACING * (self.last - started))


def say(message: str) -> None:
    """A one-line notice on stderr (what a resume fell back to, ...), even when quiet."""
    print(f"fcnet: {message}", file=sys.stderr, flush=True)


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise FcnetError(f"{run_dir}: not a run directory (no {CONFIG})")
    return load_config(path)


def read_summary(run_dir: Path) -> dict | None:
    """The summary, or None when there is none yet or it is unreadable (a damaged run)."""
    with suppress(FcnetError):
        return files.read_json(Path(run_dir) / SUMMARY)
    return None


def damaged(run_dir: Path, summary: dict, names: Iterable[str] | None = None) -> dict[str, str]:
    """{file name: what is wrong} for the recorded files (all, or ``names``) whose sha256 no
    longer matches summary.json's (runs written before checksums pass)."""
    recorded = summary.get("files") or {}
    out = {}
    for name in recorded if names is None else [n for n in names if n in recorded]:
        path = Path(run_dir) / name
        if not path.is_file():
            out[name] = "missing"
        elif files.file_digest(path) != recorded[name]:
            out[name] = "damaged (its sha256 differs from summary.json's)"
    return out


def is_finished(summary: dict | None) -> bool:
    return summary is not None and summary.get("status") in ("completed", "diverged")


def covers(summary: dict, eval_at: Iterable[int]) -> bool:
    """Whether the run recorded validation accuracy at every iteration of ``eval_at``."""
    return {str(i) for i in eval_at} <= set(summary.get("val_acc_at", {}))


def holds(run_dir: Path, config: RunConfig) -> bool:
    """Whether ``run_dir`` holds a run of ``config``; FcnetError if of another config."""
    if not (Path(run_dir) / CONFIG).exists():
        return False
    if read_run_config(run_dir) != config:
        raise FcnetError(f"{run_dir}: holds a run with a different config; "
                         "choose another --name or delete it")
    return True


def finished(run_dir: Path, config: RunConfig, eval_at: Iterable[int] = ()) -> dict | None:
    """The summary of a finished, intact run of ``config`` covering ``eval_at``, else None."""
    s = read_summary(run_dir) if holds(run_dir, config) else None
    return s if is_finished(s) and covers(s, eval_at) and not damaged(run_dir, s) else None


def lock_path(run_dir: Path) -> Path:
    """``runs/.<name>.lock``: beside the run, so a refused run leaves no folder behind."""
    return Path(run_dir).parent / f".{Path(run_dir).name}.lock"


@contextmanager
def locked(run_dir: Path, config: RunConfig) -> Iterator[None]:
    """Hold ``run_dir``'s OS lock (``filelock``) while the block writes the run.  A second
    writer of the same run waits (a notice after ``WAIT_NOTICE_S``) and then reuses the
    finished run; one of a *different* config is refused in one line, before and after."""
    from filelock import Timeout

    run_dir = Path(run_dir)
    holds(run_dir, config)
    path = lock_path(run_dir)
    made = not path.parent.exists()  # runs/ itself: removed again if nothing was written
    lock = files.lock(path)
    for attempt in range(3):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=WAIT_NOTICE_S)
        except Timeout:
            say(f"{run_dir}: {files.lock_holder(path)} is writing this run; waiting for it to finish")
            lock.acquire()
        except FileNotFoundError:  # another process removed its empty runs/ just now
            if attempt == 2:
                raise
            continue
        except OSError as err:  # an unwritable folder: no writer to keep out, the lock is not taken
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):  # (a write fails in one line)
                raise files.write_error(run_dir, err, folder=True) from None
        break
    try:
        holds(run_dir, config)  # the other process may have written another config
        yield
    finally:
        if lock.lock_counter == 1:  # the outermost hold: leave no lock file behind (a
            path.unlink(missing_ok=True)  # waiter on the unlinked file takes a new one)
            if made:
                with suppress(OSError):
                    path.parent.rmdir()  # only if empty: a refused first run leaves nothing
        lock.release()  # (a lock never taken: nothing to release)


def start(run_dir: Path, config: RunConfig, prepared: Prepared, **extra) -> dict:
    """Write the config, the fitted preprocessing and a 'running' summary (data provenance,
    sizes, ``extra``), after removing the temp files a killed run left."""
    from fcnet import __version__

    run_dir = files.ensure_dir(run_dir)
    files.remove_temps(run_dir)  # the writer of this directory holds its lock (locked())
    files.write_text(run_dir / CONFIG, config.to_toml())
    files.save_npz(run_dir / PREPROCESS, prepared.prep.state())
    meta, shape = prepared.data.meta, prepared.image_shape
    summary = {
        "status": "running", "backend": config.backend, "dataset": config.dataset,
        "source_checksum": meta.get("checksum"),
        "split_hash": meta.get("split", {}).get("hash"), "split": meta.get("split"),
        "n_train": int(prepared.X_train.shape[0]), "n_val": int(prepared.X_val.shape[0]),
        "input_size": int(prepared.X_train.shape[1]), "seed": config.seed,
        "classes": list(prepared.classes),
        "image_shape": list(shape) if shape is not None else None,
        "fcnet_version": __version__,
        **extra,
    }
    files.write_json(run_dir / SUMMARY, summary)
    return summary


def write_metrics(run_dir: Path, hist: dict, iters_per_epoch: int) -> list[str]:
    """loss.csv (per iteration) and epochs.csv (per epoch); returns their names."""
    epochs = zip(hist["lr_history"], hist["train_acc_history"], hist["val_acc_history"])
    tables = {"loss.csv": [["iteration", "loss"],
                           *([i, repr(float(v))] for i, v in enumerate(hist["loss_history"]))],
              "epochs.csv": [["epoch", "iteration", "lr", "train_acc", "val_acc"],
                             *([e, e * iters_per_epoch, *row] for e, row in enumerate(epochs))]}
    for name, rows in tables.items():
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        files.write_text(run_dir / name, buf.getvalue())
    return list(tables)


def confusion(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Counts (n, n), true class by row, predicted by column, of labels and predictions (M,) in
    [0, n): scikit-learn's ``confusion_matrix(y, pred, labels=range(n))`` as one bincount (importing
    scikit-learn for it took 1.3 s of a digits study)."""
    return np.bincount(np.asarray(y) * n + np.asarray(pred), minlength=n * n).reshape(n, n)


def write_figures(run_dir: Path, hist: dict, W1: np.ndarray, P: Prepared, val_pred: np.ndarray) -> list[str]:
    """The run's pictures (fcnet.report.pictures), their names: loss, accuracies, first-layer
    weights W1 (D, H) when the inputs are images, the confusion of val predictions (M,)."""
    from fcnet.report import pictures as figures

    cm = confusion(P.y_val, val_pred, len(P.classes))
    out = [figures.loss_png(hist["loss_history"], run_dir / "loss.png")]
    if hist["val_acc_history"]:
        out.append(figures.accuracy_png(hist["train_acc_history"], hist["val_acc_history"],
                                        run_dir / "accuracy.png"))
    if (shape := P.image_shape) is not None and W1.shape[0] == np.prod(shape) and shape[-1] in (1, 3):
        out.append(figures.weights_png(W1, tuple(shape), run_dir / "weights.png"))
    out.append(figures.confusion_png(cm, P.classes, run_dir / "confusion.png"))
    return [p.name for p in out]


def complete(run_dir: Path, config: RunConfig, summary: dict, tb, written: Sequence[str],
             figures: tuple | None, **outcome) -> dict:
    """Finish a trained run: ``outcome`` and its status into the summary, ``figures`` drawn (None, or
    write_figures' arguments after run_dir), ``tb`` (its RunLogger) closed, then the sha256 of every
    file the run wrote into the summary, written last: one that says completed vouches for them all."""
    summary.update(status="completed" if outcome["diverged_at"] is None else "diverged", **outcome)
    if figures is not None:
        written = [*written, *write_figures(run_dir, *figures)]
    tb.finish(config.model_dump(), summary)  # tb/ is a log, not checksummed: before the last write
    names = dict.fromkeys([CONFIG, PREPROCESS, *written])
    summary["files"] = {n: files.file_digest(Path(run_dir) / n) for n in names}
    files.write_json(Path(run_dir) / SUMMARY, summary)
    return summary
