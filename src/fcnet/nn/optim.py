"""Update rules, from one registry (cs231n's ``optim.py``, as classes).

Each rule declares its own hyper-parameters (name, default, bounds, meaning) in
``settings``, keeps its own state (so a checkpoint restores it exactly), and
names its ``torch.optim`` counterpart.  Everything else reads ``RULES``: the
run config's ``optimizer`` choices and rule fields, the CLI flags generated
from them, ``Solver``, the torch backend and ``FCNetClassifier``.  Adding a
rule is one class here plus its settings' fields in ``fcnet.config``.

``update`` changes params in place from grads, which it may overwrite.
"""

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
        if lo:
            return f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        return f"{'<=' if self.le is not None else '<'} {hi[:-1]}" if hi else "finite"

    def check(self, name: str, value: Any) -> float:
        """value as a float, or FcnetError naming the setting and its range."""
        ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        v = float(value) if ok else math.nan
        ok = math.isfinite(v) and not (
            (self.gt is not None and v <= self.gt) or (self.ge is not None and v < self.ge)
            or (self.lt is not None and v >= self.lt) or (self.le is not None and v > self.le))
        if not ok:
            raise FcnetError(f"{name} must be a finite number {self.bounds()}, got {value!r}")
        return v


MOMENTUM = Setting(0.9, "momentum coefficient mu (optimizer momentum)", ge=0, lt=1)
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


def _slot(store: dict[str, np.ndarray], key: str, like: np.ndarray) -> np.ndarray:
    """store[key], created as zeros like ``like`` on first use only (setdefault
    would build and zero a parameter-sized array on every call)."""
    arr = store.get(key)
    if arr is None:
        arr = store[key] = np.zeros_like(like)
    return arr


class UpdateRule:
    """Base of the rules.  ``Rule(**settings)``: missing settings take their
    defaults, unknown ones and values out of bounds are errors.

    ``slots`` names the per-parameter state arrays (dicts keyed like params);
    ``state()`` saves them as '<slot>.<param>' plus the step count 't'.
    """

    name: ClassVar[str]
    settings: ClassVar[dict[str, Setting]] = {}
    slots: ClassVar[tuple[str, ...]] = ()
    numpy: ClassVar[bool] = True  # False: the rule exists in the torch backend only
    torch_class: ClassVar[str]  # the rule's class in torch.optim
    torch_fused: ClassVar[bool] = False  # torch's fused kernel exists for it (CPU and CUDA)

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
        for slot in self.slots:
            setattr(self, slot, {})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def torch_kwargs(cls, config: Mapping[str, float]) -> dict[str, Any]:
        """The settings in ``torch.optim.<torch_class>``'s own terms."""
        return {}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
               lr: float) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        out = {f"{slot}.{k}": v for slot in self.slots for k, v in getattr(self, slot).items()}
        if self.slots:
            out["t"] = np.array(self.t)
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.t = int(state.get("t", 0))
        for slot in self.slots:
            n = len(slot) + 1
            setattr(self, slot, {k[n:]: np.array(v) for k, v in state.items()
                                 if k.startswith(slot + ".")})


class SGD(UpdateRule):
    """w -= lr dw."""

    name = "sgd"
    torch_class = "SGD"

    def update(self, params, grads, lr):
        for k, w in params.items():
            g = grads[k]
            g *= lr
            w -= g


class Momentum(UpdateRule):
    """v = mu v - lr dw; w += v."""

    name = "momentum"
    settings = {"momentum": MOMENTUM}
    slots = ("v",)
    v: dict[str, np.ndarray]  # velocity per parameter
    torch_class = "SGD"

    @classmethod
    def torch_kwargs(cls, config):
        return {"momentum": config["momentum"]}

    def update(self, params, grads, lr):
        mu = self.config["momentum"]
        self.t += 1
        for k, w in params.items():
            v = _slot(self.v, k, w)
            g = grads[k]
            g *= lr
            v *= mu
            v -= g
            w += v


