"""TensorBoard event files for a run, written with TensorBoard's own record writer.

A run writes into ``<run_dir>/tb/``:

* every iteration: ``loss`` (the values of loss.csv, step = iteration);
* every epoch record (step = the ``iteration`` column of epochs.csv):
  ``accuracy/train``, ``accuracy/val``, ``lr``;
* at the first and last epoch records, and at records at least ``WEIGHTS_EVERY``
  (200) iterations apart and at most about ``MAX_PICTURES`` (50) a run: a
  histogram of each weight matrix (``weights/W1`` ...) and the first-layer
  weights as one picture (``weights/first_layer``) when the inputs are images
  (each epoch of a short CIFAR-10 run; every 34th 6-iteration digits epoch);
* at the end: the run's config through the hparams plugin (the run is one
  session of TensorBoard's HParams tab), with ``hparams/final_val_acc``,
  ``hparams/best_val_acc``, ``hparams/final_train_acc`` and ``hparams/final_loss``
  (from summary.json) among its metrics.

The event files are logs, appended as the run goes (TensorBoard's format),
so they are the one part of a run not written through ``fcnet.files`` and
not among the checksums of summary.json: a damaged or missing tb/ never
makes a finished run train again.  A write that fails (a full disk) is a
write failure like any other: one ``fcnet: error: cannot write ...`` line,
the run stops, its checkpoint and files stay intact and ``--resume``
continues (``--no-tensorboard`` runs without the logs).  Records are kept
in memory between flushes and written with unbuffered writes, so a failed
flush leaves nothing behind that could fail again when the file is closed
or collected.

Only the ``tensorboard`` package is needed (no TensorFlow, no torch), so both
backends log the same way.  Without it installed, or with ``enabled=False``
(``--no-tensorboard``), :meth:`RunLogger.open` returns a logger that writes
nothing.  A resumed run marks its restart step, so TensorBoard drops the
events a killed run had written past its last checkpoint.

Cost, measured on 2 busy cores: ~17 us per loss scalar, ~2-3 ms per epoch
record of a digits net (histograms, a 71x71 picture), ~0.13 s per epoch of a
CIFAR-10 net with 100 hidden units (its 300 KB picture); small beside an
iteration except for digits-sized toys.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fcnet import files

TB_DIR = "tb"
METRICS = ("final_val_acc", "best_val_acc", "final_train_acc", "final_loss")  # summary.json keys
WEIGHTS_EVERY = 200  # iterations between weight histograms and pictures, at least
MAX_PICTURES = 50  # and at most about this many a run (best-cpu's 1536-unit picture takes 0.3 s)
FLUSH_SECS = 5.0  # a run being watched shows its progress within seconds
_FILES = itertools.count()  # event file names unique within a process


class RunLogger:
    """TensorBoard logging of one run; a no-op when it has no writer.

    Records go through tensorboard's own ``RecordWriter``, synchronously: its
    threaded ``EventFileWriter`` costs a thread switch per event (40-90 us
    measured on 2 busy cores, a third of a digits iteration)."""

    def __init__(self, path: Path | None = None):
        self._path, self._file, self._records = path, None, None
        self._pictured: int | None = None  # step of the last weight histograms and picture
        self.every = WEIGHTS_EVERY  # iterations between them, at least
        self._buf = io.BytesIO()  # records since the last flush
        self._flushed = time.monotonic()
        if path is not None:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.summary.writer.record_writer import RecordWriter

            try:
                self._file = open(path, "wb", buffering=0)
            except OSError as err:
                raise files.write_error(path, err) from None
            self._records, self._Event = RecordWriter(self._buf), Event

    @classmethod
    def open(cls, run_dir: str | Path, enabled: bool = True, start_step: int = 0,
             total_steps: int | None = None) -> RunLogger:
        """A logger writing a new event file into ``run_dir/tb``, or, when not
        ``enabled`` or without the tensorboard package, one that writes nothing.

        ``start_step``: the iteration training (re)starts from; events at or
        after it from an earlier, interrupted attempt are superseded.
        ``total_steps``: the run's length, which spaces the weight pictures so a
        run has at most about ``MAX_PICTURES`` of them.
        """
        if not enabled:
            return cls()
        try:
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer import record_writer  # noqa: F401
        except ImportError:
            return cls()  # the writer is optional: the CSVs and PNGs stay the record
        _use_fast_crc()
        tb = files.ensure_dir(Path(run_dir) / TB_DIR)
        # the name TensorBoard's EventFileWriter gives; readers take files in name order
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        logger = cls(tb / f"{name}.{next(_FILES):06d}")  # padded: name order is write order
        if total_steps:
            logger.every = max(WEIGHTS_EVERY, int(total_steps) // MAX_PICTURES)
        logger._event(event_pb2.Event(file_version="brain.Event:2"))
        restart = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        logger._event(event_pb2.Event(step=int(start_step), session_log=restart))
        logger.flush()
        return logger

    @property
    def enabled(self) -> bool:
        return self._file is not None

    # ------------------------------------------------------------------ writing
    def _event(self, event) -> None:
        event.wall_time = time.time()
        self._records.write(event.SerializeToString())
        if time.monotonic() - self._flushed >= FLUSH_SECS:
            self.flush()

    def flush(self) -> None:
        """Write the records kept since the last flush; a failure is one FcnetError
        line and closes the file (nothing is left to fail again)."""
        self._flushed = time.monotonic()
        if self._file is None or not self._buf.tell():
            return
        data = memoryview(self._buf.getvalue())
        self._buf.seek(0)
        self._buf.truncate()
        try:
            while data:
                data = data[self._file.write(data):]
        except OSError as err:
            self._file.close()  # unbuffered: closing writes nothing
            self._file = self._records = None
            raise files.write_error(self._path, err) from None

    def _add(self, step: int, values: list) -> None:
        event = self._Event(step=int(step))
        event.summary.value.extend(values)
        self._event(event)

    def scalars(self, step: int, **values: float | None) -> None:
        """One scalar per keyword (tag = its name), at ``step``; None is skipped."""
        if self._file is None:
            return
        event = self._Event(step=int(step))  # filled in place: half the cost of nested constructors
        for k, v in values.items():
            if v is not None:
                event.summary.value.add(tag=k, simple_value=float(v))
        self._event(event)

    def losses(self, start: int, values: list[float]) -> None:
        """``loss`` at steps start, start + 1, ... (a torch epoch's iterations)."""
        for i, v in enumerate(values):
            self.scalars(start + i, loss=v)

    def epoch(self, step: int, train_acc: float, val_acc: float, lr: float,
              weights: Callable[[], Mapping[str, np.ndarray]] | None = None,
              image_shape=None, last: bool = False) -> None:
        """An epoch record: accuracies and lr; and, on the first record, the
        ``last`` one and at least ``self.every`` iterations after the previous
        picture, a histogram per weight matrix of ``weights()`` ({'W1': (D, H1),
        ...}, called only then) and W1 as a picture when the inputs are images
        of ``image_shape``.  A digits epoch is 6 iterations: pictures at every
        record cost a quarter of its study's time."""
        if self._file is None:
            return
        self.scalars(step, **{"accuracy/train": train_acc, "accuracy/val": val_acc, "lr": lr})
        due = self._pictured is None or last or step - self._pictured >= self.every
        if weights is None or not due:
            return
        from tensorboard.compat.proto import summary_pb2

        self._pictured = step
        W = weights()
        values = [summary_pb2.Summary.Value(tag=f"weights/{name}", histo=_histogram(w))
                  for name, w in W.items()]
        picture = first_layer_image(W["W1"], image_shape) if "W1" in W else None
        if picture is not None:
            values.append(summary_pb2.Summary.Value(tag="weights/first_layer",
                                                    image=_image(picture)))
        if values:
            self._add(step, values)

    def hparams(self, config: Mapping[str, Any], metrics: Mapping[str, float | None],
                step: int = 0, ok: bool = True) -> None:
        """The run as one session of the HParams tab: its config values and, as
        scalars ``hparams/<name>``, its final metrics."""
        if self._file is None:
            return
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        self._add(0, list(hparams_pb(hparam_values(config)).value))
        self.scalars(step, **{f"hparams/{k}": v for k, v in metrics.items()
                              if v is not None and math.isfinite(v)})
        end = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(
            status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE,
            end_time_secs=time.time()))
        self._add(step, [summary_pb2.Summary.Value(
            tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(end),
            tensor=metadata.NULL_TENSOR)])

    def finish(self, config: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        """Write the finished run's hparams session (metrics from its summary), then close."""
        self.hparams(config, {k: summary.get(k) for k in METRICS},
                     step=int(summary.get("iterations") or 0), ok=summary.get("status") == "completed")
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = self._records = None


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C, as tensorboard's pywrap_tensorflow.masked_crc32c, in C."""
    import google_crc32c

    x = google_crc32c.value(data)
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _use_fast_crc() -> None:
    """TensorBoard's record writer checksums every byte in pure Python (0.5 us a byte
    measured: 0.17 s for one 300 KB picture of 100 CIFAR-10 units, 1.7 s for 1,000
    units); with google-crc32c installed it gets the same checksum in C.  Readers
    verify it, so the tests reading events back also check that the two agree."""
    try:
        import google_crc32c  # noqa: F401
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return
    if hasattr(record_writer, "masked_crc32c"):
        record_writer.masked_crc32c = _masked_crc32c


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


def _histogram(W: np.ndarray, bins: int = 30):
    """A HistogramProto of the values of W (any shape)."""
    from tensorboard.compat.proto import summary_pb2

    v = np.asarray(W, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return summary_pb2.HistogramProto()
    counts, edges = np.histogram(v, bins=bins)
    return summary_pb2.HistogramProto(min=float(v.min()), max=float(v.max()), num=float(v.size),
                                      sum=float(v.sum()), sum_squares=float(v @ v),
                                      bucket_limit=edges[1:].tolist(), bucket=counts.tolist())


def _image(picture: np.ndarray):
    """A PNG-encoded Summary.Image of an (H, W, C) picture in [0, 1]."""
    from PIL import Image
    from tensorboard.compat.proto import summary_pb2

    a = np.clip(np.asarray(picture, dtype=np.float64), 0.0, 1.0)
    a = np.round(a * 255).astype(np.uint8)
    h, w, c = a.shape
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if c == 1 else a).save(buf, format="PNG", compress_level=1)
    return summary_pb2.Summary.Image(height=h, width=w, colorspace=c,
                                     encoded_image_string=buf.getvalue())
