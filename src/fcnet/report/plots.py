"""The figures of fcnet's study and grading reports as PNG files: each function draws on its
own ``matplotlib.figure.Figure`` (no pyplot state), writes through ``fcnet.files`` and returns
the ``Path`` it wrote."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from fcnet import files
from fcnet.errors import FcnetError
from fcnet.report.grid import visualize_grid

DPI = 120
# a quiet palette that stays readable in print and for common colour blindness
COLORS = ["#1f5a99", "#d1603d", "#3b8f5a", "#8a5fb0", "#b8862b", "#4a9fb5", "#c2577f", "#6b6b6b"]


def _new_axes(width: float = 6.4, height: float = 4.0):
    """The one axes of a figure of its own (no pyplot state)."""
    return MplFigure(figsize=(width, height), dpi=DPI, layout="constrained").add_subplot()


def _save(ax, path: str | os.PathLike) -> Path:
    # no Software/date metadata: the same data gives the same bytes
    return files.atomic_write(
        path, lambda f: ax.figure.savefig(f, format="png", dpi=DPI, metadata={"Software": None}))


def _finish(ax, path: str | os.PathLike, title: str, xlabel: str, ylabel: str, integer_x: bool = False,
            grid: str = "both") -> Path:
    """Title, labels, a light ``grid`` ("both" axes or "y") and no top/right spines; then ``_save``."""
    ax.set_title(title, fontsize=11, loc="left")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis=grid, color="#e3e3e3", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(ax, path)


def _series(values: Sequence[float], what: str) -> np.ndarray:
    """1-D float array with +-inf turned into NaN (a gap in the line, not a crash)."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise FcnetError(f"{what}: expected a non-empty 1-D sequence, got shape {a.shape}")
    return np.where(np.isfinite(a), a, np.nan)


def moving_average(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean over ``window`` points (clipped to the length): (x, y), each (n - window + 1,),
    x the index of each window's last point."""
    window = max(1, min(int(window), len(values)))
    y = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window - 1, len(values)), y


def crossing(cumulative: Sequence[float], line: float = 0.95) -> int | None:
    """Smallest k with ``cumulative[k - 1] >= line`` (cumulative (n_components,)), else None."""
    hit = np.flatnonzero(np.asarray(cumulative, dtype=np.float64) >= line)
    return int(hit[0]) + 1 if hit.size else None


def loss_curve(loss_history: Sequence[float], path: str | os.PathLike, title: str = "Training loss",
               smooth: int | None = None) -> Path:
    """Loss per iteration (iterations,); ``smooth=k`` fades it behind a k-point mean."""
    loss = _series(loss_history, "loss_curve")
    ax = _new_axes()
    if smooth and smooth > 1 and loss.size > 1:
        ax.plot(loss, color=COLORS[0], alpha=0.25, linewidth=0.8, label="per iteration")
        ax.plot(*moving_average(loss, smooth), color=COLORS[0], linewidth=1.6,
                label=f"mean of {min(smooth, loss.size)}")
        ax.legend(frameon=False)
    else:
        ax.plot(loss, color=COLORS[0], linewidth=1.2, marker="." if loss.size < 40 else None)
    if np.isfinite(loss).any():
        ax.annotate(f"final {loss[-1]:.4g}" if np.isfinite(loss[-1]) else "final: not finite",
                    xy=(1, 1), xycoords="axes fraction", ha="right", va="top", fontsize=9, color="#444")
    return _finish(ax, path, title, "iteration", "loss", integer_x=True)


def accuracy_curves(train_acc: Sequence[float], val_acc: Sequence[float], path: str | os.PathLike,
                    xlabel: str = "epoch") -> Path:
    """Training (n,) and validation (m,) accuracy, each against its index (epoch, or ``xlabel``)."""
    tr = _series(train_acc, "accuracy_curves: train_acc")
    va = _series(val_acc, "accuracy_curves: val_acc")
    ax = _new_axes()
    marker = "o" if max(tr.size, va.size) <= 30 else None
    ax.plot(tr, color=COLORS[0], marker=marker, ms=3.5, label="train")
    ax.plot(va, color=COLORS[1], marker=marker, ms=3.5, label="validation")
    if np.isfinite(va).any():
        best = int(np.nanargmax(va))
        ax.annotate(f"best val {va[best]:.4g}", xy=(best, va[best]), xytext=(0, 8),
                    textcoords="offset points", ha="center", fontsize=9, color=COLORS[1])
    ax.legend(frameon=False, loc="lower right")
    return _finish(ax, path, "Classification accuracy", xlabel, "accuracy", integer_x=True)


