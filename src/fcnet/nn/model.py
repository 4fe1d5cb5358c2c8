"""The fully-connected network: affine - ReLU - [dropout] - ... - affine - softmax.

``MLP`` is the engine for any depth; ``TwoLayerNet`` is the exercise's contract,
the same engine with one hidden layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn import layers
from fcnet.nn.rng import legacy_rng
from fcnet.nn.solver import Solver

DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype) -> np.dtype:
    """'float32' | 'float64' | numpy dtype -> numpy dtype; anything else is an error."""
    key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if key not in DTYPES:
        raise FcnetError(f"dtype must be float32 or float64, got {dtype!r}")
    return np.dtype(DTYPES[key])


class Workspace:
    """Preallocated buffers for one batch size, so a training step allocates
    almost nothing.  acts[l] is (N, H_l); grads mirrors params."""

    def __init__(self, model: MLP, n: int):
        dt = model.dtype
        self.n = n
        self.x = np.empty((n, model.sizes[0]), dtype=dt)
        self.y = np.empty(n, dtype=np.intp)
        self.acts = [np.empty((n, h), dtype=dt) for h in model.sizes[1:]]
        self.dacts = [np.empty((n, h), dtype=dt) for h in model.sizes[1:-1]]
        self.masks: list[np.ndarray | None] = [None] * (model.num_layers - 1)
        self.grads = {k: np.empty_like(v) for k, v in model.params.items()}
        self.tmp = {k: np.empty_like(v) for k, v in model.params.items()}  # scratch


class MLP:
    """Fully-connected classifier for any depth.

    Parameters
    ----------
    input_size : D
    hidden_sizes : (H_1, ..., H_{L-1}); an int means one hidden layer
    num_classes : C
    std : weights ~ std * randn, biases 0
    dropout_keep : inverted-dropout keep probability on hidden activations
    seed : None draws from NumPy's global legacy generator (the course's driver);
        an int draws W1, W2, ... from ``np.random.RandomState(seed)``
    dtype : 'float64' (default, gradient checks need it) or 'float32'

    ``params`` holds W1 (D, H_1), b1 (H_1,), ..., WL (H_{L-1}, C), bL (C,).
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: int | Sequence[int],
        num_classes: int,
        std: float = 1e-4,
        dropout_keep: float = 1.0,
        seed: int | None = None,
        dtype="float64",
    ):
        if isinstance(hidden_sizes, int | np.integer):
            hidden_sizes = [int(hidden_sizes)]
        self.sizes = [int(input_size), *[int(h) for h in hidden_sizes], int(num_classes)]
        if any(s <= 0 for s in self.sizes):
            raise FcnetError(f"layer sizes must be positive, got {self.sizes}")
        if not 0.0 < dropout_keep <= 1.0:
            raise FcnetError(f"dropout_keep must be in (0, 1], got {dropout_keep}")
        self.num_layers = len(self.sizes) - 1
        self.std = std
        self.dropout_keep = float(dropout_keep)
        self.dtype = resolve_dtype(dtype)
        rng = legacy_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        layer_shapes = zip(self.sizes[:-1], self.sizes[1:], strict=True)
        for i, (fan_in, fan_out) in enumerate(layer_shapes, start=1):
            # drawn in float64 then cast, so float32 nets start from the same weights
            self.params[f"W{i}"] = (std * rng.randn(fan_in, fan_out)).astype(self.dtype)
            self.params[f"b{i}"] = np.zeros(fan_out, dtype=self.dtype)
        self._ws: Workspace | None = None

    def __repr__(self) -> str:
        arch = "-".join(str(s) for s in self.sizes)
        extra = f", dropout_keep={self.dropout_keep}" if self.dropout_keep < 1 else ""
        return f"{type(self).__name__}({arch}, dtype={self.dtype.name}{extra})"

    @property
    def input_size(self) -> int:
        return self.sizes[0]

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    def astype(self, dtype) -> MLP:
        """Cast the parameters in place (float32 for speed, float64 for checks)."""
        self.dtype = resolve_dtype(dtype)
        for k, v in self.params.items():
            self.params[k] = v.astype(self.dtype)
        self._ws = None
        return self

    # ----------------------------------------------------------------- checks
    def check_inputs(self, X, y=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Validate shapes, finiteness and labels; raise FcnetError naming the problem."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.input_size:
            raise FcnetError(
                f"X must have shape (N, {self.input_size}), got {tuple(X.shape)}"
            )
        if not np.issubdtype(X.dtype, np.number):
            raise FcnetError(f"X must be numeric, got dtype {X.dtype}")
        if not np.isfinite(X).all():
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
        if y.size and not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.mod(y, 1) == 0):
                raise FcnetError("y must hold integer class labels")
        y = y.astype(np.intp)
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise FcnetError(
                f"labels must be in [0, {self.num_classes}), got range [{y.min()}, {y.max()}]"
            )
        return X, y

    # ---------------------------------------------------------------- forward
    def scores(self, X: np.ndarray) -> np.ndarray:
        """Class scores z_L (N, C) at prediction time (no dropout)."""
        a = np.asarray(X, dtype=self.dtype)
        for i in range(1, self.num_layers + 1):
            a = layers.affine_forward(a, self.params[f"W{i}"], self.params[f"b{i}"])
            if i < self.num_layers:
                layers.relu_forward(a, inplace=True)
        return a

    def _forward_loss(self, ws: Workspace, reg: float, rng) -> tuple[float, np.ndarray]:
        """Training forward pass on ws.x: post-ReLU (and dropout) activations in
        ws.acts, then J and dJ/dz_L (N, C), written over the scores in ws.acts[-1]."""
        P, L = self.params, self.num_layers
        # forward: a_l = relu(a_{l-1} W_l + b_l), then dropout
        a = ws.x
        for i in range(1, L):
            z = layers.affine_forward(a, P[f"W{i}"], P[f"b{i}"], out=ws.acts[i - 1])
            a = layers.relu_forward(z, inplace=True)
            if self.dropout_keep < 1.0:
                mask = layers.dropout_mask(a.shape, self.dropout_keep, rng, self.dtype)
                ws.masks[i - 1] = mask
                layers.dropout_forward(a, mask, inplace=True)
            else:
                ws.masks[i - 1] = None  # no stale mask from an earlier run with dropout
        scores = layers.affine_forward(a, P[f"W{L}"], P[f"b{L}"], out=ws.acts[L - 1])
        # J = mean CE + reg * sum_l ||W_l||^2
        loss, dz = layers.softmax_loss(scores, ws.y, inplace=True)
        loss += reg * sum(float(np.vdot(P[f"W{i}"], P[f"W{i}"])) for i in range(1, L + 1))
        return loss, dz

    def _backward(self, ws: Workspace, dz: np.ndarray, layer_step) -> None:
        """Back-propagate dz = dJ/dz_L (N, C) top layer down.  For each layer l,
        ``layer_step(l, dz_l, a_{l-1}, da)`` takes the layer's gradients (and, for
        l > 1, writes da_{l-1} = dz_l W_l^T into da, from W_l before any update);
        then the dropout and ReLU gates turn da_{l-1} into dz_{l-1}, in place."""
        for i in range(self.num_layers, 0, -1):
            a_prev = ws.acts[i - 2] if i > 1 else ws.x
            da = ws.dacts[i - 2] if i > 1 else None
            layer_step(i, dz, a_prev, da)
            if i > 1:
                if ws.masks[i - 2] is not None:
                    layers.dropout_backward(da, ws.masks[i - 2], inplace=True)
                dz = layers.relu_backward(da, a_prev, inplace=True)

    def forward_backward(self, ws: Workspace, reg: float, rng=None) -> float:
        """The training step's maths on ws.x (N, D) and ws.y (N,); fills ws.grads.

        Dropout masks (when dropout_keep < 1) are drawn from ``rng``.
        Returns the regularised loss J.
        """
        P, G = self.params, ws.grads
        loss, dz = self._forward_loss(ws, reg, rng)

        def grads(i: int, dz: np.ndarray, a_prev: np.ndarray, da: np.ndarray | None) -> None:
            # dW_l = a_{l-1}^T dz_l + 2 reg W_l, db_l = sum_i dz_l
            W, dW = P[f"W{i}"], G[f"W{i}"]
            layers.affine_backward(dz, a_prev, W, dw=dW, db=G[f"b{i}"], dx=da, need_dx=i > 1)
            if reg:
                dW += np.multiply(W, 2.0 * reg, out=ws.tmp[f"W{i}"])

        self._backward(ws, dz, grads)
        return loss

    def sgd_step(self, ws: Workspace, reg: float, lr: float, rng=None) -> float:
        """One plain-SGD step on ws.x, ws.y with the update fused into backprop.

        The same maths as ``forward_backward`` then ``optim.SGD`` (equal up to
        float rounding): W_l <- (1 - 2 lr reg) W_l - lr a_{l-1}^T dz_l and
        b_l <- b_l - lr sum_i dz_l.  Folding -lr into dz (a small (N, C) array)
        makes each layer's gradient the update itself, so a weight matrix costs
        one matrix product into ws.tmp and one add, with no gradient buffer
        (ws.grads is left untouched).  dx is never formed for the first layer.

        Returns J; when it is not finite nothing is updated (the last good
        parameters stay).
        """
        loss, dz = self._forward_loss(ws, reg, rng)
        if not math.isfinite(loss):
            return loss
        P = self.params
        dz *= -lr  # -lr dJ/dz_L, so every product below is -lr times a gradient
        shrink = 1.0 - 2.0 * lr * reg  # the L2 part: W - lr (2 reg W)

        def update(i: int, dz: np.ndarray, a_prev: np.ndarray, da: np.ndarray | None) -> None:
            W, b = P[f"W{i}"], P[f"b{i}"]
            _, step, db = layers.affine_backward(dz, a_prev, W, dw=ws.tmp[f"W{i}"],
                                                 db=ws.tmp[f"b{i}"], dx=da, need_dx=i > 1)
            if reg:
                W *= shrink
            W += step  # -lr a_{l-1}^T dz_l
            b += db  # -lr sum_i dz_l

        self._backward(ws, dz, update)
        return loss

    def workspace(self, n: int) -> Workspace:
        """A (cached) workspace for batches of n rows."""
        if self._ws is None or self._ws.n != n or self._ws.x.dtype != self.dtype:
            self._ws = Workspace(self, n)
        return self._ws

    # ------------------------------------------------------------- contract
    def loss(self, X, y=None, reg: float = 0.0, dropout_seed: int | None = None):
        """Without y: class probabilities (N, C).  With y: (loss, grads), grads
        keyed like params, loss = mean cross-entropy + reg * sum ||W||^2.

        With y the net is in training mode, so dropout applies; ``dropout_seed``
        fixes the masks (deterministic, so gradients can be checked numerically).
        """
        X, y = self.check_inputs(X, y)
        if y is None:
            return layers.softmax(self.scores(X), inplace=True)
        ws = Workspace(self, X.shape[0])
        ws.x[...] = X
        ws.y[...] = y
        rng = legacy_rng(dropout_seed)
        loss = self.forward_backward(ws, reg, rng)
        return loss, ws.grads

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C)."""
        X, _ = self.check_inputs(X)
        return layers.softmax(self.scores(X), inplace=True)

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,)."""
        X, _ = self.check_inputs(X)
        return np.argmax(self.scores(X), axis=1)

    def train(self, X, y, X_val, y_val, **kwargs) -> dict:
        """Minibatch SGD exactly as study.md Q3 (``fcnet.nn.solver.Solver``).

        Keyword options and defaults are the exercise's: learning_rate=1e-3,
        learning_rate_decay=0.95, reg=5e-6, num_iters=100, batch_size=200,
        verbose=False, seed=None; extras: optimizer, optim_config, sampling, ...
        Returns {'loss_history', 'train_acc_history', 'val_acc_history'}.
        """
        solver = Solver(self, X, y, X_val, y_val, **kwargs)
        solver.run()
        return solver.history()

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}


class TwoLayerNet(MLP):
    """The exercise's two-layer net: affine - ReLU - affine - softmax.

    TwoLayerNet(4, 10, 3, std=0.1, seed=0) is the exercise's toy net.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        std: float = 1e-4,
        seed: int | None = None,
        dropout_keep: float = 1.0,
        dtype="float64",
    ):
        super().__init__(
            input_size, [hidden_size], output_size, std=std, dropout_keep=dropout_keep,
            seed=seed, dtype=dtype,
        )
