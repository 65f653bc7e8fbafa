"""Run the two halves of an epilogue on OpenBLAS's own two threads (issue 16's first way).

On the default CPU path every sgemm runs on OpenBLAS's two threads and the epilogue after it
on one; at h = 64 the Sigmoid+MSE pass over the batch's B x 784 logits is ~20 us of a ~165 us
step. After a multithreaded call OpenBLAS's worker threads busy-wait for the next job
(~70 ms), and OpenBLAS exports ``gotoblas_pthread(n, fn, args, stride)``, which runs
``fn(args + i * stride)`` on the caller (i = 0) and on its threads (i >= 1) and returns when
all are done. So the epilogue's second half can go to the thread that has just computed half
of the product, with no second thread pool and no parking: one handoff measured ~0.15 us here
(bench/RESULTS.md, session 9).

The halves split the batch rows, as OpenBLAS splits the product's rows at B >= 128. Each half
runs the serial pass's row kernel (``cpu_output.sigmoid_loss_row_``) on its rows, and after
each row gathers one of its half of the next batch's rows from the uint8 dataset (prefetched
AHEAD rows earlier): the rows' random loads overlap the epilogue's arithmetic instead of
stalling the step's start (bench/RESULTS.md, session 10). Every dZ element is the serial
pass's (tested bit for bit); the bias gradient's column sums and the loss sums are added as two
partial sums (half 0's plus half 1's). The loss's per-row float32 sums are fast-math
reductions; the half and the serial pass call the same row kernel, but LLVM may inline and
vectorize it differently in each (the half is its own cfunc): the reported loss agrees to
float32 rounding (l1: 1.4e-9 and 2.9e-9 relative in two clean-clone CI runs), not bit for
bit. Not the same bits as one BLAS thread either (nor is OpenBLAS's one-thread sgemm).

``pair_function(loss)`` is 0 where there is no pair to use (another BLAS, or BLAS on one
thread: the caller then runs the serial code it always ran).
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numpy as np
from numba import carray, cfunc, literally, njit, types
from numba.extending import get_cython_function_address, intrinsic

from .cpu import gather_row, prefetch_row
from .cpu_math import _as_float32, wide_vectors
from .cpu_output import sigmoid_loss_row_
from .blas import gemm
from .ftz import flush_denormals_on, restore
from .losses_cpu import grad_factor

# A half's block (int64 words; one block per half, one row of ``blocks``). X_PTR ... NEXT_PTR:
# the next batch's gather (the dataset, its rows, the next batch's indices and their number,
# the buffer it goes to)
(Z_PTR, BIAS_PTR, T_PTR, COLSUM_PTR, OUT_PTR, ROW0, ROW1, BATCH, COLS, THREAD, X_PTR, X_ROWS,
 NEXT_IDX_PTR, NEXT_ROWS, NEXT_PTR) = range(15)
BLOCK = 24  # words per block: the used 120 bytes of the two blocks are 72 bytes apart, so
# they never share a 64-byte cache line, whatever the array's alignment
AHEAD = 4  # the gather prefetches the row this many rows ahead (bench/RESULTS.md, session 10)

_libc = ctypes.CDLL(None)
llvm.add_symbol("aecore_pair_pthread_self",
                ctypes.cast(_libc.pthread_self, ctypes.c_void_p).value)
_pthread_self = types.ExternalFunction("aecore_pair_pthread_self", types.int64())


def _pointer(dtype):
    @intrinsic
    def pointer(typingctx, addr):
        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], context.get_value_type(dtype).as_pointer())

        return types.CPointer(dtype)(types.int64), codegen

    return pointer


_i64p, _f32p, _f64p = _pointer(types.int64), _pointer(types.float32), _pointer(types.float64)
_u8p = _pointer(types.uint8)


_PTHREAD_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_int)


@_PTHREAD_FN
def _serial_pthread(n, fn, args, stride):
    """gotoblas_pthread's contract on the calling thread alone, for a BLAS without it (never
    called by aecore, which then runs the serial code; here so the symbol always resolves)."""
    half = ctypes.CFUNCTYPE(None, ctypes.c_int64)(fn)
    for i in range(n):
        half(args + i * stride)
    return 0


def _sgemm_library():
    """ctypes handle of the library whose sgemm aecore calls (scipy's BLAS), or None."""
    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    addr = get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
    info = DlInfo()
    try:
        dladdr = _libc.dladdr
    except AttributeError:
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
    if not dladdr(ctypes.c_void_p(addr), ctypes.byref(info)) or not info.dli_fname:
        return None
    return ctypes.CDLL(info.dli_fname.decode())  # its BLAS is among the libraries it needs


def _symbol(lib, *names):
    """The first of ``names`` that ``lib`` (or a library it needs) defines, or None."""
    for name in names:
        try:
            return getattr(lib, name)
        except AttributeError:
            pass
    return None


_blas = _sgemm_library()
_gotoblas_pthread = _symbol(_blas, "gotoblas_pthread")  # OpenBLAS-internal: never prefixed
# scipy's wheels prefix OpenBLAS's API (scipy_openblas_get_num_threads)
_get_num_threads = _symbol(_blas, "openblas_get_num_threads", "scipy_openblas_get_num_threads")
_HAS_PAIR = _gotoblas_pthread is not None and _get_num_threads is not None
# the symbol the @njit code calls: OpenBLAS's gotoblas_pthread, else the serial stand-in (a
# named symbol, so the callers cache on disk; registered at every import, before they load)
llvm.add_symbol("aecore_gotoblas_pthread",
                ctypes.cast(_gotoblas_pthread if _HAS_PAIR else _serial_pthread,
                            ctypes.c_void_p).value)
_run_halves = types.ExternalFunction(
    "aecore_gotoblas_pthread", types.int32(types.int32, types.int64, types.int64, types.int32))
if _HAS_PAIR:
    _get_num_threads.restype = ctypes.c_int


def blas_threads() -> int:
    """The threads scipy's OpenBLAS runs on now (threadpoolctl's limits included); 1 for
    another BLAS."""
    return int(_get_num_threads()) if _HAS_PAIR else 1


def describe() -> str:
    """One line for ``aecore info`` / ``aecore bench``: where the output epilogue runs now."""
    if not _HAS_PAIR:
        return "on the calling thread (scipy's BLAS has no gotoblas_pthread: not OpenBLAS)"
    n = blas_threads()
    if n < 2:
        return "on the calling thread (BLAS runs on 1 thread)"
    return (f"split by batch rows: calling thread + OpenBLAS's second thread ({n} BLAS "
            "threads); each half also gathers half of the next batch")


@njit(cache=True, nogil=True, inline="always")
def _half_rows(count, second):
    """(first, end) of the first (rows [0, ceil(count/2))) or second half of ``count`` rows."""
    half = (count + 1) // 2
    return (half, count) if second else (0, half)


@njit(cache=True, nogil=True)
def sigmoid_loss_half(blk, loss):
    """One half's rows of ``bias_sigmoid_loss_`` from its block, row by row (its row kernel,
    ``sigmoid_loss_row_``), each followed by the gather of one of this half's rows of the next
    batch (the row AHEAD rows further on is prefetched, so its loads overlap the epilogue's
    arithmetic); writes (loss sum, squared-error sum) to blk[OUT_PTR] and the thread it ran on
    to blk[THREAD]. Row by row is the whole-half call's arithmetic: every row's sums are its
    own, added in row order."""
    loss = literally(loss)
    wide_vectors()  # for the gather rows inlined here
    mxcsr = flush_denormals_on()  # the caller's FTZ | DAZ, on whichever thread this runs
    n, r0, r1 = blk[COLS], blk[ROW0], blk[ROW1]
    rows = r1 - r0
    Zh = carray(_f32p(blk[Z_PTR] + r0 * n * 4), (rows, n))
    Th = carray(_f32p(blk[T_PTR] + r0 * n * 4), (rows, n))
    b = carray(_f32p(blk[BIAS_PTR]), (n,))
    colsum = carray(_f64p(blk[COLSUM_PTR]), (n,))
    out = carray(_f64p(blk[OUT_PTR]), (2,))
    X = carray(_u8p(blk[X_PTR]), (blk[X_ROWS], n))
    q0, q1 = _half_rows(blk[NEXT_ROWS], r0 > 0)
    idx = carray(_i64p(blk[NEXT_IDX_PTR] + q0 * 8), (q1 - q0,))
    nxt = carray(_f32p(blk[NEXT_PTR] + q0 * n * 4), (q1 - q0, n))
    colsum[:] = 0.0
    s32 = np.float32(grad_factor(loss) / (blk[BATCH] * n))  # the serial pass's, bit for bit
    out[0], out[1] = rows_then_gather(Zh, b, Th, s32, colsum, 0, rows, 0, n, X, idx, nxt, loss)
    blk[THREAD] = _pthread_self()
    restore(mxcsr)


@njit(cache=True, nogil=True, inline="always")
def rows_then_gather(Z, b, T, s32, colsum, r0, rows, v0, v1, X, idx, nxt, loss):
    """The loss gradient (``sigmoid_loss_row_``) on rows [r0, r0 + rows) x columns [v0, v1),
    row after row, each row followed by the gather of one next-batch row, nxt[i] <- X[idx[i]]
    (the row AHEAD further on prefetched, so its loads overlap the arithmetic); Z holds those
    columns from its column 0 (Z[:, :v1 - v0]), b and colsum all columns, T all columns of Z's
    rows. Returns the (loss sum, squared-error sum) of the rows. Both ways of halving the
    epilogue run it: this module's and ``own_step``'s."""
    for i in range(min(AHEAD, idx.shape[0])):
        prefetch_row(X, idx[i])
    total = total_sq = 0.0
    for i in range(max(rows, idx.shape[0])):
        if i + AHEAD < idx.shape[0]:
            prefetch_row(X, idx[i + AHEAD])
        if i < rows:
            row, row_sq = sigmoid_loss_row_(Z[r0 + i, :v1 - v0], b[v0:v1], T[r0 + i, v0:v1],
                                            s32, b[:0], colsum[v0:v1], loss)
            total += row
            total_sq += row_sq
        if i < idx.shape[0]:
            gather_row(X[idx[i]], nxt[i])
    return total, total_sq


_halves: dict = {}


def pair_function(loss: int) -> int:
    """Address of the half function for loss number ``loss`` (compiled on first use, cached on
    disk per loss: numba keys a closure's entry by its cells' values), or 0 where the halves
    cannot go to two BLAS threads now."""
    if not _HAS_PAIR or blas_threads() < 2:
        return 0
    if loss not in _halves:
        def half(arg):
            sigmoid_loss_half(carray(_i64p(arg), (BLOCK,)), loss)

        _halves[loss] = cfunc(types.void(types.int64), nopython=True, cache=True)(half)
    return _halves[loss].address


def scratch(n: int):
    """(blocks, part, outs) for ``linear_sigmoid_loss_grad_pair`` with ``n`` output columns."""
    return np.zeros((2, BLOCK), np.int64), np.zeros(n, np.float64), np.zeros((2, 2))


@njit(cache=True, nogil=True)
def linear_sigmoid_loss_grad_pair(H, W, b, T, dZ, colsum, fn, blocks, part, outs, X, next_idx,
                                  next_out):
    """``cpu_output.linear_sigmoid_loss_grad`` (training: no Y) with the epilogue's batch rows
    split between the caller and OpenBLAS's thread: ``fn`` from ``pair_function``. T float32
    (B, N); dZ and T C-contiguous (the halves address rows by pointer); ``part`` (N,) float64
    scratch for half 1's column sums, ``outs`` (2, 2).

    The halves also gather the next batch: next_out[i] <- X[next_idx[i]] as ``gather_rows``
    does (X: the (n, N) uint8 C-contiguous dataset; next_idx may be empty; next_out float32
    C-contiguous, at least len(next_idx) rows), half 0 the first ceil(len / 2) rows."""
    gemm(False, True, 1.0, _as_float32(H), W, 0.0, dZ)
    nb, n = dZ.shape
    for t in range(2):
        blk = blocks[t]
        blk[Z_PTR] = dZ.ctypes.data
        blk[BIAS_PTR] = b.ctypes.data
        blk[T_PTR] = T.ctypes.data
        blk[COLSUM_PTR] = (colsum if t == 0 else part).ctypes.data
        blk[OUT_PTR] = outs[t].ctypes.data
        blk[ROW0], blk[ROW1] = _half_rows(nb, t == 1)
        blk[BATCH] = nb
        blk[COLS] = n
        blk[X_PTR] = X.ctypes.data
        blk[X_ROWS] = X.shape[0]
        blk[NEXT_IDX_PTR] = next_idx.ctypes.data
        blk[NEXT_ROWS] = next_idx.shape[0]
        blk[NEXT_PTR] = next_out.ctypes.data
    _run_halves(np.int32(2), fn, blocks.ctypes.data, np.int32(BLOCK * 8))
    for j in range(n):
        colsum[j] += part[j]
    return outs[0, 0] + outs[1, 0], outs[0, 1] + outs[1, 1]
