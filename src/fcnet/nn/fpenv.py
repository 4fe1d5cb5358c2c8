"""Flush subnormal floats to zero while training: tiny initialisations and Adam's moments
of tiny gradients produce them, and some CPU operations then run many times slower (``sqrt``
2.5x in NumPy, 25x in PyTorch: benchmarks/subnormal.py).  The SSE FTZ/DAZ bits, set through
glibc's ``fesetenv`` on Linux x86-64 only, are the calling thread's, where NumPy's
element-wise operations run; OpenBLAS's workers keep their own (no slowdown measured there).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import sys
from collections.abc import Iterator

_MXCSR_OFFSET = 28  # fenv_t on x86-64: the x87 environment (28 bytes), then mxcsr
_FTZ, _DAZ = 0x8000, 0x0040
_ENV_BYTES = 64  # fenv_t is 32 bytes; room to spare


def _load_libm():
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64") \
            or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    except OSError:
        return None


_LIBM = _load_libm()


def supported() -> bool:
    """True where ``flush_denormals`` can set the FTZ/DAZ bits (Linux x86-64, glibc)."""
    return _LIBM is not None


def _mxcsr(env) -> int:
    return int.from_bytes(bytes(env[_MXCSR_OFFSET : _MXCSR_OFFSET + 4]), "little")


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Within the block, this thread flushes subnormal results and inputs to zero; yields
    whether it does.  The previous floating-point environment is restored on exit."""
    saved = (ctypes.c_uint8 * _ENV_BYTES)()
    if not enabled or _LIBM is None or _LIBM.fegetenv(saved) != 0:
        yield False
        return
    env = (ctypes.c_uint8 * _ENV_BYTES).from_buffer_copy(saved)
    env[_MXCSR_OFFSET : _MXCSR_OFFSET + 4] = list((_mxcsr(saved) | _FTZ | _DAZ).to_bytes(4, "little"))
    try:
        yield _LIBM.fesetenv(env) == 0
    finally:
        _LIBM.fesetenv(saved)  # a no-op where setting env failed


def flushing() -> bool:
    """Whether this thread currently flushes subnormals to zero (FTZ and DAZ set)."""
    env = (ctypes.c_uint8 * _ENV_BYTES)()
    if _LIBM is None or _LIBM.fegetenv(env) != 0:
        return False
    return _mxcsr(env) & (_FTZ | _DAZ) == (_FTZ | _DAZ)
