"""TensorBoard event files for a run, through PyTorch's ``SummaryWriter``.

A run writes into ``<run_dir>/tb/`` (one event file per attempt):

* ``loss``: the values of loss.csv at about ``SCALAR_POINTS`` (100) iterations
  spread over the run (every iteration of a run of up to 100; TensorBoard itself
  keeps at most 1,000 points of a curve by default), and at the last one;
* epoch records (step = the ``iteration`` column of epochs.csv), as many again at
  most: ``accuracy/train``, ``accuracy/val``, ``lr``;
* at the first and last epoch records, and at records at least ``WEIGHTS_EVERY``
  (200) iterations apart and at most about ``MAX_PICTURES`` (50) a run: a
  histogram of each weight matrix (``weights/W1`` ...) and the first-layer
  weights as one picture (``weights/first_layer``) when the inputs are images;
  a picture that takes long to make (a wide CIFAR-10 net's) is spaced further, so
  pictures cost at most about 1/``PICTURE_SPACING`` of the run;
* at the end: the run's config through the hparams plugin (the run is one
  session of TensorBoard's HParams tab), with ``hparams/final_val_acc``,
  ``hparams/best_val_acc``, ``hparams/final_train_acc`` and ``hparams/final_loss``
  (from summary.json) among its metrics.

Why so few points: each event costs about 50 us through the writer (a digits
iteration is about 250 us), and a study trains a hundred runs or more; loss.csv
and epochs.csv keep every value.

The event files are logs, appended as the run goes, so they are the one part of
a run not written through ``fcnet.files`` and not among the checksums of
summary.json: a damaged or missing tb/ never makes a finished run train again.
A write that fails (a full disk) is one ``fcnet: error: cannot write ...`` line;
the run stops, its checkpoint and files stay intact and ``--resume`` continues
(``--no-tensorboard`` runs without the logs).  The writer's own thread stops on
the error; it is never asked to write again (no second failure, no traceback).

Needs torch and tensorboard (bin/setup installs both); without them, or with
``enabled=False`` (``--no-tensorboard``), :meth:`RunLogger.open` returns a logger
that writes nothing.  A resumed run opens its writer with ``purge_step`` = its
restart step, so TensorBoard drops the events a killed run had written past its
last checkpoint.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fcnet import files

TB_DIR = "tb"
METRICS = ("final_val_acc", "best_val_acc", "final_train_acc", "final_loss")  # summary.json keys
SCALAR_POINTS = 100  # loss points and epoch records a run writes, about
WEIGHTS_EVERY = 200  # iterations between weight histograms and pictures, at least
MAX_PICTURES = 50  # and at most about this many a run
PICTURE_SPACING = 50  # a picture that took t s waits PICTURE_SPACING * t s (when t > 50 ms)
FLUSH_SECS = 5.0  # a run being watched shows its progress within seconds
_OURS: weakref.WeakSet = weakref.WeakSet()  # the writers' threads


def _writer_class():
    """torch's SummaryWriter (or tensorboardX's, the same API); None without either."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return None
    return SummaryWriter


