"""A picture of a split: ``per_class`` sample images in one row per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.data.core import Split
from fcnet.errors import FcnetError


def sample_grid(split: Split, classes: list[str], per_class: int = 8, seed: int = 0,
                pad: int = 1) -> tuple[np.ndarray, list[str]]:
    """(rows * (H+pad), per_class * (W+pad), C) uint8 mosaic and the row labels.
    Samples are drawn with ``seed``; classes absent from the split are skipped."""
    x = split.x
    if x.ndim != 4:
        raise FcnetError("show: this dataset holds feature rows, not images")
    n, h, w, c = x.shape
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for k, name in enumerate(classes):
        idx = np.flatnonzero(split.y == k)
        if idx.size == 0:
            continue
        pick = np.sort(rng.choice(idx, min(per_class, idx.size), replace=False))
        row = np.full((h + pad, per_class * (w + pad), c), 255, np.uint8)
        for j, i in enumerate(pick):
            row[:h, j * (w + pad): j * (w + pad) + w] = x[i]
        rows.append(row)
        labels.append(f"{name} ({idx.size})")
    return np.concatenate(rows), labels


def save_grid(split: Split, classes: list[str], out: Path, per_class: int = 8, seed: int = 0,
              title: str = "") -> Path:
    """Draw the mosaic with class names beside each row; written atomically."""
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    fmt = out.suffix.lstrip(".").lower() or "png"
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise FcnetError(f"{out}: unknown image format .{fmt} (use .png, .pdf, .svg, .jpg)")
    if not out.parent.is_dir():
        raise FcnetError(f"{out}: folder {out.parent} does not exist")
    grid, labels = sample_grid(split, classes, per_class, seed)
    h_row = grid.shape[0] / len(labels)
    scale = max(1.0, 48 / split.x.shape[2])  # small images drawn bigger
    fig = Figure(figsize=(1.6 + grid.shape[1] * scale / 100, 0.5 + grid.shape[0] * scale / 100),
                 dpi=100)
    ax = fig.subplots()
    ax.imshow(grid[..., 0] if grid.shape[2] == 1 else grid, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_yticks([(i + 0.5) * h_row for i in range(len(labels))], labels, fontsize=8)
    ax.set_xticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return files.atomic_write(out, lambda f: fig.savefig(f, format=fmt, bbox_inches="tight"))
