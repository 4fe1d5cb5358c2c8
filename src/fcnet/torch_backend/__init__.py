"""The PyTorch backend: ``fcnet.nn``'s networks on autograd, modern optimisers, schedules and
augmentation, CPU or CUDA.  PyTorch, an optional extra, is imported by ``require_torch()``."""

from __future__ import annotations

import importlib
from types import ModuleType

from fcnet.errors import FcnetError

INSTALL_HINT = "the torch backend needs PyTorch: pip install 'fcnet[torch]' (or torch==2.13.0)"
_pool_flushes = False


def require_torch() -> ModuleType:
    """The ``torch`` module, or FcnetError saying how to install it.  The first call starts
    torch's intra-op workers flushing subnormals for good (threads inherit FTZ/DAZ; unflushed,
    the depth study's deep nets ran 10x slower); the caller flushes inside ``flush_subnormals``."""
    global _pool_flushes
    try:
        torch = importlib.import_module("torch")
    except ImportError:  # includes sys.modules['torch'] = None
        raise FcnetError(INSTALL_HINT) from None
    if not _pool_flushes:
        _pool_flushes = True
        before = torch.tensor([1e-323], dtype=torch.float64).item() == 0.0
        torch.set_flush_denormal(True)
        torch.ones(1 << 20).sum()  # a parallel region: the pool starts here
        torch.set_flush_denormal(before)
    return torch
