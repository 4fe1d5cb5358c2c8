"""TensorBoard event files of runs, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import builtins
import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fcnet.config import RunConfig, load_config, make_config
from fcnet.training import train_population, train_run
from fcnet.training.tensorboard import RunLogger

ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                         reason="the tensorboard package (extra 'torch'/'dev' of bin/setup) is needed")


def digits(**kw) -> RunConfig:
    return make_config({"dataset": "digits", "iters": 60, "batch_size": 50, "lr": 1e-2,
                        "reg": 1e-3, "std": 1e-2, **kw})


def events(run_dir: Path):
    acc = ea.EventAccumulator(str(run_dir / "tb"), size_guidance={
        ea.SCALARS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0})
    return acc.Reload()


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def pictured(steps: list[int], last: bool = True) -> list[int]:
    """The epoch records that carry weight pictures: the first, the last, and those
    at least WEIGHTS_EVERY iterations after the previous picture."""
    from fcnet.training.tensorboard import WEIGHTS_EVERY

    out: list[int] = []
    for i, step in enumerate(steps):
        if not out or step - out[-1] >= WEIGHTS_EVERY or (last and i == len(steps) - 1):
            out.append(step)
    return out


def check_run(run_dir: Path, hidden: list[int], lr: float = 1e-2) -> None:
    """The events hold loss.csv and epochs.csv, a picture and histograms per epoch
    (at most every WEIGHTS_EVERY iterations), and the config and final metrics for
    the HParams tab."""
    acc = events(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    loss = rows(run_dir / "loss.csv")
    got = acc.Scalars("loss")
    assert [e.step for e in got] == [int(r["iteration"]) for r in loss]
    np.testing.assert_allclose([e.value for e in got], [float(r["loss"]) for r in loss], rtol=1e-6)

    epochs = rows(run_dir / "epochs.csv")
    assert len(epochs) >= 2
    steps = [int(r["iteration"]) for r in epochs]
    for tag, col in [("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"), ("lr", "lr")]:
        got = acc.Scalars(tag)
        assert [e.step for e in got] == steps, tag
        np.testing.assert_allclose([e.value for e in got], [float(r[col]) for r in epochs],
                                   rtol=1e-6, err_msg=tag)

    images = acc.Images("weights/first_layer")
    assert [im.step for im in images] == pictured(steps)
    g = int(np.ceil(np.sqrt(hidden[0])))  # 8x8 digit tiles, 1 pixel apart
    assert (images[-1].width, images[-1].height) == (9 * g - 1, 9 * g - 1)
    sizes = [64, *hidden, 10]
    for i in range(len(sizes) - 1):
        hists = acc.Histograms(f"weights/W{i + 1}")
        assert [h.step for h in hists] == pictured(steps)
        assert hists[-1].histogram_value.num == sizes[i] * sizes[i + 1]

    from tensorboard.plugins.hparams import api_pb2, metadata

    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["lr"].number_value == pytest.approx(lr)
    assert start.hparams["hidden"].string_value == ",".join(map(str, hidden))
    assert start.hparams["dataset"].string_value == "digits"
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    final = acc.Scalars("hparams/final_val_acc")
    assert final[-1].value == pytest.approx(summary["final_val_acc"], rel=1e-6)
    assert final[-1].step == summary["iterations"]


def test_every_record_carries_tensorboards_own_checksum(tmp_path):
    """The records' masked CRC-32Cs (google-crc32c's C code, which bin/setup installs with the
    tensorboard extra) equal those of tensorboard's own Python CRC-32C, record by record."""
    import struct

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer

    train_run(digits(), tmp_path / "run", figures=False)
    if importlib.util.find_spec("google_crc32c"):
        assert record_writer.masked_crc32c is not masked_crc32c  # the C one writes them
    data = next((tmp_path / "run" / "tb").glob("events.*")).read_bytes()
    pos = records = 0
    while pos < len(data):  # TFRecord: length (8), its CRC (4), the event, its CRC (4)
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        body = data[pos + 12 : pos + 12 + length]
        assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(data[pos : pos + 8])
        assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == masked_crc32c(body)
        pos, records = pos + 16 + length, records + 1
    assert pos == len(data) and records > 10


def test_numpy_run_writes_its_csvs_and_pictures_as_events(tmp_path):
    train_run(digits(hidden=[20, 10]), tmp_path / "run", figures=False)
    check_run(tmp_path / "run", [20, 10])


def test_torch_run_writes_the_same_events(tmp_path):
    pytest.importorskip("torch", reason="the torch backend needs torch")
    train_run(digits(backend="torch", hidden=[16], device="cpu"), tmp_path / "run", figures=False)
    check_run(tmp_path / "run", [16])


