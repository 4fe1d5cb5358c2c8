"""The PyTorch backend: the same networks as ``fcnet.nn``, trained with autograd,
modern optimisers, schedules, augmentation, on CPU or CUDA.

PyTorch is an optional extra (``pip install 'fcnet[torch]'``).  Nothing outside
this package imports torch, and this module imports it only when asked, so the
rest of fcnet works without it; ``require_torch()`` turns a missing install into
one clear FcnetError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fcnet.errors import FcnetError

INSTALL_HINT = "the torch backend needs PyTorch: pip install 'fcnet[torch]' (or torch==2.13.0)"

__all__ = ["require_torch", "INSTALL_HINT", "MultiLayerPerceptron",
           "TorchTrainer", "depth_study"]


_pool_flushes = False


def require_torch() -> ModuleType:
    """Return the ``torch`` module, or raise FcnetError saying how to install it."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:  # includes sys.modules['torch'] = None
        raise FcnetError(INSTALL_HINT) from None
    _flushing_pool(torch)
    return torch


def _flushing_pool(torch) -> None:
    """Start torch's intra-op threads while this thread flushes subnormals: a thread
    inherits its creator's FTZ/DAZ mode, so workers started without it never flush
    (the depth study's 4- and 5-layer normal(0, 1e-3) nets took 119 s for 10 epochs
    on 2 threads against 11.6 s).  The workers flush for good, the calling thread
    only inside ``flush_subnormals``; a pool torch already started keeps its mode."""
    global _pool_flushes
    if _pool_flushes:
        return
    _pool_flushes = True
    before = torch.tensor([1e-323], dtype=torch.float64).item() == 0.0
    torch.set_flush_denormal(True)
    try:
        torch.ones(1 << 20).sum()  # a parallel region: the pool starts here
    finally:
        torch.set_flush_denormal(before)


_LAZY = {"MultiLayerPerceptron": "model", "TorchTrainer": "train", "depth_study": "depth"}


def __getattr__(name: str):
    # lazy, so `import fcnet.torch_backend` works (and can say so) without torch
    if name not in _LAZY:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"fcnet.torch_backend.{_LAZY[name]}"), name)
