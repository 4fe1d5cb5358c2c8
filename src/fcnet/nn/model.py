"""The fully-connected network: affine - ReLU - [dropout] - ... - affine - softmax.
``MLP`` is the engine for any depth; ``TwoLayerNet`` is the exercise's contract."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn import layers
from fcnet.nn.rng import legacy_rng
from fcnet.nn.solver import Solver
from fcnet.nn.stack import Stack, Workspace, backward, forward_loss

DTYPES = {"float32": np.float32, "float64": np.float64}


class MLP:
    """Fully-connected classifier of any depth: input_size D, hidden_sizes (H_1, ..., H_{L-1})
    (an int: one hidden layer), num_classes C; weights std * randn (init 'normal', the
    exercise's) or sqrt(2 / fan_in) * randn ('kaiming', for ReLU nets), biases 0; dropout_keep:
    inverted-dropout keep probability of hidden activations; seed None draws from NumPy's
    global legacy generator (the course's driver), an int from ``RandomState(seed)``; dtype
    'float64' (gradient checks need it) or 'float32'.  ``params``: W1 (D, H_1), b1 (H_1,), ...,
    WL (H_{L-1}, C), bL (C,)."""

    def __init__(self, input_size: int, hidden_sizes: int | Sequence[int], num_classes: int,
                 std: float = 1e-4, dropout_keep: float = 1.0, seed: int | None = None,
                 dtype="float64", init: str = "normal"):
        hidden = [hidden_sizes] if isinstance(hidden_sizes, int | np.integer) else hidden_sizes
        self.sizes = [int(input_size), *[int(h) for h in hidden], int(num_classes)]
        if any(s <= 0 for s in self.sizes):
            raise FcnetError(f"layer sizes must be positive, got {self.sizes}")
        if not 0.0 < dropout_keep <= 1.0:
            raise FcnetError(f"dropout_keep must be in (0, 1], got {dropout_keep}")
        self.num_layers, self.std, self.dropout_keep = len(self.sizes) - 1, std, float(dropout_keep)
        key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if key not in DTYPES:
            raise FcnetError(f"dtype must be float32 or float64, got {dtype!r}")
        self.dtype = np.dtype(DTYPES[key])
        if init not in ("normal", "kaiming"):
            raise FcnetError(f"init must be 'normal' or 'kaiming', got {init!r}")
        rng = legacy_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True), 1):
            # drawn in float64 then cast, so float32 nets start from the same weights
            scale = std if init == "normal" else np.sqrt(2.0 / fan_in)
            self.params[f"W{i}"] = (scale * rng.randn(fan_in, fan_out)).astype(self.dtype)
            self.params[f"b{i}"] = np.zeros(fan_out, dtype=self.dtype)

    def __repr__(self) -> str:
        arch = "-".join(str(s) for s in self.sizes)
        extra = f", dropout_keep={self.dropout_keep}" if self.dropout_keep < 1 else ""
        return f"{type(self).__name__}({arch}, dtype={self.dtype.name}{extra})"

    input_size = property(lambda self: self.sizes[0])
    num_classes = property(lambda self: self.sizes[-1])

    def check_inputs(self, X, y=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Validate shapes, finiteness and labels; raise FcnetError naming the problem."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.input_size:
            raise FcnetError(f"X must have shape (N, {self.input_size}), got {tuple(X.shape)}")
        if not np.issubdtype(X.dtype, np.number):
            raise FcnetError(f"X must be numeric, got dtype {X.dtype}")
        # min and max carry any NaN or inf, without isfinite's (N, D) temporary (150 MB on CIFAR-10)
        if X.size and np.issubdtype(X.dtype, np.inexact) and not (
                np.isfinite(X.min()) and np.isfinite(X.max())):
            raise FcnetError("X contains NaN or infinite values")
        if y is None:
            return X, None
        if X.shape[0] == 0:
            raise FcnetError("X has no samples (0 rows); training needs at least one")
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise FcnetError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
        if y.size and not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
            raise FcnetError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.size and not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
            raise FcnetError("y must hold integer class labels")
        y = y.astype(np.intp)
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise FcnetError(f"labels must be in [0, {self.num_classes}), got range [{y.min()}, {y.max()}]")
        return X, y

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Class scores z_L (N, C) at prediction time (no dropout)."""
        return Stack(self.sizes, 1, self.dtype, self.params).scores(X)[0]

    def loss(self, X, y=None, reg: float = 0.0, dropout_seed: int | None = None):
        """Without y: class probabilities (N, C).  With y: (loss, grads keyed like params),
        loss = mean cross-entropy + reg * sum ||W||^2, in training mode (dropout, its masks
        fixed by ``dropout_seed`` so gradients can be checked numerically)."""
        if y is None:
            return self.predict_proba(X)
        X, y = self.check_inputs(X, y)
        # the training step's own forward and backward pass, on a stack of one
        stack = Stack.wrap([self])
        ws = Workspace(stack, X.shape[0], shared=True, dropout=self.dropout_keep < 1)
        ws.x[...] = X
        ws.y[...] = y
        loss, dz = forward_loss(stack, ws, np.array([float(reg)]), np.array([self.dropout_keep]),
                                [np.random.default_rng(dropout_seed)])
        backward(stack, ws, dz)
        for W, dW in zip(stack.params[::2], ws.grads[::2], strict=True):
            dW += (2.0 * reg) * W  # the L2 term: dJ/dW += 2 reg W
        return float(loss[0]), stack.member(0, ws.grads)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C)."""
        X, _ = self.check_inputs(X)
        return layers.softmax(self.scores(X), inplace=True)

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,)."""
        X, _ = self.check_inputs(X)
        return np.argmax(self.scores(X), axis=1)

    def train(self, X, y, X_val, y_val, **kwargs) -> dict:
        """Minibatch SGD as study.md Q3 (``Solver``), with the exercise's options and
        defaults: learning_rate=1e-3, learning_rate_decay=0.95, reg=5e-6, num_iters=100,
        batch_size=200, verbose=False, seed=None; extras: optimizer, optim_config, ...
        Returns {'loss_history', 'train_acc_history', 'val_acc_history'}."""
        return Solver(self, X, y, X_val, y_val, **kwargs).run().history()


class TwoLayerNet(MLP):
    """The exercise's two-layer net: affine - ReLU - affine - softmax.
    TwoLayerNet(4, 10, 3, std=0.1, seed=0) is the exercise's toy net."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, std: float = 1e-4,
                 seed: int | None = None, dropout_keep: float = 1.0, dtype="float64"):
        super().__init__(input_size, [hidden_size], output_size, std, dropout_keep, seed, dtype)
