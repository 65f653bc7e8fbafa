"""The SGD training step on aecore's own GEMM (``kernels.cpu_gemm``), every phase in two halves.

Four phases a step, each run as two halves on OpenBLAS's two threads through
``gotoblas_pthread`` (as ``kernels.blas_pair``: no second thread pool), or one after the other
on the calling thread where BLAS has one thread. Each half's product is followed by its
epilogue on the rows it has just written, while they are in its cache:

    forward   H[r]   <- f(Xb[r] W1t + b1)                 r: half of the batch rows
    output    dZ[r]  <- loss'(H[r] W2t + b2), loss sums   + half of the next batch's gather
    backward  dH[r]  <- (dZ[r] W2) * f'(H[r])             + dH[r]'s column sums
    update    W2[v]  -= lr dZ[:, v]^T H;  W2t[:, v] <- W2[v]^T;  b2[v] -= lr db2[v]
              W1t[v] -= lr Xb[:, v]^T dH;                        b1[u] -= lr db1[u]
                                                          v: half of the 784 pixels, u: of h

Every product reads B's rows contiguously (``nn_rows``): W1 is held transposed (W1t, (784, h)),
and W2 (784, h) both ways, W2t = W2^T refreshed by the half that has just updated those rows.
The column sums (db1, db2) and the loss sums are kept per half and added half 0 + half 1:
every value depends on the shape alone, not on which thread ran a half or whether the halves
ran in turn (tests/test_own_step.py checks both ways bit for bit).
"""

from __future__ import annotations

import numpy as np
from numba import carray, cfunc, literally, njit, types

from .activations_cpu import keeps_preactivation
from .blas_pair import (_f32p, _f64p, _half_rows, _i64p, _pthread_self, _run_halves, _u8p,
                        AHEAD, blas_threads, _HAS_PAIR)
from .cpu import gather_row, prefetch_row
from .cpu_gemm import MR_NN, nn_rows, transpose_rows
from .cpu_hidden import activation_grad_, bias_activation_
from .cpu_math import wide_vectors
from .cpu_output import sigmoid_loss_row_
from .ftz import flush_denormals_on, restore
from .losses_cpu import grad_factor

FORWARD, OUTPUT, BACKWARD, UPDATE = range(4)
# a half's block of int64 words: what the phases read (pointers are addresses)
# (float64 values as their bits: K_SLOPE, K_LR, K_LOSS, K_SQ). The loss sums come back in the
# block, not in an array argument: numba passes arrays as noalias, so LLVM may keep an array's
# old values across a call that writes it through a raw address.
(K_PHASE, K_HALF, K_NB, K_HID, K_IMG, K_XB, K_H, K_ZPRE, K_DZ, K_DH, K_W1T, K_W2, K_W2T, K_B1,
 K_B2, K_DB1, K_DB2, K_SLOPE, K_LR, K_LOSS, K_SQ, K_X8, K_X_ROWS, K_NEXT_IDX, K_NEXT_ROWS,
 K_NEXT_PTR, K_THREAD) = range(27)
BLOCK = 32  # words per block (two blocks never share a 64-byte line)


