"""Update rules.  Each rule updates params in place from grads (which it may
overwrite) and keeps its own state, so a checkpoint can restore it exactly."""

from __future__ import annotations

import math

import numpy as np

from fcnet.errors import FcnetError


def _slot(store: dict[str, np.ndarray], key: str, like: np.ndarray) -> np.ndarray:
    """store[key], created as zeros like ``like`` on first use only (setdefault
    would build and zero a parameter-sized array on every call)."""
    arr = store.get(key)
    if arr is None:
        arr = store[key] = np.zeros_like(like)
    return arr


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
            v = _slot(self.v, k, w)
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
    """Adam (Kingma & Ba, Algorithm 1, as torch.optim.Adam): bias-corrected moments,
    w -= lr m_hat / (sqrt(v_hat) + eps), eps added after the bias correction."""

    name = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self._tmp: dict[str, np.ndarray] = {}

    def update(self, params, grads, lr):
        self.t += 1
        step = lr / (1 - self.b1**self.t)  # lr m_hat = step m
        inv_c2 = 1.0 / math.sqrt(1 - self.b2**self.t)  # sqrt(v_hat) = inv_c2 sqrt(v)
        for k, w in params.items():
            g = grads[k]
            m = _slot(self.m, k, w)
            v = _slot(self.v, k, w)
            tmp = self._tmp.get(k)
            if tmp is None:
                tmp = self._tmp[k] = np.empty_like(w)
            np.multiply(g, g, out=tmp)
            tmp *= 1 - self.b2
            v *= self.b2
            v += tmp  # v = b2 v + (1 - b2) g^2
            g *= 1 - self.b1
            m *= self.b1
            m += g  # m = b1 m + (1 - b1) g
            np.sqrt(v, out=tmp)
            tmp *= inv_c2
            tmp += self.eps  # sqrt(v_hat) + eps
            np.divide(m, tmp, out=tmp)
            tmp *= step
            w -= tmp  # w -= lr m_hat / (sqrt(v_hat) + eps)

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