def test_population_members_each_write_their_own_events(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    out = train_population([digits(lr=1e-2), digits(lr=2e-2)], dirs, figures=False)
    assert [s.get("population") for s in out] == [2, 2]  # trained together, not one by one
    for d, lr in zip(dirs, [1e-2, 2e-2]):
        check_run(d, [50], lr=lr)
        assert events(d).Scalars("lr")[0].value == pytest.approx(lr)


def test_no_tensorboard_flag_writes_nothing(tmp_path):
    from fcnet.cli import main

    assert main(["train", "--dataset", "digits", "--iters", "30", "--batch-size", "50",
                 "--runs-dir", str(tmp_path), "--name", "off", "--no-tensorboard"]) == 0
    run = tmp_path / "off"
    assert (run / "loss.csv").exists() and not (run / "tb").exists()
    assert load_config(run / "config.toml").tensorboard is False


def test_without_the_writer_nothing_is_written_and_nothing_fails(tmp_path, monkeypatch):
    real_import = builtins.__import__

    blocked = ("tensorboard", "tensorboardX", "torch.utils.tensorboard")

    def no_tensorboard(name, *args, **kwargs):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if any(m == b or m.startswith(b + ".")
                                                for b in blocked)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    summary = train_run(digits(), tmp_path / "run", figures=False)
    assert summary["status"] == "completed"
    assert not (tmp_path / "run" / "tb").exists()
    assert not RunLogger.open(tmp_path / "other").enabled


def test_a_resumed_run_supersedes_the_events_past_its_restart(tmp_path):
    first = RunLogger.open(tmp_path)
    for i in range(10):
        first.scalars(i, loss=float(i))
    first.close()  # killed after its checkpoint at step 5
    again = RunLogger.open(tmp_path, start_step=5)
    for i in range(5, 8):
        again.scalars(i, loss=100.0 + i)
    again.close()
    got = [(e.step, e.value) for e in events(tmp_path).Scalars("loss")]
    assert got == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 105), (6, 106), (7, 107)]


def test_the_switch_keeps_existing_run_keys_and_round_trips():
    # on (the default) is left out of the key: every run key stays as it was
    assert "tensorboard" not in RunConfig().model_dump_json(exclude_defaults=True)
    assert RunConfig(tensorboard=True).key() == RunConfig().key() != RunConfig(
        tensorboard=False).key()
    off = RunConfig(tensorboard=False)
    assert RunConfig.model_validate_json(off.model_dump_json()).tensorboard is False
    assert "tensorboard = false" in off.to_toml()


