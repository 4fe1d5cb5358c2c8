"""Update rules.  Each rule updates params in place from grads (which it may
overwrite) and keeps its own state, so a checkpoint can restore it exactly."""

from __future__ import annotations

import numpy as np

from fcnet.errors import FcnetError


class SGD:
    """theta -= lr * grad."""

    name = "sgd"

    def update(self, params: dict, grads: dict, lr: float) -> None:
        for k, w in params.items():
            g = grads[k]
            g *= lr
            w -= g

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass


class Momentum(SGD):
    """v = mu * v - lr * grad; theta += v."""

    name = "momentum"

    def __init__(self, momentum: float = 0.9):
        self.mu = momentum
        self.v: dict[str, np.ndarray] = {}

    def update(self, params, grads, lr):
        for k, w in params.items():
            v = self.v.setdefault(k, np.zeros_like(w))
            g = grads[k]
            g *= lr
            v *= self.mu
            v -= g
            w += v

    def state(self):
        return {f"v.{k}": v for k, v in self.v.items()}

    def load_state(self, state):
        self.v = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("v.")}


class Adam(SGD):
    """Adam (Kingma & Ba): bias-corrected first and second moment estimates."""

    name = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self._tmp: dict[str, np.ndarray] = {}

    def update(self, params, grads, lr):
        self.t += 1
        step = lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        for k, w in params.items():
            g = grads[k]
            m = self.m.setdefault(k, np.zeros_like(w))
            v = self.v.setdefault(k, np.zeros_like(w))
            tmp = self._tmp.setdefault(k, np.empty_like(w))
            m *= self.b1
            m += (1 - self.b1) * g  # m = b1 m + (1 - b1) g
            np.multiply(g, g, out=tmp)
            tmp *= 1 - self.b2
            v *= self.b2
            v += tmp  # v = b2 v + (1 - b2) g^2
            np.sqrt(v, out=tmp)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= step
            w -= tmp  # w -= lr_t m / (sqrt(v) + eps)

    def state(self):
        out = {f"m.{k}": v for k, v in self.m.items()}
        out.update({f"v.{k}": v for k, v in self.v.items()})
        out["t"] = np.array(self.t)
        return out

    def load_state(self, state):
        self.t = int(state.get("t", 0))
        self.m = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("m.")}
        self.v = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("v.")}


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, momentum: float = 0.9, beta1: float = 0.9, beta2: float = 0.999):
    """Build an update rule by name: sgd | momentum | adam."""
    if name == "sgd":
        return SGD()
    if name == "momentum":
        return Momentum(momentum)
    if name == "adam":
        return Adam(beta1, beta2)
    raise FcnetError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")


def decayed_lr(lr0: float, decay: float, epochs_done: int) -> float:
    """Per-epoch step decay: lr = lr0 * decay ** epochs."""
    return lr0 * decay**epochs_done
