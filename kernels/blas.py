"""BLAS ``sgemm`` callable from inside ``@njit`` code, in row-major terms.

Numba's ``np.dot`` cannot take BLAS's ``alpha``/``beta`` nor write into a strided output, and
those are what let us fuse: ``beta = 1`` accumulates onto a bias-filled output, and
``W <- W - lr * G^T A`` is *one* sgemm with ``alpha = -lr, beta = 1`` (the SGD update costs no
extra pass over the weights). So we call SciPy's BLAS (the same OpenBLAS numpy's ``@`` would
use) through ``scipy.linalg.cython_blas``, whose function pointers numba can call directly.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

# Register SciPy's sgemm under a fixed symbol name and call it as an external function: unlike
# a ctypes pointer (a "dynamic global"), a named symbol lets numba cache the compiled callers on
# disk; the symbol is registered again, at this import, in every process before they run.
llvm.add_symbol(
    "aecore_sgemm", get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
)
# Fortran calling convention: every argument by reference.
_sgemm = types.ExternalFunction("aecore_sgemm", types.void(*([types.voidptr] * 13)))

_N = ord("N")
_T = ord("T")


@njit(cache=True, nogil=True)
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """C <- alpha * op(A) @ op(B) + beta * C for float32 row-major (C-contiguous rows) arrays.

    ``op(A)`` is ``A.T`` when ``trans_a`` else ``A`` (likewise B). ``A``/``B``/``C`` may be
    row slices of larger arrays as long as each row is contiguous (leading dimension =
    ``strides[0] // 4``).
    """
    m = C.shape[0]
    n = C.shape[1]
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
    args = np.empty(6, np.int32)
    args[0] = n
    args[1] = m
    args[2] = k
    args[3] = B.strides[0] // 4  # ldb -> Fortran's lda
    args[4] = A.strides[0] // 4  # lda -> Fortran's ldb
    args[5] = C.strides[0] // 4
    flags = np.empty(2, np.uint8)
    flags[0] = _T if trans_b else _N
    flags[1] = _T if trans_a else _N
    scal = np.empty(2, np.float32)
    scal[0] = alpha
    scal[1] = beta
    _sgemm(
        flags[0:].ctypes, flags[1:].ctypes,
        args[0:].ctypes, args[1:].ctypes, args[2:].ctypes,
        scal[0:].ctypes,
        B.ctypes, args[3:].ctypes,
        A.ctypes, args[4:].ctypes,
        scal[1:].ctypes,
        C.ctypes, args[5:].ctypes,
    )