def test_a_long_run_writes_about_scalar_points_loss_and_epoch_points(tmp_path):
    """Each event costs ~50 us through the writer: a 3,000-iteration run writes the loss
    at every 30th iteration and the last (loss.csv keeps every one), and epoch records
    at least 30 iterations apart, the first and the last."""
    from fcnet.training.tensorboard import SCALAR_POINTS

    n = 3000
    loss = np.random.RandomState(0).rand(n)
    tb = RunLogger.open(tmp_path, total_steps=n)
    steps = list(range(0, n, 7))  # epochs of 7 iterations
    for i, step in enumerate(steps):
        end = steps[i + 1] if i + 1 < len(steps) else n
        tb.losses(step, list(loss[step:end]))
        tb.epoch(step, 0.1 * i, 0.2 * i, 1e-3, last=i == len(steps) - 1)
    tb.finish({"lr": 1e-3}, {"status": "completed", "iterations": n, "final_val_acc": 0.5})
    acc = events(tmp_path)
    got = acc.Scalars("loss")
    want = [*range(0, n, n // SCALAR_POINTS), n - 1]
    assert [e.step for e in got] == want
    np.testing.assert_allclose([e.value for e in got], loss[want], rtol=1e-6)
    epochs = [e.step for e in acc.Scalars("accuracy/val")]
    assert epochs[0] == 0 and epochs[-1] == steps[-1]
    assert all(b - a >= n // SCALAR_POINTS for a, b in zip(epochs[:-2], epochs[1:-1]))
    assert SCALAR_POINTS // 2 <= len(epochs) <= SCALAR_POINTS + 2


@pytest.mark.parametrize("flag", [[], ["--no-tensorboard"]])
def test_sweep_trials_write_events_unless_turned_off(tmp_path, flag):
    from fcnet.cli import main

    assert main(["sweep", "--dataset", "digits", "--iters", "30", "--batch-size", "50",
                 "--grid", "lr=1e-2,2e-2", "--dir", str(tmp_path), "--quiet", "--no-figures",
                 *flag]) == 0
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(runs) == 2
    if flag:
        assert not any((r / "tb").exists() for r in runs)
    else:  # one HParams session per trial, with its own lr
        from tensorboard.plugins.hparams import metadata

        def lr(run: Path) -> float:
            content = events(run).PluginTagToContent(metadata.PLUGIN_NAME)
            start = content[metadata.SESSION_START_INFO_TAG]
            return metadata.parse_session_start_info_plugin_data(start).hparams["lr"].number_value

        assert sorted(lr(r) for r in runs) == pytest.approx([1e-2, 2e-2])


# ----------------------------------------------------------------- tb/ beside the run's own files
def test_tb_is_not_in_the_checksums_so_damage_to_it_never_retrains(tmp_path):
    run = tmp_path / "run"
    first = train_run(digits(), run, figures=False)
    assert not [n for n in first["files"] if n.startswith("tb")]
    params = (run / "params.npz").read_bytes()
    for f in (run / "tb").iterdir():
        f.write_bytes(f.read_bytes()[:-7])  # torn, as a kill mid-write leaves it
    assert train_run(digits(), run, figures=False) == first  # reused, not retrained
    assert (run / "params.npz").read_bytes() == params
    # the torn tail (the last hparams record) is skipped, what precedes it still reads
    assert len(events(run).Scalars("loss")) == len(rows(run / "loss.csv"))


def _full_disk(monkeypatch, full: int) -> None:
    """The event files' disk fills up at the ``full``-th record written: that write
    stores half its bytes (as the kernel does), every later one fails with ENOSPC.
    (TensorBoard's writer appends each record to the file through its gfile layer.)"""
    import errno
    import os

    from tensorboard.compat.tensorflow_stub.io import gfile

    real, count = gfile.LocalFileSystem.append, [0]

    def append(fs, filename, content, binary_mode=False):
        count[0] += 1
        if count[0] > full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        if count[0] == full:
            content = content[: len(content) // 2]
        return real(fs, filename, content, binary_mode)

    monkeypatch.setattr(gfile.LocalFileSystem, "append", append)


def test_a_failing_tensorboard_write_is_one_line_and_resume_completes(tmp_path, capsys,
                                                                      monkeypatch):
    import re

    from fcnet.cli import main

    args = ["train", "--dataset", "digits", "--iters", "90", "--batch-size", "50", "--lr", "1e-2",
            "--std", "1e-2", "--quiet", "--checkpoint-every", "0", "--runs-dir", str(tmp_path)]
    assert main([*args, "--name", "straight"]) == 0
    _full_disk(monkeypatch, full=40)  # in the third epoch
    capsys.readouterr()
    assert main([*args, "--name", "r"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    run = tmp_path / "r"
    assert len(lines) == 1 and re.fullmatch(
        rf"fcnet: error: cannot write {re.escape(str(run / 'tb'))}/events\.out\.tfevents\.\S+: "
        r"No space left on device", lines[0]), lines
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "resuming" not in capsys.readouterr().err  # from its checkpoint, silently
    for name in ("params.npz", "loss.csv", "epochs.csv"):
        assert (run / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    # the torn first file and the resumed one read back as the whole loss.csv
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    first, again = [list(EventFileLoader(str(f)).Load()) for f in sorted((run / "tb").iterdir())]
    restart = [e.step for e in again if e.HasField("session_log")]
    assert len(restart) == 1 and 1 < restart[0] <= max(e.step for e in first)  # steps superseded
    got = events(run).Scalars("loss")
    assert [e.step for e in got] == [int(r["iteration"]) for r in rows(run / "loss.csv")]


def test_weight_pictures_are_spaced_and_computed_only_when_written(tmp_path, monkeypatch):
    """A digits-sized run records an epoch every 6 iterations; histograms and the
    picture go out every WEIGHTS_EVERY iterations (and at the ends), and the
    weights are not even fetched in between (their time budget aside)."""
    from fcnet.training import tensorboard
    from fcnet.training.tensorboard import WEIGHTS_EVERY

    monkeypatch.setattr(tensorboard, "PICTURE_SPACING", 0)  # the iteration spacing alone

    calls: list[int] = []
    rng = np.random.RandomState(0)

    def weights(step):
        calls.append(step)
        return {"W1": rng.randn(64, 9), "W2": rng.randn(9, 10)}

    steps = list(range(0, 1000, 6))
    tb = RunLogger.open(tmp_path)
    for i, step in enumerate(steps):
        tb.epoch(step, 0.5, 0.5, 1e-3, weights=lambda step=step: weights(step),
                 image_shape=(8, 8), last=i == len(steps) - 1)
    tb.close()
    acc = events(tmp_path)
    want = pictured(steps)
    assert calls == want and want[-1] == steps[-1]
    assert all(b - a >= WEIGHTS_EVERY for a, b in zip(want[:-2], want[1:-1]))
    assert len(want) < len(steps) / 20
    assert [im.step for im in acc.Images("weights/first_layer")] == want
    assert [h.step for h in acc.Histograms("weights/W2")] == want
    assert [e.step for e in acc.Scalars("accuracy/val")] == steps


def test_a_long_run_has_about_max_pictures_weight_pictures(tmp_path, monkeypatch):
    from fcnet.training import tensorboard
    from fcnet.training.tensorboard import MAX_PICTURES, WEIGHTS_EVERY

    monkeypatch.setattr(tensorboard, "PICTURE_SPACING", 0)  # the iteration spacing alone

    assert RunLogger.open(tmp_path / "a", total_steps=1000).every == WEIGHTS_EVERY
    long = RunLogger.open(tmp_path / "b", total_steps=23_875)  # best-cpu: 125 epochs of 191
    assert long.every == 23_875 // MAX_PICTURES
    for step in range(0, 23_875, 191):
        long.epoch(step, 0.5, 0.5, 1e-3, weights=lambda: {"W2": np.ones((3, 2))})
    long.close()
    n = len(events(tmp_path / "b").Histograms("weights/W2"))
    assert MAX_PICTURES // 2 <= n <= MAX_PICTURES + 1


def test_each_weight_picture_waits_picture_spacing_times_what_it_took(tmp_path, monkeypatch):
    """On a clock where every iteration takes 1 ms and every picture 10 ms, a picture
    after the first waits 50 x 10 ms = 0.5 s (500 iterations), not WEIGHTS_EVERY (200):
    pictures cost at most 1 / PICTURE_SPACING of the run."""
    from fcnet.training import tensorboard
    from fcnet.training.tensorboard import PICTURE_SPACING, WEIGHTS_EVERY

    now = [0.0]
    monkeypatch.setattr(tensorboard.time, "monotonic", lambda: now[0])
    calls: list[int] = []

    def weights(step):
        calls.append(step)
        now[0] += 0.010
        return {"W2": np.ones((3, 2))}

    tb = RunLogger.open(tmp_path)
    steps = list(range(0, 3000, 6))
    for i, step in enumerate(steps):
        now[0] = max(now[0], step * 1e-3)
        tb.epoch(step, 0.5, 0.5, 1e-3, weights=lambda step=step: weights(step), last=i == len(steps) - 1)
    tb.close()
    gap = PICTURE_SPACING * 0.010 / 1e-3  # iterations
    assert gap > WEIGHTS_EVERY
    assert calls[0] == 0 and calls[-1] == steps[-1]
    assert calls[1] < WEIGHTS_EVERY + 6  # the first (it paid the imports) sets no wait
    assert all(b - a >= gap for a, b in zip(calls[1:-2], calls[2:-1])), calls
    assert len(calls) < 3000 / gap + 3


def test_a_pictures_wait_counts_the_writer_threads_checksum_of_its_bytes(tmp_path, monkeypatch):
    """The writer thread checksums every event's bytes in Python after the picture is timed;
    a picture that takes no time of its own still waits PICTURE_SPACING times that checksum."""
    from fcnet.training import tensorboard
    from fcnet.training.tensorboard import PICTURE_SPACING

    now = [0.0]
    monkeypatch.setattr(tensorboard.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(tensorboard, "_crc_seconds_per_byte", lambda: 1e-5)
    W = {"W1": np.random.RandomState(0).randn(64, 50)}  # 8x8 digit tiles: a picture of some kB
    tb = RunLogger.open(tmp_path)
    pictured = []
    for step in range(0, 20_000, 6):
        now[0] = step * 1e-3  # 1 ms an iteration; the pictures themselves take no time
        before = tb._pictured
        tb.epoch(step, 0.5, 0.5, 1e-3, weights=lambda: W, image_shape=(8, 8))
        if tb._pictured != before:
            pictured.append(step)
    tb.close()
    size = len(events(tmp_path).Images("weights/first_layer")[-1].encoded_image_string)
    gap = PICTURE_SPACING * size * 1e-5 / 1e-3  # iterations
    assert gap > 200 and len(pictured) >= 4  # longer than WEIGHTS_EVERY: the checksum sets it
    assert all(b - a >= gap for a, b in zip(pictured[1:], pictured[2:])), (pictured, gap)