def weight_grid(W1: np.ndarray, image_shape: tuple[int, int, int], path: str | os.PathLike,
                title: str = "First-layer weights", channels_first: bool = False) -> Path:
    """Each unit's incoming weights W1 (D, H) as an image of ``image_shape`` (height, width,
    channels), flattened H, W, C (CIFAR-10's loader) or, ``channels_first``, C, H, W; 1 channel
    is grey, 3 are RGB (the course's ``show_net_weights``)."""
    W1 = np.asarray(W1, dtype=np.float64)
    h, w, c = (int(v) for v in image_shape)
    if W1.ndim != 2 or W1.shape[0] != h * w * c:
        raise FcnetError(f"weight_grid: W1 has shape {W1.shape}, expected ({h * w * c}, hidden) for "
                         f"images {h}x{w}x{c} (inputs after PCA cannot be drawn as images)")
    if c not in (1, 3):
        raise FcnetError(f"weight_grid: images need 1 or 3 channels, got {c}")
    units, pad = W1.shape[1], max(1, h // 16)
    tiles = W1.T.reshape(units, *((c, h, w) if channels_first else (h, w, c)))
    tiles = np.moveaxis(tiles, 1, 3) if channels_first else tiles
    grid = visualize_grid(tiles, ubound=1.0, padding=pad)
    # padding and unused tiles are drawn transparent (white page) rather than black
    g = math.ceil(math.sqrt(units))
    r, col = np.indices(grid.shape[:2])  # a pixel is covered inside a used tile
    covered = (r % (h + pad) < h) & (col % (w + pad) < w)
    covered &= r // (h + pad) * g + col // (w + pad) < units
    side = min(7.0, max(3.0, 0.55 * g))
    rows = math.ceil(units / g)  # the last rows may be empty: crop them
    grid, covered = grid[: rows * (h + pad) - pad], covered[: rows * (h + pad) - pad]
    ax = _new_axes(side, side * rows / g + 0.35)
    if c == 1:
        gray = np.ma.masked_array(grid[:, :, 0], mask=~covered)
        ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.dstack([grid, covered.astype(np.float64)]), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{title} ({units} units)", fontsize=11, loc="left")
    return _save(ax, path)


def confusion_matrix(cm: np.ndarray, classes: list[str], path: str | os.PathLike,
                     normalize: bool = True) -> Path:
    """Counts cm (K, K), rows = true class; ``normalize`` divides each row by its total (zero rows
    stay zero): the diagonal reads as per-class recall."""
    cm = np.asarray(cm, dtype=np.float64)
    k = len(classes)
    if cm.ndim != 2 or cm.shape != (k, k):
        raise FcnetError(f"confusion_matrix: cm has shape {cm.shape}, expected ({k}, {k}) for {k} classes")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    side = min(9.0, max(4.0, 0.5 * k + 2.0))
    ax = _new_axes(side + 0.8, side)
    im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""), fontsize=11, loc="left")
    if k <= 20:  # numbers in the cells stay legible up to about 20 classes
        high = np.nanmax(cm) if cm.size else 0.0
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{v:.{2 if normalize else 0}f}", ha="center", va="center",
                    fontsize=7 if k > 10 else 8, color="white" if v > 0.6 * high else "#222")
    return _save(ax, path)