class RMSprop(UpdateRule):
    """cache = decay_rate cache + (1 - decay_rate) dw^2; w -= lr dw / (sqrt(cache) + eps)
    (cs231n's rmsprop; torch.optim.RMSprop with alpha = decay_rate, no momentum,
    not centred, also adds eps outside the root)."""

    name = "rmsprop"
    settings = {"decay_rate": DECAY_RATE, "eps": EPS}
    slots = ("cache",)
    cache: dict[str, np.ndarray]  # running mean of dw^2 per parameter
    torch_class = "RMSprop"

    @classmethod
    def torch_kwargs(cls, config):
        return {"alpha": config["decay_rate"], "eps": config["eps"], "momentum": 0.0,
                "centered": False}

    def __init__(self, **settings: float):
        super().__init__(**settings)
        self._tmp: dict[str, np.ndarray] = {}

    def update(self, params, grads, lr):
        rho, eps = self.config["decay_rate"], self.config["eps"]
        self.t += 1
        for k, w in params.items():
            g = grads[k]
            cache = _slot(self.cache, k, w)
            tmp = _slot(self._tmp, k, w)
            _mean_square(cache, g, rho, tmp)  # cache = rho cache + (1 - rho) g^2
            np.sqrt(cache, out=tmp)
            tmp += eps
            np.divide(g, tmp, out=tmp)
            tmp *= lr
            w -= tmp  # w -= lr g / (sqrt(cache) + eps)


class Adam(UpdateRule):
    """Adam (Kingma & Ba, Algorithm 1, as torch.optim.Adam): bias-corrected moments,
    w -= lr m_hat / (sqrt(v_hat) + eps), eps added after the bias correction."""

    name = "adam"
    settings = {"beta1": BETA1, "beta2": BETA2, "eps": EPS}
    slots = ("m", "v")
    m: dict[str, np.ndarray]  # first moment per parameter
    v: dict[str, np.ndarray]  # second moment per parameter
    torch_class = "Adam"
    torch_fused = True

    @classmethod
    def torch_kwargs(cls, config):
        return {"betas": (config["beta1"], config["beta2"]), "eps": config["eps"]}

    def __init__(self, **settings: float):
        super().__init__(**settings)
        self._tmp: dict[str, np.ndarray] = {}

    def update(self, params, grads, lr):
        b1, b2, eps = self.config["beta1"], self.config["beta2"], self.config["eps"]
        self.t += 1
        step = lr / (1 - b1**self.t)  # lr m_hat = step m
        inv_c2 = 1.0 / math.sqrt(1 - b2**self.t)  # sqrt(v_hat) = inv_c2 sqrt(v)
        for k, w in params.items():
            g = grads[k]
            m = _slot(self.m, k, w)
            v = _slot(self.v, k, w)
            tmp = _slot(self._tmp, k, w)
            _mean_square(v, g, b2, tmp)  # v = b2 v + (1 - b2) g^2
            g *= 1 - b1
            m *= b1
            m += g  # m = b1 m + (1 - b1) g
            np.sqrt(v, out=tmp)
            tmp *= inv_c2
            tmp += eps  # sqrt(v_hat) + eps
            np.divide(m, tmp, out=tmp)
            tmp *= step
            w -= tmp  # w -= lr m_hat / (sqrt(v_hat) + eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter); torch backend only."""

    name = "adamw"
    numpy = False
    torch_class = "AdamW"


RULES: dict[str, type[UpdateRule]] = {r.name: r for r in (SGD, Momentum, Adam, RMSprop, AdamW)}
NUMPY_RULES = tuple(name for name, r in RULES.items() if r.numpy)


def _all_settings() -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    for r in RULES.values():
        for k, s in r.settings.items():
            if out.setdefault(k, s) != s:
                raise AssertionError(f"setting {k!r} is declared twice, differently")
    return out


# every rule setting by name; a name shared by rules (eps) means one thing
SETTINGS = _all_settings()


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


def decayed_lr(lr0: float, decay: float, epochs_done: int) -> float:
    """Per-epoch step decay: lr = lr0 * decay ** epochs."""
    return lr0 * decay**epochs_done
