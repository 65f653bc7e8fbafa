"""The training step on aecore's own GEMM (``kernels.cpu_gemm``), every phase in two halves.

Four phases a step, each run as two halves on OpenBLAS's two threads through
``gotoblas_pthread`` (as ``kernels.blas_pair``: no second thread pool), or one after the other
on the calling thread where BLAS has one thread. Each half's product is followed by its
epilogue on what it has just written, while it is in its cache. The halves split either the
weights' rows (u: half of the h hidden units, v: half of the 784 pixels; every thread reads
all of the batch, from a copy of its own) or, above 256 rows a batch (``by_rows``), the batch
rows r:

    phase     by the weights' rows                      by the batch rows
    forward   H[:, u] <- f(Xb W1[u]^T + b1[u])          H[r] <- f(Xb[r] W1^T + b1)
    output    dZ[:, v] <- loss'(H W2[v]^T + b2[v])      dZ[r] <- loss'(H[r] W2^T + b2)
              (+ by the batch rows, half of the next batch's gather, row by row)
    backward  dH_part[t] <- dZ[:, v] W2[v]             dH[r] <- (dZ[r] W2) * f'(H[r])
    update    dH[:, u] <- f'(dH_part[0] + dH_part[1])   -
              W2[v] -= lr dZ[:, v]^T H,   b2[v] -= lr db2[v]      (both)
              W1[u] -= lr dH[:, u]^T Xb                 W1[:, p] -= lr dH^T Xb[:, p] (SGD)
              b1[u] -= lr db1[u]                        (both)
              Xb <- the next batch (each half's copy)   -

(p: the other half of the pixels from v, so that the half with more of W2's rows has fewer of
W1's columns; each half packs only its columns of Xb, where by u both packed all of Xb.)

That is plain SGD, the update inside the product (alpha = -lr, beta = 1). Another optimizer
(momentum, Nesterov, Adam) gets G1[u] = dH[:, u]^T Xb and G2[v] = dZ[:, v]^T H from the same
products and ``kernels.cpu.optimizer_update`` on those rows of the weights, the biases and their
buffers (``kernels.cpu.weight_step``'s branch, split by rows).

The weights stay in the model's layout; the products that read them transposed (W1^T, W2^T)
pack them through 16 x 16 register transposes (``nn_rows`` with b_ks = 1). The column sums
(db1, db2) and the loss sums are kept per half and added half 0 + half 1: every value depends
on the shape alone, not on which thread ran a half or whether the halves ran in turn
(tests/test_own_step.py checks both ways bit for bit).
"""

from __future__ import annotations

import numpy as np
from numba import carray, cfunc, literally, njit, types
from numba.extending import intrinsic

from .activations_cpu import keeps_preactivation
from .blas_pair import (_f32p, _half_rows, _i64p, _pthread_self, _run_halves, _u8p,
                        blas_threads, rows_then_gather, _HAS_PAIR)
from .cpu import gather_rows, optimizer_update, prefetch_rows
from .c_calls import I64, c_function, call_at, nn_at, nn_rows_address
from .cpu_gemm import aligned_empty
from .cpu_hidden import activation_grad_, bias_activation_
from .cpu_math import wide_vectors
from .ftz import flush_denormals_on, restore
from .losses_cpu import grad_factor
from .optim import OPT_SGD, HyperParams
from .own_addresses import own_columns, pages, row_view, share

FORWARD, OUTPUT, BACKWARD, UPDATE = range(4)
# a half's block of int64 words: what the phases read (pointers are addresses)
# (float64 values as their bits: K_SLOPE, K_LR, K_LOSS, K_SQ). The loss sums come back in the
# block, not in an array argument: numba passes arrays as noalias, so LLVM may keep an array's
# old values across a call that writes it through a raw address.
(K_PHASE, K_HALF, K_NB, K_HID, K_IMG, K_XB, K_H, K_ZPRE, K_DZ, K_DH, K_W1, K_W2, K_B1, K_B2,
 K_DB1, K_DB2, K_DHP, K_SLOPE, K_LR, K_LOSS, K_SQ, K_X8, K_X_ROWS, K_NEXT_IDX, K_NEXT_ROWS,
 K_NEXT_PTR, K_THREAD, K_BY_ROWS, K_KIND, K_T, K_MOMENTUM, K_BETA1, K_BETA2, K_EPS,
 K_OPT, K_NN_ROWS, K_OPT_LAYER, K_OWN_BATCH) = range(38)
