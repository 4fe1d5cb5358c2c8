"""TensorBoard event files of a run (``<run_dir>/tb/``, one per attempt, through torch's
``SummaryWriter``): loss and epoch records at about ``SCALAR_POINTS`` steps (an event costs
~50 us, a digits iteration ~250 us; the CSVs keep every value), weight histograms and W1 as a
picture, and the config with summary.json's ``METRICS`` as one HParams session.  Logs, not
checksummed: a failed write is one ``fcnet: error`` line and drops the writer; ``--resume``
opens a new file whose ``purge_step`` supersedes the killed attempt's later events."""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from fcnet import files
from fcnet.report.grid import first_layer_image

TB_DIR = "tb"
METRICS = ("final_val_acc", "best_val_acc", "final_train_acc", "final_loss")  # summary.json keys
SCALAR_POINTS = 100  # loss points and epoch records a run writes, about
WEIGHTS_EVERY = 200  # iterations between weight histograms and pictures, at least
MAX_PICTURES = 50  # and at most about this many a run
PICTURE_SPACING = 50  # a picture that took t s waits PICTURE_SPACING * t s: at most 2% of a run
FLUSH_SECS = 5.0  # a run being watched shows its progress within seconds
_OURS: weakref.WeakSet = weakref.WeakSet()  # the writers' threads


