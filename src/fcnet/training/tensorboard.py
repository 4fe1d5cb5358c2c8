"""TensorBoard event files of a run (``<run_dir>/tb/``, one per attempt, through the tensorboard
package's own ``EventFileWriter``: no torch import, 1.5 s a process): loss and epoch records at
about ``SCALAR_POINTS`` steps (an event costs ~35 us, a digits iteration ~170 us; the CSVs keep
every value), weight histograms and W1 as a picture, and the config with summary.json's
``METRICS`` as one HParams session.  Logs, not checksummed: a failed write is one ``fcnet: error``
line and drops the writer; ``--resume`` opens a new file whose restart event supersedes the
killed attempt's events from its checkpoint on."""

from __future__ import annotations

import functools
import io
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
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
PICTURE_SPACING = 100  # a picture that took t s (its checksum included) waits PICTURE_SPACING * t s: 1%
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
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:  # optional: the CSVs and PNGs stay the record
            return cls()
        folder = files.ensure_dir(Path(run_dir) / TB_DIR)
        _quiet_writer_threads()
        _native_checksums()
        before = set(threading.enumerate())
        try:
            writer = EventFileWriter(str(folder), max_queue_size=1000, flush_secs=FLUSH_SECS)
        except OSError as err:
            raise files.write_error(_where(err, folder), err) from None
        _OURS.update(set(threading.enumerate()) - before)  # its writing thread
        logger = cls(writer, folder, total_steps)
        if start_step:  # a restart: TensorBoard drops this run's earlier events from here on
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog

            logger._call("add_event", Event(wall_time=time.time(), step=int(start_step),
                                            session_log=SessionLog(status=SessionLog.START)))
        return logger

    enabled = property(lambda self: self._w is not None)

    def _call(self, method: str, *args) -> None:
        """One call of the writer; a failure is one FcnetError line and drops the writer,
        whose thread has stopped."""
        if self._w is None:
            return
        try:
            getattr(self._w, method)(*args)
        except OSError as err:
            self._w = None
            raise files.write_error(_where(err, self._folder), err) from None

    def _add(self, step: int, *values) -> None:
        """One event at ``step`` holding these ``Summary.Value``s."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._call("add_event", Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))

    def _loss(self, step: int, v: float) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._add(step, Summary.Value(tag="loss", simple_value=v if math.isfinite(v) else float("nan")))

    def flush(self) -> None:
        """Write what the writer holds (before a checkpoint, so a resume leaves no gap)."""
        self._call("flush")

    def scalars(self, step: int, **values: float | None) -> None:
        """One scalar per keyword (tag = its name) at ``step``, None skipped, all in one event
        (each event is a write of its own); ``loss`` is spaced as by :meth:`losses`."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        if "loss" in values:
            self.losses(step, [values.pop("loss")])
        if kept := [Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items() if v is not None]:
            self._add(step, *kept)

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
                self._add(step, _histogram(f"weights/{name}", v))
        picture = first_layer_image(W["W1"], image_shape) if "W1" in W else None
        sent = 0  # the picture's bytes, which the writer thread checksums after this
        if picture is not None:
            value = _image("weights/first_layer", picture)
            sent = len(value.image.encoded_image_string)
            self._add(step, value)
        took = time.monotonic() - started + sent * _crc_seconds_per_byte()
        # a few ms each, 20 of them were 7% of a digits run; the first one pays the imports
        self._picture_due = 0.0 if first else started + PICTURE_SPACING * took

    def finish(self, config: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        """The last loss point, the run as one HParams session (config values; its summary's
        ``METRICS`` as scalars ``hparams/<name>``), then close."""
        if self._w is None:
            return
        if self._last_loss is not None and self._last_loss[0] % self.scalar_every:
            self._loss(*self._last_loss)
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        step = int(summary.get("iterations") or 0)
        metrics = {f"hparams/{k}": float(v) for k in METRICS
                   if (v := summary.get(k)) is not None and math.isfinite(v)}
        # the plugin takes bool, number or string (lists as '100,50'); unset fields are left out
        start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for k, v in config.items():
            if v is None:
                continue
            v = ",".join(map(str, v)) if isinstance(v, list | tuple) else v
            kind = ("bool_value" if isinstance(v, bool) else "number_value"
                    if isinstance(v, int | float) else "string_value")
            setattr(start.hparams[k], kind, v if kind != "string_value" else str(v))
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
        # the session's start and end (the plugin infers the experiment from its sessions)
        for tag, data in ((metadata.SESSION_START_INFO_TAG, {"session_start_info": start}),
                          (metadata.SESSION_END_INFO_TAG, {"session_end_info": end})):
            self._add(step, Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(
                plugin_data_pb2.HParamsPluginData(**data))))
        self.scalars(step, **metrics)
        self.close()

    def close(self) -> None:
        self._call("close")
        self._w = None


@functools.cache
def _native_checksums() -> bool:
    """Whether the writer checksums its records in C.  Without TensorFlow, tensorboard's event writer
    computes each record's masked CRC-32C in Python, 0.14 us a byte (42 ms for a CIFAR-10 picture,
    12 s of a CIFAR-10 study's workers); google-crc32c's C code gives the same values 1,000x faster.
    The writer looks ``masked_crc32c`` up in its module for every record, so it is replaced there,
    once its values have been checked against tensorboard's own."""
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if google_crc32c.implementation != "c":  # its pure-Python fallback is no faster
        return False
    theirs = record_writer.masked_crc32c

    def masked_crc32c(data: bytes) -> int:  # TFRecord's mask: rotate right by 15, add a constant
        x = google_crc32c.value(bytes(data))
        return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    sample = bytes(range(256)) * 3 + b"fcnet"
    if any(masked_crc32c(d) != theirs(d) for d in (b"", sample, sample[::-1])):
        return False
    record_writer.masked_crc32c = masked_crc32c
    return True


@functools.cache
def _crc_seconds_per_byte() -> float:
    """The writer thread's CRC-32C of an event, a byte (tensorboard's own in Python: about 0.14 us,
    42 ms for a CIFAR-10 picture's 300 kB; google-crc32c's: 0.1 ns), measured once."""
    from tensorboard.summary.writer.record_writer import masked_crc32c

    data = bytes(range(256)) * 32

    def once() -> float:
        started = time.perf_counter()
        masked_crc32c(data)
        return time.perf_counter() - started

    return min(once() for _ in range(3)) / len(data)  # the fastest: a busy machine slows some


def _histogram(tag: str, v: np.ndarray):
    """A histogram of v (M,) in 30 equal bins: bucket i counts the values up to bucket_limit i."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

    counts, edges = np.histogram(v, bins=30)
    return Summary.Value(tag=tag, histo=HistogramProto(
        min=float(v.min()), max=float(v.max()), num=v.size, sum=float(v.sum()),
        sum_squares=float(v @ v), bucket_limit=edges[1:].tolist(), bucket=counts.tolist()))


def _image(tag: str, picture: np.ndarray):
    """The picture (H, W, 3) or (H, W[, 1]) of values in [0, 1] as a PNG."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    pixels = (np.clip(picture, 0.0, 1.0) * 255).round().astype(np.uint8)
    pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return Summary.Value(tag=tag, image=Summary.Image(
        height=pixels.shape[0], width=pixels.shape[1], colorspace=1 if pixels.ndim == 2 else 3,
        encoded_image_string=buf.getvalue()))


def _where(err: OSError, folder: Path | None):
    """The file a failed write names (the writer's layer gives it as bytes), else tb/."""
    return os.fsdecode(err.filename) if err.filename else folder
