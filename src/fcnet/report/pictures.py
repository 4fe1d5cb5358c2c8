"""A run's loss.png, accuracy.png, weights.png and confusion.png, drawn with Pillow: about
20 ms a run where matplotlib took 0.3 s (48 of the digits study's 69 s).  Curves are drawn
at twice the size and scaled down, which smooths their lines."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.report.grid import first_layer_image

COLORS = ((31, 119, 180), (255, 127, 14))  # matplotlib's first two colours, as the report's
GRID, INK, FAINT = (227, 227, 227), (34, 34, 34), (90, 90, 90)
_S = 2  # supersampling of the curves


@functools.cache
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _save(img, path: str | os.PathLike) -> Path:
    return files.atomic_write(path, lambda f: img.save(f, format="PNG", compress_level=1))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values covering [lo, hi] (1, 2, 5 times a power of ten apart)."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [float(v) for v in np.arange(math.ceil(lo / step) * step, hi + step / 2, step) if lo <= v <= hi]


def line_chart(series: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike, *,
               title: str, xlabel: str, ylabel: str, note: str = "") -> Path:
    """Lines of (label, y values (n,)) against 0..n-1, with axes, ticks, grid and legend."""
    from PIL import Image, ImageDraw

    w, h = 640 * _S, 400 * _S
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(12 * _S), _font(10 * _S)
    left, right, top, bottom = 70 * _S, 20 * _S, 48 * _S, 48 * _S
    ys = [np.asarray(y, dtype=np.float64) for _, y in series]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.empty(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    x1 = max(max((y.size for y in ys), default=1) - 1, 1)  # the last x

    def px(i: float, v: float) -> tuple[float, float]:
        return (left + (w - left - right) * i / x1, top + (h - top - bottom) * (hi - v) / (hi - lo))

    for v in _ticks(lo, hi):
        y = px(0, v)[1]
        d.line([(left, y), (w - right, y)], fill=GRID, width=_S)
        d.text((left - 8 * _S, y), f"{v:.4g}" if abs(v) < 1e5 else f"{v:.2g}", fill=FAINT, font=small,
               anchor="rm")
    for i in _ticks(0, x1):
        x = px(int(i), lo)[0]
        d.line([(x, top), (x, h - bottom)], fill=GRID, width=_S)
        d.text((x, h - bottom + 6 * _S), str(int(i)), fill=FAINT, font=small, anchor="mt")
    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill=FAINT, width=_S)  # axes
    for k, y in enumerate(ys):
        color = COLORS[k % len(COLORS)]
        pts = [px(i, v) for i, v in enumerate(y) if np.isfinite(v)]
        if len(pts) > 1:
            d.line(pts, fill=color, width=3, joint="curve")
        for x, yy in pts if len(pts) <= 30 else ():
            d.ellipse([x - 3 * _S, yy - 3 * _S, x + 3 * _S, yy + 3 * _S], fill=color)
    d.text((8 * _S, 6 * _S), title, fill=INK, font=_font(14 * _S))
    if note:
        d.text((w - right, 8 * _S), note, fill=FAINT, font=small, anchor="ra")
    for k, (name, _) in enumerate(series if len(series) > 1 else ()):  # the legend
        y = h - bottom - (16 * (len(series) - k)) * _S
        d.line([(w - right - 110 * _S, y), (w - right - 90 * _S, y)], fill=COLORS[k % len(COLORS)],
               width=3 * _S)
        d.text((w - right - 84 * _S, y), name, fill=INK, font=small, anchor="lm")
    d.text(((left + w - right) / 2, h - 8 * _S), xlabel, fill=INK, font=font, anchor="md")
    d.text((8 * _S, top - 18 * _S), ylabel, fill=INK, font=font)
    return _save(img.reduce(_S), path)  # a box filter: anti-aliased lines


def loss_png(loss: Sequence[float], path: str | os.PathLike) -> Path:
    """loss.png: the loss of every iteration (its final value noted)."""
    y = np.asarray(loss, dtype=np.float64)
    note = "" if not y.size else f"final {y[-1]:.4g}" if np.isfinite(y[-1]) else "final: not finite"
    return line_chart([("loss", y)], path, title="Training loss", xlabel="iteration", ylabel="loss",
                      note=note)


def accuracy_png(train: Sequence[float], val: Sequence[float], path: str | os.PathLike) -> Path:
    """accuracy.png: train and validation accuracy per epoch (the best val noted)."""
    va = np.asarray(val, dtype=np.float64)
    note = f"best val {np.nanmax(va):.4g}" if np.isfinite(va).any() else ""
    return line_chart([("train", np.asarray(train, dtype=np.float64)), ("validation", va)], path,
                      title="Classification accuracy", xlabel="epoch", ylabel="accuracy", note=note)


def weights_png(W1: np.ndarray, image_shape, path: str | os.PathLike) -> Path:
    """weights.png: each hidden unit's incoming weights W1 (D, H) as a tile."""
    from PIL import Image, ImageDraw

    pixels = np.round(np.clip(first_layer_image(W1, image_shape), 0, 1) * 255).astype(np.uint8)
    scale = max(1, 480 // max(pixels.shape[:2]))
    pic = Image.fromarray(np.repeat(pixels, 3 // pixels.shape[2], axis=2))  # gray as RGB
    pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    img = Image.new("RGB", (max(pic.width, 300) + 20, pic.height + 44), "white")
    img.paste(pic, (10, 34))
    ImageDraw.Draw(img).text((10, 8), f"First-layer weights ({W1.shape[1]} units)", fill=INK, font=_font(14))
    return _save(img, path)


def confusion_png(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike) -> Path:
    """confusion.png: counts cm (K, K), rows = true class divided by their totals (per-class
    recall on the diagonal), numbers in the cells up to 20 classes."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    k = len(classes)
    cell = max(12, min(40, 480 // max(k, 1)))
    font = _font(10 if k > 10 else 11)
    names = [str(c)[:12] for c in classes]
    left, top = 16 + 7 * max((len(c) for c in names), default=1), 40
    rgb = (colormaps["Blues"](cm)[:, :, :3] * 255).astype(np.uint8)
    img = Image.new("RGB", (left + k * cell + 16, top + k * cell + 56), "white")
    img.paste(Image.fromarray(rgb).resize((k * cell, k * cell), Image.NEAREST), (left, top))
    d = ImageDraw.Draw(img)
    d.text((8, 8), "Confusion matrix (row-normalised)", fill=INK, font=_font(13))
    d.text((8, top - 14), "true", fill=FAINT, font=font)
    for i, name in enumerate(names):
        mid = top + i * cell + cell / 2
        d.text((left - 6, mid), name, fill=INK, font=font, anchor="rm")
        d.text((left + i * cell + cell / 2, top + k * cell + 6), name, fill=INK, font=font, anchor="mt")
        for j in range(k) if k <= 20 else ():
            v = cm[i, j]
            d.text((left + j * cell + cell / 2, mid), f"{v:.2f}", font=font, anchor="mm",
                   fill="white" if v > 0.6 else INK)
    d.text((left + k * cell / 2, top + k * cell + 30), "predicted", fill=FAINT, font=font, anchor="mt")
    return _save(img, path)
