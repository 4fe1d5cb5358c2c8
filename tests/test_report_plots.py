"""Every plot writes a real PNG (atomically) that shows what it says."""

import os

import numpy as np
import pytest
from PIL import Image

from fcnet.errors import FcnetError
from fcnet.report import plots

RNG = np.random.default_rng(0)
LOSS = 2.3 * np.exp(-np.arange(300) / 80) + 0.1 * RNG.random(300)
CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def check_png(path, min_side=200, min_bytes=5_000):
    """Open with Pillow, check the size, and that it is not a blank canvas."""
    assert path.is_file()
    with Image.open(path) as im:
        im.verify()  # checks the PNG structure and CRCs
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        rgb = np.asarray(im.convert("RGB"), dtype=np.int32)
    assert w >= min_side and h >= min_side, (w, h)
    assert path.stat().st_size > min_bytes
    assert rgb.std() > 10  # something is drawn
    return rgb


CASES = {
    "loss_curve": lambda p: plots.loss_curve(LOSS, p),
    "loss_curve_smooth": lambda p: plots.loss_curve(LOSS, p, title="Toy loss", smooth=20),
    "accuracy_curves": lambda p: plots.accuracy_curves(
        np.linspace(0.2, 0.5, 17), np.linspace(0.2, 0.45, 17), p
    ),
    "weight_grid_rgb": lambda p: plots.weight_grid(RNG.standard_normal((3072, 50)), (32, 32, 3), p),
    "weight_grid_gray": lambda p: plots.weight_grid(RNG.standard_normal((784, 10)), (28, 28, 1), p),
    "confusion_matrix": lambda p: plots.confusion_matrix(
        RNG.integers(0, 30, (10, 10)) + 100 * np.eye(10, dtype=int), CLASSES, p
    ),
    "confusion_counts": lambda p: plots.confusion_matrix(
        np.array([[5, 1], [2, 7]]), ["a", "b"], p, normalize=False
    ),
    "multi_curves": lambda p: plots.multi_curves(
        {"batch 100": LOSS + 0.1 * RNG.standard_normal(300), "batch 300": LOSS},
        p,
        "iteration",
        "loss",
        "Noise of the minibatch loss",
        smooth=10,
    ),
    "multi_curves_logy": lambda p: plots.multi_curves(
        {f"layer {i}": 10.0 ** (-i * np.arange(1, 11)) for i in range(1, 4)},
        p,
        "epoch",
        "activation std",
        "Per-layer scale",
        logy=True,
    ),
    "explained_variance": lambda p: plots.explained_variance(np.cumsum(np.full(400, 1 / 400)), p),
    "bar_table": lambda p: plots.bar_table(
        [10, 20, 30],
        {"fcnet": [42.0, 46.1, 48.0], "report": [42.6, 46.0, 48.6]},
        p,
        "hidden units",
        "validation accuracy (%)",
        "Table 3",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_plot_writes_a_valid_png_and_returns_its_path(tmp_path, name):
    target = tmp_path / "sub" / f"{name}.png"  # parent folders are created
    out = CASES[name](target)
    assert out == target
    check_png(out)
    # the write is atomic: only the final file is left, no temporary beside it
    assert os.listdir(target.parent) == [target.name]


def test_plot_replaces_an_existing_file(tmp_path):
    target = tmp_path / "loss.png"
    target.write_bytes(b"old")
    plots.loss_curve(LOSS, target)
    assert target.read_bytes().startswith(b"\x89PNG")


def test_same_data_gives_the_same_bytes(tmp_path):
    a = plots.loss_curve(LOSS, tmp_path / "a.png")
    b = plots.loss_curve(LOSS, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def test_loss_curve_survives_a_diverged_run(tmp_path):
    loss = LOSS.copy()
    loss[200:] = np.inf
    loss[150] = np.nan
    check_png(plots.loss_curve(loss, tmp_path / "diverged.png"))


def test_weight_grid_with_one_channel_is_grayscale(tmp_path):
    W_gray, W_rgb = RNG.standard_normal((784, 10)), RNG.standard_normal((3072, 10))
    rgb = check_png(plots.weight_grid(W_gray, (28, 28, 1), tmp_path / "g.png"))
    assert np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2])
    rgb3 = check_png(plots.weight_grid(W_rgb, (32, 32, 3), tmp_path / "c.png"))
    assert np.any(rgb3[..., 0] != rgb3[..., 2])  # colour weights are not drawn grey


@pytest.mark.parametrize("channels_first", [False, True])
def test_weight_grid_keeps_orientation_and_channel_order(tmp_path, channels_first):
    # unit 0: pure red on the left half, pure blue on the right; unit 1: pure green
    img = np.zeros((2, 16, 16, 3))
    img[0, :, :8, 0] = 1.0
    img[0, :, 8:, 2] = 1.0
    img[1, :, :, 1] = 1.0
    flat = img.transpose(0, 3, 1, 2) if channels_first else img
    W1 = flat.reshape(2, -1).T  # (D, 2), one column per unit
    path = plots.weight_grid(W1, (16, 16, 3), tmp_path / "rgb.png", channels_first=channels_first)
    rgb = check_png(path, min_side=150, min_bytes=2_000)  # flat colours compress well
    lo, hi = rgb < 40, rgb > 200
    red = hi[..., 0] & lo[..., 1] & lo[..., 2]
    green = lo[..., 0] & hi[..., 1] & lo[..., 2]
    blue = lo[..., 0] & lo[..., 1] & hi[..., 2]
    assert red.sum() > 1000 and blue.sum() > 1000 and green.sum() > 2000
    # tiles fill the grid row by row: red | blue in the first tile, green in the second
    assert np.nonzero(red)[1].max() < np.nonzero(blue)[1].min()
    assert np.nonzero(blue)[1].max() < np.nonzero(green)[1].min()


def test_weight_grid_rejects_weights_that_are_not_images(tmp_path):
    with pytest.raises(FcnetError, match=r"W1 has shape \(250, 50\), expected \(3072, hidden\)"):
        plots.weight_grid(np.zeros((250, 50)), (32, 32, 3), tmp_path / "pca.png")


def test_confusion_matrix_rejects_wrong_class_count(tmp_path):
    with pytest.raises(FcnetError, match=r"expected \(3, 3\) for 3 classes"):
        plots.confusion_matrix(np.eye(10), ["a", "b", "c"], tmp_path / "cm.png")


def test_empty_series_raise_fcnet_error(tmp_path):
    with pytest.raises(FcnetError, match="loss_curve"):
        plots.loss_curve([], tmp_path / "x.png")
    with pytest.raises(FcnetError, match="no curves"):
        plots.multi_curves({}, tmp_path / "x.png", "x", "y", "t")
    with pytest.raises(FcnetError, match="3 values for 2 labels"):
        plots.bar_table(["a", "b"], {"s": [1, 2, 3]}, tmp_path / "x.png", "x", "y", "t")


@pytest.mark.parametrize(
    "cumulative, line, expected",
    [
        ([0.5, 0.8, 0.95, 0.99, 1.0], 0.95, 3),  # reaching the line counts as crossing it
        ([0.5, 0.8, 0.94, 0.99, 1.0], 0.95, 4),
        ([0.96, 0.99], 0.95, 1),
        ([0.1, 0.2, 0.3], 0.95, None),
        (np.cumsum(np.full(400, 1 / 400)), 0.5, 200),
    ],
)
def test_crossing_is_the_first_count_that_reaches_the_line(cumulative, line, expected):
    assert plots.crossing(cumulative, line) == expected


def test_moving_average_is_a_trailing_mean():
    x, y = plots.moving_average(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2)
    np.testing.assert_array_equal(x, [1, 2, 3, 4])
    np.testing.assert_allclose(y, [1.5, 2.5, 3.5, 4.5])
    x, y = plots.moving_average(np.array([1.0, 3.0]), 10)  # window clipped to the series
    np.testing.assert_array_equal(x, [1])
    np.testing.assert_allclose(y, [2.0])


def test_interval_plot_draws_error_bars_and_sampling_bars(tmp_path):
    nan = float("nan")
    series = {"H50": ([97.0, 97.5, 96.0], [96.0, 96.8, 95.0], [98.0, 98.2, 97.0],
                      [94.0, 95.0, 93.0], [99.0, 99.2, 98.5]),
              "H100": ([97.5, 98.0, 96.5], [nan] * 3, [nan] * 3,  # one seed: no error bars
                       [95.0, 96.0, 94.0], [99.0, 99.5, 98.7])}
    path = plots.interval_plot(["100", "200", "300"], series, tmp_path / "iv.png",
                               "batch size", "val %", "Table 4")
    rgb = check_png(path)
    blue = np.array([0x1F, 0x5A, 0x99])
    assert (np.abs(rgb - blue).sum(axis=2) < 30).sum() > 50  # the first column's colour
    with pytest.raises(FcnetError):
        plots.interval_plot(["a"], {}, tmp_path / "none.png", "x", "y", "t")
