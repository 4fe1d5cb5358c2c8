"""``TorchPopulation``: K same-shaped MLPs trained at once by the exercise's SGD, by hand.
Layer 1 of members sharing a seed's minibatch is one (B, D) @ (D, K*H1), of several seeds a
batched (K, B, D) @ (K, D, H1); deeper layers ``torch.bmm`` over members.  The update is the
backward product itself, ``addmm_`` with beta = 1 - 2 lr reg (no pass over a separate step).
A member whose loss turns non-finite is frozen at its last good parameters (no host read-back
on CUDA).  Init, batches and dropout masks are each lone run's: a float64 member equals its
lone run to rounding.
bfloat16-mixed: bf16 operands accumulated in float32, everything else float32."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.torch_backend import require_torch
from fcnet.torch_backend.model import keep_bits, keep_bound, normal_init
from fcnet.torch_backend.train import EVAL_CHUNK, Engine

torch = require_torch()

# what the members' one stacked step and one loop share (the rest may differ)
SHARED = ("hidden", "batch_size", "sampling", "schedule", "epochs", "iters", "dtype", "device", "amp")


class TorchPopulation(Engine):
    """K MLPs, a ``RunConfig`` each (differing in lr, decay, reg, dropout_keep, init scale,
    seed).  ``threads``: a CPU step's (None: torch's count); 1 on cores other processes load,
    where a parallel region can wait a time slice (7.6-14.6 ms a step against 2.2 on one)."""

    def __init__(self, configs: Sequence[RunConfig], input_size: int, num_classes: int,
                 threads: int | None = None):
        if not configs:
            raise FcnetError("a population needs at least one member")
        for key in SHARED:
            if len({str(getattr(m, key)) for m in configs}) > 1:
                raise FcnetError(f"population members must share {key}, got "
                                 f"{[getattr(m, key) for m in configs]}")
        self._setup(configs)
        k, B, dev = self.k, self.config.batch_size, self.device
        self.threads = torch.get_num_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise FcnetError(f"threads must be positive, got {threads}")
        self.mixed = self.precision == "bfloat16-mixed"
        self.cd = cd = torch.bfloat16 if self.mixed else self.dtype  # the products' operands
        self.sizes = [int(input_size), *self.config.hidden, int(num_classes)]
        self.L = len(self.sizes) - 1
        self.regs = [m.reg for m in configs]
        keeps = [m.dropout_keep for m in configs]
        self.shared = len(self.streams) == 1
        # one mask stream per seed, as each lone run's Dropout draws (none without dropout)
        self.mask_gens = [torch.Generator(dev).manual_seed(s) for s in self.stream_seeds if min(keeps) < 1]
        # W[0] holds W1 transposed, (K*H1, D): member k's rows k*H1 .. (k+1)*H1, one contiguous
        # block each (its squared norm one dot product); W[l] (K, H_l, H_{l+1}) for l >= 1;
        # b[l] (K, H_{l+1}); master dtype.  Wc/bc: the products' copies (the same unless mixed)
        inits = [normal_init(self.sizes, m.init_std(), m.seed) for m in configs]
        stacks = [torch.stack([torch.as_tensor(p[i].T if i == 0 else p[i], dtype=self.dtype)
                               for p in inits]).to(dev).contiguous() for i in range(2 * self.L)]
        self.W, self.b = [stacks[0].view(-1, self.sizes[0]), *stacks[2::2]], stacks[1::2]
        self.Wc, self.bc = self.W, self.b
        self.flat = [w.view(-1) if k == 1 else w.view(k, 1, -1) for w in self.W]  # for the squared norms
        if self.mixed:
            self.Wc, self.bc = [w.to(cd) for w in self.W], [b.to(cd) for b in self.b]
        d, h1 = self.sizes[0], self.sizes[1]
        self.x = torch.empty((B, d) if self.shared else (k, B, d), dtype=cd, device=dev)
        self.z1 = torch.empty(B, k * h1, dtype=cd, device=dev)  # layer 1's product for all members
        # layer 1's activations member by member, contiguous (K, B, H1): read strided from z1, layer 2,
        # its update and ReLU's gate took 2-5x as long (a population step of 8 x 3072-50: 0.1 ms)
        self.a1 = (self.z1.view(B, 1, h1).permute(1, 0, 2) if k == 1
                   else torch.empty(k, B, h1, dtype=cd, device=dev))
        self.acts = [torch.empty(k, B, h, dtype=cd, device=dev) for h in self.sizes[2:]]
        self.dz1 = torch.empty(k * h1, B, dtype=cd, device=dev)  # [dZ1_1 ... dZ1_K]^T
        self.masks: list = [None] * (self.L - 1)
        bounds = [keep_bound(p) for p in keeps]  # dropout: r < bound kept, scaled 32768 / bound
        self.bound_t = torch.tensor(bounds, device=dev).view(k, 1, 1)
        self.scale_t = torch.tensor([32768 / b for b in bounds], dtype=self.dtype, device=dev).view(k, 1, 1)
        self.reg_t = torch.tensor(self.regs, dtype=self.dtype, device=dev)
        self.reg_t64 = self.reg_t.double()
        self.any_reg = any(r != 0 for r in self.regs)
        self.group_t = torch.tensor(self.group, dtype=torch.long, device=dev)
        self.active = torch.ones(k, dtype=torch.bool, device=dev)  # members still training
        self._lr, self._lr_key = None, b""  # the rates the step's coefficients were made for
        self._all_active = True  # self.active.all(), kept on the host (a read costs ~6 us a step)

    def data(self, X, y):
        """Rows (N, D) in the products' dtype and labels (N,), on the device, converted once."""
        if X.ndim != 2 or X.shape[1] != self.sizes[0] or np.shape(y) != (X.shape[0],):
            raise FcnetError(f"X must be (N, {self.sizes[0]}) with y (N,), got "
                             f"{tuple(X.shape)} and {np.shape(y)}")
        if not torch.is_tensor(X):
            X = torch.from_numpy(np.ascontiguousarray(X, dtype=str(self.dtype)[6:]))
        X = X.to(self.device).to(self.cd).contiguous()
        return X, torch.as_tensor(np.asarray(y).astype(np.int64), device=self.device)

    def _forward(self, x, train: bool):
        """Scores (K, B, C) in the products' dtype; with ``train`` the hidden activations stay in
        their buffers (layer 1's in ``a1`` (K, B, H1)), dropout applied."""
        k, h1 = self.k, self.sizes[1]
        if x.dim() == 2:  # relu(x W1 + b1) for every member as (K, B, H1)
            a = torch.addmm(self.bc[0].view(-1), x, self.Wc[0].t(), out=self.z1 if train else None)
            a = a.view(x.shape[0], k, h1).permute(1, 0, 2)
            a = (self.a1.copy_(a) if train and k > 1 else a).relu_()
        else:
            a = torch.baddbmm(self.bc[0].unsqueeze(1), x, self.Wc[0].view(k, h1, -1).transpose(1, 2),
                              out=self.a1 if train else None).relu_()
        for i in range(1, self.L):
            if train and self.masks[i - 1] is not None:
                a.mul_(self.masks[i - 1])
            a = self._bmm(a, self.Wc[i], self.bc[i], self.acts[i - 1] if train else None)
            if i < self.L - 1:
                a.relu_()
        return a

    def _bmm(self, a, b, bias=None, out=None):
        """[bias (K, p) +] (K, n, m) @ (K, m, p), into ``out`` when given; K = 1 as a
        plain product (faster for bf16 on CPU)."""
        if self.k > 1:
            return torch.bmm(a, b) if bias is None else torch.baddbmm(bias.unsqueeze(1), a, b, out=out)
        if bias is None:
            return torch.mm(a[0], b[0]).unsqueeze(0)
        return torch.addmm(bias[0], a[0], b[0], out=None if out is None else out[0]).unsqueeze(0)

    @torch.no_grad()
    def accuracies(self, X, y, train: bool = False) -> list[float]:
        """Accuracy of every member on rows X (M, D) and labels y (M,) from ``data``."""
        correct = torch.zeros(self.k, dtype=torch.long, device=self.device)
        for s in range(0, X.shape[0], EVAL_CHUNK):
            pred = self._forward(X[s:s + EVAL_CHUNK], train=False).argmax(dim=2)
            correct += (pred == y[s:s + EVAL_CHUNK]).sum(dim=1)
        return (correct.double() / max(X.shape[0], 1)).cpu().tolist()

    @torch.no_grad()
    def step(self, X, y, idx, lr) -> torch.Tensor:
        """One SGD iteration of every active member on rows idx (S, B) at rates lr (K,), on
        ``self.threads`` CPU threads (the caller's count restored after): losses (K,), float64."""
        before = torch.get_num_threads()
        if self.cuda or before == self.threads:
            return self._step(X, y, idx, lr)
        torch.set_num_threads(self.threads)
        try:
            return self._step(X, y, idx, lr)
        finally:
            torch.set_num_threads(before)

    def _step(self, X, y, idx, lr) -> torch.Tensor:
        k, B, L, md = self.k, self.config.batch_size, self.L, self.dtype
        if self.shared:  # this batch into x (B, D) or (K, B, D), its labels yb (B,) or (K, B)
            torch.index_select(X, 0, idx[0], out=self.x)
            yb = y.index_select(0, idx[0])
        else:
            member_idx = idx.index_select(0, self.group_t)  # (K, B)
            torch.index_select(X, 0, member_idx.reshape(-1), out=self.x.view(-1, self.sizes[0]))
            yb = y[member_idx]
        if (key := np.asarray(lr, dtype=np.float64).tobytes()) != self._lr_key:  # new rates (K,)
            self._lr, self._lr_key = np.array(lr, dtype=np.float64), key  # and what derives from them
            self.lr_t = torch.tensor(self._lr, dtype=md, device=self.device)
            self.coef_t = (-self.lr_t / B).view(k, 1, 1)  # dz = coef dJ/ds B
            self.negcoef_t = -self.coef_t
            shrink = [1 - 2 * a * r for a, r in zip(self._lr.tolist(), self.regs, strict=True)]
            self.shrink = (None if not self.any_reg else shrink[0] if k == 1
                           else torch.tensor(shrink, dtype=md, device=self.device))
        for i, h in enumerate(self.sizes[1:-1] if self.mask_gens else []):  # as the lone runs' Dropout
            r = torch.stack([keep_bits((B, h), g, self.device) for g in self.mask_gens])
            r = r.index_select(0, self.group_t) if len(self.mask_gens) > 1 else r
            self.masks[i] = ((r < self.bound_t) * self.scale_t).to(self.cd)  # inverted, (K, B, H)
        # softmax cross-entropy per member, in the master dtype: log-probabilities (K, B, C)
        # (taken over a (K, C, B) layout: over a last axis of C = 10 it is 5-15x as slow)
        scores = self._forward(self.x, train=True).transpose(1, 2)
        s = torch.log_softmax(scores, dim=1, dtype=md).transpose(1, 2)
        ys = (yb if yb.dim() == 2 else yb.expand(k, B)).unsqueeze(2)  # (K, B, 1)
        loss = s.gather(2, ys).mean(dim=(1, 2), dtype=torch.float64).neg_()  # (K,)
        if self.any_reg and k == 1:  # + reg * sum_l ||W_l||^2
            loss.add_(sum(torch.dot(f, f) for f in self.flat).double(), alpha=self.regs[0])
        elif self.any_reg:  # per member: a dot product of each member's block, batched
            loss += self.reg_t64 * sum(torch.bmm(f, f.transpose(1, 2)).view(k).double() for f in self.flat)
        # dJ/dscores with -lr folded in; frozen (diverged) members get lr 0 and dz 0
        fast = not self.cuda and self._all_active and math.isfinite(loss.sum().item())
        if fast:  # the CPU's common case, no masking
            coef, negcoef, shrink = self.coef_t, self.negcoef_t, self.shrink
        else:
            self.active &= torch.isfinite(loss)
            if not self.cuda:
                self.halted, self._all_active = not self.active.any(), bool(self.active.all())
            lr = torch.where(self.active, self.lr_t, 0)
            coef = (-lr / B).view(k, 1, 1)
            negcoef = -coef
            shrink = (1 - 2 * lr * self.reg_t) if self.any_reg else None
        s.exp_().mul_(coef)  # the softmax, times -lr / B
        s.scatter_add_(2, ys, negcoef.expand(k, B, 1))
        if not fast:
            s.masked_fill_(~self.active.view(k, 1, 1), 0)  # a NaN member's dz is NaN, not 0
        dz = s.to(self.cd, memory_format=torch.contiguous_format)  # (K, B, C) for the products
        for i in range(L - 1, 0, -1):  # stacked layer i is the model's layer i + 1
            a_prev = self.acts[i - 2] if i > 1 else self.a1
            da = self._bmm(dz, self.Wc[i].transpose(1, 2))  # from W_i before its update
            self._update(i, a_prev.transpose(1, 2), dz, s.sum(dim=1), shrink)
            if self.masks[i - 1] is not None:
                da.mul_(self.masks[i - 1])
            s = dz = torch.ops.aten.threshold_backward(da, a_prev, 0)  # ReLU's gate
        # layer 1 (W1 transposed): one product [dZ1_1 ... dZ1_K]^T x (K*H1, B) @ (B, D), or batched
        if self.shared:
            dz1 = dz[0].t() if k == 1 else self.dz1.view(k, -1, B).copy_(dz.transpose(1, 2)).view(-1, B)
            self._update(0, dz1, self.x, dz1.sum(dim=1), shrink)
        else:
            self._update(0, dz.transpose(1, 2), self.x, dz.sum(dim=1), shrink)
        return loss

    def _update(self, i: int, m1, m2, db, shrink) -> None:
        """W_i <- shrink W_i + m1 @ m2, b_i <- b_i + db (master dtype), then the bf16 copies; the
        product (K, m, p) or, for layer 1's W_i (K*H1, D), (K*H1, D) itself.  BLAS's beta folds a
        common shrink into the product: one pass over W_i.  ``shrink``: None (no L2), a float
        (K = 1) or per member (K,), applied in a pass of its own first."""
        W, two = self.W[i], m1.dim() == 2
        target = W if two else W.view(self.k, -1, W.shape[-1])
        beta = shrink if isinstance(shrink, float) else 1.0
        if shrink is not None and not isinstance(shrink, float):
            W.view(self.k, -1).mul_(shrink.view(-1, 1))
        if self.mixed:  # bf16 operands, the sum in float32
            torch.add(torch.mm(m1, m2) if two else torch.bmm(m1, m2), target, alpha=beta, out=target)
        else:
            (target.addmm_ if two else target.baddbmm_)(m1, m2, beta=beta)
        self.b[i].add_(db.view_as(self.b[i]))
        if self.mixed:
            self.Wc[i].copy_(W)
            self.bc[i].copy_(self.b[i])

    def member_params(self, member: int) -> list[torch.Tensor]:
        """[W1 (D, H1), b1, ..., WL, bL] of one member (master dtype, on the device)."""
        h1 = self.sizes[1]
        W = [self.W[0][member * h1:(member + 1) * h1].t(), *(w[member] for w in self.W[1:])]
        return [p for w, b in zip(W, self.b, strict=True) for p in (w, b[member])]

    def state(self) -> dict:
        """Everything to continue exactly, ``torch.load(weights_only=True)``-safe:
        parameters, iteration, batch and mask streams, histories."""
        return {**self._loop_state(), **{f"W.{i}": w.detach().cpu().clone() for i, w in enumerate(self.W)},
                **{f"b.{i}": b.detach().cpu().clone() for i, b in enumerate(self.b)},
                **{f"mask_gen.{g}": gen.get_state() for g, gen in enumerate(self.mask_gens)}}

    def load_state(self, state: dict) -> None:
        """Restore ``state()`` into this population (same K, shapes and streams)."""
        for i in range(self.L):
            self.W[i].copy_(state[f"W.{i}"])
            self.b[i].copy_(state[f"b.{i}"])
            if self.mixed:
                self.Wc[i].copy_(self.W[i])
                self.bc[i].copy_(self.b[i])
        for g, gen in enumerate(self.mask_gens):
            gen.set_state(state[f"mask_gen.{g}"])
        self._load_loop_state(state)
        self.active.copy_(torch.tensor([d is None for d in self.diverged]))
        self._all_active = bool(self.active.all())