def multi_curves(curves: Mapping[str, Sequence[float]], path: str | os.PathLike, xlabel: str,
                 ylabel: str, title: str, smooth: int | None = None, logy: bool = False) -> Path:
    """Named series {label: (n_i,)} on one axis, each against its own index; ``smooth=k``: a
    k-point trailing mean over a faded raw line; ``logy``: log y axis (values <= 0 left out)."""
    if not curves:
        raise FcnetError("multi_curves: no curves given")
    ax = _new_axes()
    for i, (label, values) in enumerate(curves.items()):
        y = _series(values, f"multi_curves: {label!r}")
        if logy:
            y = np.where(y > 0, y, np.nan)
        color = COLORS[i % len(COLORS)]
        if smooth and smooth > 1 and y.size > 1:
            ax.plot(y, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(*moving_average(y, smooth), color=color, linewidth=1.6, label=str(label))
        else:
            ax.plot(y, color=color, linewidth=1.4, marker="o" if y.size <= 30 else None, ms=3.5,
                    label=str(label))
    if logy:
        ax.set_yscale("log")
    ax.legend(frameon=False, fontsize=9)
    return _finish(ax, path, title, xlabel, ylabel, integer_x=True)


def explained_variance(cumulative: np.ndarray, path: str | os.PathLike, line: float = 0.95) -> Path:
    """PCA's cumulative explained-variance ratio (n_components,), ``line`` and its ``crossing`` marked."""
    c = _series(cumulative, "explained_variance")
    k = crossing(c, line)
    ax = _new_axes()
    ax.plot(np.arange(1, c.size + 1), c, color=COLORS[0], linewidth=1.6)
    ax.axhline(line, color=COLORS[1], linestyle="--", linewidth=1.0)
    if k is not None:
        ax.axvline(k, color=COLORS[1], linestyle=":", linewidth=1.0)
        ax.plot([k], [c[k - 1]], "o", color=COLORS[1], ms=5)
        note = f"{k} components reach {line:.0%}"
    else:
        note = f"{line:.0%} not reached with {c.size} components"
    ax.annotate(note, xy=(0.98, 0.05), xycoords="axes fraction", ha="right", fontsize=10, color=COLORS[1])
    ax.set_ylim(0, 1.02)
    return _finish(ax, path, "PCA: cumulative explained variance", "components",
                   "cumulative explained variance")


def bar_table(labels: Sequence[object], series: Mapping[str, Sequence[float]], path: str | os.PathLike,
              xlabel: str, ylabel: str, title: str) -> Path:
    """Grouped bars: a group per label (n,), a bar per series {name: (n,) values}; NaN: no bar."""
    if not series:
        raise FcnetError("bar_table: no series given")
    n = len(labels)
    data = {name: _series(v, f"bar_table: {name!r}") for name, v in series.items()}
    if wrong := [(name, v.size) for name, v in data.items() if v.size != n]:
        raise FcnetError(f"bar_table: series {wrong[0][0]!r} has {wrong[0][1]} values for {n} labels")
    ax = _new_axes(max(5.0, min(11.0, 1.6 + 0.45 * n * len(data))), 4.0)
    width = 0.8 / len(data)
    x = np.arange(n)
    for i, (name, v) in enumerate(data.items()):
        ax.bar(x + (i - (len(data) - 1) / 2) * width, v, width, label=str(name),
               color=COLORS[i % len(COLORS)])
    ax.set_xticks(x, [str(lab) for lab in labels])
    if len(data) > 1:
        ax.legend(frameon=False, fontsize=9)
    return _finish(ax, path, title, xlabel, ylabel, grid="y")


def interval_plot(labels: Sequence[str], series: Mapping[str, tuple[Sequence[float], ...]],
                  path: str | os.PathLike, xlabel: str, ylabel: str, title: str) -> Path:
    """A table's cells at 0..n-1, a line per column: series {column label: (mean, low, high,
    run_low, run_high)}, each (n,): the mean over seeds with error bars (NaN: one seed, no bar),
    one run's sampling interval as a pale bar behind."""
    if not series:
        raise FcnetError("interval_plot: no series given")
    ax = _new_axes(6.4, 3.8)
    x = np.arange(len(labels), dtype=float)
    step = 0.18  # columns side by side around each row's tick
    for i, (label, (mean, low, high, rlow, rhigh)) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        xs = x + (i - (len(series) - 1) / 2) * step
        m = _series(mean, f"interval_plot: {label!r}")
        lo, hi = np.asarray(low, float), np.asarray(high, float)
        ax.vlines(xs, np.asarray(rlow, float), np.asarray(rhigh, float), color=color, alpha=0.18, linewidth=7)
        err = np.vstack([np.where(np.isnan(lo), 0, m - lo), np.where(np.isnan(hi), 0, hi - m)])
        ax.errorbar(xs, m, yerr=err, color=color, marker="o", ms=4, capsize=3, linewidth=1.3,
                    label=str(label))
    ax.set_xticks(x, [str(s) for s in labels], rotation=45 if len(labels) > 6 else 0,
                  ha="right" if len(labels) > 6 else "center", fontsize=8)
    if len(series) > 1 or next(iter(series)) != "":
        ax.legend(frameon=False, fontsize=9)
    return _finish(ax, path, title, xlabel, ylabel)