@njit(cache=True, nogil=True, inline="always")
def _split(count, second):
    """(first, end) of half 0 (a multiple of MR_NN rows, about half) or half 1 of ``count``."""
    mid = min(count, (count // MR_NN + 1) // 2 * MR_NN)
    return (mid, count) if second else (0, mid)


@njit(cache=True, nogil=True)
def run_half(blk, act, loss):
    """Run this block's phase on its half (module doc). ``act`` / ``loss``: the activation's
    and the loss's numbers (literals)."""
    act = literally(act)
    loss = literally(loss)
    wide_vectors()
    mxcsr = flush_denormals_on()
    phase, second = blk[K_PHASE], blk[K_HALF] != 0
    nb, h, n = blk[K_NB], blk[K_HID], blk[K_IMG]
    slope = np.float32(_as_f64(blk[K_SLOPE]))
    lr = np.float32(_as_f64(blk[K_LR]))
    r0, r1 = _split(nb, second)
    Xb = carray(_f32p(blk[K_XB]), (nb, n))
    H = carray(_f32p(blk[K_H]), (nb, h))
    Zp = carray(_f32p(blk[K_ZPRE]), (nb if keeps_preactivation(act) else 0, h))
    dZ = carray(_f32p(blk[K_DZ]), (nb, n))
    dH = carray(_f32p(blk[K_DH]), (nb, h))
    b1 = carray(_f32p(blk[K_B1]), (h,))
    b2 = carray(_f32p(blk[K_B2]), (n,))
    db1 = carray(_f64p(blk[K_DB1]), (2, h))  # per half
    db2 = carray(_f64p(blk[K_DB2]), (2, n))
    t = 1 if second else 0
    if phase == FORWARD:
        nn_rows(blk[K_XB], n, 1, blk[K_W1T], h, blk[K_H], h, r0, r1, h, n, 1.0, 0.0)
        bias_activation_(H[r0:r1], b1, slope, act, Zp[r0:r1] if Zp.shape[0] else Zp)
    elif phase == OUTPUT:
        nn_rows(blk[K_H], h, 1, blk[K_W2T], n, blk[K_DZ], n, r0, r1, n, h, 1.0, 0.0)
        _output_epilogue(blk, dZ, b2, Xb, db2[t], r0, r1, nb, n, second, loss)
    elif phase == BACKWARD:
        nn_rows(blk[K_DZ], n, 1, blk[K_W2], h, blk[K_DH], h, r0, r1, h, n, 1.0, 0.0)
        db1[t, :] = 0.0
        activation_grad_(dH[r0:r1], H[r0:r1], Zp[r0:r1] if Zp.shape[0] else Zp, slope,
                         db1[t], act)
    else:
        v0, v1 = _split(n, second)
        nn_rows(blk[K_DZ], 1, n, blk[K_H], h, blk[K_W2], h, v0, v1, h, nb, -lr, 1.0)
        transpose_rows(blk[K_W2], h, blk[K_W2T], n, v0, v1, h)
        nn_rows(blk[K_XB], 1, n, blk[K_DH], h, blk[K_W1T], h, v0, v1, h, nb, -lr, 1.0)
        u0, u1 = _split(h, second)
        _bias_step(b2, db2, lr, v0, v1)
        _bias_step(b1, db1, lr, u0, u1)
    blk[K_THREAD] = _pthread_self()
    restore(mxcsr)


@njit(cache=True, nogil=True)  # no fast-math: b - lr g rounds as written (cpu._bias_step's)
def _bias_step(b, parts, lr, j0, j1):
    for j in range(j0, j1):
        b[j] -= lr * (parts[0, j] + parts[1, j])


@njit(cache=True, nogil=True, inline="always")
def _output_epilogue(blk, dZ, b2, Xb, colsum, r0, r1, nb, n, second, loss):
    """The loss gradient on rows [r0, r1) of dZ, row by row, each followed by the gather of
    one of this half's rows of the next batch (as ``blas_pair.sigmoid_loss_half``); the loss
    sums go to blk[K_LOSS_OUT]'s row of this half."""
    colsum[:] = 0.0
    X = carray(_u8p(blk[K_X8]), (blk[K_X_ROWS], n))
    q0, q1 = _half_rows(blk[K_NEXT_ROWS], second)
    idx = carray(_i64p(blk[K_NEXT_IDX] + q0 * 8), (q1 - q0,))
    nxt = carray(_f32p(blk[K_NEXT_PTR] + q0 * n * 4), (q1 - q0, n))
    s32 = np.float32(grad_factor(loss) / (nb * n))
    for i in range(min(AHEAD, idx.shape[0])):
        prefetch_row(X, idx[i])
    total = total_sq = 0.0
    rows = r1 - r0
    for i in range(max(rows, idx.shape[0])):
        if i + AHEAD < idx.shape[0]:
            prefetch_row(X, idx[i + AHEAD])
        if i < rows:
            row, row_sq = sigmoid_loss_row_(dZ[r0 + i], b2, Xb[r0 + i], s32, b2[:0], colsum,
                                            loss)
            total += row
            total_sq += row_sq
        if i < idx.shape[0]:
            gather_row(X[idx[i]], nxt[i])
    blk[K_LOSS] = _as_i64(total)
    blk[K_SQ] = _as_i64(total_sq)


_halves: dict = {}


def half_function(act: int, loss: int) -> int:
    """Address of the half function for (activation, loss) numbers, compiled on first use; 0
    where BLAS has no second thread to run a half on (the halves then run in turn)."""
    if not _HAS_PAIR or blas_threads() < 2:
        return 0
    key = (act, loss)
    if key not in _halves:
        def half(arg):
            run_half(carray(_i64p(arg), (BLOCK,)), act, loss)

        _halves[key] = cfunc(types.void(types.int64), nopython=True)(half)
    return _halves[key].address


def scratch(hidden: int, image: int):
    """(blocks, db1, db2) for ``train_steps``: the halves' blocks, their column sums."""
    return np.zeros((2, BLOCK), np.int64), np.zeros((2, hidden)), np.zeros((2, image))


@njit(cache=True, nogil=True)
def _phase(blocks, phase, fn, act, loss):
    """Both halves of ``phase``: on two BLAS threads (fn != 0) or in turn here."""
    blocks[0, K_PHASE] = blocks[1, K_PHASE] = phase
    if fn != 0:
        _run_halves(np.int32(2), fn, blocks.ctypes.data, np.int32(BLOCK * 8))
    else:
        run_half(blocks[0], act, loss)
        run_half(blocks[1], act, loss)


@njit(cache=True, nogil=True)
def train_steps(X, perm, start, stop, batch, W1t, b1, W2, W2t, b2, slope, lrs, act, loss, Xb, H,
                Zp, dZ, dH, fn, blocks, db1, db2, Xb_next):
    """SGD on X[perm[start:stop]] in batches of ``batch``; returns (loss sum, squared-error
    sum, steps). X: the (n, 784) uint8 C-contiguous dataset; W1t (784, h), W2t (h, 784) the
    transposed weights, updated in place with b1, b2; lrs[i] the i-th step's learning rate.
    The first batch is gathered here; each step's output halves gather the next."""
    act = literally(act)
    loss = literally(loss)
    mxcsr = flush_denormals_on()
    n, h = W2.shape
    total = total_sq = 0.0
    steps = 0
    if start < stop:
        _gather(X, perm[start:min(start + batch, stop)], Xb)
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        next_idx = perm[e:min(e + batch, stop)]
        for t in range(2):
            blk = blocks[t]
            blk[K_HALF], blk[K_NB], blk[K_HID], blk[K_IMG] = t, e - s, h, n
            blk[K_XB], blk[K_H], blk[K_ZPRE] = Xb.ctypes.data, H.ctypes.data, Zp.ctypes.data
            blk[K_DZ], blk[K_DH] = dZ.ctypes.data, dH.ctypes.data
            blk[K_W1T], blk[K_W2], blk[K_W2T] = W1t.ctypes.data, W2.ctypes.data, W2t.ctypes.data
            blk[K_B1], blk[K_B2] = b1.ctypes.data, b2.ctypes.data
            blk[K_DB1], blk[K_DB2] = db1.ctypes.data, db2.ctypes.data
            blk[K_SLOPE], blk[K_LR] = _as_i64(np.float64(slope)), _as_i64(lrs[steps])
            blk[K_X8], blk[K_X_ROWS] = X.ctypes.data, X.shape[0]
            blk[K_NEXT_IDX], blk[K_NEXT_ROWS] = next_idx.ctypes.data, next_idx.shape[0]
            blk[K_NEXT_PTR] = Xb_next.ctypes.data
        for phase in range(4):
            _phase(blocks, phase, fn, act, loss)
        total += _as_f64(blocks[0, K_LOSS]) + _as_f64(blocks[1, K_LOSS])
        total_sq += _as_f64(blocks[0, K_SQ]) + _as_f64(blocks[1, K_SQ])
        steps += 1
        Xb, Xb_next = Xb_next, Xb
    restore(mxcsr)
    return total, total_sq, steps


@njit(inline="always")
def _as_i64(x):
    return np.float64(x).view(np.int64)


@njit(inline="always")
def _as_f64(bits):
    return np.int64(bits).view(np.float64)


@njit(cache=True, nogil=True)
def _gather(X, idx, out):
    for i in range(idx.shape[0]):
        gather_row(X[idx[i]], out[i])