def _quiet_writer_threads() -> None:
    """A failed write ends the writer's thread with the error, which it also hands to our
    next call (and that is reported as one line): keep the thread's own traceback off
    stderr.  Other threads' exceptions go to the hook as before."""
    previous = threading.excepthook
    if getattr(previous, "fcnet", False):
        return

    def hook(args) -> None:
        if args.thread is not None and args.thread in _OURS:
            return
        previous(args)

    hook.fcnet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class RunLogger:
    """TensorBoard logging of one run; a no-op when it has no writer."""

    def __init__(self, writer=None, folder: Path | None = None, total_steps: int | None = None):
        self._w, self._folder = writer, folder
        self.every = WEIGHTS_EVERY  # iterations between weight pictures, at least
        self.scalar_every = max(1, math.ceil((total_steps or 0) / SCALAR_POINTS))
        self._pictured: int | None = None  # step of the last weight histograms and picture
        self._picture_due = 0.0  # monotonic time before which no slow picture is made
        self._last_loss: tuple[int, float] | None = None  # written at the end if skipped
        self._last_epoch: int | None = None
        self._pictures = 0

    @classmethod
    def open(cls, run_dir: str | Path, enabled: bool = True, start_step: int = 0,
             total_steps: int | None = None) -> RunLogger:
        """A logger writing a new event file into ``run_dir/tb``, or, when not
        ``enabled`` or without a writer installed, one that writes nothing.

        ``start_step``: the iteration training (re)starts from; events at or
        after it from an earlier, interrupted attempt are superseded.
        ``total_steps``: the run's length, which spaces the scalars and the weight
        pictures (without it every loss and epoch record is written).
        """
        writer_class = _writer_class() if enabled else None
        if writer_class is None:
            return cls()  # the writer is optional: the CSVs and PNGs stay the record
        folder = files.ensure_dir(Path(run_dir) / TB_DIR)
        _quiet_writer_threads()
        before = set(threading.enumerate())
        try:
            writer = writer_class(str(folder), purge_step=int(start_step) or None,
                                  max_queue=1000, flush_secs=FLUSH_SECS)
        except OSError as err:
            raise files.write_error(_where(err, folder), err) from None
        _OURS.update(set(threading.enumerate()) - before)  # its writing thread
        logger = cls(writer, folder, total_steps)
        if total_steps:
            logger.every = max(WEIGHTS_EVERY, int(total_steps) // MAX_PICTURES)
        return logger

    @property
    def enabled(self) -> bool:
        return self._w is not None

    # ------------------------------------------------------------------ writing
    def _call(self, method: str, *args, **kwargs) -> None:
        """One call of the writer; a failure is one FcnetError line and drops the writer."""
        if self._w is None:
            return
        try:
            getattr(self._w, method)(*args, **kwargs)
        except OSError as err:
            self._w = None  # its thread has stopped: nothing is left to fail again
            raise files.write_error(_where(err, self._folder), err) from None

    def flush(self) -> None:
        """Write what the writer holds (before a checkpoint, so a resume leaves no gap)."""
        self._call("flush")

    def scalars(self, step: int, **values: float | None) -> None:
        """One scalar per keyword (tag = its name), at ``step``; None is skipped.
        ``loss`` goes through :meth:`losses` (spaced)."""
        if self._w is None:
            return
        if "loss" in values:
            self.losses(step, [values.pop("loss")])
        for k, v in values.items():
            if v is not None:
                self._call("add_scalar", k, float(v), int(step))

    def losses(self, start: int, values: list[float]) -> None:
        """``loss`` at steps start, start + 1, ...: those on the ``scalar_every`` grid."""
        if self._w is None or not len(values):
            return
        for step in range(-(-start // self.scalar_every) * self.scalar_every,
                          start + len(values), self.scalar_every):
            v = float(values[step - start])
            self._call("add_scalar", "loss", v if math.isfinite(v) else float("nan"), step)
        self._last_loss = (start + len(values) - 1, float(values[-1]))

    def epoch(self, step: int, train_acc: float, val_acc: float, lr: float,
              weights: Callable[[], Mapping[str, np.ndarray]] | None = None,
              image_shape=None, last: bool = False) -> None:
        """An epoch record: accuracies and lr (at least ``scalar_every`` iterations after
        the previous one, or the first or ``last``); and, on the first record, the
        ``last`` one and at least ``self.every`` iterations after the previous picture, a
        histogram per weight matrix of ``weights()`` ({'W1': (D, H1), ...}, called only
        then) and W1 as a picture when the inputs are images of ``image_shape``."""
        if self._w is None:
            return
        if last or self._last_epoch is None or step - self._last_epoch >= self.scalar_every:
            self._last_epoch = step
            for tag, v in (("accuracy/train", train_acc), ("accuracy/val", val_acc), ("lr", lr)):
                if v is not None:
                    self._call("add_scalar", tag, float(v), int(step))
        due = self._pictured is None or last or (step - self._pictured >= self.every and
                                                 time.monotonic() >= self._picture_due)
        if weights is None or not due:
            return
        started = time.monotonic()
        self._pictured = step
        W = weights()
        for name, w in W.items():
            v = np.asarray(w, dtype=np.float64).ravel()
            v = v[np.isfinite(v)]
            if v.size:
                self._call("add_histogram", f"weights/{name}", v, int(step), bins=30)
        picture = first_layer_image(W["W1"], image_shape) if "W1" in W else None
        if picture is not None:
            self._call("add_image", "weights/first_layer", np.clip(picture, 0.0, 1.0),
                       int(step), dataformats="HWC")
        took = time.monotonic() - started
        slow = took > 0.05 and self._pictures > 0  # the first one pays the imports
        self._picture_due = started + PICTURE_SPACING * took if slow else 0.0
        self._pictures += 1

    def hparams(self, config: Mapping[str, Any], metrics: Mapping[str, float | None],
                step: int = 0) -> None:
        """The run as one session of the HParams tab: its config values and, as
        scalars ``hparams/<name>``, its final metrics.  (Without an experiment summary,
        TensorBoard lists the fields that differ between the runs it shows.)"""
        if self._w is None:
            return
        from torch.utils.tensorboard.summary import hparams

        values = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        _, start, end = hparams(hparam_values(config), {f"hparams/{k}": v
                                                        for k, v in values.items()})
        for summary in (start, end):  # the session's start and end, not an experiment
            try:
                self._w.file_writer.add_summary(summary, int(step))
            except OSError as err:
                self._w = None
                raise files.write_error(_where(err, self._folder), err) from None
        for k, v in values.items():
            self._call("add_scalar", f"hparams/{k}", float(v), int(step))

    def finish(self, config: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        """Write the last loss point, the finished run's hparams session (metrics from its
        summary), then close."""
        if self._last_loss is not None and self._last_loss[0] % self.scalar_every:
            step, v = self._last_loss
            self._call("add_scalar", "loss", v if math.isfinite(v) else float("nan"), step)
        self.hparams(config, {k: summary.get(k) for k in METRICS},
                     step=int(summary.get("iterations") or 0))
        self.close()

    def close(self) -> None:
        if self._w is not None:
            self._call("close")
            self._w = None


def _where(err: OSError, folder: Path | None):
    """The file a failed write names (the writer's layer gives it as bytes), else tb/."""
    import os

    return os.fsdecode(err.filename) if err.filename else folder


def hparam_values(config: Mapping[str, Any]) -> dict[str, bool | float | str]:
    """Config values as the hparams plugin takes them: bool, number or string
    (lists as '100,50'); unset (None) fields are left out."""
    out: dict[str, bool | float | str] = {}
    for k, v in config.items():
        if v is None:
            continue
        if isinstance(v, list | tuple):
            v = ",".join(str(x) for x in v)
        out[k] = v if isinstance(v, bool | int | float | str) else str(v)
    return out


def weight_matrices(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weight matrices W1, W2, ... of a NumPy model's params (biases left out)."""
    return {k: v for k, v in params.items() if k.startswith("W")}


def first_layer_image(W1: np.ndarray, image_shape) -> np.ndarray | None:
    """W1 (D, H) as one (rows, cols, C) picture in [0, 1], each unit a tile, as
    weights.png draws it; None when the inputs are not images (PCA, toy)."""
    from fcnet.report.grid import visualize_grid

    if image_shape is None:
        return None
    shape = tuple(int(v) for v in image_shape)
    h, w, c = shape if len(shape) == 3 else (*shape, 1)
    if W1.ndim != 2 or W1.shape[0] != h * w * c or c not in (1, 3):
        return None
    tiles = np.asarray(W1, dtype=np.float64).T.reshape(W1.shape[1], h, w, c)
    return visualize_grid(tiles, ubound=1.0, padding=max(1, h // 16))
