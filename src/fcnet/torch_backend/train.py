"""The torch backend's one training loop, ``Engine.run`` (lone runs and populations alike), and
``TorchTrainer``, a lone run on autograd and ``torch.optim``: with the NumPy engine's init, batches and
loss (``weight_decay=None``: ``2 * reg``), a float64 exercise run is the NumPy run to rounding."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fcnet import files
from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.nn import optim
from fcnet.nn.model import MLP
from fcnet.nn.rng import legacy_state, load_legacy_state
from fcnet.nn.schedule import lr_at
from fcnet.nn.solver import Stream
from fcnet.torch_backend import require_torch
from fcnet.torch_backend.augment import FlipCrop
from fcnet.torch_backend.model import Dropout, MultiLayerPerceptron

torch = require_torch()
F = torch.nn.functional

TRAIN_ACC_ROWS = 5000  # size of the fixed training subset scored every epoch
EVAL_CHUNK = 4096
HISTORIES = ("loss_history", "train_acc_history", "val_acc_history", "lr_history")


def subnormals_flushed() -> bool:
    """Whether this thread flushes subnormal floats to zero right now."""
    return torch.tensor([1e-323], dtype=torch.float64).item() == 0.0


@contextlib.contextmanager
def flush_subnormals(threads: int | None = None):
    """Flush subnormals inside the block (tiny inits run 15x slower on CPUs trapping on them),
    on ``threads`` intra-op threads when given."""
    before, count = subnormals_flushed(), torch.get_num_threads()
    torch.set_flush_denormal(True)
    if threads and threads != count:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
        if threads and threads != count:
            torch.set_num_threads(count)


def bf16_unsupported(device) -> str | None:
    """None when ``device`` runs bf16 products natively, else the reason it can't."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this CUDA device lacks bfloat16"
    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(f is not None and f() for f in checks):
        return None
    if all(f is None for f in checks):  # private probes gone: ask the kernel
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            if set(f.read().split()) & {"avx512_bf16", "amx_bf16", "bf16"}:
                return None
    return "this CPU has no bfloat16 instructions (AVX512-BF16, AMX or Arm BF16)"


