"""The PyTorch backend: ``fcnet.nn``'s networks trained with autograd, modern optimisers,
schedules and augmentation, on CPU or CUDA.  PyTorch is an optional extra that only this
package imports, through ``require_torch()``."""

from __future__ import annotations

import importlib
from types import ModuleType

from fcnet.errors import FcnetError

INSTALL_HINT = "the torch backend needs PyTorch: pip install 'fcnet[torch]' (or torch==2.13.0)"
_pool_flushes = False


def require_torch() -> ModuleType:
    """The ``torch`` module, or FcnetError saying how to install it.  The first call starts
    torch's intra-op threads while this thread flushes subnormals: a thread inherits its
    creator's FTZ/DAZ mode, so workers started without it never flush (the depth study's 4-
    and 5-layer normal(0, 1e-3) nets took 119 s for 10 epochs on 2 threads against 11.6 s).
    The workers flush for good, the caller only inside ``flush_subnormals``."""
    global _pool_flushes
    try:
        torch = importlib.import_module("torch")
    except ImportError:  # includes sys.modules['torch'] = None
        raise FcnetError(INSTALL_HINT) from None
    if not _pool_flushes:
        _pool_flushes = True
        before = torch.tensor([1e-323], dtype=torch.float64).item() == 0.0
        torch.set_flush_denormal(True)
        try:
            torch.ones(1 << 20).sum()  # a parallel region: the pool starts here
        finally:
            torch.set_flush_denormal(before)
    return torch