def _quiet_writer_threads() -> None:
    """Keep a failed writer thread's traceback off stderr (our next call reports it in one line)."""
    previous = threading.excepthook
    if getattr(previous, "fcnet", False):
        return

    def hook(args) -> None:
        if args.thread not in _OURS:
            previous(args)

    hook.fcnet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class RunLogger:
    """TensorBoard logging of one run; a no-op when it has no writer."""

    def __init__(self, writer=None, folder: Path | None = None, total_steps: int | None = None):
        self._w, self._folder = writer, folder
        total = int(total_steps or 0)
        self.every = max(WEIGHTS_EVERY, total // MAX_PICTURES)  # iterations between pictures
        self.scalar_every = max(1, math.ceil(total / SCALAR_POINTS))
        self._pictured: int | None = None  # step of the last weight pictures
        self._picture_due = 0.0  # monotonic time before which no picture is made
        self._last_loss: tuple[int, float] | None = None  # written at the end if skipped
        self._last_epoch: int | None = None

    @classmethod
    def open(cls, run_dir: str | Path, enabled: bool = True, start_step: int = 0,
             total_steps: int | None = None) -> RunLogger:
        """A logger of a new event file in ``run_dir/tb`` (a no-op one when not ``enabled`` or without
        the writer) superseding events from ``start_step`` on; ``total_steps`` spaces the records."""
        if not enabled:
            return cls()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: the CSVs and PNGs stay the record
            return cls()
        folder = files.ensure_dir(Path(run_dir) / TB_DIR)
        _quiet_writer_threads()
        before = set(threading.enumerate())
        try:
            writer = SummaryWriter(str(folder), purge_step=int(start_step) or None,
                                   max_queue=1000, flush_secs=FLUSH_SECS)
        except OSError as err:
            raise files.write_error(_where(err, folder), err) from None
        _OURS.update(set(threading.enumerate()) - before)  # its writing thread
        return cls(writer, folder, total_steps)

    enabled = property(lambda self: self._w is not None)

    def _call(self, method: str, *args, **kwargs) -> None:
        """One call of the writer (``method`` may be dotted); a failure is one FcnetError line
        and drops the writer, whose thread has stopped."""
        if self._w is None:
            return
        try:
            attrgetter(method)(self._w)(*args, **kwargs)
        except OSError as err:
            self._w = None
            raise files.write_error(_where(err, self._folder), err) from None

    def _loss(self, step: int, v: float) -> None:
        self._call("add_scalar", "loss", v if math.isfinite(v) else float("nan"), step)

    def flush(self) -> None:
        """Write what the writer holds (before a checkpoint, so a resume leaves no gap)."""
        self._call("flush")

    def scalars(self, step: int, **values: float | None) -> None:
        """One scalar per keyword (tag = its name) at ``step``, None skipped; ``loss`` is
        spaced as by :meth:`losses`."""
        if "loss" in values:
            self.losses(step, [values.pop("loss")])
        for k, v in values.items():
            if v is not None:
                self._call("add_scalar", k, float(v), int(step))

    def losses(self, start: int, values: list[float]) -> None:
        """``loss`` at steps start, start + 1, ...: those on the ``scalar_every`` grid."""
        if self._w is None or not len(values):
            return
        every = self.scalar_every
        for step in range(-(-start // every) * every, start + len(values), every):
            self._loss(step, float(values[step - start]))
        self._last_loss = (start + len(values) - 1, float(values[-1]))

    def epoch(self, step: int, train_acc: float, val_acc: float, lr: float,
              weights: Callable[[], Mapping[str, np.ndarray]] | None = None,
              image_shape=None, last: bool = False) -> None:
        """Accuracies and lr, ``scalar_every`` iterations after the previous record at least (or
        the first or ``last``); on the first, the ``last`` and ``every`` iterations after the
        previous picture, a histogram per matrix of ``weights()`` ({'W1': (D, H1), ...}, called
        only then) and W1 as a picture when the inputs are images of ``image_shape``."""
        if self._w is None:
            return
        if last or self._last_epoch is None or step - self._last_epoch >= self.scalar_every:
            self._last_epoch = step
            self.scalars(step, **{"accuracy/train": train_acc, "accuracy/val": val_acc, "lr": lr})
        due = self._pictured is None or last or (step - self._pictured >= self.every and
                                                 time.monotonic() >= self._picture_due)
        if weights is None or not due:
            return
        first, started, self._pictured = self._pictured is None, time.monotonic(), step
        W = weights()
        for name, w in W.items():
            v = np.asarray(w, dtype=np.float64).ravel()
            if (v := v[np.isfinite(v)]).size:
                self._call("add_histogram", f"weights/{name}", v, int(step), bins=30)
        picture = first_layer_image(W["W1"], image_shape) if "W1" in W else None
        if picture is not None:
            self._call("add_image", "weights/first_layer", np.clip(picture, 0.0, 1.0),
                       int(step), dataformats="HWC")
        took = time.monotonic() - started
        # a few ms each, 20 of them were 7% of a digits run; the first one pays the imports
        self._picture_due = 0.0 if first else started + PICTURE_SPACING * took

    def finish(self, config: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        """The last loss point, the run as one HParams session (config values; its summary's
        ``METRICS`` as scalars ``hparams/<name>``), then close."""
        if self._w is None:
            return
        if self._last_loss is not None and self._last_loss[0] % self.scalar_every:
            self._loss(*self._last_loss)
        from torch.utils.tensorboard.summary import hparams

        step = int(summary.get("iterations") or 0)
        metrics = {f"hparams/{k}": float(v) for k in METRICS
                   if (v := summary.get(k)) is not None and math.isfinite(v)}
        # the plugin takes bool, number or string (lists as '100,50'); unset fields are left out
        flat = {k: ",".join(map(str, v)) if isinstance(v, list | tuple) else v for k, v in config.items()}
        values = {k: v if isinstance(v, bool | int | float | str) else str(v)
                  for k, v in flat.items() if v is not None}
        _, start, end = hparams(values, metrics)
        for session in (start, end):  # the session's start and end, not an experiment
            self._call("file_writer.add_summary", session, step)
        self.scalars(step, **metrics)
        self.close()

    def close(self) -> None:
        self._call("close")
        self._w = None


def _where(err: OSError, folder: Path | None):
    """The file a failed write names (the writer's layer gives it as bytes), else tb/."""
    return os.fsdecode(err.filename) if err.filename else folder
