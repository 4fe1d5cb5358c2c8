"""``MultiLayerPerceptron``: Linear - [BatchNorm] - activation - [Dropout] per hidden
size, then a final Linear, as one ``nn.Sequential`` (study.md Q4)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from fcnet.errors import FcnetError
from fcnet.nn.model import MLP
from fcnet.torch_backend import require_torch

torch = require_torch()
nn = torch.nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def keep_bits(shape, generator=None, device=None):
    """Uniform integers r in [0, 32768) of ``shape``, four per int64 draw (15 of its 63 random bits
    each), kept when r < ``keep_bound(keep)``: 0.6 ms per 256 x 1536 mask on a CPU, bernoulli_ 2.7."""
    n = int(np.prod(shape))
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(generator=generator)
    return draws.view(torch.int16)[:n].view(shape) & 0x7FFF  # bit 63 is always 0: drop it


def keep_bound(keep: float) -> int:
    """r < round(32768 keep) keeps a unit: the kept share is keep to within 1.5e-5."""
    return max(round(32768 * keep), 1)


class Dropout(nn.Dropout):
    """Inverted dropout, mask from ``keep_bits`` (drawn from ``generator``, torch's
    global one when None), kept units scaled by 32768 / bound so the mean is exact."""

    generator = None

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        bound = keep_bound(1 - self.p)
        return x * (keep_bits(x.shape, self.generator, x.device) < bound).to(x.dtype) * (32768 / bound)


def normal_init(sizes: Sequence[int], std: float, seed: int) -> list[np.ndarray]:
    """[W1 (D, H1), b1, ..., WL, bL], float64, as ``fcnet.nn.MLP(seed=seed)`` draws them."""
    return list(MLP(sizes[0], list(sizes[1:-1]), sizes[-1], std=std, seed=seed).params.values())


def parse_init(init: str) -> tuple[str, float | None]:
    """'default' | 'kaiming' | 'normal:<std>' -> (kind, std); FcnetError otherwise."""
    kind, _, arg = str(init).partition(":")
    if kind in ("default", "kaiming") and not arg:
        return kind, None
    with contextlib.suppress(ValueError):  # float("") and float("x") raise
        if kind == "normal" and float(arg) > 0:
            return kind, float(arg)
    raise FcnetError(f"init must be default, kaiming or normal:<std> (std > 0), got {init!r}")


class MultiLayerPerceptron(nn.Sequential):
    """A fully-connected classifier, x (N, D) -> scores (N, C); ``linears``: its Linear layers.  ``dropout``
    = 1 - keep (inverted); ``batchnorm`` before each hidden activation; ``init`` 'default' (PyTorch's),
    'kaiming' (He normal, fan_in, biases 0) or 'normal:<std>' (drawn as the NumPy engine draws it)."""

    def __init__(self, input_size: int, hidden_layers: int | Sequence[int], num_classes: int,
                 dropout: float = 0.0, batchnorm: bool = False, activation: str = "relu",
                 init: str = "default", seed: int = 0, dtype=None):
        hidden = [hidden_layers] if isinstance(hidden_layers, int) else hidden_layers
        sizes = [int(input_size), *[int(h) for h in hidden], int(num_classes)]
        if any(s <= 0 for s in sizes):
            raise FcnetError(f"layer sizes must be positive, got {sizes}")
        if not 0.0 <= dropout < 1.0:
            raise FcnetError(f"dropout must be in [0, 1), got {dropout}")
        if activation not in ACTIVATIONS:
            raise FcnetError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        kind, std = parse_init(init)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
            layers.append(nn.Linear(fan_in, fan_out, dtype=dtype))
            if batchnorm:
                layers.append(nn.BatchNorm1d(fan_out, dtype=dtype))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout))
        layers.append(nn.Linear(sizes[-2], sizes[-1], dtype=dtype))
        super().__init__(*layers)
        self.sizes = sizes
        with torch.no_grad():
            weights = normal_init(sizes, std, seed)[::2] if kind == "normal" else []
            for lin, w in zip(self.linears, weights):
                lin.weight.copy_(torch.from_numpy(w.T))
            for lin in self.linears if kind != "default" else []:
                if kind == "kaiming":
                    nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(lin.bias)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]
