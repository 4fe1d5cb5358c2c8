"""The depth study (study.md Q4): 2-5 Linear layers trained as the exercise set them (float32,
shuffled epochs, Adam(lr, weight_decay) on *all* parameters, lr times ``decay`` per epoch),
recording per epoch what judging the report's "overfitting" claim needs: accuracies, and per
Linear layer on a fixed probe batch the activation std and the weight gradient's norm."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fcnet import files
from fcnet.config import make_config
from fcnet.errors import FcnetError
from fcnet.nn import optim
from fcnet.torch_backend import require_torch
from fcnet.torch_backend.model import parse_init
from fcnet.torch_backend.train import TRAIN_ACC_ROWS, TorchTrainer, flush_subnormals

torch = require_torch()
F = torch.nn.functional


def depth_study(X_train, y_train, X_val, y_val, depths: Sequence[int] = (2, 3, 4, 5),
                init: str | Sequence[str] = "normal:1e-3", hidden: int = 50, epochs: int = 10,
                batch_size: int = 200, lr: float = 1e-3, weight_decay: float = 1e-3,
                decay: float = 0.95, seed: int = 0, device: str = "auto", probe_rows: int = 1000,
                progress: bool = True) -> list[dict]:
    """Train one network per (init, depth) and record the signals per epoch (0: the initial network)
    and layer.  ``depths`` counts Linear layers (L - 1 hidden layers of ``hidden`` units); ``init`` is
    one init string or several.  One dict per (init, depth), in order: {'init', 'depth', 'hidden',
    'train_acc_on', 'probe_rows', 'history': epochs + 1 rows of {'epoch', 'loss', 'lr', 'train_acc',
    'val_acc', 'act_std': [L floats], 'grad_norm': [L floats]}, 'final_train_acc', 'final_val_acc',
    'seconds'}."""
    inits = [init] if isinstance(init, str) else list(init)
    for spec in inits:
        parse_init(spec)
    if any(int(d) < 1 for d in depths):
        raise FcnetError(f"depths count Linear layers and must be >= 1, got {list(depths)}")
    X_train, X_val = np.asarray(X_train, dtype=np.float32), np.asarray(X_val, dtype=np.float32)
    if X_train.ndim != 2 or X_val.ndim != 2 or X_train.shape[1] != X_val.shape[1]:
        raise FcnetError("X_train and X_val must be 2-D with the same number of columns")
    classes = int(max(np.max(y_train), np.max(y_val, initial=0))) + 1
    probe = np.random.RandomState(seed).permutation(X_train.shape[0])[:probe_rows]
    # per-epoch train accuracy on a fixed subset, as TorchTrainer's (the whole split cost a fifth
    # of the study); the last record's on the whole split
    sub = np.sort(np.random.RandomState(seed + 1).permutation(X_train.shape[0])[:TRAIN_ACC_ROWS])
    every = f"{sub.size:,} fixed training rows per epoch, the whole training split at the end"

    def adam(params):  # the exercise's optim.Adam(model.parameters(), lr, weight_decay), bit for bit
        return FlatAdam(params, lr=lr, weight_decay=weight_decay)

    bar = tqdm(total=len(inits) * len(depths) * epochs, unit="epoch", desc="depth study",
               dynamic_ncols=True, disable=not progress)
    results = []
    for spec in inits:
        for depth in map(int, depths):
            config = make_config({"backend": "torch", "hidden": [hidden] * (depth - 1), "init": spec,
                                  "optimizer": "adam", "lr": lr, "decay": decay, "schedule": "step",
                                  "weight_decay": weight_decay, "epochs": epochs, "batch_size": batch_size,
                                  "sampling": "shuffle", "seed": seed, "dtype": "float32", "device": device,
                                  "amp": False})
            t = TorchTrainer(config, X_train.shape[1], classes, optimizer=adam)
            data = (*t.data(X_train[sub], np.asarray(y_train)[sub]), *t.data(X_val, y_val),
                    *t.data(X_train[probe], np.asarray(y_train)[probe]))
            t0 = time.perf_counter()
            with flush_subnormals():
                history = [_signals(t, 0, None, None, *data)]

            def on_epoch(record: dict, t=t, rows=history, data=data, label=(spec, depth)):
                rows.append(_signals(t, record["epoch"], record["loss"], record["lr"], *data))
                bar.set_postfix(init=label[0], depth=label[1], val_acc=f"{rows[-1]['val_acc']:.3f}",
                                refresh=False)
                bar.update(1)

            # the last record's train accuracy: the fit's own, on the whole split (0.2 s a net to redo)
            fitted = t.fit(X_train, y_train, X_val, y_val, callback=on_epoch)
            history[-1]["train_acc"] = fitted["final_train_acc"]
            results.append({"init": spec, "depth": depth, "hidden": [hidden] * (depth - 1),
                            "train_acc_on": every, "probe_rows": int(probe.size), "history": history,
                            "final_train_acc": history[-1]["train_acc"],
                            "final_val_acc": history[-1]["val_acc"], "seconds": time.perf_counter() - t0})
    bar.close()
    return results


class FlatAdam:
    """``torch.optim.Adam(params, lr, weight_decay)`` (L2 added to every gradient, as the exercise's
    ``optim.Adam(model.parameters(), ...)``), its arithmetic op for op and so its numbers bit for bit
    (tests), over one flat tensor that every parameter becomes a view of: nine kernels a step rather
    than eight a parameter, and no per-parameter Python (a depth-study step on one thread: Adam 0.72
    -> 0.47 ms, zero_grad 0.07 -> 0). The interface ``TorchTrainer`` uses: ``param_groups`` (its
    'lr' set each step), ``zero_grad``, ``step``, ``state_dict`` / ``load_state_dict``."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0,
                 betas=(optim.BETA1.default, optim.BETA2.default), eps: float = optim.EPS.default):
        self.params = list(params)
        if len({(p.dtype, p.device) for p in self.params}) != 1:
            raise FcnetError("FlatAdam needs parameters of one dtype on one device")
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        start = 0
        for p in self.params:  # each parameter now a view of the flat tensor
            p.data = self.flat[start:start + p.numel()].view_as(p)
            start += p.numel()
        self.grad, self.exp_avg, self.exp_avg_sq, self.denom = (torch.zeros_like(self.flat) for _ in range(4))
        self.param_groups = [{"params": self.params, "lr": float(lr)}]
        self.weight_decay, self.betas, self.eps, self.steps = float(weight_decay), betas, float(eps), 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One step, as ``torch.optim.adam``'s single-tensor (and foreach) path computes it."""
        (beta1, beta2), lr = self.betas, self.param_groups[0]["lr"]
        self.steps += 1
        g = torch.cat([p.grad.reshape(-1) for p in self.params], out=self.grad)
        if self.weight_decay != 0:
            g.add_(self.flat, alpha=self.weight_decay)  # grad + weight_decay * param
        self.exp_avg.lerp_(g, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step = float(self.steps)
        step_size = lr / (1 - beta1**step)
        torch.sqrt(self.exp_avg_sq, out=self.denom).div_((1 - beta2**step) ** 0.5).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, self.denom, value=-step_size)

    def state_dict(self) -> dict:
        return {"step": self.steps, "lr": self.param_groups[0]["lr"], "exp_avg": self.exp_avg.clone(),
                "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.param_groups[0]["lr"] = int(state["step"]), float(state["lr"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])


def _signals(t: TorchTrainer, epoch: int, loss: float | None, lr: float | None, Xt, yt, Xv, yv,
             xp, yp) -> dict:
    """One history row: accuracies on train rows Xt and validation; on the probe batch (eval mode)
    each layer's activation std (relu(z), the scores for the last) and ||d(mean CE)/dW||_F."""
    model = t.model.eval()
    stds, a = [], xp
    for m in model:
        a = m(a)
        if m is model.linears[-1] or isinstance(m, torch.nn.ReLU | torch.nn.GELU):
            stds.append(float(a.detach().std()))
    model.zero_grad(set_to_none=True)
    F.cross_entropy(a, yp).backward()
    norms = [float(lin.weight.grad.norm()) for lin in model.linears]
    model.zero_grad(set_to_none=True)
    return {"epoch": epoch, "loss": loss, "lr": lr, "train_acc": t.accuracies(Xt, yt, True)[0],
            "val_acc": t.accuracies(Xv, yv)[0], "act_std": stds, "grad_norm": norms}


def depth_table(results: list[dict]) -> str:
    """A Markdown table per (init, depth): final accuracies, and the last layer's
    activation std and the first's gradient norm at initialisation and at the end."""
    lines = ["| init | Linear layers | train acc | val acc | act std, last layer (init -> end) "
             "| grad norm, first layer (init -> end) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        h0, h1 = r["history"][0], r["history"][-1]
        lines.append(f"| {r['init']} | {r['depth']} | {100 * r['final_train_acc']:.1f}% | "
                     f"{100 * r['final_val_acc']:.1f}% | {h0['act_std'][-1]:.2e} -> {h1['act_std'][-1]:.2e} "
                     f"| {h0['grad_norm'][0]:.2e} -> {h1['grad_norm'][0]:.2e} |")
    return "\n".join(lines) + "\n"


def plot_depth_study(results: list[dict], path: str | Path) -> Path:
    """Six panels: train and validation accuracy per epoch, then activation std and gradient
    norm per layer at initialisation and at the end (log scale, zeros not drawn)."""
    from matplotlib.figure import Figure

    depths = sorted({r["depth"] for r in results})
    colours = {dep: f"C{i}" for i, dep in enumerate(depths)}
    styles = dict(zip(dict.fromkeys(r["init"] for r in results), ["-", "--", ":", "-."] * 4))
    fig = Figure(figsize=(11, 11))
    axes = fig.subplots(3, 2)
    for r in results:
        ep = [h["epoch"] for h in r["history"]]
        kw = {"color": colours[r["depth"]], "linestyle": styles[r["init"]],
              "label": f"{r['depth']} layers, {r['init']}"}
        axes[0, 0].plot(ep, [h["train_acc"] for h in r["history"]], **kw)
        axes[0, 1].plot(ep, [h["val_acc"] for h in r["history"]], **kw)
        for row, h in ((1, r["history"][0]), (2, r["history"][-1])):
            layers = np.arange(1, len(h["act_std"]) + 1)
            for col, key in ((0, "act_std"), (1, "grad_norm")):
                v = np.asarray(h[key], dtype=float)
                axes[row, col].semilogy(layers, np.where(v > 0, v, np.nan), marker="o", **kw)
    axes[0, 0].set(title="training accuracy (whole split)", xlabel="epoch", ylabel="accuracy")
    axes[0, 1].set(title="validation accuracy", xlabel="epoch", ylabel="accuracy")
    for row, when in ((1, "at initialisation"), (2, "after training")):
        ticks = {"xlabel": "Linear layer", "xticks": range(1, max(depths) + 1)}
        axes[row, 0].set(title=f"activation std {when}", ylabel="std", **ticks)
        axes[row, 1].set(title=f"|dJ/dW| {when}", ylabel="norm", **ticks)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    files.atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:] or "png", dpi=110))
    return path
