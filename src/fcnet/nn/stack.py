"""K same-shaped networks as one (a lone net is K = 1): the engine's forward and backward
pass.  W[0] (D, K, H1), reshaped to (D, K*H1), makes every member's first layer one
product x W1 of a shared minibatch x (N, D); W[l] (K, H_l, H_{l+1}) for l >= 1 and b[l]
(K, H_{l+1}) take batched products (K, N, H) @ (K, H, H').  Members with their own
minibatches see x (K, N, D), and layer 1 is a batched product with W[0] as (K, D, H1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fcnet.nn import blas, layers


def row_max(d: np.ndarray) -> np.ndarray:
    """max over the last axis of d (..., C) -> (...), reduced over a transposed copy (..., C, N):
    numpy reduces a short last axis slowly (15 us for 200 x 10, against 3), and a maximum is
    exact in any order."""
    return np.maximum.reduce(np.swapaxes(d, -1, -2).copy(), axis=-2)


class Stack:
    """The parameters of K nets with layer sizes ``sizes`` = [D, H_1, ..., C]: ``params``
    lists them stacked in order W1, b1, W2, b2, ...; ``member(j)`` gives member j's as
    the course names them (W1 (D, H1), b1 (H1,), ...), views that stay current."""

    def __init__(self, sizes: Sequence[int], k: int, dtype: np.dtype, P: dict | None = None):
        """Zeros, or (K = 1) views of one model's params ``P``, W1 (D, H1), b1 (H1,), ..."""
        self.sizes, self.k, self.dtype = list(sizes), k, np.dtype(dtype)
        self.L = len(self.sizes) - 1
        if P is not None:
            self.W = [P["W1"][:, None, :]] + [P[f"W{i}"][None] for i in range(2, self.L + 1)]
            self.b = [P[f"b{i}"][None] for i in range(1, self.L + 1)]
        else:
            pairs = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
            self.W = [np.zeros((pairs[0][0], k, pairs[0][1]), dtype=self.dtype)]
            self.W += [np.zeros((k, a, b), dtype=self.dtype) for a, b in pairs[1:]]
            self.b = [np.zeros((k, h), dtype=self.dtype) for h in self.sizes[1:]]
        self.params = [p for pair in zip(self.W, self.b, strict=True) for p in pair]
        self._scratch: dict[tuple[int, int], list[np.ndarray]] = {}  # scores' buffers by (N, K)

    @classmethod
    def wrap(cls, models) -> Stack:
        """A stack holding the models' parameters, each model's ``params`` then
        live views of its slice.  One model is wrapped without a copy."""
        first = models[0]
        copy = len(models) > 1 or not all(p.flags.c_contiguous and p.dtype == first.dtype
                                          for p in first.params.values())
        stack = cls(first.sizes, len(models), first.dtype, None if copy else first.params)
        for j, m in enumerate(models):
            views = stack.member(j)
            if copy:
                for name, v in views.items():
                    v[...] = m.params[name]
            m.params.update(views)
        return stack

    def slices(self, j: int, arrays: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Member j's slice of each of ``arrays`` (default ``params``), in their order."""
        return [a[:, j] if i == 0 else a[j] for i, a in enumerate(arrays or self.params)]

    def member(self, j: int, arrays: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Member j's slice of each of ``arrays`` (default ``params``), by the course's names."""
        names = [f"{w}{i}" for i in range(1, self.L + 1) for w in "Wb"]  # W1, b1, W2, b2, ...
        return dict(zip(names, self.slices(j, arrays), strict=True))

    def per_member(self, values: np.ndarray) -> list:
        """Values (K,) shaped to broadcast against each of ``params``; one float
        when every member has the same (a lone net: plain scalar arithmetic)."""
        v = np.asarray(values, dtype=np.float64)
        if (v == v[0]).all():
            return [float(v[0])] * len(self.params)
        shapes = [(1, -1, 1), (-1, 1)] + [(-1, 1, 1), (-1, 1)] * (self.L - 1)
        return [v.reshape(s) for s in shapes]

    def scores(self, X: np.ndarray, members: slice = slice(None), scratch: bool = False) -> np.ndarray:
        """Class scores z_L (K, N, C) of X (N, D), no dropout (prediction).  ``scratch``: into
        buffers kept for the next call of this shape, valid until then (fresh arrays of this
        size cost page faults: half the time of a population's validation pass)."""
        X = np.asarray(X, dtype=self.dtype)
        W0 = self.W[0][:, members]
        n, k, h1 = X.shape[0], W0.shape[1], self.sizes[1]
        W0 = W0 if k == 1 or W0.flags.c_contiguous else np.ascontiguousarray(W0)
        if not scratch:
            out = [None] * (self.L + 1)
        elif (out := self._scratch.get((n, k))) is None:
            out = self._scratch[n, k] = [np.empty((n, k * h1), self.dtype) if k > 1 else None] + [
                np.empty((k, n, h), self.dtype) for h in self.sizes[1:]]
        if k == 1:  # layer 1's product lands in a itself: no transposition
            a = np.matmul(X, W0.reshape(-1, h1), out=None if out[1] is None else out[1][0])[None]
            a += self.b[0][members, None, :]
        else:
            z = np.matmul(X, W0.reshape(-1, k * h1), out=out[0])
            a = np.add(z.reshape(n, k, h1).transpose(1, 0, 2), self.b[0][members, None, :], out=out[1])
        for i in range(1, self.L):
            layers.relu_forward(a, inplace=True)
            a = layers.affine_forward(a, self.W[i][members], self.b[i][members, None, :], out=out[i + 1])
        return a

    def sq_norms(self) -> np.ndarray:
        """sum_l ||W_l,k||^2 per member, (K,) float64."""
        if self.k == 1:  # BLAS dot products
            return np.array([sum(float(np.vdot(w, w)) for w in self.W)])
        w1 = self.W[0].reshape(-1, self.k * self.sizes[1])
        sq = np.einsum("ij,ij->j", w1, w1).reshape(self.k, -1).sum(axis=1, dtype=np.float64)
        for w in self.W[1:]:
            sq += np.einsum("kij,kij->k", w, w)
        return sq


class Workspace:
    """Preallocated buffers of one step on batches of n rows, so a step allocates
    almost nothing: x (N, D) and y (N,) when the members share the batch, else
    (K, N, D) and (K, N); z1 (N, K*H1) holds layer 1's product (and dZ1 in the
    backward pass) of a shared batch; acts[l], dacts[l], masks[l] (K, N, H_{l+1});
    grads mirrors ``stack.params``."""

    def __init__(self, stack: Stack, n: int, shared: bool, dropout: bool):
        dt, k, sizes = stack.dtype, stack.k, stack.sizes
        self.n, self.shared = n, shared
        lead = (n,) if shared else (k, n)
        self.x = np.empty((*lead, sizes[0]), dtype=dt)
        self.y = np.empty(lead, dtype=np.intp)
        self.acts = [np.empty((k, n, h), dtype=dt) for h in sizes[1:]]
        # K = 1 needs no transposition: layer 1's product lands in acts[0] itself
        self.z1 = None if not shared else self.acts[0].reshape(n, sizes[1]) if k == 1 \
            else np.empty((n, k * sizes[1]), dtype=dt)
        self.dacts = [np.empty((k, n, h), dtype=dt) for h in sizes[1:-1]]
        self.masks = [np.empty((k, n, h), dtype=dt) if dropout else None for h in sizes[1:-1]]
        self.grads = [np.empty_like(p) for p in stack.params]


def forward_loss(stack: Stack, ws: Workspace, reg: np.ndarray, keep: np.ndarray,
                 mask_rngs) -> tuple[np.ndarray, np.ndarray]:
    """Training forward pass on ws.x: J per member (K,) and dJ/dz_L (K, N, C),
    written over the scores in ws.acts[-1].  J_k = mean_i CE(z_L,k,i, y_i) +
    reg_k sum_l ||W_l,k||^2; post-ReLU (and dropout) activations stay in ws.acts."""
    n, k, h1, L = ws.n, stack.k, stack.sizes[1], stack.L
    a, b1 = ws.acts[0], stack.b[0][:, None, :]
    if ws.shared:  # layer 1: z_1 = x W_1 + b_1
        np.matmul(ws.x, stack.W[0].reshape(-1, k * h1), out=ws.z1)
        if k > 1:  # (N, K*H1) -> (K, N, H1) in the bias's pass
            np.add(ws.z1.reshape(n, k, h1).transpose(1, 0, 2), b1, out=a)
        else:
            a += b1
    else:
        np.matmul(ws.x, stack.W[0].transpose(1, 0, 2), out=a)
        a += b1
    for i in range(1, L):  # a_i = relu(z_i), then inverted dropout
        layers.relu_forward(a, inplace=True)
        if ws.masks[i - 1] is not None:
            for j in range(k):
                layers.dropout_mask(keep[j], mask_rngs[j], out=ws.masks[i - 1][j])
            layers.dropout_forward(a, ws.masks[i - 1], inplace=True)
        # z_{i+1} = a_i W_{i+1} + b_{i+1}, member by member
        a = layers.affine_forward(a, stack.W[i], stack.b[i][:, None, :], out=ws.acts[i])
    loss, dz = layers.softmax_loss(ws.acts[L - 1], ws.y, inplace=True, row_max=row_max)
    if reg.any():
        loss = loss + reg * stack.sq_norms()
    return np.atleast_1d(loss), dz


def backward(stack: Stack, ws: Workspace, dz: np.ndarray, keep: Sequence | None = None) -> None:
    """Back-propagate dz = dJ/dz_L (K, N, C) into ws.grads, top layer down:
    db_l = sum_i dz_l, da_{l-1} = dz_l W_l^T, the dropout and ReLU gates give dz_{l-1};
    then every dW_l = a_{l-1}^T dz_l, each da having been taken from W_l before its step.
    The L2 term is the update rule's.  A caller may scale dz first (plain SGD folds in
    -lr: each gradient is the step).  ``keep``: plain SGD's factors 1 - 2 lr reg, one per
    weight (a float, or per member shaped like ``stack.per_member``'s): the products then
    land in the weights themselves, W_l <- keep_l W_l + a^T dz (``blas.gemm``'s beta, no
    pass over a separate gradient), and ws.grads holds only the biases' steps."""
    n, k, h1 = ws.n, stack.k, stack.sizes[1]
    stacked = ws.shared and k > 1  # dZ_1 of every member side by side: z1 (N, K*H1)
    z1 = ws.z1.reshape(n, k, h1).transpose(1, 0, 2) if stacked else None
    products = []  # (a^T, dz, l): dW_l = a^T dz
    for i in range(stack.L - 1, 0, -1):  # stacked layer i is the model's layer i + 1
        a_prev = ws.acts[i - 1]
        products.append((np.swapaxes(a_prev, -1, -2), dz, i))
        np.sum(dz, axis=-2, out=ws.grads[2 * i + 1])  # db = sum_i dz_i
        da = np.matmul(dz, np.swapaxes(stack.W[i], -1, -2), out=ws.dacts[i - 1])  # da = dz W^T
        if ws.masks[i - 1] is not None:
            layers.dropout_backward(da, ws.masks[i - 1], inplace=True)
        dz = layers.relu_backward(da, a_prev, out=z1 if i == 1 and stacked else da)
    # layer 1: dW_1 = x^T dz_1, db_1 = sum_i dz_1, as (D, K, H1)
    if not ws.shared:  # member by member: (K, D, N) @ (K, N, H1), into the (D, K, H1) layout
        dz.sum(axis=1, out=ws.grads[1])
        products.append((ws.x.transpose(0, 2, 1), dz, 0))
    elif stacked:  # every member at once: x^T [dZ1_1 ... dZ1_K], (D, N) @ (N, K*H1)
        if stack.L == 1:  # no hidden layer: dz is still the scores' own
            np.copyto(z1, dz)
        # the same sums over i as dz.sum(axis=1), bit for bit, read in z1's layout
        ws.z1.sum(axis=0, out=ws.grads[1].reshape(-1))
        products.append((ws.x.T, ws.z1, 0))
    else:
        dz.sum(axis=1, out=ws.grads[1])
        products.append((ws.x.T, dz.reshape(n, h1), 0))
    for a_t, d, i in products:
        W, dW = stack.W[i], ws.grads[2 * i]
        if i == 0 and ws.shared:  # (D, K, H1) seen as the product's (D, K*H1)
            W, dW = W.reshape(-1, k * h1), dW.reshape(-1, k * h1)
        elif i == 0:  # or member by member, (K, D, H1)
            W, dW = W.transpose(1, 0, 2), dW.transpose(1, 0, 2)
        if keep is None:
            np.matmul(a_t, d, out=dW)
            continue
        beta = keep[i]
        if not isinstance(beta, float) and blas.per_slice(W):  # per member, each its gemm's beta
            beta = [float(v) for v in beta.reshape(-1).astype(W.dtype)]
        elif not isinstance(beta, float):  # per member: its own pass, then gemm adds
            w = stack.W[i]
            if i == 0:  # (D, K, H1) as (D, K*H1) by a factor per column: a 1.5x faster pass
                w, beta = w.reshape(-1, k * h1), np.repeat(beta.reshape(-1), h1)
            np.multiply(w, beta.astype(W.dtype), out=w)
            beta = 1.0
        blas.gemm(a_t, d, W, beta, scratch=dW)