class Engine:
    """A lone run's (K = 1) and a population's loop, batch streams (one per seed), histories and checkpoint
    part.  Subclasses call ``_setup``, define ``data``, ``accuracies`` (K floats) and ``step`` (rows idx
    (S, B), a row per stream, rates lr (K,) -> losses (K,); sets ``halted`` once nothing trains)."""

    def _setup(self, configs: Sequence[RunConfig]) -> None:
        c = self.config = configs[0]  # the fields all members share
        self.k = len(configs)
        cuda = torch.cuda.is_available()
        if c.device == "cuda" and not cuda:
            raise FcnetError("device 'cuda' asked for, but PyTorch sees no CUDA device "
                             "(use --device cpu or auto)")
        self.device = torch.device(c.device if c.device != "auto" else "cuda" if cuda else "cpu")
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float64 if c.dtype == "float64" else torch.float32  # the weights'
        if c.amp and c.dtype == "float64":
            raise FcnetError("config field 'amp': mixed precision needs dtype float32")
        # bf16 (or amp) without bf16 instructions trains in float32 (emulated: 10-40x slower)
        want = c.dtype == "bfloat16" or (self.cuda and c.dtype == "float32" if c.amp is None else c.amp)
        self.bf16_fallback = bf16_unsupported(self.device) if want else None
        self.precision = ("bfloat16-mixed" if want and self.bf16_fallback is None
                          else "float64" if c.dtype == "float64" else "float32")
        self.lrs = np.array([m.lr for m in configs])
        self.decays = np.array([m.decay for m in configs])
        seeds = [m.seed for m in configs]
        self.stream_seeds = sorted(set(seeds))
        self.group = [self.stream_seeds.index(s) for s in seeds]  # member -> its stream
        self.streams = [Stream(s) for s in self.stream_seeds]
        self.it, self.epoch, self.per_epoch, self.halted = 0, 0, 1, False
        self.hist = [{key: [] for key in HISTORIES} for _ in configs]
        self.diverged: list[int | None] = [None] * self.k
        self.val_at: list[dict[str, float]] = [{} for _ in configs]
        self._losses: list = []  # losses (K,) of the steps not yet in the histories

    def batch(self, n: int):
        """Rows (S, B) of iteration ``it``, one row per stream, on the device."""
        c = self.config
        rows = [s.draw(n, c.batch_size, c.sampling, self.it, self.per_epoch) for s in self.streams]
        return torch.from_numpy(np.array(rows, dtype=np.int64)).to(self.device)

    def run(self, X_train, y_train, X_val, y_val, callback: Callable[[dict], None] | None = None,
            progress: bool = False, eval_at: Sequence[int] = (), until: int | None = None) -> list[dict]:
        """Train every member to its length (or iteration ``until``), from a loaded state if any: a dict
        of histories, progress and timing each.  ``callback`` gets member 0's record after every epoch;
        validation accuracy is also kept after the iterations in ``eval_at``."""
        c = self.config
        (Xt, yt), (Xv, yv) = self.data(X_train, y_train), self.data(X_val, y_val)
        n = Xt.shape[0]
        if n == 0:
            raise FcnetError("the training split is empty")
        if c.sampling == "shuffle" and c.batch_size > n:
            raise FcnetError(f"batch_size {c.batch_size} exceeds the {n} training rows "
                             "(sampling 'shuffle' draws each batch without replacement)")
        total, self.per_epoch = c.length(n)
        stop, wanted = total if until is None else min(until, total), {int(i) for i in eval_at}
        schedule = dict(lr=self.lrs, decay=self.decays, schedule=c.schedule,
                        iters_per_epoch=self.per_epoch, total=total)
        # a fixed subset for the per-epoch training accuracy, apart from the batch stream
        sub = np.sort(np.random.RandomState(c.seed).permutation(n)[:TRAIN_ACC_ROWS])
        X_sub, y_sub = Xt[sub], yt[sub]
        bar = tqdm(total=total, initial=self.it, unit="it", dynamic_ncols=True, disable=not progress,
                   desc=f"train torch {self.device.type} ({self.precision})")
        t0 = time.perf_counter()
        with flush_subnormals(self.threads):
            while self.it < stop and not self.halted and None in self.diverged:
                # one step of every member at this iteration's learning rate
                self._losses.append(self.step(Xt, yt, self.batch(n), lr_at(self.it, **schedule)))
                self.it += 1
                bar.update()
                if self.it in wanted:  # kept for members still training
                    for j, acc in enumerate(self.accuracies(Xv, yv)):
                        if self.diverged[j] is None:
                            self.val_at[j][str(self.it)] = float(acc)
                if self.it % self.per_epoch and self.it != total:
                    continue
                # an epoch's end: its losses, then evaluate, record, call back, log
                losses = self._take_losses()
                if None not in self.diverged:
                    break
                self.epoch += 1
                lr0 = lr_at((self.it - 1) // self.per_epoch * self.per_epoch, **schedule)
                train, val = self.accuracies(X_sub, y_sub, train=True), self.accuracies(Xv, yv)
                for j, h in enumerate(self.hist):
                    if self.diverged[j] is None:
                        h["train_acc_history"].append(float(train[j]))
                        h["val_acc_history"].append(float(val[j]))
                        h["lr_history"].append(float(lr0[j]))
                record = {"epoch": self.epoch, "iteration": self.it, "loss": float(np.mean(losses[:, 0])),
                          "train_acc": train[0], "val_acc": val[0], "lr": float(lr0[0]),
                          "seconds": time.perf_counter() - t0}
                bar.set_postfix(loss=f"{record['loss']:.4f}", val_acc=f"{record['val_acc']:.3f}",
                                refresh=False)
                if callback is not None:
                    callback(record)
            self._take_losses()
            final = [float("nan")] * self.k  # stopped at ``until``: more to come
            if self.it == total or self.halted or None not in self.diverged:
                self._finish()
                final = self.accuracies(Xt, yt, train=True)
        bar.close()
        seconds = time.perf_counter() - t0
        return [{**{k: list(v) for k, v in h.items()}, "final_train_acc": final[j],
                 "diverged_at": self.diverged[j], "epochs": len(h["val_acc_history"]),
                 "iterations": self.it if self.diverged[j] is None else self.diverged[j],
                 "iters_per_epoch": self.per_epoch, "train_seconds": seconds,
                 "val_acc_at": dict(self.val_at[j])} for j, h in enumerate(self.hist)]

    def _take_losses(self) -> np.ndarray:
        """The losses (steps, K) since the last call, into each member's history up to its
        first non-finite one (where it diverged)."""
        if not self._losses:
            return np.full((1, self.k), np.nan)
        L = torch.stack(self._losses).double().cpu().numpy().reshape(-1, self.k)
        start, self._losses = self.it - L.shape[0], []
        for j, h in enumerate(self.hist):
            if self.diverged[j] is None:
                col = L[:, j]
                bad = np.flatnonzero(~np.isfinite(col))
                if bad.size:
                    self.diverged[j], col = start + int(bad[0]), col[:bad[0] + 1]
                h["loss_history"] += col.tolist()
        return L

    def _finish(self) -> None:
        """After the last step, before the final accuracies."""

    def _loop_state(self) -> dict:
        """The loop's part of a checkpoint, as tensors and numbers (weights_only-safe)."""
        self._take_losses()
        out: dict = {"it": self.it, "epoch": self.epoch,
                     "diverged": torch.tensor([-1 if d is None else d for d in self.diverged])}
        for g, stream in enumerate(self.streams):
            out.update({k: torch.from_numpy(v.astype(np.float64 if v.dtype.kind == "f" else np.int64))
                        for k, v in legacy_state(stream.rng, f"rng.{g}.").items()})
            out[f"perm.{g}"] = torch.from_numpy(stream.perm.astype(np.int64))
        for j, h in enumerate(self.hist):
            out.update({f"{k}.{j}": torch.tensor(v, dtype=torch.float64) for k, v in h.items()})
            out[f"val_at.{j}"] = torch.tensor([[int(i), a] for i, a in self.val_at[j].items()],
                                              dtype=torch.float64).reshape(-1, 2)
        return out

    def _load_loop_state(self, state: dict) -> None:
        self.it, self.epoch = int(state["it"]), int(state["epoch"])
        self.diverged = [None if d < 0 else d for d in state["diverged"].tolist()]
        for g, stream in enumerate(self.streams):
            load_legacy_state(stream.rng, {k: v.numpy() for k, v in state.items()
                                           if k.startswith(f"rng.{g}.")}, f"rng.{g}.")
            stream.perm = state[f"perm.{g}"].numpy().astype(np.intp)
        for j, h in enumerate(self.hist):
            h.update({k: state[f"{k}.{j}"].tolist() for k in HISTORIES})
            self.val_at[j] = {str(int(i)): a for i, a in state[f"val_at.{j}"].tolist()}
        self._losses = []


class TorchTrainer(Engine):
    """Trains and serves one ``MultiLayerPerceptron`` built from a ``RunConfig``; ``image_shape`` (None: not
    images) for augmentation; ``optimizer(parameters)`` replaces the config's rule (lr still scheduled,
    the loss history then the data loss alone)."""

    def __init__(self, config: RunConfig, input_size: int, num_classes: int,
                 image_shape: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None, optimizer: Callable | None = None):
        self._setup([config])
        self.input_size, self.num_classes = int(input_size), int(num_classes)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.amp = self.precision == "bfloat16-mixed"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        if config.augment and self.image_shape is None:
            raise FcnetError("config field 'augment': flip/crop needs image inputs "
                             "(this dataset has no image shape, or PCA removed it)")
        self.augment = FlipCrop(self.image_shape, self.input_size) if config.augment else None
        self.tta = self.augment is not None  # set False to predict from one view
        torch.manual_seed(config.seed)  # the 'default' and 'kaiming' inits
        init = f"normal:{config.std!r}" if config.init == "normal" else config.init
        self.model = MultiLayerPerceptron(
            self.input_size, config.hidden, self.num_classes, dropout=1.0 - config.dropout_keep,
            batchnorm=config.batchnorm, activation=config.activation, init=init, seed=config.seed,
            dtype=self.dtype).to(self.device)
        # one thread below a few MFLOP a product: waking a second costs more (digits, 2 busy cores: 30x)
        small = config.batch_size * self.input_size * max(config.hidden, default=1) < 4e6
        self.threads = 1 if small else torch.get_num_threads()
        self.weight_decay = 2 * config.reg if config.weight_decay is None else config.weight_decay
        # the loss history's L2 term: the coupled rules' decay is the gradient of wd/2 * sum(W**2)
        self.l2 = 0.0 if optimizer or config.optimizer == "adamw" else 0.5 * self.weight_decay
        params, rule = list(self.model.parameters()), optim.rule(config.optimizer)
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        # the config's rule as its torch.optim class; fused: one kernel a step (best-cpu's AdamW 23 -> 3.6 ms)
        kwargs = rule.torch_kwargs(config.optim_config()) | ({"fused": True} if rule.torch_fused else {})
        self.optimizer = (optimizer(params) if optimizer
                          else getattr(torch.optim, rule.torch_class)(groups, lr=config.lr, **kwargs))
        swa = torch.optim.swa_utils
        self.ema = swa.AveragedModel(self.model, multi_avg_fn=swa.get_ema_multi_avg_fn(config.ema),
                                     use_buffers=True) if config.ema > 0 else None
        self._averaging = False  # True while fitting: the per-epoch scores use the average
        self.gen = torch.Generator().manual_seed(config.seed)  # augmentation draws
        self.mask_gen = torch.Generator(self.device).manual_seed(config.seed)  # dropout masks
        for m in self.model:
            if isinstance(m, Dropout):
                m.generator = self.mask_gen
        self._safe: dict | None = None  # CUDA: the weights at the epoch's start
        self.budget: dict | None = None  # time_budget: epochs, epoch_seconds, measuring_seconds

    def __repr__(self) -> str:
        return (f"TorchTrainer({self.model.sizes}, optimizer={self.config.optimizer}, "
                f"device={self.device.type}, precision={self.precision})")

    @property
    def history(self) -> dict[str, list[float]]:
        return self.hist[0]

    def fit(self, X_train, y_train, X_val, y_val, callback: Callable[[dict], None] | None = None,
            progress: bool = False, eval_at: Sequence[int] = ()) -> dict:
        """``run`` for the one member: its dict."""
        self._averaging = True
        return self.run(X_train, y_train, X_val, y_val, callback, progress, eval_at)[0]

    def step(self, X, y, idx, lr):
        c = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr[0])
        if self.cuda and self.it % self.per_epoch == 0:  # CUDA does not sync every step
            self._safe = {k: v.clone() for k, v in self.model.state_dict().items()}
        xb, yb = X.index_select(0, idx[0]), y.index_select(0, idx[0])  # X[idx]: 1.7x slower on CPU
        if self.augment is not None:
            xb = self.augment(xb, self.gen)
        if c.mixup > 0:  # each image blended with its partner in the reversed batch
            lam = float(self.streams[0].rng.beta(c.mixup, c.mixup))
            xb = lam * xb + (1 - lam) * xb.flip(0)
        self.model.train()
        ws = [w.detach().view(-1) for w in self.optimizer.param_groups[0]["params"]] if self.l2 else []
        penalty = self.l2 * sum(torch.dot(w, w) for w in ws)  # of the weights before this step
        with self.autocast:
            scores = self.model(xb).to(self.dtype)
        ce = partial(F.cross_entropy, scores, label_smoothing=c.label_smoothing)
        loss = lam * ce(yb) + (1 - lam) * ce(yb.flip(0)) if c.mixup > 0 else ce(yb)
        if not self.cuda and not math.isfinite(loss.item()):
            self.halted = True  # the last good weights are kept
            return loss.detach().view(1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return (loss.detach() + penalty).view(1)

    def _finish(self) -> None:
        if self._safe is not None and self.diverged[0] is not None:
            self.model.load_state_dict(self._safe)  # CUDA: back to the diverged epoch's start
        if self.ema is not None:  # the averaged weights are the trained model
            self.model.load_state_dict(self.ema.module.state_dict())
        self._averaging = False

    def data(self, X, y=None):
        """Rows in the model's dtype (no copy when possible) and labels, checked as the NumPy engine
        checks them, as tensors on the device."""
        X, y = MLP.check_inputs(self, X, y)  # reads D and C
        X = torch.from_numpy(np.ascontiguousarray(X, dtype=str(self.dtype)[6:])).to(self.device)
        return X, None if y is None else torch.from_numpy(y).to(self.device)

    @torch.no_grad()
    def _proba(self, Xt, tta: bool | None = None):
        """Probabilities (N, C), eval mode, in chunks; with ``tta`` (default ``self.tta``)
        the mean of the image's and its mirror image's; while fitting, the EMA's."""
        model = self.ema.module if self.ema is not None and self._averaging else self.model
        model.eval()
        out = [torch.empty(0, self.num_classes, dtype=self.dtype, device=self.device)]
        for xb in Xt.split(EVAL_CHUNK):
            with self.autocast:
                p = torch.softmax(model(xb).to(self.dtype), dim=1)
                if self.tta if tta is None else tta:
                    p = 0.5 * (p + torch.softmax(model(self.augment.mirror(xb)).to(self.dtype), dim=1))
            out.append(p)
        return torch.cat(out)

    def accuracies(self, X, y, train: bool = False) -> list[float]:
        """[accuracy] on rows X, y (tensors; none: NaN); ``train``: single view, as the net fits."""
        pred = self._proba(X, tta=False if train else None).argmax(dim=1)
        return [float((pred == y).double().mean().item())]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C), float64 (flip-averaged when ``tta``)."""
        return self._proba(self.data(X)[0]).double().cpu().numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def score(self, X, y) -> float:
        return float((self.predict(X) == MLP.check_inputs(self, X, y)[1]).mean())

    def state_dict(self) -> dict:
        """The model's state_dict, on the CPU."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """torch.save of the state_dict, written atomically (temp file, fsync, rename)."""
        files.atomic_write(path, lambda f: torch.save(self.state_dict(), f))

    @classmethod
    def load(cls, path: str | Path, config: RunConfig, input_size: int, num_classes: int,
             image_shape: Sequence[int] | None = None,
             class_names: Sequence[str] | None = None) -> TorchTrainer:
        """A trainer whose model holds the weights saved at ``path`` (weights_only load)."""
        trainer = cls(config, input_size, num_classes, image_shape, class_names)
        try:
            trainer.model.load_state_dict(_safe_load(path))
        except (RuntimeError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()[0]
            raise FcnetError(f"{path}: weights do not fit the configured network ({first})") from None
        return trainer

    def save_checkpoint(self, path: str | Path) -> None:
        """Everything to resume at an epoch boundary: model, optimiser, streams, progress."""
        state = {**self._loop_state(), "model": self.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "gen": self.gen.get_state(), "mask_gen": self.mask_gen.get_state()}
        if self.budget is not None:
            state["budget"] = torch.tensor(list(self.budget.values()), dtype=torch.float64)
        if self.ema is not None:
            state["ema"] = {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
        files.atomic_write(path, lambda f: torch.save(state, f))

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore ``save_checkpoint``'s state; the next ``fit`` continues from there."""
        state = _safe_load(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.gen.set_state(state["gen"])
            self.mask_gen.set_state(state["mask_gen"])
            self._load_loop_state(state)
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            if self.config.time_budget is not None:  # the length measured when it started
                self.set_budget(*state["budget"].tolist())
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise FcnetError(f"checkpoint does not fit this run ({str(err).splitlines()[0]})") from None

    def set_budget(self, epochs: int, epoch_seconds: float, measuring_seconds: float) -> None:
        """Fix a ``time_budget`` run's length, measured in ``measuring_seconds``."""
        self.budget = {"epochs": int(epochs), "epoch_seconds": float(epoch_seconds),
                       "measuring_seconds": float(measuring_seconds)}
        self.config = self.config.model_copy(update={"epochs": int(epochs)})


def _safe_load(path: str | Path) -> dict:
    """torch.load with weights_only=True: tensors and plain containers, no code."""
    path = Path(path)
    if not path.exists():
        raise FcnetError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or an object weights_only refuses
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FcnetError(f"{path}: not a readable weights file ({first})") from None
