"""Update rules, from one registry (cs231n's ``optim.py``, as classes): each declares its
``settings``, keeps its state (a checkpoint restores it exactly) and names its
``torch.optim`` class.  The run config, CLI flags, ``Solver``, the torch backend and
``FCNetClassifier`` read ``RULES``; a new rule is a class here and its fields in config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fcnet.errors import FcnetError


@dataclass(frozen=True)
class Setting:
    """One hyper-parameter of an update rule: its default, its bounds (pydantic's
    gt / ge / lt / le; always finite) and what it means."""

    default: float
    help: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def bounds(self) -> str:
        """The allowed range in words, e.g. 'in [0, 1)' or '> 0'."""
        lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else ""
        hi = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else ""
        if lo and hi:
            return f"in {lo}, {hi}"
        one = [f"{op} {b:g}" for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                           ("<", self.lt)) if b is not None]
        return one[0] if one else "finite"

    def check(self, name: str, value: Any) -> float:
        """value as a float, or FcnetError naming the setting and its range."""
        ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        v = float(value) if ok else math.nan
        out = (self.gt is not None and v <= self.gt) or (self.ge is not None and v < self.ge) \
            or (self.lt is not None and v >= self.lt) or (self.le is not None and v > self.le)
        if not math.isfinite(v) or out:
            raise FcnetError(f"{name} must be a finite number {self.bounds()}, got {value!r}")
        return v


BETA1 = Setting(0.9, "Adam: decay of the first moment (optimizer adam, adamw)", ge=0, lt=1)
BETA2 = Setting(0.999, "Adam: decay of the second moment (optimizer adam, adamw)", ge=0, lt=1)
DECAY_RATE = Setting(0.99, "RMSprop: decay of the squared-gradient cache (optimizer rmsprop)",
                     ge=0, lt=1)
EPS = Setting(1e-8, "Adam / RMSprop: eps added to the root in the denominator", gt=0)


def _mean_square(avg: np.ndarray, g: np.ndarray, decay: float, tmp: np.ndarray) -> None:
    """avg <- decay avg + (1 - decay) g^2 in place (RMSprop's cache, Adam's v); tmp is scratch."""
    np.multiply(g, g, out=tmp)
    tmp *= 1 - decay
    avg *= decay
    avg += tmp


def _aligned(params, grads, lr, l2):
    """(w, g, lr, l2) per parameter: params/grads lists or dicts, lr/l2 lists or one value."""
    if isinstance(params, Mapping):
        grads = [grads[k] for k in params]
        params = list(params.values())
    each = [list(v) if isinstance(v, list | tuple) else [v] * len(params) for v in (lr, l2)]
    return zip(params, grads, *each, strict=True)


def _scaled(w: np.ndarray, factor, out: np.ndarray) -> np.ndarray:
    """factor * w into out; factor a float, or an array of per-member values."""
    return np.multiply(w, factor if isinstance(factor, float) else factor.astype(w.dtype), out=out)


class UpdateRule:
    """Base of the rules: ``Rule(**settings)``, missing settings at their defaults (unknown
    ones or values out of bounds: FcnetError).  ``_step`` updates one parameter in place,
    given a scratch array and its ``slots`` (its state, which ``state()`` saves as
    '<slot>.<index>' with the step count 't').  ``torch_kwargs(config)``: the settings in
    ``torch_class``'s own terms."""

    name: ClassVar[str]
    settings: ClassVar[dict[str, Setting]] = {}
    slots: ClassVar[tuple[str, ...]] = ()
    numpy: ClassVar[bool] = True  # False: the rule exists in the torch backend only
    torch_class: ClassVar[str]  # the rule's class in torch.optim
    torch_fused: ClassVar[bool] = False  # torch's fused kernel exists for it (CPU and CUDA)
    prescaled: ClassVar[bool] = False  # backprop hands it -lr times the gradient (plain SGD)
    torch_kwargs = staticmethod(lambda config: {})

    def __init__(self, **settings: float):
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            known = ", ".join(self.settings) or "none"
            raise FcnetError(f"optimizer {self.name!r} has no setting {unknown[0]!r} "
                             f"(its settings: {known})")
        if not self.numpy:
            raise FcnetError(f"optimizer {self.name!r} exists in the torch backend only")
        self.config = {k: s.check(k, settings.get(k, s.default)) for k, s in self.settings.items()}
        self.t = 0
        self.store: dict[str, dict[int, np.ndarray]] = {slot: {} for slot in (*self.slots, "tmp")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    def _slot(self, slot: str, i: int, like: np.ndarray) -> np.ndarray:
        """Parameter i's array of ``slot``, created as zeros like ``like`` on first use."""
        if i not in self.store[slot]:
            self.store[slot][i] = np.zeros_like(like)
        return self.store[slot][i]

    def update(self, params, grads, lr, l2=None, scaled: bool = False) -> None:
        """One step from the data term's ``grads`` (overwritten), adding the L2 term 2 reg W:
        lists or dicts keyed alike; ``lr``/``l2`` (2 reg, None: no L2 term) one value for
        all or per parameter, each a float or per-member array (K-shaped to broadcast), so a
        lone net and a population take the same update; ``scaled``: grads are -lr dw already."""
        self.t += 1
        for i, (w, g, rate, decay) in enumerate(_aligned(params, grads, lr, l2)):
            arrays = [self._slot(slot, i, w) for slot in ("tmp", *self.slots)]  # scratch, state
            if decay is not None:
                g += _scaled(w, decay, arrays[0])  # + 2 reg W
            self._step(w, g, rate, *arrays)

    def _step(self, w: np.ndarray, g: np.ndarray, lr, tmp: np.ndarray, *slots: np.ndarray):
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        out = {f"{slot}.{i}": v for slot in self.slots for i, v in self.store[slot].items()}
        if self.slots:
            out["t"] = np.array(self.t)
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.t = int(state.get("t", 0))
        for slot in self.slots:
            self.store[slot] = {int(k.split(".")[1]): np.array(v) for k, v in state.items()
                                if k.startswith(slot + ".")}


class SGD(UpdateRule):
    """w -= lr (dw + 2 reg w), as w <- (1 - 2 lr reg) w + (-lr dw).  In training, backprop
    folds -lr into dJ/dz_L (``prescaled``: a small (N, C) array), so each gradient arrives
    as the step itself, and a weight's step is then its backward product accumulated into it
    (``stack.backward``'s ``keep``, the factors ``keep`` gives): one gemm per weight matrix."""

    name = "sgd"
    torch_class = "SGD"
    prescaled = True

    @staticmethod
    def keep(rate, decay):
        """The factor 1 - lr 2 reg a weight's old value is kept with (1.0 without L2 term):
        ``rate``/``decay`` one entry of ``update``'s lr/l2, so a float or per member."""
        return 1.0 if decay is None else 1.0 - rate * decay

    def update(self, params, grads, lr, l2=None, scaled=False):
        if scaled and l2 is None and isinstance(params, list):  # the steps themselves (a Solver's
            for w, g in zip(params, grads, strict=True):  # biases, each step): half the time
                w += g
            return
        for w, g, rate, decay in _aligned(params, grads, lr, l2):
            if not scaled:
                g *= -rate  # -lr dw
            if decay is not None:
                _scaled(w, self.keep(rate, decay), out=w)  # (1 - 2 lr reg) w
            w += g  # - lr dw


class Momentum(UpdateRule):
    """v = mu v - lr dw; w += v."""

    name = "momentum"
    settings = {"momentum": Setting(0.9, "momentum coefficient mu (optimizer momentum)", ge=0, lt=1)}
    slots = ("v",)
    torch_class = "SGD"
    torch_kwargs = staticmethod(lambda config: {"momentum": config["momentum"]})

    def _step(self, w, g, lr, tmp, v):
        g *= lr
        v *= self.config["momentum"]
        v -= g
        w += v


class RMSprop(UpdateRule):
    """cache = decay_rate cache + (1 - decay_rate) dw^2; w -= lr dw / (sqrt(cache) + eps)
    (cs231n's rmsprop; torch.optim.RMSprop with alpha = decay_rate, no momentum,
    not centred, also adds eps outside the root)."""

    name = "rmsprop"
    settings = {"decay_rate": DECAY_RATE, "eps": EPS}
    slots = ("cache",)
    torch_class = "RMSprop"
    torch_kwargs = staticmethod(lambda config: {"alpha": config["decay_rate"], "eps": config["eps"],
                                                "momentum": 0.0, "centered": False})

    def _step(self, w, g, lr, tmp, cache):
        _mean_square(cache, g, self.config["decay_rate"], tmp)  # cache = rho cache + (1 - rho) g^2
        np.sqrt(cache, out=tmp)
        tmp += self.config["eps"]
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        w -= tmp  # w -= lr g / (sqrt(cache) + eps)


class Adam(UpdateRule):
    """Adam (Kingma & Ba, Algorithm 1, as torch.optim.Adam): bias-corrected moments,
    w -= lr m_hat / (sqrt(v_hat) + eps), eps added after the bias correction."""

    name = "adam"
    settings = {"beta1": BETA1, "beta2": BETA2, "eps": EPS}
    slots = ("m", "v")
    torch_class = "Adam"
    torch_fused = True
    torch_kwargs = staticmethod(lambda config: {"betas": (config["beta1"], config["beta2"]),
                                                "eps": config["eps"]})

    def _step(self, w, g, lr, tmp, m, v):
        b1, b2 = self.config["beta1"], self.config["beta2"]
        _mean_square(v, g, b2, tmp)  # v = b2 v + (1 - b2) g^2
        g *= 1 - b1
        m *= b1
        m += g  # m = b1 m + (1 - b1) g
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / math.sqrt(1 - b2**self.t)
        tmp += self.config["eps"]  # sqrt(v_hat) + eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1**self.t)
        w -= tmp  # w -= lr m_hat / (sqrt(v_hat) + eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter); torch backend only."""

    name = "adamw"
    numpy = False
    torch_class = "AdamW"


RULES: dict[str, type[UpdateRule]] = {r.name: r for r in (SGD, Momentum, Adam, RMSprop, AdamW)}
NUMPY_RULES = tuple(name for name, r in RULES.items() if r.numpy)
# every rule setting by name; a name shared by rules (eps) must mean one thing
SETTINGS: dict[str, Setting] = {k: s for r in RULES.values() for k, s in r.settings.items()}
assert all(SETTINGS[k] == s for r in RULES.values() for k, s in r.settings.items())


def rule(name: str) -> type[UpdateRule]:
    """The rule class registered as ``name``; FcnetError names the choices."""
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise FcnetError(f"optimizer must be one of {list(RULES)}, got {name!r}") from None


def make_optimizer(name: str, config: Mapping[str, float] | None = None) -> UpdateRule:
    """A fresh NumPy update rule: ``name`` from RULES, ``config`` its own settings
    (missing ones take their defaults)."""
    return rule(name)(**dict(config or {}))
