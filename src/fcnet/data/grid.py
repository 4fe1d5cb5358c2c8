"""A picture of a split: ``per_class`` sample images in one row per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.data.core import Split
from fcnet.errors import FcnetError


def save_grid(split: Split, classes: list[str], out: Path, per_class: int = 8, seed: int = 0,
              title: str = "", pad: int = 1) -> Path:
    """``per_class`` images drawn with ``seed`` in one row per class present, named; written atomically."""
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    fmt = out.suffix.lstrip(".").lower() or "png"
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise FcnetError(f"{out}: unknown image format .{fmt} (use .png, .pdf, .svg, .jpg)")
    if not out.parent.is_dir():
        raise FcnetError(f"{out}: folder {out.parent} does not exist")
    x = split.x
    if x.ndim != 4:
        raise FcnetError("show: this dataset holds feature rows, not images")
    _, h, w, c = x.shape
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for k, name in enumerate(classes):
        idx = np.flatnonzero(split.y == k)
        if idx.size == 0:
            continue
        pick = np.sort(rng.choice(idx, min(per_class, idx.size), replace=False))
        tiles = np.full((per_class, h + pad, w + pad, c), 255, np.uint8)
        tiles[: len(pick), :h, :w] = x[pick]
        rows.append(np.concatenate(tiles, axis=1))  # (H+pad, per_class * (W+pad), C)
        labels.append(f"{name} ({idx.size})")
    grid = np.concatenate(rows)  # (rows * (H+pad), per_class * (W+pad), C)
    scale = max(1.0, 48 / w)  # small images drawn bigger
    fig = Figure(figsize=(1.6 + grid.shape[1] * scale / 100, 0.5 + grid.shape[0] * scale / 100), dpi=100)
    ax = fig.subplots()
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([(i + 0.5) * (h + pad) for i in range(len(labels))], labels, fontsize=8)
    ax.set_xticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return files.atomic_write(out, lambda f: fig.savefig(f, format=fmt, bbox_inches="tight"))
