"""``TorchPopulation``: K same-shaped MLPs trained at once by the exercise's SGD,
on CPU or CUDA, in float64, float32 or bfloat16-mixed.

The NumPy ``PopulationSolver``'s maths on torch tensors, written out by hand
(no autograd, no optimiser objects), so a step is little more than its products:

- layer 1: when every member shares one minibatch (one seed), all K first
  layers are one product x @ [W1_1 ... W1_K], (B, D) @ (D, K*H1), and their
  updates one product x^T [dZ1_1 ... dZ1_K], (D, B) @ (B, K*H1); members with
  different seeds draw different batches, and layer 1 becomes a batched
  product (K, B, D) @ (K, D, H1);
- deeper layers: ``torch.bmm`` over the member axis, (K, B, H) @ (K, H, H').

Exercise semantics, as ``fcnet.nn.solver.Solver``: member k's batches come from
``RandomState(seed_k)`` (``choice(N, B)`` with replacement, or shuffled epochs),
after iteration ``it`` with ``it % max(N // B, 1) == 0`` the train accuracy (on
that batch), validation accuracy and lr are recorded and lr *= decay.  The
loss is mean cross-entropy + reg * sum ||W||^2 and the update the fused SGD
step W <- (1 - 2 lr reg) W - lr a^T dz, b <- b - lr sum dz.  A member whose
loss stops being finite is frozen at its last good parameters; no step reads
a value back to the host, so CUDA runs without synchronising.

Dropout masks come from a torch generator per seed, (B, H) per hidden layer
and step, member k keeping u < keep_k; so a member equals its lone run (K = 1)
draw for draw, dropout included.

bfloat16 ("mixed"): the products take bf16 operands (the data, bf16 copies of
the weights refreshed in place after each update, bf16 activations); every
product accumulates in float32 inside the kernel; master weights, biases,
softmax, loss and updates are float32.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn.loop import SAMPLING, draw_batch
from fcnet.torch_backend import require_torch

torch = require_torch()

DTYPES = ("float64", "float32", "bfloat16")


def subnormals_flushed() -> bool:
    """Whether this thread flushes subnormal floats to zero right now."""
    return torch.tensor([1e-323], dtype=torch.float64).item() == 0.0


@contextlib.contextmanager
def flush_subnormals():
    """Flush subnormals to zero inside the block, restoring the previous mode after."""
    before = subnormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def normal_init(sizes: Sequence[int], std: float, seed: int) -> list[np.ndarray]:
    """[W1, b1, ..., WL, bL] float64 exactly as ``fcnet.nn.MLP(seed=seed)``
    draws them: W_l (H_{l-1}, H_l) = std * RandomState(seed).randn, b_l = 0."""
    rng = np.random.RandomState(seed)
    out: list[np.ndarray] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        out += [std * rng.randn(fan_in, fan_out), np.zeros(fan_out)]
    return out


def _per_member(name: str, values, k: int) -> list[float]:
    vals = [float(v) for v in np.broadcast_to(np.asarray(values, dtype=np.float64), (k,))]
    if not all(np.isfinite(vals)):
        raise FcnetError(f"{name} must be finite, got {vals}")
    return vals


class TorchPopulation:
    """Train K same-shaped MLPs at once with plain SGD.

    Parameters
    ----------
    weights : K lists [W1 (D, H1), b1 (H1,), ..., WL (H_{L-1}, C), bL (C,)]
        (NumPy arrays or tensors), every member's initial parameters
    X, y, X_val, y_val : training (N, D), (N,) and validation data (NumPy), shared
    lrs, decays, regs, keeps, seeds : one value or K values each
    num_iters, batch_size, sampling : as ``Solver``
    dtype : 'float64' | 'float32' | 'bfloat16' (mixed: bf16 products, float32 rest)
    device : a torch device (or its name)
    eval_at : iterations after which every active member's validation accuracy
        is kept in ``val_at[k]`` ({str(iteration): accuracy})
    threads : torch intra-op threads of a CPU step; None: torch's own count (a
        sweep worker's share of the cores).  On a quiet 2-core machine the bf16
        products ran 1.9-2.4x faster on 2 threads than on 1; on cores other
        processes load, each parallel region can wait a scheduler slice for its
        second thread (measured 7.6-14.6 ms an exercise step against 2.2 on one),
        so pass 1 there.
    """

    def __init__(
        self,
        weights: Sequence[Sequence],
        X,
        y,
        X_val,
        y_val,
        lrs: float | Sequence[float] = 1e-3,
        decays: float | Sequence[float] = 0.95,
        regs: float | Sequence[float] = 0.0,
        keeps: float | Sequence[float] = 1.0,
        seeds: int | Sequence[int] = 0,
        num_iters: int = 100,
        batch_size: int = 200,
        sampling: str = "replacement",
        dtype: str = "float32",
        device="cpu",
        eval_at: Sequence[int] = (),
        threads: int | None = None,
    ):
        k = len(weights)
        if k == 0:
            raise FcnetError("a population needs at least one member")
        if dtype not in DTYPES:
            raise FcnetError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if sampling not in SAMPLING:
            raise FcnetError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        self.k, self.device = k, torch.device(device)
        self.cuda = self.device.type == "cuda"  # no host read-backs per step there
        self.threads = torch.get_num_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise FcnetError(f"threads must be positive, got {threads}")
        self.mixed = dtype == "bfloat16"
        self.md = torch.float64 if dtype == "float64" else torch.float32  # master dtype
        self.cd = torch.bfloat16 if self.mixed else self.md  # operands of the products
        first = [tuple(np.shape(p)) for p in weights[0]]
        for j, w in enumerate(weights):
            if [tuple(np.shape(p)) for p in w] != first:
                raise FcnetError(f"member {j}'s parameters are shaped "
                                 f"{[tuple(np.shape(p)) for p in w]}, member 0's {first}")
        self.sizes = [first[0][0]] + [s[0] for s in first[1::2]]
        self.L = len(self.sizes) - 1
        self.lr0 = _per_member("lrs", lrs, k)
        self.decays = _per_member("decays", decays, k)
        self.regs = _per_member("regs", regs, k)
        self.keeps = _per_member("keeps", keeps, k)
        if not all(0 < p <= 1 for p in self.keeps):
            raise FcnetError(f"keeps must lie in (0, 1], got {self.keeps}")
        seeds = [int(s) for s in np.broadcast_to(np.asarray(seeds), (k,))]
        self.seeds = seeds
        uniq = sorted(set(seeds))
        self.group = [uniq.index(s) for s in seeds]  # member -> its seed's stream
        self.shared = len(uniq) == 1
        self.rngs = [np.random.RandomState(s) for s in uniq]
        self.perms = [np.empty(0, dtype=np.intp) for _ in uniq]
        self.mask_gens = []
        if min(self.keeps) < 1:
            self.mask_gens = [torch.Generator(device=self.device).manual_seed(s) for s in uniq]

        X = X if torch.is_tensor(X) else np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[1] != self.sizes[0] or y.shape != (X.shape[0],):
            raise FcnetError(f"X must be (N, {self.sizes[0]}) with y (N,), got "
                             f"{X.shape} and {y.shape}")
        self.n = X.shape[0]
        if self.n == 0:
            raise FcnetError("the training split is empty")
        if sampling == "shuffle" and batch_size > self.n:
            raise FcnetError(f"batch_size {batch_size} exceeds the {self.n} training rows "
                             "(sampling 'shuffle' draws each batch without replacement)")
        self.X = self._rows(X)
        self.y = torch.from_numpy(y.astype(np.int64)).to(self.device)
        self.X_val = self._rows(X_val)
        self.y_val = torch.from_numpy(np.asarray(y_val).astype(np.int64)).to(self.device)
        self.num_iters, self.batch_size, self.sampling = int(num_iters), int(batch_size), sampling
        self.iters_per_epoch = max(self.n // self.batch_size, 1)
        self._stack(weights)
        self._buffers()

        self.it = 0
        self.lr = list(self.lr0)
        self._set_lr()
        self.active = torch.ones(k, dtype=torch.bool, device=self.device)
        self._active_host = [True] * k
        self._loss_chunks: list[torch.Tensor] = []  # (steps, K) per chunk of batches
        self.train_acc_history: list[list[float]] = [[] for _ in range(k)]
        self.val_acc_history: list[list[float]] = [[] for _ in range(k)]
        self.lr_history: list[list[float]] = [[] for _ in range(k)]
        self.eval_at = {int(i) for i in eval_at}
        self.val_at: list[dict[str, float]] = [{} for _ in range(k)]
        self._queue: torch.Tensor | None = None  # (steps, S, B) batch indices ahead
        self._queue_at = 0

    # ------------------------------------------------------------ set-up
    def _rows(self, X):
        """Rows on the device in the products' dtype, converted once (a tensor
        already so is used as it is)."""
        if torch.is_tensor(X):
            return X.to(self.device, self.cd).contiguous()
        t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64 if self.md == torch.float64
                                                  else np.float32))
        return t.to(self.device).to(self.cd).contiguous()

    def _stack(self, weights) -> None:
        """W1 (D, K*H1), member k's columns k*H1 .. (k+1)*H1; W[l] (K, H_l, H_{l+1})
        for l >= 1; b[l] (K, H_{l+1}).  Wc/bc: the products' copies (the same
        tensors unless mixed)."""
        k, md = self.k, self.md

        def t(p):
            return torch.as_tensor(np.asarray(p) if not torch.is_tensor(p) else p.detach().cpu(),
                                   dtype=md)

        d, h1 = self.sizes[0], self.sizes[1]
        self.W = [torch.stack([t(w[0]) for w in weights], dim=1).reshape(d, k * h1)]
        self.W += [torch.stack([t(w[2 * i]) for w in weights]) for i in range(1, self.L)]
        self.b = [torch.stack([t(w[2 * i + 1]) for w in weights]) for i in range(self.L)]
        self.W = [w.to(self.device).contiguous() for w in self.W]
        self.b = [b.to(self.device).contiguous() for b in self.b]
        if self.mixed:
            self.Wc = [w.to(self.cd) for w in self.W]
            self.bc = [b.to(self.cd) for b in self.b]
        else:
            self.Wc, self.bc = self.W, self.b

    def _buffers(self) -> None:
        k, B, cd, dev = self.k, self.batch_size, self.cd, self.device
        d, h1 = self.sizes[0], self.sizes[1]
        if self.shared:
            self.x = torch.empty(B, d, dtype=cd, device=dev)
        else:
            self.x = torch.empty(k, B, d, dtype=cd, device=dev)
        self.z1 = torch.empty(B, k * h1, dtype=cd, device=dev)  # layer 1 for all members
        self.acts = [torch.empty(k, B, h, dtype=cd, device=dev) for h in self.sizes[2:]]
        self.step1 = torch.empty(d, k * h1, dtype=cd, device=dev)
        self.dz1 = torch.empty(B, k * h1, dtype=cd, device=dev)
        self.masks: list = [None] * (self.L - 1)
        self.keep_t = torch.tensor(self.keeps, dtype=self.md, device=dev).view(k, 1, 1)
        self.reg_t = torch.tensor(self.regs, dtype=self.md, device=dev)
        self.reg_t64 = self.reg_t.double()
        self.any_reg = any(r != 0 for r in self.regs)
        self.group_t = torch.tensor(self.group, dtype=torch.long, device=dev)

    def _set_lr(self) -> None:
        """The learning rates on the device, and what the step derives from them."""
        self.lr_t = torch.tensor(self.lr, dtype=self.md, device=self.device)
        self.coef_t = (-self.lr_t / self.batch_size).view(self.k, 1, 1)  # dz = coef * dJ/ds * B
        self.negcoef_t = -self.coef_t
        self.shrink = None
        if self.any_reg:
            shrink = [1 - 2 * lr * r for lr, r in zip(self.lr, self.regs, strict=True)]
            self.shrink = shrink[0] if self.k == 1 else torch.tensor(shrink, dtype=self.md,
                                                                     device=self.device)

    # ----------------------------------------------------------- batches
    def _indices(self):
        """This iteration's batch indices: (B,) shared or (S, B), drawn ahead a
        chunk at a time on the host and moved to the device once."""
        if self._queue is None or self._queue_at >= self._queue.shape[0]:
            steps = min(self.iters_per_epoch, max(self.num_iters - self.it, 1))
            rows = np.empty((steps, len(self.rngs), self.batch_size), dtype=np.int64)
            for t in range(steps):
                for g, rng in enumerate(self.rngs):
                    rows[t, g], self.perms[g] = draw_batch(
                        rng, self.n, self.batch_size, self.sampling, self.it + t,
                        self.iters_per_epoch, self.perms[g])
            self._queue, self._queue_at = torch.from_numpy(rows).to(self.device), 0
            self._loss_chunks.append(torch.full((steps, self.k), float("nan"),
                                                dtype=torch.float64, device=self.device))
        idx = self._queue[self._queue_at]
        self._queue_at += 1
        return idx

    def _gather(self, idx) -> torch.Tensor:
        """x (B, D) or (K, B, D) and labels (B,) or (K, B) of this batch."""
        if self.shared:
            torch.index_select(self.X, 0, idx[0], out=self.x)
            return self.y.index_select(0, idx[0])
        member_idx = idx.index_select(0, self.group_t)  # (K, B)
        torch.index_select(self.X, 0, member_idx.reshape(-1), out=self.x.view(-1, self.sizes[0]))
        return self.y[member_idx]

    # ----------------------------------------------------------- forward
    def _layer1(self, x, out=None):
        """relu(x W1 + b1) for every member, as (K, B, H1) (a view)."""
        k, h1 = self.k, self.sizes[1]
        if x.dim() == 2:
            b1 = self.bc[0].view(-1)
            z = torch.addmm(b1, x, self.Wc[0], out=out) if out is not None else \
                torch.addmm(b1, x, self.Wc[0])
            z.relu_()
            return z.view(x.shape[0], k, h1).permute(1, 0, 2)
        w1 = self.Wc[0].view(-1, k, h1).permute(1, 0, 2)  # (K, D, H1)
        z = torch.baddbmm(self.bc[0].unsqueeze(1), x, w1)
        z.relu_()
        if out is not None:  # keep layer 1 in its (B, K*H1) buffer for the backward pass
            zv = out.view(x.shape[1], k, h1).permute(1, 0, 2)
            zv.copy_(z)
            return zv
        return z

    def _forward(self, x, train: bool):
        """Scores (K, B, C) in the products' dtype; with ``train`` the hidden
        activations stay in their buffers (dropout applied)."""
        a = self._layer1(x, self.z1 if train else None)
        for i in range(1, self.L):
            if train and self.masks[i - 1] is not None:
                a.mul_(self.masks[i - 1])
            out = self.acts[i - 1] if train else None
            a = self._baddbmm(self.bc[i], a, self.Wc[i], out)
            if i < self.L - 1:
                a.relu_()
        return a

    def _bmm(self, a, b):
        """(K, n, m) @ (K, m, p); K = 1 as a plain product (faster for bf16 on CPU)."""
        return torch.mm(a[0], b[0]).unsqueeze(0) if self.k == 1 else torch.bmm(a, b)

    def _baddbmm(self, bias, a, b, out=None):
        """bias (K, p) + (K, n, m) @ (K, m, p), into ``out`` when given."""
        if self.k == 1:
            o = out[0] if out is not None else None
            z = torch.addmm(bias[0], a[0], b[0], out=o) if o is not None else \
                torch.addmm(bias[0], a[0], b[0])
            return z.unsqueeze(0)
        return torch.baddbmm(bias.unsqueeze(1), a, b, out=out)

    def _draw_masks(self) -> None:
        """Inverted-dropout masks (K, B, H) per hidden layer: u < keep_k, / keep_k."""
        if not self.mask_gens:
            return
        B = self.batch_size
        for i, h in enumerate(self.sizes[1:-1]):
            u = torch.stack([torch.rand(B, h, generator=g, device=self.device)  # any dtype alike
                             for g in self.mask_gens])
            u = u.index_select(0, self.group_t) if len(self.mask_gens) > 1 else u
            self.masks[i] = ((u < self.keep_t) / self.keep_t).to(self.cd)

    def scores(self, X) -> torch.Tensor:
        """Every member's scores (K, M, C) at prediction time, float (master dtype)."""
        return self._forward(self._rows(X), train=False).to(self.md)

    @torch.no_grad()
    def accuracies(self, X, y, chunk: int = 4096) -> list[float]:
        """Accuracy of every member on rows X (M, D) (as ``_rows`` makes them), y (M,)."""
        m = X.shape[0]
        correct = torch.zeros(self.k, dtype=torch.long, device=self.device)
        for s in range(0, m, chunk):
            pred = self.scores(X[s:s + chunk]).argmax(dim=2)
            correct += (pred == y[s:s + chunk]).sum(dim=1)
        return (correct.double() / max(m, 1)).cpu().tolist()

    def val_accuracies(self) -> list[float]:
        """Validation accuracy of every member now, K floats."""
        return self.accuracies(self.X_val, self.y_val)

    # -------------------------------------------------------------- step
    @torch.no_grad()
    def step(self) -> None:
        """One SGD iteration for every active member (on the CPU with
        ``self.threads`` intra-op threads, the caller's count restored after)."""
        before = torch.get_num_threads()
        if self.cuda or before == self.threads:
            return self._step()
        torch.set_num_threads(self.threads)
        try:
            self._step()
        finally:
            torch.set_num_threads(before)

    def _step(self) -> None:
        k, B, L, md = self.k, self.batch_size, self.L, self.md
        yb = self._gather(self._indices())
        self._draw_masks()
        # softmax cross-entropy per member, in the master dtype: log-probabilities (K, B, C)
        s = torch.log_softmax(self._forward(self.x, train=True), dim=2, dtype=md)
        ys = (yb if yb.dim() == 2 else yb.expand(k, B)).unsqueeze(2)  # (K, B, 1)
        loss = s.gather(2, ys).mean(dim=(1, 2), dtype=torch.float64).neg_()  # (K,)
        if self.any_reg:  # + reg_k * sum_l ||W_l,k||^2, one pass over each stack
            loss += self.reg_t64 * self._sq_norms()
        self._loss_chunks[-1][self._queue_at - 1] = loss
        # dJ/dscores with -lr folded in; frozen (diverged) members get lr 0 and dz 0
        fast = not self.cuda and all(self._active_host) and math.isfinite(loss.sum().item())
        if fast:  # the CPU's common case, no masking
            coef, negcoef, shrink = self.coef_t, self.negcoef_t, self.shrink
        else:
            self.active &= torch.isfinite(loss)
            if not self.cuda:
                self._active_host = self.active.tolist()
            lr = torch.where(self.active, self.lr_t, 0)
            coef = (-lr / B).view(k, 1, 1)
            negcoef = -coef
            shrink = (1 - 2 * lr * self.reg_t) if self.any_reg else None
        s.exp_().mul_(coef)  # the softmax, times -lr / B
        s.scatter_add_(2, ys, negcoef.expand(k, B, 1))
        if not fast:
            s.masked_fill_(~self.active.view(k, 1, 1), 0)  # a NaN member's dz is NaN, not 0
        dz = s.to(self.cd)
        for i in range(L - 1, 0, -1):  # stacked layer i is the model's layer i + 1
            a_prev = self.acts[i - 2] if i > 1 else self.z1.view(B, k, -1).permute(1, 0, 2)
            da = self._bmm(dz, self.Wc[i].transpose(1, 2))  # from W_i before its update
            self._update(i, self._bmm(a_prev.transpose(1, 2), dz), s.sum(dim=1), shrink)
            if self.masks[i - 1] is not None:
                da.mul_(self.masks[i - 1])
            s = dz = torch.ops.aten.threshold_backward(da, a_prev, 0)  # ReLU's gate
        # layer 1: [dZ1_1 ... dZ1_K] as (B, K*H1), then one product x^T dZ1
        h1 = self.sizes[1]
        if self.shared:
            dz1 = dz[0] if k == 1 else self.dz1.view(B, k, h1).copy_(dz.permute(1, 0, 2)).view(B, -1)
            torch.mm(self.x.t(), dz1, out=self.step1)
            self._update(0, self.step1, dz1.sum(dim=0), shrink)
        else:
            step = torch.bmm(self.x.transpose(1, 2), dz)  # (K, D, H1)
            self.step1.view(-1, k, h1).copy_(step.permute(1, 0, 2))
            self._update(0, self.step1, dz.sum(dim=1), shrink)
        self.it += 1
        if (self.it - 1) % self.iters_per_epoch == 0:
            self._record_epoch(yb)
        if self.it in self.eval_at:
            accs, active = self.val_accuracies(), self.active.cpu().tolist()
            for j in range(k):
                if active[j]:
                    self.val_at[j][str(self.it)] = accs[j]

    def _sq_norms(self) -> torch.Tensor:
        """sum_l ||W_l,k||^2 per member, (K,) float64."""
        if self.k == 1:
            return sum(torch.dot(w.view(-1), w.view(-1)) for w in self.W).double().view(1)
        norm = torch.linalg.vector_norm
        sq = norm(self.W[0].view(-1, self.k, self.sizes[1]), dim=(0, 2)).double() ** 2
        for w in self.W[1:]:
            sq += norm(w, dim=(1, 2)).double() ** 2
        return sq

    def _update(self, i: int, step, db, shrink) -> None:
        """W_i <- shrink W_i + step, b_i <- b_i + db (float), then the bf16 copies.
        ``shrink``: None (no L2), a float (K = 1) or per member (K,)."""
        W = self.W[i]
        if isinstance(shrink, float):
            torch.add(step, W, alpha=shrink, out=W)
        elif shrink is None:
            W.add_(step)
        else:  # W <- step + W * shrink_k, one pass over W
            if i == 0:
                Wv, sv = W.view(-1, self.k, self.sizes[1]), shrink.view(1, -1, 1)
                torch.addcmul(step.view(Wv.shape), Wv, sv, out=Wv)
            else:
                torch.addcmul(step, W, shrink.view(-1, 1, 1), out=W)
        self.b[i].add_(db.view_as(self.b[i]))
        if self.mixed:
            self.Wc[i].copy_(W)
            self.bc[i].copy_(self.b[i])

    def _record_epoch(self, yb) -> None:
        """As Solver: train accuracy on this batch, validation accuracy, the lr,
        then lr *= decay; active members only (reads back to the host)."""
        pred = self.scores(self.x).argmax(dim=2)
        ys = yb if yb.dim() == 2 else yb.expand(self.k, -1)
        train = (pred == ys).double().mean(dim=1).cpu().tolist()
        val = self.val_accuracies()
        self._active_host = self.active.cpu().tolist()
        for j in range(self.k):
            if self._active_host[j]:
                self.train_acc_history[j].append(float(train[j]))
                self.val_acc_history[j].append(float(val[j]))
                self.lr_history[j].append(self.lr[j])
                self.lr[j] *= self.decays[j]
        self._set_lr()

    def run(self, until: int | None = None) -> TorchPopulation:
        """Train up to iteration ``until`` (default num_iters); stops early only
        once every member has diverged (checked at epoch records)."""
        stop = self.num_iters if until is None else min(until, self.num_iters)
        with flush_subnormals():
            while self.it < stop and any(self._active_host):
                self.step()
        return self

    @property
    def losses(self) -> torch.Tensor:
        """Every member's loss per iteration so far, (it, K) float64."""
        if not self._loss_chunks:
            return torch.empty(0, self.k, dtype=torch.float64, device=self.device)
        return torch.cat(self._loss_chunks)[:self.it]

    # ---------------------------------------------------------- results
    def diverged_at(self) -> list[int | None]:
        """Each member's first non-finite loss iteration, or None."""
        bad = ~torch.isfinite(self.losses)
        out: list[int | None] = []
        for j in range(self.k):
            rows = torch.nonzero(bad[:, j])
            out.append(int(rows[0]) if rows.numel() else None)
        return out

    def history(self, member: int) -> dict:
        """Member's histories, as ``Solver.history()`` plus 'lr_history'; the loss
        history ends at its divergence, as a lone run's."""
        d = self.diverged_at()[member]
        end = self.it if d is None else d + 1
        return {
            "loss_history": self.losses[:end, member].cpu().tolist(),
            "train_acc_history": list(self.train_acc_history[member]),
            "val_acc_history": list(self.val_acc_history[member]),
            "lr_history": list(self.lr_history[member]),
        }

    def member_params(self, member: int) -> list[torch.Tensor]:
        """[W1 (D, H1), b1, ..., WL, bL] of one member (master dtype, on the device)."""
        h1 = self.sizes[1]
        out = [self.W[0][:, member * h1:(member + 1) * h1], self.b[0][member]]
        for i in range(1, self.L):
            out += [self.W[i][member], self.b[i][member]]
        return out

    # ---------------------------------------------------------- resuming
    def state(self) -> dict:
        """Everything to continue exactly, as tensors and plain numbers (a
        ``torch.load(weights_only=True)``-safe dict): parameters, iteration,
        learning rates, the batch and mask streams, histories."""
        out: dict = {f"W.{i}": w.detach().cpu().clone() for i, w in enumerate(self.W)}
        out.update({f"b.{i}": b.detach().cpu().clone() for i, b in enumerate(self.b)})
        out.update({"it": self.it, "lr": torch.tensor(self.lr, dtype=torch.float64),
                    "active": self.active.cpu().clone(), "losses": self.losses.cpu().clone()})
        for g, rng in enumerate(self.rngs):
            _, keys, pos, has_gauss, gauss = rng.get_state()
            out[f"rng.{g}"] = torch.from_numpy(keys.astype(np.int64))
            out[f"rng.{g}.rest"] = torch.tensor([pos, has_gauss, 0], dtype=torch.int64)
            out[f"rng.{g}.gauss"] = torch.tensor(gauss, dtype=torch.float64)
            out[f"perm.{g}"] = torch.from_numpy(self.perms[g].astype(np.int64))
        for g, gen in enumerate(self.mask_gens):
            out[f"mask_gen.{g}"] = gen.get_state()
        for j in range(self.k):
            out[f"train_acc.{j}"] = torch.tensor(self.train_acc_history[j], dtype=torch.float64)
            out[f"val_acc.{j}"] = torch.tensor(self.val_acc_history[j], dtype=torch.float64)
            out[f"lr_history.{j}"] = torch.tensor(self.lr_history[j], dtype=torch.float64)
            out[f"val_at.{j}"] = torch.tensor([[int(i), a] for i, a in self.val_at[j].items()],
                                              dtype=torch.float64).reshape(-1, 2)
        if self._queue is not None:
            out["queue"] = self._queue[self._queue_at:].cpu().clone()
        return out

    def load_state(self, state: dict) -> None:
        """Restore ``state()`` into this population (same K, shapes and streams)."""
        for i, w in enumerate(self.W):
            w.copy_(state[f"W.{i}"])
        for i, b in enumerate(self.b):
            b.copy_(state[f"b.{i}"])
        if self.mixed:
            for w, wc in zip(self.W + self.b, self.Wc + self.bc, strict=True):
                wc.copy_(w)
        self.it = int(state["it"])
        self.lr = [float(v) for v in state["lr"].tolist()]
        self._set_lr()
        self.active.copy_(state["active"])
        self._active_host = self.active.cpu().tolist()
        for g, rng in enumerate(self.rngs):
            pos, has_gauss, _ = (int(v) for v in state[f"rng.{g}.rest"].tolist())
            rng.set_state(("MT19937", state[f"rng.{g}"].numpy().astype(np.uint32), pos,
                           has_gauss, float(state[f"rng.{g}.gauss"])))
            self.perms[g] = state[f"perm.{g}"].numpy().astype(np.intp)
        for g, gen in enumerate(self.mask_gens):
            gen.set_state(state[f"mask_gen.{g}"])
        for j in range(self.k):
            self.train_acc_history[j] = state[f"train_acc.{j}"].tolist()
            self.val_acc_history[j] = state[f"val_acc.{j}"].tolist()
            self.lr_history[j] = state[f"lr_history.{j}"].tolist()
            self.val_at[j] = {str(int(i)): a for i, a in state[f"val_at.{j}"].tolist()}
        q = state.get("queue")
        self._queue, self._queue_at = (None, 0) if q is None or not q.numel() else \
            (q.to(self.device), 0)
        self._loss_chunks = [state["losses"].to(self.device)]
        if self._queue is not None:
            self._loss_chunks.append(torch.full((self._queue.shape[0], self.k), float("nan"),
                                                dtype=torch.float64, device=self.device))
