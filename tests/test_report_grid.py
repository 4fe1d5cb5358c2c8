"""visualize_grid: the course's vis_utils layout, each tile scaled to [0, ubound]."""

import math

import numpy as np
import pytest

from fcnet.errors import FcnetError
from fcnet.report import visualize_grid


def course_visualize_grid(Xs, ubound=255.0, padding=1):
    """The course's loop, verbatim in substance: the specification the fast version meets."""
    (N, H, W, C) = Xs.shape
    grid_size = int(math.ceil(math.sqrt(N)))
    grid_height = H * grid_size + padding * (grid_size - 1)
    grid_width = W * grid_size + padding * (grid_size - 1)
    grid = np.zeros((grid_height, grid_width, C))
    next_idx = 0
    y0, y1 = 0, H
    for _y in range(grid_size):
        x0, x1 = 0, W
        for _x in range(grid_size):
            if next_idx < N:
                img = Xs[next_idx]
                low, high = np.min(img), np.max(img)
                grid[y0:y1, x0:x1] = ubound * (img - low) / (high - low)
                next_idx += 1
            x0 += W + padding
            x1 += W + padding
        y0 += H + padding
        y1 += H + padding
    return grid


@pytest.mark.parametrize(
    "n, h, w, c, padding, shape",
    [
        (10, 4, 5, 3, 1, (4 * 4 + 3, 4 * 5 + 3, 3)),  # ceil(sqrt(10)) = 4 tiles a side
        (9, 4, 5, 3, 1, (3 * 4 + 2, 3 * 5 + 2, 3)),
        (1, 7, 6, 1, 3, (7, 6, 1)),  # one tile: no padding at all
        (50, 32, 32, 3, 0, (8 * 32, 8 * 32, 3)),
        (5, 3, 3, 1, 2, (3 * 3 + 2 * 2, 3 * 3 + 2 * 2, 1)),
    ],
)
def test_grid_shape_is_ceil_sqrt_tiles_a_side_with_padding_between(n, h, w, c, padding, shape):
    X = np.random.default_rng(0).standard_normal((n, h, w, c))
    assert visualize_grid(X, padding=padding).shape == shape


@pytest.mark.parametrize("n, padding, ubound", [(10, 1, 255.0), (16, 3, 1.0), (7, 0, 10.0)])
def test_grid_equals_the_course_loop(n, padding, ubound):
    X = np.random.default_rng(n).standard_normal((n, 5, 4, 3)) * 7 + 3
    np.testing.assert_allclose(
        visualize_grid(X, ubound=ubound, padding=padding),
        course_visualize_grid(X, ubound=ubound, padding=padding),
        rtol=0,
        atol=1e-12,
    )


def test_each_tile_is_rescaled_on_its_own_to_0_ubound():
    rng = np.random.default_rng(1)
    # tiles on wildly different scales and offsets
    scale = np.array([1e-4, 1, 1e3, 5, 0.1, 50])[:, None, None, None]
    X = rng.standard_normal((6, 4, 4, 3)) * scale
    X += np.arange(6)[:, None, None, None] * 100
    grid = visualize_grid(X, ubound=255.0, padding=2)
    for i in range(6):
        r, col = divmod(i, 3)
        tile = grid[r * 6 : r * 6 + 4, col * 6 : col * 6 + 4]
        assert tile.min() == pytest.approx(0.0, abs=1e-9)
        assert tile.max() == pytest.approx(255.0)
        # the mapping is affine, so the order of pixels is kept
        np.testing.assert_array_equal(np.argsort(tile, axis=None), np.argsort(X[i], axis=None))


def test_padding_and_unused_tiles_are_zero():
    X = np.random.default_rng(2).random((5, 3, 3, 1)) + 1.0  # 3x3 grid, 4 tiles unused
    grid = visualize_grid(X, ubound=1.0, padding=2)[:, :, 0]
    tile = np.zeros((13, 13), dtype=bool)
    for i in range(5):
        r, col = divmod(i, 3)
        tile[r * 5 : r * 5 + 3, col * 5 : col * 5 + 3] = True
    assert np.all(grid[~tile] == 0.0)
    assert grid[tile].max() == 1.0


def test_constant_tile_is_zero_not_nan():
    X = np.ones((2, 3, 3, 3))
    X[1] = np.arange(27).reshape(3, 3, 3)
    grid = visualize_grid(X, padding=1)
    assert np.isfinite(grid).all()
    assert np.all(grid[:3, :3] == 0.0)
    assert grid[:3, 4:7].max() == 255.0


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 4)), np.zeros((0, 4, 4, 3))])
def test_bad_input_shape_raises_fcnet_error(bad):
    with pytest.raises(FcnetError, match=r"\(N, H, W, C\)"):
        visualize_grid(bad)