# K_OPT: the address of an int64 row of the optimizer's arrays: layer 1's (VW, Vb, MW, Mb, G, gb),
# then layer 2's (0 where the optimizer keeps none; G, gb: gradient scratch, unused by SGD)
# K_OWN_BATCH: 1 where each half has a copy of the batch of its own (K_XB), reads no row the
# other half's core wrote and, once its update has read the batch, gathers every row of the next
# one over it (by the weights' rows); 0 where the halves share one copy and each gathers half of
# the next batch's rows into another (K_NEXT_PTR) in the output phase
# K_NN_ROWS, K_OPT_LAYER: the addresses of ``nn_rows`` and ``_optimizer_layer`` compiled once as C
# functions (``scratch`` writes them): each (activation, loss) pair's ``run_half`` calls them
# there instead of compiling their machine code into its own (see ``c_calls``)
N_OPT = 12
BLOCK = 40  # words per block (two blocks never share a 64-byte line)


@njit(cache=True, nogil=True, inline="always")
def _cols(count, second):
    """(first, end) of half 0 (a multiple of 32 columns, about half) or half 1 of ``count``."""
    mid = min(count, (count // 32 + 1) // 2 * 32)
    return (mid, count) if second else (0, mid)


@njit(cache=True, nogil=True, inline="always")
def _rows(count, second):
    """(first, end) of half 0 (a multiple of 8 rows, about half) or half 1 of ``count``; 8
    on every CPU (AVX-512's tile height), whatever its tile: the halves' column sums, added
    half 0 + half 1, then give the same bits everywhere."""
    mid = min(count, (count // 8 + 1) // 2 * 8)
    return (mid, count) if second else (0, mid)


@njit(cache=True, nogil=True)
def run_half(blk, act, loss):
    """Run this block's phase on its half (module doc). ``act`` / ``loss``: the activation's
    and the loss's numbers (literals)."""
    act = literally(act)
    loss = literally(loss)
    wide_vectors()
    mxcsr = flush_denormals_on()
    phase, second, by_rows = blk[K_PHASE], blk[K_HALF] != 0, blk[K_BY_ROWS] != 0
    t = 1 if second else 0
    nb, h, n = blk[K_NB], blk[K_HID], blk[K_IMG]
    slope = np.float32(_as_f64(blk[K_SLOPE]))
    lr = np.float32(_as_f64(blk[K_LR]))
    r0, r1 = _rows(nb, second)  # this half's batch rows (by rows)
    u0, u1 = _cols(h, second)  # this half's hidden units: W1's rows, H's and dH's columns
    v0, v1 = _cols(n, second)  # this half's pixels: W2's rows, dZ's columns
    nn = blk[K_NN_ROWS]
    xb, w1, w2, hh, dz, dh = (blk[K_XB], blk[K_W1], blk[K_W2], blk[K_H], blk[K_DZ], blk[K_DH])
    H = carray(_f32p(hh), (nb, h))
    dH = carray(_f32p(dh), (nb, h))
    Zp = carray(_f32p(blk[K_ZPRE]), (nb if keeps_preactivation(act) else 0, h))
    zp = blk[K_ZPRE] if Zp.shape[0] else 0  # Zp's address for row_view, 0 where none is kept
    db1 = share(blk[K_DB1], h, t)  # this half's share of db1's column sums
    # dZ[0, v0] and dH[0, u0], and their row strides: by the weights' rows this half's columns
    # of dZ and dH are a block of their own (``own_columns``)
    zv, ldz = own_columns(dz, nb, n, v0, v1, by_rows)
    hu, ldh = own_columns(dh, nb, h, u0, u1, by_rows)
    if phase == FORWARD:
        b1 = carray(_f32p(blk[K_B1]), (h,))
        if by_rows:  # H[r] <- f(Xb[r] W1^T + b1)
            nn_at(nn, xb, n, 1, w1, 1, n, hh, h, r0, r1, h, n, 1.0, 0.0)
            bias_activation_(H[r0:r1], b1, slope, act, Zp[r0:r1] if Zp.shape[0] else Zp)
        else:  # H[:, u] <- f(Xb W1[u]^T + b1[u])
            nn_at(nn, xb, n, 1, w1 + 4 * u0 * n, 1, n, hh + 4 * u0, h, 0, nb, u1 - u0, n, 1.0,
                  0.0)
            for i in range(nb):  # row by row: contiguous views, which LLVM vectorizes
                bias_activation_(row_view(hh, i, h, u0, u1), b1[u0:u1], slope, act,
                                 row_view(zp, i, h, u0, u1) if zp else Zp)
    elif phase == OUTPUT:
        if by_rows:  # dZ[r] <- loss'(H[r] W2^T + b2)
            # first the columns whose rows of W2 this half updated (in its cache), then the
            # rest: both halves walking W2 from row 0, half 1 waited on half 0's lines first
            for c, d in ((v0, v1), (0, v0) if second else (v1, n)):
                nn_at(nn, hh, h, 1, w2 + 4 * c * h, 1, h, dz + 4 * c, n, r0, r1, d - c, h, 1.0,
                      0.0)
            _output_epilogue(blk, dz, n, r0, r1, 0, n, nb, n, second, loss)
        else:  # dZ[:, v] <- loss'(H W2[v]^T + b2[v])
            nn_at(nn, hh, h, 1, w2 + 4 * v0 * h, 1, h, zv, ldz, 0, nb, v1 - v0, h, 1.0, 0.0)
            _output_epilogue(blk, zv, ldz, 0, nb, v0, v1, nb, n, second, loss)
    elif phase == BACKWARD:
        db1[:] = 0.0  # (by the weights' rows the update phase fills this half's columns)
        if by_rows:  # dH[r] <- (dZ[r] W2) * f'(H[r]), db1's share: its column sums
            nn_at(nn, dz, n, 1, w2, h, 1, dh, h, r0, r1, h, n, 1.0, 0.0)
            activation_grad_(dH[r0:r1], H[r0:r1], Zp[r0:r1] if Zp.shape[0] else Zp, slope,
                             db1, act)
        else:  # this half's pixels' share of dZ W2: dH_part[t] <- dZ[:, v] W2[v]
            nn_at(nn, zv, ldz, 1, w2 + 4 * v0 * h, h, 1, blk[K_DHP] + 4 * t * nb * h, h, 0, nb,
                  h, v1 - v0, 1.0, 0.0)
    else:
        own_batch = blk[K_OWN_BATCH] != 0
        if own_batch:  # the next batch's rows, on their way while this phase's products run
            prefetch_rows(_dataset(blk), _next_idx(blk, 0, blk[K_NEXT_ROWS]))
        if not by_rows:  # dH[:, u] <- f'(the two shares' sum), db1's share: its columns' sums
            parts = carray(_f32p(blk[K_DHP]), (2, nb, h))
            dHu = carray(_f32p(hu), (nb, ldh))
            for i in range(nb):
                for j in range(u0, u1):
                    dHu[i, j - u0] = parts[0, i, j] + parts[1, i, j]
            for i in range(nb):  # row by row, as the forward's epilogue (the same sums)
                activation_grad_(row_view(hu, i, ldh, 0, ldh), row_view(hh, i, h, u0, u1),
                                 row_view(zp, i, h, u0, u1) if zp else Zp, slope, db1[u0:u1],
                                 act)
        # layer 2 first: W1[u], updated last, is still in this core's cache for the next
        # step's forward (h=256 B=64: 2-5% more samples/s, bench/RESULTS.md, session 17)
        if blk[K_KIND] == OPT_SGD:  # the update in the product: W -= lr G, G never stored
            nn_at(nn, zv, 1, ldz, hh, h, 1, w2 + 4 * v0 * h, h, 0, v1 - v0, h, nb, -lr,
                  1.0)  # W2[v] -= lr dZ[:, v]^T H
            if by_rows:  # W1[:, p] -= lr dH^T Xb[:, p]: each half packs half of Xb's strips
                p0, p1 = _cols(n, not second)  # (the other half of the pixels: W2's are more)
                nn_at(nn, dh, 1, h, xb + 4 * p0, n, 1, w1 + 4 * p0, n, 0, h, p1 - p0, nb, -lr,
                      1.0)
            else:  # W1[u] -= lr dH[:, u]^T Xb
                nn_at(nn, hu, 1, ldh, xb, n, 1, w1 + 4 * u0 * n, n, 0, u1 - u0, n, nb, -lr,
                      1.0)
            _bias_step(carray(_f32p(blk[K_B1]), (h,)), share(blk[K_DB1], h, 0),
                       share(blk[K_DB1], h, 1), lr, u0, u1)
            _bias_step(carray(_f32p(blk[K_B2]), (n,)), share(blk[K_DB2], n, 0),
                       share(blk[K_DB2], n, 1), lr, v0, v1)
        else:
            opt = carray(_i64p(blk[K_OPT]), (N_OPT,))
            # G2 = dZ^T H, G1 = dH^T Xb; then the optimizer on W2[v], b2[v] and W1[u], b1[u]
            nn_at(nn, zv, 1, ldz, hh, h, 1, opt[10] + 4 * v0 * h, h, 0, v1 - v0, h, nb, 1.0,
                  0.0)
            nn_at(nn, hu, 1, ldh, xb, n, 1, opt[4] + 4 * u0 * n, n, 0, u1 - u0, n, nb, 1.0,
                  0.0)
            _optimizer_layer_at(blk[K_OPT_LAYER], blk.ctypes.data, 1, v0, v1)
            _optimizer_layer_at(blk[K_OPT_LAYER], blk.ctypes.data, 0, u0, u1)
        if own_batch:  # this step's last read of the batch is done: the next one over it
            nxt = blk[K_NEXT_ROWS]
            gather_rows(_dataset(blk), _next_idx(blk, 0, nxt), carray(_f32p(xb), (nxt, n)))
    blk[K_THREAD] = _pthread_self()
    restore(mxcsr)


@njit(inline="always")
def _dataset(blk):
    """The uint8 dataset the batches are gathered from, (rows, pixels)."""
    return carray(_u8p(blk[K_X8]), (blk[K_X_ROWS], blk[K_IMG]))


@njit(inline="always")
def _next_idx(blk, q0, q1):
    """Rows [q0, q1) of the next batch's dataset row numbers."""
    return carray(_i64p(blk[K_NEXT_IDX] + q0 * 8), (q1 - q0,))


@njit(cache=True, nogil=True)  # no fast-math: b - lr g rounds as written (cpu._bias_step's)
def _bias_step(b, share0, share1, lr, j0, j1):
    for j in range(j0, j1):
        b[j] -= lr * (share0[j] + share1[j])


def _optimizer_layer(arg, layer, j0, j1):
    """``_optimizer_rows`` on rows [j0, j1) of ``layer`` (0: W1, b1; 1: W2, b2) of the step in
    the block at address ``arg``: compiled once as a C function (``c_calls``)."""
    blk = carray(_i64p(arg), (BLOCK,))
    h, n = blk[K_HID], blk[K_IMG]
    hp = HyperParams(_as_f64(blk[K_LR]), _as_f64(blk[K_MOMENTUM]), _as_f64(blk[K_BETA1]),
                     _as_f64(blk[K_BETA2]), _as_f64(blk[K_EPS]))
    opt = carray(_i64p(blk[K_OPT]), (N_OPT,))
    if layer == 0:
        _optimizer_rows(blk[K_KIND], hp, blk[K_T], blk[K_W1], blk[K_B1], opt[:6],
                        share(blk[K_DB1], h, 0), share(blk[K_DB1], h, 1), j0, j1, n)
    else:
        _optimizer_rows(blk[K_KIND], hp, blk[K_T], blk[K_W2], blk[K_B2], opt[6:],
                        share(blk[K_DB2], n, 0), share(blk[K_DB2], n, 1), j0, j1, h)


_OPT_LAYER_SIG = types.void(I64, I64, I64, I64)


@intrinsic
def _optimizer_layer_at(typingctx, fn, arg, layer, j0, j1):
    """``_optimizer_layer(arg, layer, j0, j1)`` through the C function at address ``fn``."""
    return call_at(_OPT_LAYER_SIG)


@njit(cache=True, nogil=True)
def _optimizer_rows(kind, hp, t, w, b, arrays, share0, share1, j0, j1, cols):
    """``kernels.cpu.weight_step``'s optimizer branch on rows [j0, j1) of a layer: W (rows x
    cols at address w) from G (arrays[4]), b from gb (arrays[5]) <- the shares' sum in float32,
    with the buffers (VW, Vb, MW, Mb) = arrays[:4] (0: kept by none: an empty array)."""
    rows = j1 - j0
    W = carray(_f32p(w + 4 * j0 * cols), (rows, cols))
    G = carray(_f32p(arrays[4] + 4 * j0 * cols), (rows, cols))
    VW = carray(_f32p(arrays[0] + 4 * j0 * cols), (rows if arrays[0] else 0, cols))
    MW = carray(_f32p(arrays[2] + 4 * j0 * cols), (rows if arrays[2] else 0, cols))
    bb = carray(_f32p(b + 4 * j0), (rows,))
    gb = carray(_f32p(arrays[5] + 4 * j0), (rows,))
    Vb = carray(_f32p(arrays[1] + 4 * j0), (rows if arrays[1] else 0,))
    Mb = carray(_f32p(arrays[3] + 4 * j0), (rows if arrays[3] else 0,))
    for j in range(rows):
        gb[j] = share0[j0 + j] + share1[j0 + j]
    optimizer_update(kind, hp, t, W, G, VW, MW)
    optimizer_update(kind, hp, t, bb, gb, Vb, Mb)


@njit(cache=True, nogil=True, inline="always")
def _output_epilogue(blk, zv, ldz, r0, r1, v0, v1, nb, n, second, loss):
    """The loss gradient on rows [r0, r1) x columns [v0, v1) of dZ (column v0 of row 0 at
    ``zv``, row stride ``ldz``), row by row, each row followed by the gather of one of this
    half's rows of the next batch (as ``blas_pair.sigmoid_loss_half``); db2's share of this
    half gets the column sums, the block the loss sums."""
    dZ = carray(_f32p(zv), (nb, ldz))
    Xb = carray(_f32p(blk[K_XB]), (nb, n))
    b2 = carray(_f32p(blk[K_B2]), (n,))
    db2 = share(blk[K_DB2], n, 1 if second else 0)
    db2[:] = 0.0
    # by the batch rows this half's rows of the next batch, gathered here; with a batch of its
    # own, none (the update phase gathers the next batch over this one)
    q0, q1 = (0, 0) if blk[K_OWN_BATCH] else _half_rows(blk[K_NEXT_ROWS], second)
    X = _dataset(blk)
    idx = _next_idx(blk, q0, q1)
    nxt = carray(_f32p(blk[K_NEXT_PTR] + q0 * n * 4), (q1 - q0, n))
    s32 = np.float32(grad_factor(loss) / (nb * n))
    total, total_sq = rows_then_gather(dZ, b2, Xb, s32, db2, r0, r1 - r0, v0, v1, X, idx, nxt,
                                       loss)
    blk[K_LOSS] = _as_i64(total)
    blk[K_SQ] = _as_i64(total_sq)


def by_rows(batch: int) -> int:
    """1 where the step splits the batch rows between the halves (every thread reads all of
    the weights), 0 where it splits the weights' rows (every thread reads all of the batch).
    Measured with each half's columns of dZ and dH in a block of their own: the weights' rows
    were 4-5% faster at 256 rows a batch where h >= 256 and as fast where h <= 128, 10% faster
    at 128; the batch rows 1-11% faster from 512 (bench/RESULTS.md, session 20)."""
    return int(batch > 256)


_halves: dict = {}
_HALF_SIG = types.void(types.int64)


def half_function(act: int, loss: int) -> int:
    """Address of the half function for (activation, loss) numbers, compiled on first use
    (``run_half`` with both as literals; the step loop calls it through this address, so the
    loop itself is compiled once for every activation and loss). Cached on disk: numba keys a
    closure's cache entry by its cells' values, so each pair has its own. A new process loads
    it in 0.0-0.1 s instead of compiling it again (~5 s; bench/RESULTS.md, session 16)."""
    key = (act, loss)
    if key not in _halves:
        def half(arg):
            run_half(carray(_i64p(arg), (BLOCK,)), act, loss)

        _halves[key] = cfunc(_HALF_SIG, nopython=True, cache=True)(half)
    return _halves[key].address


def in_pair() -> bool:
    """Whether the halves run on OpenBLAS's two threads; else in turn on the calling thread
    (another BLAS, or OpenBLAS on one thread)."""
    return _HAS_PAIR and blas_threads() >= 2


@intrinsic
def _call_half(typingctx, fn, arg):
    """Call the half function at address ``fn`` on the block at address ``arg``."""
    return call_at(_HALF_SIG)


def scratch(batch: int, hidden: int, image: int):
    """(blocks, db1, db2, dH_parts, Xb1) for ``train_steps``: the halves' blocks, the bias
    gradients, the two halves' shares of dH, the second half's own copy of the batch."""
    blocks = aligned_empty((2, BLOCK), np.int64)  # on lines of their own
    blocks[...] = 0
    blocks[:, K_NN_ROWS] = nn_rows_address()
    blocks[:, K_OPT_LAYER] = c_function(_optimizer_layer, _OPT_LAYER_SIG)
    parts = aligned_empty((2, batch, hidden))
    parts[...] = 0.0
    db1 = aligned_empty((2, pages(hidden)), np.float64)
    db2 = aligned_empty((2 * pages(image) + 512,), np.float64)  # placed by train_steps
    db1[...] = db2[...] = 0.0
    return blocks, db1, db2, parts, aligned_empty((batch, image))


@njit(cache=True, nogil=True)
def _phase(blocks, phase, fn, pair):
    """Both halves of ``phase`` (``fn``: the half function's address): on two BLAS threads
    (``pair``) or in turn here."""
    blocks[0, K_PHASE] = blocks[1, K_PHASE] = phase
    if pair:
        _run_halves(np.int32(2), fn, blocks.ctypes.data, np.int32(BLOCK * 8))
    else:
        _call_half(fn, blocks.ctypes.data)
        _call_half(fn, blocks.ctypes.data + BLOCK * 8)


@njit(cache=True, nogil=True)
def train_steps(X, perm, start, stop, batch, W1, b1, W2, b2, slope, lrs, Xb, H, Zp, dZ, dH, fn,
                pair, blocks, db1, db2, dH_parts, Xb1, Xb_next, by_rows, kind, hp, step, opt):
    """Train on X[perm[start:stop]] in batches of ``batch``; returns (loss sum, squared-error
    sum, steps). X: the (n, 784) uint8 C-contiguous dataset; W1 (h, 784), b1, W2 (784, h), b2
    updated in place; lrs[i] the i-th step's learning rate. kind, hp: the optimizer
    (kernels/optim.py), step: the steps taken before; opt: int64 (12,), the addresses of layer
    1's (VW, Vb, MW, Mb, G, gb) and layer 2's (0 where absent; G, gb unused by SGD).
    fn: ``half_function``'s address for the activation and the loss; pair: ``in_pair()``.
    The first batch is gathered here. By the batch rows each step's output halves gather the
    next into Xb_next; by the weights' rows the second half reads a copy of its own, Xb1
    (K_OWN_BATCH), and each half gathers the next batch over its copy at the end of the
    update phase."""
    mxcsr = flush_denormals_on()
    n, h = W2.shape
    total = total_sq = 0.0
    steps = 0
    for t in range(2):  # what stays the same for the whole call
        blk = blocks[t]
        blk[K_HALF], blk[K_HID], blk[K_IMG], blk[K_BY_ROWS] = t, h, n, by_rows
        blk[K_H], blk[K_ZPRE] = H.ctypes.data, Zp.ctypes.data
        blk[K_DZ], blk[K_DH] = dZ.ctypes.data, dH.ctypes.data
        blk[K_W1], blk[K_W2] = W1.ctypes.data, W2.ctypes.data
        blk[K_B1], blk[K_B2] = b1.ctypes.data, b2.ctypes.data
        blk[K_DB1] = db1.ctypes.data
        blk[K_DB2] = db2.ctypes.data + (b2.ctypes.data - db2.ctypes.data) % 4096  # (share)
        blk[K_DHP] = dH_parts.ctypes.data
        blk[K_SLOPE] = _as_i64(np.float64(slope))
        blk[K_X8], blk[K_X_ROWS] = X.ctypes.data, X.shape[0]
        blk[K_KIND], blk[K_OPT] = kind, opt.ctypes.data
        blk[K_MOMENTUM], blk[K_BETA1] = _as_i64(hp.momentum), _as_i64(hp.beta1)
        blk[K_BETA2], blk[K_EPS] = _as_i64(hp.beta2), _as_i64(hp.eps)
        blk[K_OWN_BATCH] = 1 - by_rows
    # by the batch rows the halves share one copy of the batch (each reads half of its rows
    # but the weights' update reads all) and gather the next into Xb_next; by the weights' rows
    # each has its own, so that no half waits for lines the other's core wrote (bench/RESULTS.md,
    # session 19), and gathers the next batch over it once its update has read it (session 20)
    if start < stop:
        e = min(start + batch, stop)
        gather_rows(X, perm[start:e], Xb)
        if not by_rows:
            Xb1[:e - start] = Xb[:e - start]
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        next_idx = perm[e:min(e + batch, stop)]
        blocks[0, K_XB] = Xb.ctypes.data
        blocks[1, K_XB] = Xb.ctypes.data if by_rows else Xb1.ctypes.data
        blocks[0, K_NEXT_PTR] = blocks[1, K_NEXT_PTR] = Xb_next.ctypes.data  # (by the rows)
        for t in range(2):  # this step's batch, learning rate and number
            blk = blocks[t]
            blk[K_NB] = e - s
            blk[K_NEXT_IDX], blk[K_NEXT_ROWS] = next_idx.ctypes.data, next_idx.shape[0]
            blk[K_LR], blk[K_T] = _as_i64(lrs[steps]), step + steps + 1
        for phase in range(4):
            _phase(blocks, phase, fn, pair)
        total += _as_f64(blocks[0, K_LOSS]) + _as_f64(blocks[1, K_LOSS])
        total_sq += _as_f64(blocks[0, K_SQ]) + _as_f64(blocks[1, K_SQ])
        steps += 1
        if by_rows:  # the next batch went to the other buffer (by the weights' rows: over this)
            Xb, Xb_next = Xb_next, Xb
    restore(mxcsr)
    return total, total_sq, steps


@njit(inline="always")
def _as_i64(x):
    return np.float64(x).view(np.int64)


@njit(inline="always")
def _as_f64(bits):
    return np.int64(bits).view(np.float64)
