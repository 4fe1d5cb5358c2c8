"""C <- A B + beta C, the backward product that is also plain SGD's step: with dz carrying -lr,
W <- (1 - 2 lr reg) W + a^T dz is one gemm whose beta keeps the decayed weights, and no pass
over a separate gradient.  np.matmul has no beta, so this calls the cblas gemm of the very
library np.matmul calls (the scipy-openblas of NumPy's wheels, found by threadpoolctl): the
same kernels, the same sums; a stack of large products (members with their own batches) goes a
call a product, each with its own beta.  Elsewhere (another BLAS, a stack of small products) the
product goes into a scratch array and is added, one more pass: OpenBLAS applies beta before it
adds the product, so both give the same numbers wherever the product's inner dimension fits one
of its blocks."""

from __future__ import annotations

import ctypes
import functools

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
SMALL = 1 << 15  # elements of c below which the product and the add go apart
_KIND = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}  # cblas's prefix by dtype


@functools.cache
def _cblas_gemm(kind: str):
    """NumPy's own cblas_{s,d}gemm (ILP64, as its wheels build it), or None."""
    try:
        from threadpoolctl import threadpool_info

        path = next(i["filepath"] for i in threadpool_info()
                    if i.get("internal_api") == "openblas" and "numpy" in i.get("filepath", ""))
        lib = ctypes.CDLL(path)
        fn = next(getattr(lib, name) for name in (f"scipy_cblas_{kind}gemm64_", f"cblas_{kind}gemm64_")
                  if hasattr(lib, name))
    except (ImportError, OSError, StopIteration):
        return None
    real, i64, ptr = (ctypes.c_float if kind == "s" else ctypes.c_double), ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ctypes.c_int] * 3 + [i64] * 3 + [real, ptr, i64, ptr, i64, real, ptr, i64]
    fn.restype = None
    return fn


def _operand(m: np.ndarray) -> tuple[int, int] | None:
    """(transposition flag, leading dimension) of a 2-D row-major or transposed operand."""
    item = m.itemsize
    if m.strides[1] == item and m.strides[0] % item == 0 and m.strides[0] >= item * m.shape[1]:
        return _NO_TRANS, m.strides[0] // item
    if m.strides[0] == item and m.strides[1] % item == 0 and m.strides[1] >= item * m.shape[0]:
        return _TRANS, m.strides[1] // item
    return None


def per_slice(c: np.ndarray) -> bool:
    """Whether ``gemm`` takes a stack c (S, M, N) one slice at a time, each with its own beta."""
    return c.ndim == 3 and c[0].size >= SMALL


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float | list[float], scratch: np.ndarray) -> None:
    """c <- a @ b + beta c in place: a (M, K), b (K, N), c (M, N), or stacks of them.  ``scratch``:
    c's shape and dtype, for the product where the BLAS call cannot take it.  A stack of large
    slices (``per_slice``; members with their own batches) goes a call a slice, as matmul takes a
    stack, so the same sums, with no scratch and add passes; ``beta`` may then be one per slice."""
    if per_slice(c):
        for i in range(c.shape[0]):
            gemm(a[i], b[i], c[i], beta[i] if isinstance(beta, list) else beta, scratch[i])
        return
    big = c.ndim == 2 and c.size >= SMALL  # a small c: the ctypes call costs more than the pass
    fn = _cblas_gemm(_KIND[c.dtype]) if big and c.dtype in _KIND else None
    ops = (_operand(a), _operand(b), _operand(c)) if fn is not None and a.dtype == b.dtype == c.dtype else ()
    if not ops or None in ops or ops[2][0] != _NO_TRANS:
        np.matmul(a, b, out=scratch)
        if beta != 1.0:
            np.multiply(c, beta, out=c)
        c += scratch
        return
    (ta, lda), (tb, ldb), (_, ldc) = ops
    (m, k), n = a.shape, b.shape[1]
    fn(_ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta, c.ctypes.data, ldc)
