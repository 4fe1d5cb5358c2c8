"""Tile a batch of images into one picture, as the course's ``vis_utils`` does."""

from __future__ import annotations

import math

import numpy as np

from fcnet.errors import FcnetError


def visualize_grid(Xs: np.ndarray, ubound: float = 255.0, padding: int = 1) -> np.ndarray:
    """Images Xs (N, H, W, C) row by row on a G x G grid, G = ceil(sqrt(N)), each mapped from its
    own [min, max] to [0, ubound] (a constant tile: zeros, not NaN), ``padding`` zero pixels between
    tiles: (G*H + (G-1)*padding, G*W + (G-1)*padding, C) float64, unused tiles zero."""
    Xs = np.asarray(Xs)
    if Xs.ndim != 4 or Xs.shape[0] == 0:
        raise FcnetError(f"visualize_grid: expected a non-empty (N, H, W, C) array, got {Xs.shape}")
    if padding < 0:
        raise FcnetError(f"visualize_grid: padding must be >= 0, got {padding}")
    N, H, W, C = Xs.shape
    G = math.ceil(math.sqrt(N))
    X = Xs.astype(np.float64, copy=False)
    low = X.min(axis=(1, 2, 3), keepdims=True)
    span = X.max(axis=(1, 2, 3), keepdims=True) - low
    # constant tiles: divide by 1 instead of 0, so (X - low) = 0 stays 0
    tiles = ubound * (X - low) / np.where(span > 0, span, 1.0)
    # every tile plus its right/bottom padding, in a (G*G) stack, then one reshape
    cells = np.zeros((G * G, H + padding, W + padding, C))
    cells[:N, :H, :W] = tiles
    grid = cells.reshape(G, G, H + padding, W + padding, C).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(G * (H + padding), G * (W + padding), C)
    return grid[: G * (H + padding) - padding, : G * (W + padding) - padding]


def first_layer_image(W1: np.ndarray, image_shape) -> np.ndarray | None:
    """W1 (D, H) as one (rows, cols, C) picture in [0, 1], a tile per unit; None when the inputs
    are not images (PCA, toy)."""
    if image_shape is None:
        return None
    shape = tuple(int(v) for v in image_shape)
    h, w, c = shape if len(shape) == 3 else (*shape, 1)
    if W1.ndim != 2 or W1.shape[0] != h * w * c or c not in (1, 3):
        return None
    tiles = np.asarray(W1, dtype=np.float64).T.reshape(W1.shape[1], h, w, c)
    return visualize_grid(tiles, ubound=1.0, padding=max(1, h // 16))
