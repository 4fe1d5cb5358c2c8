"""``TorchTrainer``: trains a ``MultiLayerPerceptron`` from a ``RunConfig``.

The loop is flat and visible: shuffled epochs (or the exercise's sampling with
replacement), optional flip/crop augmentation, one optimiser step per batch,
the learning rate set every iteration from the schedule, and at the end of each
epoch the accuracies, a record and the caller's callback.

Conventions (docs/torch.md):

* Training length: ``epochs`` * max(N // B, 1) iterations when ``epochs`` is
  set, else exactly ``iters`` iterations (the last epoch may be partial).
* ``weight_decay=None`` means ``2 * reg`` on the Linear weights only, so SGD,
  momentum and Adam follow the NumPy loss ``reg * sum(W**2)`` exactly; AdamW
  decouples it.  Biases and BatchNorm parameters are never decayed.
* Schedules: ``step`` multiplies lr by ``decay`` after every epoch; ``cosine``
  warms up linearly over the first epoch (at most 10% of the run), then falls
  to 0 along a half cosine.
* ``loss_history`` holds the objective per iteration: cross-entropy (with label
  smoothing) plus ``weight_decay / 2 * sum(W**2)`` for the coupled optimisers.
* ``train_acc_history``: accuracy on a fixed subset of up to 5,000 training
  rows (eval mode, no augmentation); ``final_train_acc`` on the whole split.
* Subnormal floats are flushed to zero while training: tiny initialisations
  otherwise run about 15x slower on CPUs that trap on them.
* ``mixup`` a > 0 blends each batch with itself reversed, weight lam ~ Beta(a, a)
  per batch, and the loss likewise (Zhang et al. 2018).
* ``ema`` d > 0 keeps an exponential moving average of the weights (and BatchNorm
  statistics), ``avg <- d avg + (1 - d) w`` after every step (torch's
  ``AveragedModel``); the per-epoch validation scores the average, and at the end
  the model takes the averaged weights, so what is saved and served is the average.
* Test-time augmentation: a run trained with flips (``augment``) predicts the
  mean of the probabilities of each image and its mirror image (``tta``).
* Mixed precision (bfloat16 autocast, float32 weights) is on for float32 runs
  on CUDA, and on CPU when ``amp = true`` (CPUs with AVX512-BF16/AMX run it
  2-3x faster).  ``dtype = "bfloat16"`` asks for it outright: bf16 products,
  float32 weights, softmax, loss and updates; where the device has no bf16
  instructions (``amp`` too) the run trains in float32 and ``bf16_fallback`` says why.
* The exercise's runs (plain SGD, step schedule, sampling with replacement, no
  BatchNorm, augmentation, mixup or label smoothing, ReLU, weight decay 2 reg)
  train as ``fcnet.nn.Solver`` does, on torch (``exercise_mode``): batches from
  ``RandomState(seed).choice(N, B)``, the train/val record and lr decay after
  iterations 0, N // B, ..., the init ``normal`` drawn as ``fcnet.nn.MLP``
  draws it, and the step written out by hand (``TorchPopulation`` with K = 1),
  so a float64 torch run is the NumPy run to rounding.  ``train_acc_history``
  is then scored on each record's batch, as the Solver does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.torch_backend import exercise_mode, require_torch
from fcnet.torch_backend.augment import FlipCrop
from fcnet.torch_backend.model import MultiLayerPerceptron
from fcnet.torch_backend.population import (  # noqa: F401  (flush helpers re-exported)
    TorchPopulation,
    flush_subnormals,
    normal_init,
    subnormals_flushed,
)

torch = require_torch()
F = torch.nn.functional

TRAIN_ACC_ROWS = 5000  # size of the fixed training subset scored every epoch
EVAL_CHUNK = 4096


def resolve_device(device: str):
    """'auto' -> CUDA when present, else CPU; 'cuda' without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise FcnetError("device 'cuda' asked for, but PyTorch sees no CUDA device "
                         "(use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise FcnetError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def init_spec(config: RunConfig) -> str:
    """The model's init string: config 'normal' means normal:<config.std>."""
    return f"normal:{config.std!r}" if config.init == "normal" else config.init


def bf16_unsupported(device) -> str | None:
    """None when ``device`` runs bf16 products natively, else the reason it can't."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this CUDA device lacks bfloat16"
    checks = [getattr(torch.cpu, n, None) for n in
              ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(f is not None and f() for f in checks):
        return None
    if all(f is None for f in checks):  # private probes gone: ask the kernel
        try:
            with open("/proc/cpuinfo") as f:
                flags = set(f.read().split())
            if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
                return None
        except OSError:
            pass
    return "this CPU has no bfloat16 instructions (AVX512-BF16, AMX or Arm BF16)"


def training_length(config: RunConfig, n_train: int) -> tuple[int, int]:
    """(total iterations, iterations per epoch) for a training split of n rows."""
    per_epoch = max(n_train // config.batch_size, 1)
    total = config.epochs * per_epoch if config.epochs is not None else int(config.iters)
    return total, per_epoch


class TorchTrainer:
    """Trains and serves one ``MultiLayerPerceptron`` built from a ``RunConfig``.

    Parameters
    ----------
    config : the run's validated config (backend-independent fields)
    input_size : D, columns of the preprocessed rows
    num_classes : C
    image_shape : shape of one image in the rows' flattening order, for
        augmentation ((H, W, C), (C, H, W) or (H, W)); None for non-images
    class_names : labels of the C classes (kept for callers)
    optimizer : optional ``optimizer(parameters) -> torch.optim.Optimizer`` used
        instead of the config's rule (its lr is still set from the schedule)
    """

    def __init__(
        self,
        config: RunConfig,
        input_size: int,
        num_classes: int,
        image_shape: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        optimizer: Callable | None = None,
    ):
        self.config = config
        self.input_size, self.num_classes = int(input_size), int(num_classes)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.device = resolve_device(config.device)
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        amp = getattr(config, "amp", None)
        if amp and self.dtype == torch.float64:
            raise FcnetError("config field 'amp': mixed precision needs dtype float32")
        self.amp = (self.device.type == "cuda" and self.dtype == torch.float32) if amp is None \
            else bool(amp)
        # dtype bfloat16 (or amp): bf16 products where the device has them, else float32
        # (emulated bf16 products run 10-40x slower than float32 ones)
        self.bf16_fallback = None
        if config.dtype == "bfloat16" or self.amp:
            self.bf16_fallback = bf16_unsupported(self.device)
            self.amp = self.bf16_fallback is None
        self.exercise = exercise_mode(config)
        self.precision = "bfloat16-mixed" if self.amp else config.dtype.replace(
            "bfloat16", "float32")
        self.augment = None
        if config.augment:
            if self.image_shape is None:
                raise FcnetError("config field 'augment': flip/crop needs image inputs "
                                 "(this dataset has no image shape, or PCA removed it)")
            self.augment = FlipCrop(self.image_shape, self.input_size)
        # a net trained on mirrored images predicts with them too (set False to switch off)
        self.tta = self.augment is not None
        torch.manual_seed(config.seed)  # init weights and dropout masks
        self.model = MultiLayerPerceptron(
            self.input_size, config.hidden, self.num_classes, dropout=1.0 - config.dropout_keep,
            batchnorm=config.batchnorm, activation=config.activation, init=init_spec(config),
        ).to(device=self.device, dtype=self.dtype)
        if self.exercise and config.init == "normal":  # the NumPy engine's init, draw for draw
            params = normal_init(self.model.sizes, config.init_std(), config.seed)
            with torch.no_grad():
                for lin, w, b in zip(self.model.linears, params[::2], params[1::2], strict=True):
                    lin.weight.copy_(torch.from_numpy(w.T))
                    lin.bias.copy_(torch.from_numpy(b))
        self._pop_state: dict | None = None  # an exercise run's checkpointed progress
        self.gen = torch.Generator().manual_seed(config.seed)  # batches and augmentation
        self.weight_decay = 2 * config.reg if config.weight_decay is None else config.weight_decay
        # a caller's optimizer(parameters) replaces the config's (the depth study decays
        # biases too, as the exercise does); the loss history is then the data loss alone
        self.custom_optimizer = optimizer is not None
        self.optimizer = optimizer(self.model.parameters()) if optimizer else self._make_optimizer()
        self.ema = None
        if config.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema),
                                     use_buffers=True)
        self._averaging = False  # True inside fit: the per-epoch scores use the average
        # progress, all of it saved by checkpoint_state()
        self.epoch = 0
        self.iteration = 0
        self.diverged_at: int | None = None
        self.history: dict[str, list[float]] = {
            "loss_history": [], "train_acc_history": [], "val_acc_history": [], "lr_history": []}

    def __repr__(self) -> str:
        return (f"TorchTrainer({self.model.sizes}, optimizer={self.config.optimizer}, "
                f"device={self.device.type}, amp={self.amp})")

    # ------------------------------------------------------------- optimiser
    def _make_optimizer(self):
        """The config's update rule as its torch.optim class (nn.optim.RULES names it)."""
        from fcnet.nn import optim

        c, wd = self.config, self.weight_decay
        decay = [p for p in self.model.parameters() if p.ndim >= 2]  # Linear weights
        rest = [p for p in self.model.parameters() if p.ndim < 2]  # biases, BatchNorm
        groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
        rule = optim.rule(c.optimizer)
        kwargs = rule.torch_kwargs(c.optim_config())
        if rule.torch_fused:  # one kernel per step: best-cpu's AdamW step 23 -> 3.6 ms on 2 cores
            kwargs["fused"] = True
        return getattr(torch.optim, rule.torch_class)(groups, lr=c.lr, **kwargs)

    def lr_at(self, it: int, total: int, per_epoch: int) -> float:
        """Learning rate of iteration ``it`` (0-based) of ``total``."""
        c = self.config
        if c.schedule == "step":
            return c.lr * c.decay ** (it // per_epoch)
        warm = max(min(per_epoch, total // 10), 1)
        if it < warm:
            return c.lr * (it + 1) / warm
        return 0.5 * c.lr * (1 + math.cos(math.pi * (it - warm) / max(total - warm, 1)))

    def _l2_penalty(self):
        # the coupled optimisers' decay is the gradient of wd/2 * sum(W**2)
        if self.weight_decay == 0 or self.config.optimizer == "adamw" or self.custom_optimizer:
            return None
        ws = self.optimizer.param_groups[0]["params"]
        return 0.5 * self.weight_decay * sum((w.detach().float() ** 2).sum() for w in ws)

    # ------------------------------------------------------------------ data
    def _check(self, X, y=None):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.input_size:
            raise FcnetError(f"X must have shape (N, {self.input_size}), got {tuple(X.shape)}")
        if not np.issubdtype(X.dtype, np.number):
            raise FcnetError(f"X must be numeric, got dtype {X.dtype}")
        if y is None:
            return X, None
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise FcnetError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise FcnetError(f"labels must be in [0, {self.num_classes}), "
                             f"got range [{y.min()}, {y.max()}]")
        return X, y

    def _tensor(self, X):
        """Rows as a tensor on the device, in the model's dtype (no copy when possible)."""
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        t = torch.from_numpy(np.ascontiguousarray(X, dtype=np_dtype))
        return t.to(self.device, non_blocking=True)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    # ------------------------------------------------------------- training
    def fit(self, X_train, y_train, X_val, y_val, callback: Callable[[dict], None] | None = None,
            progress: bool = False) -> dict:
        """Train to the configured length (continuing after ``load_checkpoint_state``).

        X_train (N, D), y_train (N,), X_val (M, D), y_val (M,): preprocessed rows
        and integer labels.  ``callback(record)`` runs after every epoch with
        {'epoch', 'iteration', 'loss', 'train_acc', 'val_acc', 'lr', 'seconds'}.
        Returns {'loss_history', 'train_acc_history', 'val_acc_history',
        'lr_history', 'final_train_acc', 'diverged_at', 'epochs', 'iterations',
        'iters_per_epoch', 'train_acc_rows', 'tta', 'train_seconds'}.
        """
        c = self.config
        X_train, y_train = self._check(X_train, y_train)
        X_val, y_val = self._check(X_val, y_val)
        n, b = X_train.shape[0], c.batch_size
        if n == 0:
            raise FcnetError("the training split is empty")
        if self.exercise:
            return self._fit_exercise(X_train, y_train, X_val, y_val, callback, progress)
        total, per_epoch = training_length(c, n)
        n_epochs = math.ceil(total / per_epoch)
        Xt, yt = self._tensor(X_train), torch.from_numpy(y_train).to(self.device)
        Xv, yv = self._tensor(X_val), torch.from_numpy(y_val).to(self.device)
        # fixed subset for the per-epoch training accuracy, independent of the batch stream
        sub = np.random.RandomState(c.seed).permutation(n)[:TRAIN_ACC_ROWS]
        sub_idx = torch.from_numpy(np.sort(sub)).to(self.device)
        cuda = self.device.type == "cuda"
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.iteration, unit="it", dynamic_ncols=True,
                       desc=f"train torch {self.device.type}")
        t0 = time.perf_counter()
        self._averaging = True
        with flush_subnormals():
            while self.epoch < n_epochs and self.diverged_at is None:
                steps = min(per_epoch, total - self.iteration)
                safe = {k: v.clone() for k, v in self.model.state_dict().items()} if cuda else None
                lr0, losses = self.lr_at(self.iteration, total, per_epoch), []
                # the epoch's batches (and augmentation draws) in one go, moved once
                if c.sampling == "shuffle":
                    order = torch.randperm(n, generator=self.gen)[:steps * b]
                else:
                    order = torch.randint(0, n, (steps * b,), generator=self.gen)
                order = order.to(self.device)
                if self.augment is not None:
                    draws = [t.to(self.device) for t in self.augment.draw(order.numel(), self.gen)]
                if c.mixup > 0:  # one lam per batch, from a seed drawn off the generator
                    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))
                    lams = np.random.RandomState(seed).beta(c.mixup, c.mixup, size=steps)
                self.model.train()
                for k in range(steps):
                    rows = slice(k * b, (k + 1) * b)
                    idx = order[rows]
                    xb, yb = Xt[idx], yt[idx]
                    if self.augment is not None:
                        xb = self.augment.apply(xb, *(t[rows] for t in draws))
                    for group in self.optimizer.param_groups:
                        group["lr"] = self.lr_at(self.iteration, total, per_epoch)
                    if c.mixup > 0:
                        # mixup: each image blended with the batch's reversed partner
                        lam = float(lams[k])
                        xb = lam * xb + (1 - lam) * xb.flip(0)
                    with self._autocast():
                        scores = self.model(xb).to(self.dtype)
                    loss = F.cross_entropy(scores, yb, label_smoothing=c.label_smoothing)
                    if c.mixup > 0:
                        loss = lam * loss + (1 - lam) * F.cross_entropy(
                            scores, yb.flip(0), label_smoothing=c.label_smoothing)
                    if not cuda and not math.isfinite(loss.item()):
                        self.diverged_at = self.iteration  # keep the last good weights
                        losses.append(loss.detach())
                        break
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    if self.ema is not None:
                        self.ema.update_parameters(self.model)
                    penalty = self._l2_penalty()
                    losses.append(loss.detach() + penalty if penalty is not None
                                  else loss.detach())
                    self.iteration += 1
                if bar is not None:
                    bar.update(len(losses))
                epoch_losses = torch.stack(losses).double().cpu().tolist()
                self.history["loss_history"].extend(epoch_losses)
                bad = [i for i, v in enumerate(epoch_losses) if not math.isfinite(v)]
                if bad and cuda:
                    # CUDA is not synchronised every step: roll back to the epoch's start
                    self.diverged_at = self.iteration - steps + bad[0]
                    self.model.load_state_dict(safe)
                if self.diverged_at is not None:
                    break
                self.epoch += 1
                record = {
                    "epoch": self.epoch,
                    "iteration": self.iteration,
                    "loss": float(np.mean(epoch_losses)),
                    "train_acc": self._accuracy(Xt, yt, sub_idx, tta=False),  # as it fits
                    "val_acc": self._accuracy(Xv, yv),
                    "lr": lr0,
                    "seconds": time.perf_counter() - t0,
                }
                self.history["train_acc_history"].append(record["train_acc"])
                self.history["val_acc_history"].append(record["val_acc"])
                self.history["lr_history"].append(lr0)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}",
                                    val_acc=f"{record['val_acc']:.3f}", refresh=False)
                if callback is not None:
                    callback(record)
            if self.ema is not None:  # the averaged weights are the trained model
                self.model.load_state_dict(self.ema.module.state_dict())
            self._averaging = False
            final_train_acc = self._accuracy(Xt, yt, tta=False)
        if bar is not None:
            bar.close()
        return self._result(final_train_acc, per_epoch, int(sub_idx.numel()), t0)

    def _fit_exercise(self, X_train, y_train, X_val, y_val, callback, progress) -> dict:
        """``fit`` for the exercise's runs: a ``TorchPopulation`` of one, which
        trains the model's weights (copied back after every record)."""
        c = self.config
        total, per_epoch = training_length(c, X_train.shape[0])
        params = [t for lin in self.model.linears for t in (lin.weight.detach().T, lin.bias)]
        pop = TorchPopulation(
            [params], X_train, y_train, X_val, y_val, lrs=c.lr, decays=c.decay, regs=c.reg,
            keeps=c.dropout_keep, seeds=c.seed, num_iters=total, batch_size=c.batch_size,
            sampling=c.sampling, dtype="bfloat16" if self.amp else str(self.dtype)[6:],
            device=self.device)
        if self._pop_state is not None:
            pop.load_state(self._pop_state)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=pop.it, unit="it", dynamic_ncols=True,
                       desc=f"train torch {self.device.type} ({self.precision})")
        t0 = time.perf_counter()
        with flush_subnormals():
            while pop.it < total and pop._active_host[0]:
                before = pop.it
                pop.step()
                if bar is not None:
                    bar.update(pop.it - before)
                if len(pop.val_acc_history[0]) > self.epoch or pop.it == total:
                    self._sync(pop)
                if len(pop.val_acc_history[0]) > self.epoch:
                    self.epoch = len(pop.val_acc_history[0])
                    h = self.history
                    record = {
                        "epoch": self.epoch, "iteration": self.iteration,
                        "loss": h["loss_history"][-1] if h["loss_history"] else float("nan"),
                        "train_acc": h["train_acc_history"][-1],
                        "val_acc": h["val_acc_history"][-1], "lr": h["lr_history"][-1],
                        "seconds": time.perf_counter() - t0,
                    }
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4f}",
                                        val_acc=f"{record['val_acc']:.3f}", refresh=False)
                    if callback is not None:
                        callback(record)
            self._sync(pop)
            final_train_acc = pop.accuracies(pop.X, pop.y)[0]
        if bar is not None:
            bar.close()
        return self._result(final_train_acc, per_epoch, c.batch_size, t0)

    def _result(self, final_train_acc: float, per_epoch: int, train_acc_rows: int,
                t0: float) -> dict:
        """What ``fit`` returns: the histories, progress and timing of this training."""
        return {
            **{k: list(v) for k, v in self.history.items()},
            "final_train_acc": final_train_acc,
            "diverged_at": self.diverged_at,
            "epochs": self.epoch,
            "iterations": self.iteration,
            "iters_per_epoch": per_epoch,
            "train_acc_rows": train_acc_rows,
            "tta": self.tta,
            "train_seconds": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def _sync(self, pop: TorchPopulation) -> None:
        """The population's weights, progress and histories into the trainer."""
        p = pop.member_params(0)
        for lin, w, b in zip(self.model.linears, p[::2], p[1::2], strict=True):
            lin.weight.copy_(w.T)
            lin.bias.copy_(b)
        self.iteration = pop.it
        self.diverged_at = pop.diverged_at()[0]
        if self.diverged_at is not None:
            self.iteration = self.diverged_at
        self.history = pop.history(0)
        self._pop_state = pop.state()

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def _proba(self, Xt, idx=None, tta: bool | None = None):
        """Probabilities (N, C), eval mode, in chunks; with ``tta`` (default
        ``self.tta``) the mean of the image's and its mirror image's.  While ``ema``
        trains, the average scores.  Training accuracies are single-view, as the net fits."""
        model = self.ema.module if self.ema is not None and self._averaging else self.model
        model.eval()
        rows = Xt.shape[0] if idx is None else idx.numel()
        out = []
        for s in range(0, rows, EVAL_CHUNK):
            xb = Xt[s:s + EVAL_CHUNK] if idx is None else Xt[idx[s:s + EVAL_CHUNK]]
            with self._autocast():
                p = torch.softmax(model(xb).to(self.dtype), dim=1)
                if self.tta if tta is None else tta:
                    p = 0.5 * (p + torch.softmax(model(self.augment.mirror(xb))
                                                 .to(self.dtype), dim=1))
            out.append(p)
        if not out:
            return torch.empty(0, self.num_classes, dtype=self.dtype, device=self.device)
        return torch.cat(out)

    def _accuracy(self, Xt, yt, idx=None, tta: bool | None = None) -> float:
        if (Xt.shape[0] if idx is None else idx.numel()) == 0:
            return float("nan")
        pred = self._proba(Xt, idx, tta).argmax(dim=1)
        y = yt if idx is None else yt[idx]
        return float((pred == y).double().mean().item())

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C), float64 (flip-averaged when ``tta``)."""
        X, _ = self._check(X)
        return self._proba(self._tensor(X)).double().cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,)."""
        return self.predict_proba(X).argmax(axis=1)

    def score(self, X, y) -> float:
        """Accuracy on (X, y)."""
        X, y = self._check(X, y)
        return float((self.predict(X) == y).mean())

    # ------------------------------------------------------------ saving
    def state_dict(self) -> dict:
        """The model's state_dict, on the CPU."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """torch.save of the state_dict, written atomically (temp file, fsync, rename)."""
        _atomic_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, config: RunConfig, input_size: int, num_classes: int,
             image_shape: Sequence[int] | None = None,
             class_names: Sequence[str] | None = None) -> TorchTrainer:
        """A trainer whose model holds the weights saved at ``path`` (weights_only load)."""
        trainer = cls(config, input_size, num_classes, image_shape, class_names)
        state = _safe_load(path)
        try:
            trainer.model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()[0]
            raise FcnetError(f"{path}: weights do not fit the configured network ({first})") \
                from None
        return trainer

    def checkpoint_state(self) -> dict:
        """Everything to resume at an epoch boundary: model, optimiser, rng, progress."""
        state = {
            "model": self.state_dict(),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "gen": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "diverged_at": -1 if self.diverged_at is None else self.diverged_at,
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        if self._pop_state is not None:
            state["exercise"] = self._pop_state
        if self.ema is not None:
            state["ema"] = {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
        return state

    def load_checkpoint_state(self, state: dict) -> None:
        """Restore ``checkpoint_state()``; the next ``fit`` continues from there."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.gen.set_state(state["gen"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"])
            self.epoch = int(state["epoch"])
            self.iteration = int(state["iteration"])
            d = int(state["diverged_at"])
            self.diverged_at = None if d < 0 else d
            self.history = {k: [float(x) for x in v.tolist()] for k, v in state["history"].items()}
            if self.exercise:
                self._pop_state = state.get("exercise")
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise FcnetError(f"checkpoint does not fit this run ({str(err).splitlines()[0]})") \
                from None

    def save_checkpoint(self, path: str | Path) -> None:
        _atomic_save(self.checkpoint_state(), path)

    def load_checkpoint(self, path: str | Path) -> None:
        self.load_checkpoint_state(_safe_load(path))


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _atomic_save(obj, path: str | Path) -> None:
    """torch.save through fcnet's one atomic writer (temp file, fsync, rename)."""
    files.atomic_write(path, lambda f: torch.save(obj, f))


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
