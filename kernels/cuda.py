"""CUDA versions of the fused kernels: Numba CUDA tiled GEMMs with the epilogue on the accumulators.

Each public function computes exactly the function of the same name in ``kernels.reference``
(float64), in float32 with float32 accumulation, writing into caller-provided device arrays
(numba device arrays or anything with ``__cuda_array_interface__``); nothing here synchronises
with the host. Names and argument order mirror ``kernels.cpu``; the extra keyword arguments
``perm=`` / ``off=`` make a kernel read its batch rows through an index array (the epoch's
permutation, kept on the device), so a batch is never gathered into a separate buffer.

The GEMM (one main loop per operand layout, shared by every kernel):

* block tile ``BM x BN = 64 x 64``, ``BK = 16`` deep, 256 threads (16 x 16), each thread owning a
  ``4 x 4`` register tile of the output at rows ``ty + 16 i`` and columns ``tx + 16 j`` (strided,
  so the shared-memory reads of a warp are broadcasts / conflict-free);
* both operand tiles are staged in shared memory as ``[k][m]`` (padded by one column), two
  ``syncthreads`` per K step; every load is bounds-checked, so any ``B``, ``N``, ``K`` works
  (tails of 784 = 12*64 + 16, short batches, tiny K); a K step's elements are fetched into
  registers, then stashed in shared memory (``AECORE_CUDA_PREFETCH=1`` fetches the next step
  before multiplying this one, to hide the global-memory latency; to be measured on a GPU);
* uint8 pixels are converted to float32 as they are loaded and the 1/255 scale is applied once to
  the accumulator (the product is linear in X), so the dataset stays uint8 on the device;
* the epilogue (bias, LeakyReLU, Sigmoid + MSE gradient + loss, LeakyReLU', optimizer update)
  runs on the fp32 accumulators before the single store;
* split-K (kernels 1-3, when the caller passes a ``SplitK``): with few output tiles and a long
  reduction (batch 64: one tile for X W1^T at h=64, K = 784) the grid's z dimension splits K
  between blocks; each stores its partial tile, and the last block of a tile (a counter per
  tile) sums the partials in slice order and runs the same epilogue. Measured on an H200 at
  batch 64: 2.0-2.2x faster training relative to PyTorch in the same run (bench/RESULTS.md);
* ``weight_step_pair``: the step's two weight updates (independent outputs) as one 1-D grid of
  both sets of tiles, so that two small grids share the GPU (the engine uses it with
  ``AECORE_CUDA_PAIRED_UPDATES=1``; not yet measured on hardware).

The three operand layouts (``C = A @ B`` with the reduction index ``k``):

* ``_mainloop_nt``: ``C = A W^T`` (forward layers): A (M, K) and W (N, K), both k-contiguous;
* ``_mainloop_nn``: ``C = A W`` (``backward_hidden``: dZ (B, N) @ W2 (N, K));
* ``_mainloop_tn``: ``C = A^T X`` (weight gradients: dZ (B, N)^T @ X (B, K), reduction over the
  batch, X's rows optionally gathered through ``perm``).

fastmath: the kernels are compiled with ``fastmath={'contract', 'arcp', 'afn'}``. numba-cuda
0.30 maps any fastmath request to NVVM's ``-ftz=1 -fma=1 -prec-div=0 -prec-sqrt=0`` plus the
fast float32 intrinsics (``__expf``, ``__fdividef``); it puts no ``nnan``/``ninf`` flags on the
LLVM instructions (checked on the LLVM IR of these kernels), so a NaN or inf in the data still
reaches the loss, which is how divergence is detected. Denormals are flushed to zero.

``KERNELS`` lists ``(pyfunc, signature)`` for every compiled kernel; ``tests/test_cuda_ptx.py``
compiles each to PTX for sm_80 and sm_90. Verified here: results in Numba's simulator
(``NUMBA_ENABLE_CUDASIM=1``) against the float64 references, and real PTX compilation. Speed and
the behaviour on real hardware are exercised by the ``@pytest.mark.gpu`` tests and
``bench/gpu_session.sh``, which need a GPU (all passed on an H200, 2026-11-27).
"""

from __future__ import annotations

import math
import os
import threading
import warnings

import numpy as np
from numba import cuda, float32, float64, int32
from numba.cuda.core import config as _config

from . import PIXEL_SCALE

# --- tiling constants (compile-time constants inside the kernels) ---------------------------
# The block tile is TILE x TILE outputs computed by 16 x 16 threads; BK is the depth of K staged
# in shared memory per step. TILE = 64 (4 x 4 outputs per thread), BK = 16 is the default and
# the shape the tests (simulator, PTX) check. AECORE_CUDA_TILE=16|32|64 and AECORE_CUDA_BK, read
# at import, are tuning knobs for a GPU session (bench/gpu_session.sh); measured in the
# simulator, a 16 tile is *slower* there (4x the blocks, each 256 Python threads).
TILE = int(os.environ.get("AECORE_CUDA_TILE", "64"))
if TILE not in (16, 32, 64):
    raise ValueError(f"AECORE_CUDA_TILE must be 16, 32 or 64, not {TILE}")
BM = TILE  # block tile rows (output rows per block)
BN = TILE  # block tile columns
BK = int(os.environ.get("AECORE_CUDA_BK", "16"))  # reduction depth staged per shared-memory step
if BK not in (8, 16, 32, 64) or (BK * BM) % 256 or 256 // BM > BK:
    raise ValueError(f"AECORE_CUDA_BK={BK} does not fit a {TILE}-wide tile (8..64, BK*TILE >= 256)")
TM = BM // 16  # register tile rows per thread
TN = BN // 16  # register tile columns per thread
TY = BM // TM  # 16 thread rows
TX = BN // TN  # 16 thread columns
NTHREADS = TX * TY  # 256
PAD = BM + 1  # shared tile row length (one column of padding against bank conflicts)
# AECORE_CUDA_PREFETCH=1: the main loops fetch the next K step into registers before the
# multiplications of this one (see the main loops); a variant to measure on a GPU.
PREFETCH = os.environ.get("AECORE_CUDA_PREFETCH", "0") not in ("0", "", "false", "no")
LOADS = (BK * BM) // NTHREADS  # elements each thread loads per operand tile (4)
EW_THREADS = 256  # elementwise kernels

# numba-cuda warns on every launch of fewer than 128 blocks; small grids are this engine's normal
# case at batch 64 (split-K below is how it fills the GPU), so the warning is only noise here.
warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU under")

_FASTMATH = {"contract", "arcp", "afn"}

_jit = dict(fastmath=_FASTMATH)
SIMULATOR = bool(_config.ENABLE_CUDASIM)
# forceinline: the device functions are inlined into each kernel, so the register tiles they
# touch stay in registers (the PTX test checks for no local-memory depot). Under the simulator
# they are left as plain Python functions: its device-function wrapper swaps module globals
# under a lock on every call, which made a call per loaded element the simulator's main cost
# (the kernel's own globals are swapped for the whole launch, so `cuda.*` inside them still
# resolves to the simulated API).
if SIMULATOR:
    def _device(fn):
        return fn
else:
    _device = cuda.jit(device=True, forceinline=True, fastmath=_FASTMATH)


# Signature fragments.
_F2 = "float32[:, ::1]"
_U2 = "uint8[:, ::1]"
_F1 = "float32[::1]"
_I1 = "int64[::1]"
_D1 = "float64[::1]"
_C1 = "int32[::1]"


# --- operand tile loads --------------------------------------------------------------------
@_device
def _row(perm, off, r):
    """Source row of logical row r: ``perm[off + r]`` when gathering, else ``off + r``."""
    if perm.shape[0] > 0:
        return perm[off + r]
    return off + r


@_device
def _fetch_kmajor(src, perm, off, nrows, K, r0, k0, regs, tid):
    """regs[q] <- src[row(r0 + rr), k0 + kk] (0 outside) for this thread's LOADS elements of
    an operand stored (rows, K); ``_stash_kmajor`` puts them at tile[kk, rr]."""
    for q in range(LOADS):
        e = tid + NTHREADS * q
        r = r0 + e // BK
        k = k0 + e % BK
        v = float32(0.0)
        if r < nrows and k < K:
            v = float32(src[_row(perm, off, r), k])
        regs[q] = v


@_device
def _fetch_kmajor_plain(src, nrows, K, r0, k0, regs, tid):
    """``_fetch_kmajor`` without a row index (src's rows r0.. directly)."""
    for q in range(LOADS):
        e = tid + NTHREADS * q
        r = r0 + e // BK
        k = k0 + e % BK
        v = float32(0.0)
        if r < nrows and k < K:
            v = float32(src[r, k])
        regs[q] = v


@_device
def _stash_kmajor(regs, tile, tid):
    for q in range(LOADS):
        e = tid + NTHREADS * q
        tile[e % BK, e // BK] = regs[q]


@_device
def _fetch_mmajor(src, perm, off, K, ncols, k0, c0, regs, tid):
    """regs[q] <- src[row(k0 + kk), c0 + cc] (0 outside) for an operand stored (K, cols);
    ``_stash_mmajor`` puts them at tile[kk, cc]."""
    for q in range(LOADS):
        e = tid + NTHREADS * q
        k = k0 + e // BM
        c = c0 + e % BM
        v = float32(0.0)
        if k < K and c < ncols:
            v = float32(src[_row(perm, off, k), c])
        regs[q] = v


@_device
def _fetch_mmajor_plain(src, K, ncols, k0, c0, regs, tid):
    """``_fetch_mmajor`` without a row index."""
    for q in range(LOADS):
        e = tid + NTHREADS * q
        k = k0 + e // BM
        c = c0 + e % BM
        v = float32(0.0)
        if k < K and c < ncols:
            v = float32(src[k, c])
        regs[q] = v


@_device
def _stash_mmajor(regs, tile, tid):
    for q in range(LOADS):
        e = tid + NTHREADS * q
        tile[e // BM, e % BM] = regs[q]


@_device
def _fma_tile(As, Bs, acc, a, b, tx, ty):
    """acc += As[:, ty + 16 i]^T Bs[:, tx + 16 j] over the BK staged rows (registers only)."""
    for kk in range(BK):
        for i in range(TM):
            a[i] = As[kk, ty + TY * i]
        for j in range(TN):
            b[j] = Bs[kk, tx + TX * j]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += a[i] * b[j]


@_device
def _zero(acc):
    for i in range(TM):
        for j in range(TN):
            acc[i, j] = float32(0.0)


# Each main loop: fetch a K step's operand elements from global memory into registers, stash
# them in shared memory, sync, multiply. With PREFETCH the next step's fetch is issued right
# after the sync, before the multiplications, so its global-memory latency overlaps them (two
# register buffers in flight); without, it comes after them, as a plain tiled GEMM. Same
# results either way (the same products in the same order).
@_device
def _mainloop_nt(A, pa, oa, W, M, N, kb, K, m0, n0, As, Bs, acc, a, b, tid, tx, ty):
    """acc <- A[rows m0.., kb:K] W[n0.., kb:K]^T; A rows gathered through pa, W (N, .)."""
    ra = cuda.local.array(LOADS, float32)
    rb = cuda.local.array(LOADS, float32)
    _zero(acc)
    _fetch_kmajor(A, pa, oa, M, K, m0, kb, ra, tid)
    _fetch_kmajor_plain(W, N, K, n0, kb, rb, tid)
    for k0 in range(kb, K, BK):
        _stash_kmajor(ra, As, tid)
        _stash_kmajor(rb, Bs, tid)
        cuda.syncthreads()
        if PREFETCH:
            _fetch_kmajor(A, pa, oa, M, K, m0, k0 + BK, ra, tid)
            _fetch_kmajor_plain(W, N, K, n0, k0 + BK, rb, tid)
        _fma_tile(As, Bs, acc, a, b, tx, ty)
        cuda.syncthreads()
        if not PREFETCH:
            _fetch_kmajor(A, pa, oa, M, K, m0, k0 + BK, ra, tid)
            _fetch_kmajor_plain(W, N, K, n0, k0 + BK, rb, tid)


@_device
def _mainloop_nt_plain(A, W, M, N, kb, K, m0, n0, As, Bs, acc, a, b, tid, tx, ty):
    """acc <- A[m0.., kb:K] W[n0.., kb:K]^T; A (M, .), W (N, .)."""
    ra = cuda.local.array(LOADS, float32)
    rb = cuda.local.array(LOADS, float32)
    _zero(acc)
    _fetch_kmajor_plain(A, M, K, m0, kb, ra, tid)
    _fetch_kmajor_plain(W, N, K, n0, kb, rb, tid)
    for k0 in range(kb, K, BK):
        _stash_kmajor(ra, As, tid)
        _stash_kmajor(rb, Bs, tid)
        cuda.syncthreads()
        if PREFETCH:
            _fetch_kmajor_plain(A, M, K, m0, k0 + BK, ra, tid)
            _fetch_kmajor_plain(W, N, K, n0, k0 + BK, rb, tid)
        _fma_tile(As, Bs, acc, a, b, tx, ty)
        cuda.syncthreads()
        if not PREFETCH:
            _fetch_kmajor_plain(A, M, K, m0, k0 + BK, ra, tid)
            _fetch_kmajor_plain(W, N, K, n0, k0 + BK, rb, tid)


@_device
def _mainloop_nn(A, W, M, N, kb, K, m0, n0, As, Bs, acc, a, b, tid, tx, ty):
    """acc <- A[m0.., kb:K] W[kb:K, n0..]; A (M, .), W (., N)."""
    ra = cuda.local.array(LOADS, float32)
    rb = cuda.local.array(LOADS, float32)
    _zero(acc)
    _fetch_kmajor_plain(A, M, K, m0, kb, ra, tid)
    _fetch_mmajor_plain(W, K, N, kb, n0, rb, tid)
    for k0 in range(kb, K, BK):
        _stash_kmajor(ra, As, tid)
        _stash_mmajor(rb, Bs, tid)
        cuda.syncthreads()
        if PREFETCH:
            _fetch_kmajor_plain(A, M, K, m0, k0 + BK, ra, tid)
            _fetch_mmajor_plain(W, K, N, k0 + BK, n0, rb, tid)
        _fma_tile(As, Bs, acc, a, b, tx, ty)
        cuda.syncthreads()
        if not PREFETCH:
            _fetch_kmajor_plain(A, M, K, m0, k0 + BK, ra, tid)
            _fetch_mmajor_plain(W, K, N, k0 + BK, n0, rb, tid)


@_device
def _mainloop_tn(D, X, px, ox, M, N, K, m0, n0, As, Bs, acc, a, b, tid, tx, ty):
    """acc <- D[:, m0..]^T X[rows, n0..]; D (K, M), X (K, N) with rows gathered through px."""
    ra = cuda.local.array(LOADS, float32)
    rb = cuda.local.array(LOADS, float32)
    _zero(acc)
    _fetch_mmajor_plain(D, K, M, 0, m0, ra, tid)
    _fetch_mmajor(X, px, ox, K, N, 0, n0, rb, tid)
    for k0 in range(0, K, BK):
        _stash_mmajor(ra, As, tid)
        _stash_mmajor(rb, Bs, tid)
        cuda.syncthreads()
        if PREFETCH:
            _fetch_mmajor_plain(D, K, M, k0 + BK, m0, ra, tid)
            _fetch_mmajor(X, px, ox, K, N, k0 + BK, n0, rb, tid)
        _fma_tile(As, Bs, acc, a, b, tx, ty)
        cuda.syncthreads()
        if not PREFETCH:
            _fetch_mmajor_plain(D, K, M, k0 + BK, m0, ra, tid)
            _fetch_mmajor(X, px, ox, K, N, k0 + BK, n0, rb, tid)


@_device
def _sigmoid(z):
    """Safe logistic in float32: exp is only taken of -|z|; NaN stays NaN."""
    e = math.exp(-abs(z))
    if z >= float32(0.0):
        return float32(1.0) / (float32(1.0) + e)
    return e / (float32(1.0) + e)


@_device
def _sigmoid_and_slope(z):
    """(y, y (1 - y)) for y = sigmoid(z), accurate in float32: with e = exp(-|z|) and
    r = 1 / (1 + e), y is r or e r and y (1 - y) = e r^2 (1 - y from a float32 y is 0 for
    z > ~17, where the true slope is still ~e). The CPU kernel computes the same."""
    e = math.exp(-abs(z))
    r = float32(1.0) / (float32(1.0) + e)
    er = e * r
    if z >= float32(0.0):
        return r, er * r
    return er, er * r


@_device
def _column_sums_block(D, K, m0, red, tid):
    """Sum over D's K rows of columns m0..m0+63 (D (K, M)); valid in threads tid < 64.

    Uses ``red`` (a (BK, PAD) float32 shared array) as scratch; all threads must call it.
    """
    M = D.shape[1]
    cc = tid % BM
    part = tid // BM  # 0..3
    c = m0 + cc
    s = float32(0.0)
    if c < M:
        for r in range(part, K, NTHREADS // BM):
            s += D[r, c]
    red[part, cc] = s
    cuda.syncthreads()
    total = float32(0.0)
    if tid < BM:
        for p in range(NTHREADS // BM):
            total += red[p, tid]
    return total


# --- split-K ------------------------------------------------------------------------------------
# A product with few output tiles and a long reduction (the forward X W1^T and the backward
# dZ W2 at batch 64: one or a few 64 x 64 tiles, K = 784) leaves most of the GPU idle, and each
# block walks 49 K steps one after the other. Split-K gives each tile gridDim.z blocks, block z
# reducing over its own slice of K; each stores its partial tile in a workspace, and the last of
# a tile's blocks to finish (a per-tile counter, atomically incremented) sums the partials in
# slice order (deterministic, whichever block is last), runs the kernel's epilogue as before,
# and resets the counter for the next launch. One launch, no second reduction kernel.
@_device
def _kslice(K, kchunk):
    """[kb, ke): this block's slice of the reduction (all of it when gridDim.z == 1)."""
    kb = cuda.blockIdx.z * kchunk
    return kb, min(K, kb + kchunk)


@_device
def _splitk_fixup(acc, ws, cnt, flag, tid):
    """True in the block that must run the epilogue, with ``acc`` holding the full sum.

    Partials are laid out per tile, contiguous and in thread order (coalesced, and no cache line
    shared between tiles, so the last block never reads a line an earlier reader cached).
    """
    S = cuda.gridDim.z
    if S == 1:
        return True
    T = cuda.gridDim.x * cuda.gridDim.y
    t = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
    span = TM * TN * NTHREADS
    base = (cuda.blockIdx.z * T + t) * span
    for i in range(TM):
        for j in range(TN):
            ws[base + (i * TN + j) * NTHREADS + tid] = acc[i, j]
    cuda.threadfence()  # the partial is visible device-wide before the count says so
    cuda.syncthreads()
    if tid == 0:
        flag[0] = cuda.atomic.add(cnt, t, 1)
    cuda.syncthreads()
    if flag[0] != S - 1:
        return False
    cuda.threadfence()
    for i in range(TM):
        for j in range(TN):
            total = float32(0.0)
            for z in range(S):
                total += ws[(z * T + t) * span + (i * TN + j) * NTHREADS + tid]
            acc[i, j] = total
    if tid == 0:
        cnt[t] = 0
    return True


class _Kernel:
    """A kernel compiled lazily, once per explicit signature (keyed "u8" / "f32" by the dtype of
    its pixel operand). Each compiled dispatcher has a single signature, so numba-cuda launches it
    without any argument-type dispatch (the ~10 us launch path). Compilation needs a device (or
    the simulator), so it happens on first use or in ``compile_all()``, not at import."""

    registry: list = []
    _lock = threading.Lock()  # engines in several threads (aecore study --jobs) compile once

    def __init__(self, pyfunc, signatures: dict):
        self.pyfunc = pyfunc
        self.signatures = signatures
        self._compiled = {}
        _Kernel.registry.append(self)

    def __getitem__(self, key):
        k = self._compiled.get(key)
        if k is None:
            with _Kernel._lock:
                k = self._compiled.get(key)
                if k is None:
                    k = self._compiled[key] = cuda.jit(self.signatures[key], **_jit)(self.pyfunc)
        return k


def compile_all():
    """Compile every kernel for the current device now (a few seconds each on first use)."""
    for k in _Kernel.registry:
        for key in k.signatures:
            k[key]


def _key(X) -> str:
    return "u8" if np.dtype(X.dtype) == np.uint8 else "f32"


# --- kernel 1: matmul + bias + LeakyReLU ------------------------------------------------------
def _k_linear_leaky_relu(X, perm, off, scale, W, b, slope, H, ws, cnt, kchunk):
    As = cuda.shared.array((BK, PAD), float32)
    Bs = cuda.shared.array((BK, PAD), float32)
    flag = cuda.shared.array(1, int32)
    acc = cuda.local.array((TM, TN), float32)
    a = cuda.local.array(TM, float32)
    bb = cuda.local.array(TN, float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    m0 = cuda.blockIdx.y * BM
    n0 = cuda.blockIdx.x * BN
    M = H.shape[0]
    N = H.shape[1]
    kb, ke = _kslice(W.shape[1], kchunk)
    _mainloop_nt(X, perm, off, W, M, N, kb, ke, m0, n0, As, Bs, acc, a, bb, tid, tx, ty)
    if not _splitk_fixup(acc, ws, cnt, flag, tid):
        return
    for i in range(TM):
        m = m0 + ty + TY * i
        if m < M:
            for j in range(TN):
                n = n0 + tx + TX * j
                if n < N:
                    z = acc[i, j] * scale + b[n]
                    H[m, n] = z if z > float32(0.0) else z * slope


_SPLIT = f"{_F1}, {_C1}, int64"  # split-K workspace, per-tile counters, K per slice
_SIG_LLR = [
    f"void({x}, {_I1}, int64, float32, {_F2}, {_F1}, float32, {_F2}, {_SPLIT})" for x in (_U2, _F2)
]
k_linear_leaky_relu = _Kernel(_k_linear_leaky_relu, {"u8": _SIG_LLR[0], "f32": _SIG_LLR[1]})


# --- kernels 2 (+3): matmul + bias + Sigmoid (+ MSE gradient and loss) -------------------------
def _k_linear_sigmoid_mse(Hin, W, b, T, tperm, toff, tscale, dscale, dZ, Y, loss, ws, cnt,
                          kchunk):
    As = cuda.shared.array((BK, PAD), float32)
    Bs = cuda.shared.array((BK, PAD), float32)
    red = cuda.shared.array(NTHREADS, float64)
    flag = cuda.shared.array(1, int32)
    acc = cuda.local.array((TM, TN), float32)
    a = cuda.local.array(TM, float32)
    bb = cuda.local.array(TN, float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    m0 = cuda.blockIdx.y * BM
    n0 = cuda.blockIdx.x * BN
    M = dZ.shape[0]
    N = dZ.shape[1]
    kb, ke = _kslice(W.shape[1], kchunk)
    _mainloop_nt_plain(Hin, W, M, N, kb, ke, m0, n0, As, Bs, acc, a, bb, tid, tx, ty)
    if not _splitk_fixup(acc, ws, cnt, flag, tid):
        return
    write_y = Y.shape[0] > 0
    part = float64(0.0)
    for i in range(TM):
        m = m0 + ty + TY * i
        if m < M:
            src = _row(tperm, toff, m)
            for j in range(TN):
                n = n0 + tx + TX * j
                if n < N:
                    y, slope = _sigmoid_and_slope(acc[i, j] + b[n])
                    d = y - float32(T[src, n]) * tscale
                    part += float64(d * d)
                    dZ[m, n] = dscale * d * slope
                    if write_y:
                        Y[m, n] = y
    # block reduction of the loss, one float64 atomic per block
    red[tid] = part
    cuda.syncthreads()
    s = NTHREADS // 2
    while s > 0:
        if tid < s:
            red[tid] += red[tid + s]
        cuda.syncthreads()
        s //= 2
    if tid == 0:
        cuda.atomic.add(loss, 0, red[0])


_SIG_LSM = [
    f"void({_F2}, {_F2}, {_F1}, {t}, {_I1}, int64, float32, float32, {_F2}, {_F2}, {_D1}, "
    f"{_SPLIT})" for t in (_U2, _F2)
]
k_linear_sigmoid_mse = _Kernel(_k_linear_sigmoid_mse, {"u8": _SIG_LSM[0], "f32": _SIG_LSM[1]})


def _k_linear_sigmoid(Hin, W, b, Y):
    As = cuda.shared.array((BK, PAD), float32)
    Bs = cuda.shared.array((BK, PAD), float32)
    acc = cuda.local.array((TM, TN), float32)
    a = cuda.local.array(TM, float32)
    bb = cuda.local.array(TN, float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    m0 = cuda.blockIdx.y * BM
    n0 = cuda.blockIdx.x * BN
    M = Y.shape[0]
    N = Y.shape[1]
    K = W.shape[1]
    _mainloop_nt_plain(Hin, W, M, N, 0, K, m0, n0, As, Bs, acc, a, bb, tid, tx, ty)
    for i in range(TM):
        m = m0 + ty + TY * i
        if m < M:
            for j in range(TN):
                n = n0 + tx + TX * j
                if n < N:
                    Y[m, n] = _sigmoid(acc[i, j] + b[n])


k_linear_sigmoid = _Kernel(_k_linear_sigmoid, {"f32": f"void({_F2}, {_F2}, {_F1}, {_F2})"})


# --- kernel 4: the backward products ----------------------------------------------------------
def _k_backward_hidden(dZ, W2, H, slope, dH, ws, cnt, kchunk):
    As = cuda.shared.array((BK, PAD), float32)
    Bs = cuda.shared.array((BK, PAD), float32)
    flag = cuda.shared.array(1, int32)
    acc = cuda.local.array((TM, TN), float32)
    a = cuda.local.array(TM, float32)
    bb = cuda.local.array(TN, float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    m0 = cuda.blockIdx.y * BM
    n0 = cuda.blockIdx.x * BN
    M = dH.shape[0]
    N = dH.shape[1]
    kb, ke = _kslice(W2.shape[0], kchunk)
    _mainloop_nn(dZ, W2, M, N, kb, ke, m0, n0, As, Bs, acc, a, bb, tid, tx, ty)
    if not _splitk_fixup(acc, ws, cnt, flag, tid):
        return
    for i in range(TM):
        m = m0 + ty + TY * i
        if m < M:
            for j in range(TN):
                n = n0 + tx + TX * j
                if n < N:
                    g = acc[i, j]
                    if not H[m, n] > float32(0.0):
                        g *= slope
                    dH[m, n] = g


k_backward_hidden = _Kernel(_k_backward_hidden,
                            {"f32": f"void({_F2}, {_F2}, {_F2}, float32, {_F2}, {_SPLIT})"})


# --- weight gradient products (reduction over the batch), plain and with the update fused ------
OPT_NONE, OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM = 0, 1, 2, 3, 4


@_device
def _apply(kind, w, g, v, m, lr, mu, b1, b2, eps, step_size, inv_bc2_sqrt):
    """One element's optimizer update; returns (w, v, m) after the step.

    SGD: w - lr g. Momentum / Nesterov (torch.optim.SGD): v <- mu v + g; step v, or g + mu v.
    Adam (torch.optim.Adam, bias corrections folded into step_size / inv_bc2_sqrt):
    m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; w - step_size m / (sqrt(v) inv_bc2_sqrt + eps).
    """
    if kind == OPT_SGD:
        w = w - lr * g
    elif kind == OPT_MOMENTUM or kind == OPT_NESTEROV:
        v = mu * v + g
        if kind == OPT_NESTEROV:
            w = w - lr * (g + mu * v)
        else:
            w = w - lr * v
    elif kind == OPT_ADAM:
        m = b1 * m + (float32(1.0) - b1) * g
        v = b2 * v + (float32(1.0) - b2) * g * g
        w = w - step_size * m / (math.sqrt(v) * inv_bc2_sqrt + eps)
    return w, v, m


@_device
def _weight_step_tile(bx, by, D, X, px, ox, scale, kind, G, gb, W, b, VW, Vb, MW, Mb, hp,
                      As, Bs, acc, a, bb, tid, tx, ty):
    """Output tile (by, bx) of ``_k_weight_step``: C = D^T X (scaled), then the update."""
    m0 = by * BM
    n0 = bx * BN
    Kb = D.shape[0]  # batch rows: the reduction
    M = D.shape[1]  # output features
    N = X.shape[1]  # input features
    _mainloop_tn(D, X, px, ox, M, N, Kb, m0, n0, As, Bs, acc, a, bb, tid, tx, ty)
    lr = hp[0]
    mu = hp[1]
    b1 = hp[2]
    b2 = hp[3]
    eps = hp[4]
    step_size = hp[5]
    inv_bc2_sqrt = hp[6]
    for i in range(TM):
        m = m0 + ty + TY * i
        if m < M:
            for j in range(TN):
                n = n0 + tx + TX * j
                if n < N:
                    g = acc[i, j] * scale
                    if kind == OPT_NONE:
                        G[m, n] = g
                    else:
                        f = m * N + n
                        v = float32(0.0)
                        mm = float32(0.0)
                        if kind != OPT_SGD:
                            v = VW[f]
                        if kind == OPT_ADAM:
                            mm = MW[f]
                        w, v, mm = _apply(kind, W[m, n], g, v, mm, lr, mu, b1, b2, eps,
                                          step_size, inv_bc2_sqrt)
                        W[m, n] = w
                        if kind != OPT_SGD:
                            VW[f] = v
                        if kind == OPT_ADAM:
                            MW[f] = mm
    if bx == 0:  # the bias: column sums of D, by the blocks of column 0
        total = _column_sums_block(D, Kb, m0, As, tid)
        m = m0 + tid
        if tid < BM and m < M:
            if kind == OPT_NONE:
                gb[m] = total
            else:
                v = float32(0.0)
                mm = float32(0.0)
                if kind != OPT_SGD:
                    v = Vb[m]
                if kind == OPT_ADAM:
                    mm = Mb[m]
                w, v, mm = _apply(kind, b[m], total, v, mm, lr, mu, b1, b2, eps,
                                  step_size, inv_bc2_sqrt)
                b[m] = w
                if kind != OPT_SGD:
                    Vb[m] = v
                if kind == OPT_ADAM:
                    Mb[m] = mm


def _k_weight_step(D, X, px, ox, scale, kind, G, gb, W, b, VW, Vb, MW, Mb, hp):
    """C = D^T X (scaled) then, per ``kind``: OPT_NONE -> G <- C, gb <- colsum(D);
    otherwise the optimizer update of W (N, K) and b (N,) with gradient C / colsum(D), the
    gradient never written. D (B, N); X (B, K) maybe gathered; hp = float32 hyper-parameters
    (lr, momentum, beta1, beta2, eps, step_size, inv_bc2_sqrt). State arrays VW/Vb (momentum
    buffer or Adam's exp_avg_sq) and MW/Mb (Adam's exp_avg) are unused (may be empty) otherwise.
    """
    As = cuda.shared.array((BK, PAD), float32)
    Bs = cuda.shared.array((BK, PAD), float32)
    acc = cuda.local.array((TM, TN), float32)
    a = cuda.local.array(TM, float32)
    bb = cuda.local.array(TN, float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    _weight_step_tile(cuda.blockIdx.x, cuda.blockIdx.y, D, X, px, ox, scale, kind, G, gb, W, b,
                      VW, Vb, MW, Mb, hp, As, Bs, acc, a, bb, ty * TX + tx, tx, ty)


_SIG_WS = [
    f"void({_F2}, {x}, {_I1}, int64, float32, int64, {_F2}, {_F1}, {_F2}, {_F1}, "
    f"{_F1}, {_F1}, {_F1}, {_F1}, {_F1})"
    for x in (_U2, _F2)
]
k_weight_step = _Kernel(_k_weight_step, {"u8": _SIG_WS[0], "f32": _SIG_WS[1]})


def _k_weight_step_pair(kind, hp, G, gb,
                        D1, X1, px1, ox1, scale1, W1, b1, VW1, Vb1, MW1, Mb1,
                        D2, X2, px2, ox2, scale2, W2, b2, VW2, Vb2, MW2, Mb2):
    """Two independent ``_k_weight_step`` updates (the step's W2 and W1) in one launch: a 1-D
    grid whose first blocks are the first update's tiles and the rest the second's. Each is
    a small grid at batch 64 (13 blocks at h=64): launched together they share the GPU instead
    of running one after the other, and the step has one launch fewer."""
    As = cuda.shared.array((BK, PAD), float32)
    Bs = cuda.shared.array((BK, PAD), float32)
    acc = cuda.local.array((TM, TN), float32)
    a = cuda.local.array(TM, float32)
    bb = cuda.local.array(TN, float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    bid = cuda.blockIdx.x
    nx1 = (X1.shape[1] + BN - 1) // BN
    n1 = nx1 * ((D1.shape[1] + BM - 1) // BM)
    if bid < n1:
        _weight_step_tile(bid % nx1, bid // nx1, D1, X1, px1, ox1, scale1, kind, G, gb, W1, b1,
                          VW1, Vb1, MW1, Mb1, hp, As, Bs, acc, a, bb, tid, tx, ty)
    else:
        nx2 = (X2.shape[1] + BN - 1) // BN
        bid -= n1
        _weight_step_tile(bid % nx2, bid // nx2, D2, X2, px2, ox2, scale2, kind, G, gb, W2, b2,
                          VW2, Vb2, MW2, Mb2, hp, As, Bs, acc, a, bb, tid, tx, ty)


_PART = f"{_F2}, {{x}}, {_I1}, int64, float32, {_F2}, {_F1}, {_F1}, {_F1}, {_F1}, {_F1}"
k_weight_step_pair = _Kernel(_k_weight_step_pair, {
    key: f"void(int64, {_F1}, {_F2}, {_F1}, {_PART.format(x=_F2)}, {_PART.format(x=x)})"
    for key, x in (("u8", _U2), ("f32", _F2))})


# --- kernel 5: elementwise optimizer updates ------------------------------------------------
def _k_sgd_update(W, G, lr, momentum, nesterov, V):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < W.shape[0]:
        g = G[i]
        if momentum == float32(0.0):
            W[i] -= lr * g
        else:
            vi = momentum * V[i] + g
            V[i] = vi
            if nesterov:
                W[i] -= lr * (g + momentum * vi)
            else:
                W[i] -= lr * vi
        i += stride


k_sgd_update = _Kernel(_k_sgd_update, {"f32": f"void({_F1}, {_F1}, float32, float32, boolean, {_F1})"})


def _k_adam_update(W, G, M, V, step_size, inv_bc2_sqrt, beta1, beta2, eps):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < W.shape[0]:
        g = G[i]
        mi = beta1 * M[i] + (float32(1.0) - beta1) * g
        vi = beta2 * V[i] + (float32(1.0) - beta2) * g * g
        M[i] = mi
        V[i] = vi
        W[i] -= step_size * mi / (math.sqrt(vi) * inv_bc2_sqrt + eps)
        i += stride


k_adam_update = _Kernel(
    _k_adam_update,
    {"f32": f"void({_F1}, {_F1}, {_F1}, {_F1}, float32, float32, float32, float32, float32)"},
)


def _k_zero_f64(x):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] = 0.0


k_zero_f64 = _Kernel(_k_zero_f64, {"f64": f"void({_D1})"})


# Every (pyfunc, signature) the launchers use: the PTX test compiles each for sm_80 and sm_90.
KERNELS = [(k.pyfunc, sig) for k in _Kernel.registry for sig in k.signatures.values()]
GEMM_KERNELS = ("_k_linear_leaky_relu", "_k_linear_sigmoid_mse", "_k_linear_sigmoid",
                "_k_backward_hidden", "_k_weight_step", "_k_weight_step_pair")


# --- host-side launchers (no synchronisation; all arrays already on the device) -------------
def _grid(M, N, S=1):
    return ((N + BN - 1) // BN, (M + BM - 1) // BM, S)


MIN_SLICE_STEPS = 4  # a split-K slice walks at least this many BK steps (64 of K at BK 16)


class SplitK:
    """Workspace, counters and the split-K plan of the kernels that reduce over a long K.

    ``plan(M, N, K)`` gives (S, K per slice): enough slices that the tiles times S fill about
    ``blocks`` blocks (default: two per multiprocessor), each slice at least
    ``MIN_SLICE_STEPS`` BK steps, and never more partials than the workspace holds (it is sized
    once, so CUDA graphs that point at it stay valid). ``splits`` forces S (tests). One per
    engine: launches that share a SplitK must not run concurrently (on two streams at once).
    """

    def __init__(self, blocks=None, splits=None, capacity=1 << 22, max_tiles=4096, stream=0):
        if blocks is None:
            dev = cuda.get_current_device()
            blocks = 2 * getattr(dev, "MULTIPROCESSOR_COUNT", 4)  # the simulator has no count
        self.blocks = int(blocks)
        self.splits = splits
        self.ws = cuda.device_array(int(capacity), np.float32)
        # the counters start at 0 and every split launch leaves them at 0 again
        self.cnt = cuda.to_device(np.zeros(int(max_tiles), np.int32), stream=stream)

    def plan(self, M, N, K):
        tiles = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
        steps = max((K + BK - 1) // BK, 1)
        if self.splits is not None:
            S = self.splits
        else:
            S = min(self.blocks // tiles, steps // MIN_SLICE_STEPS)
        S = max(1, min(S, steps, self.ws.shape[0] // (tiles * BM * BN)))
        if tiles > self.cnt.shape[0]:
            S = 1
        per = (steps + S - 1) // S  # BK steps per slice; then no slice is empty
        S = (steps + per - 1) // per
        return S, per * BK


def _split_args(splitk, M, N, K):
    """(S, workspace, counters, K per slice) for a launch; S = 1 without a SplitK."""
    if splitk is None:
        return 1, _empty(np.float32), _empty(np.int32), max(K, 1)
    S, kchunk = splitk.plan(M, N, K)
    return S, splitk.ws, splitk.cnt, kchunk


_BLOCK = (TX, TY)
_EMPTY = {}


def _empty(dtype, ndim=1):
    """A cached zero-length device array (for the unused optional operands)."""
    key = (np.dtype(dtype).str, ndim)
    if key not in _EMPTY:
        _EMPTY[key] = cuda.to_device(np.zeros((0,) * ndim, dtype))
    return _EMPTY[key]


def _scale_of(X) -> float:
    return PIXEL_SCALE if np.dtype(X.dtype) == np.uint8 else 1.0


def _perm(perm):
    return _empty(np.int64) if perm is None else perm


def _f32(x, ndim=1):
    """x, or the cached empty float32 array for an operand the launch does not use (None)."""
    return _empty(np.float32, ndim) if x is None else x


def linear_leaky_relu(X, W, b, H, slope=0.01, perm=None, off=0, stream=0, splitk=None):
    """H <- leaky_relu(X W^T + b). X (B, K) uint8 or float32, or with ``perm`` the rows
    ``X[perm[off:off+B]]`` of a larger X; W (N, K); b (N,); H (B, N). ``splitk``: a SplitK
    to split the reduction over K between blocks (same result up to summation order)."""
    M, N = H.shape
    S, ws, cnt, kchunk = _split_args(splitk, M, N, W.shape[1])
    k_linear_leaky_relu[_key(X)][_grid(M, N, S), _BLOCK, stream](
        X, _perm(perm), off, _scale_of(X), W, b, slope, H, ws, cnt, kchunk)


def linear_sigmoid_mse(H, W, b, T, dZ, loss, Y=None, perm=None, off=0, stream=0, splitk=None):
    """Kernels 2+3 fused: dZ <- 2/(B*N) (y - t) y (1 - y), y = sigmoid(H W^T + b).

    ``t`` are the rows of T (uint8 pixels or float32), gathered as ``T[perm[off:off+B]]`` when
    ``perm`` is given. ``loss`` (a float64 device array) gets ``sum((y - t)^2)`` added to its
    element 0 with atomics (not reset; no host sync). Y (B, N) receives y if given. ``splitk``
    as in ``linear_leaky_relu`` (the reduction is over the hidden units).
    """
    M, N = dZ.shape
    S, ws, cnt, kchunk = _split_args(splitk, M, N, W.shape[1])
    k_linear_sigmoid_mse[_key(T)][_grid(M, N, S), _BLOCK, stream](
        H, W, b, T, _perm(perm), off, _scale_of(T), 2.0 / (M * N), dZ, _f32(Y, 2), loss, ws, cnt,
        kchunk)


def linear_sigmoid(H, W, b, Y, stream=0):
    """Y <- sigmoid(H W^T + b). H (B, K) float32; W (N, K); b (N,); Y (B, N)."""
    M, N = Y.shape
    k_linear_sigmoid["f32"][_grid(M, N), _BLOCK, stream](H, W, b, Y)


def backward_hidden(dZ, W2, H, dH, slope=0.01, stream=0, splitk=None):
    """dH <- (dZ W2) * leaky_relu'(H). dZ (B, N); W2 (N, K); H, dH (B, K). ``splitk`` as in
    ``linear_leaky_relu`` (the reduction is over the N = 784 pixels)."""
    M, N = dH.shape
    S, ws, cnt, kchunk = _split_args(splitk, M, N, W2.shape[0])
    k_backward_hidden["f32"][_grid(M, N, S), _BLOCK, stream](dZ, W2, H, slope, dH, ws, cnt,
                                                              kchunk)


def _hp(lr=0.0, momentum=0.0, beta1=0.0, beta2=0.0, eps=0.0, step_size=0.0, inv_bc2_sqrt=0.0):
    return np.array([lr, momentum, beta1, beta2, eps, step_size, inv_bc2_sqrt], np.float32)


def _weight_step(dZ, A, kind, G, gb, W, b, VW, Vb, MW, Mb, hp, perm, off, stream):
    N = dZ.shape[1]
    K = A.shape[1]
    k_weight_step[_key(A)][_grid(N, K), _BLOCK, stream](
        dZ, A, _perm(perm), off, _scale_of(A), kind, _f32(G, 2), _f32(gb), _f32(W, 2), _f32(b),
        *map(_f32, (VW, Vb, MW, Mb)), hp)


def weight_grad(dZ, A, G, gb, perm=None, off=0, stream=0):
    """G <- dZ^T A (N, K) and gb <- dZ.sum(0) (N,). A (B, K) uint8/float32, rows gathered
    through ``perm`` if given."""
    hp = cuda.to_device(_hp(), stream=stream)
    _weight_step(dZ, A, OPT_NONE, G, gb, None, None, None, None, None, None, hp, perm, off,
                 stream)


def sgd_weight_step(dZ, A, W, b, lr, perm=None, off=0, stream=0, hp=None):
    """Plain SGD fused into the weight-gradient product: W <- W - lr dZ^T A, b <- b - lr sum(dZ).

    The gradient is never written to memory. ``hp`` may be a device copy of ``_hp(lr=lr)``
    (the engine keeps one, so that no host->device copy happens per step).
    """
    if hp is None:
        hp = cuda.to_device(_hp(lr=lr), stream=stream)
    _weight_step(dZ, A, OPT_SGD, None, None, W, b, None, None, None, None, hp, perm, off,
                 stream)


def momentum_weight_step(dZ, A, W, b, VW, Vb, lr, momentum, nesterov=False, perm=None, off=0,
                         stream=0, hp=None):
    """torch.optim.SGD with (Nesterov) momentum fused into the weight-gradient product.

    VW is the momentum buffer of W flattened ((N*K,) float32), Vb that of b."""
    if hp is None:
        hp = cuda.to_device(_hp(lr=lr, momentum=momentum), stream=stream)
    kind = OPT_NESTEROV if nesterov else OPT_MOMENTUM
    _weight_step(dZ, A, kind, None, None, W, b, VW, Vb, None, None, hp, perm, off, stream)


def adam_hparams(lr, t, beta1=0.9, beta2=0.999, eps=1e-8):
    """The float32 hyper-parameter vector of Adam's step t (bias corrections folded in)."""
    return _hp(lr=lr, beta1=beta1, beta2=beta2, eps=eps,
               step_size=lr / (1.0 - beta1**t), inv_bc2_sqrt=1.0 / math.sqrt(1.0 - beta2**t))


def adam_hparams_steps(lr, t0, n, beta1=0.9, beta2=0.999, eps=1e-8):
    """``adam_hparams`` of steps t0 .. t0 + n - 1 as one (n, 7) array: the same values,
    computed for a whole chunk of steps at once (the CUDA engine copies them in one transfer)."""
    t = np.arange(t0, t0 + n, dtype=np.float64)
    out = np.empty((n, 7), np.float32)
    out[:, :5] = _hp(lr=lr, beta1=beta1, beta2=beta2, eps=eps)[:5]
    out[:, 5] = lr / (1.0 - np.power(beta1, t))
    out[:, 6] = 1.0 / np.sqrt(1.0 - np.power(beta2, t))
    return out


def adam_weight_step(dZ, A, W, b, MW, Mb, VW, Vb, hp, perm=None, off=0, stream=0):
    """torch.optim.Adam fused into the weight-gradient product; ``hp`` a device copy of
    ``adam_hparams(lr, t, ...)``. MW/VW are exp_avg / exp_avg_sq of W flattened, Mb/Vb of b."""
    _weight_step(dZ, A, OPT_ADAM, None, None, W, b, VW, Vb, MW, Mb, hp, perm, off, stream)


def weight_step(kind, hp, update, stream=0):
    """One fused weight step: ``update`` = (dZ, A, W, b, VW, Vb, MW, Mb, perm, off) as in
    ``weight_step_pair``; the same as ``sgd_/momentum_/adam_weight_step`` by ``kind``."""
    dZ, A, W, b, VW, Vb, MW, Mb, perm, off = update
    _weight_step(dZ, A, kind, None, None, W, b, VW, Vb, MW, Mb, hp, perm, off, stream)


def weight_step_pair(kind, hp, first, second, stream=0):
    """Two fused weight steps (``*_weight_step``, ``kind`` one of OPT_SGD, OPT_MOMENTUM,
    OPT_NESTEROV, OPT_ADAM, ``hp`` its device hyper-parameter vector) in one launch.

    ``first`` and ``second`` are ``(dZ, A, W, b, VW, Vb, MW, Mb, perm, off)``: the operands of
    one update as in ``adam_weight_step`` (VW/Vb the momentum buffer for momentum; None where
    the optimizer keeps no state). They must not share outputs. ``first``'s A is float32;
    ``second``'s may be uint8. Same results as the two single launches, bit for bit.
    """
    args = [kind, hp, _f32(None, 2), _f32(None)]
    blocks = 0
    for dZ, A, W, b, VW, Vb, MW, Mb, perm, off in (first, second):
        args += [dZ, A, _perm(perm), off, _scale_of(A), W, b, *map(_f32, (VW, Vb, MW, Mb))]
        gx, gy, _ = _grid(dZ.shape[1], A.shape[1])
        blocks += gx * gy
    k_weight_step_pair[_key(second[1])][blocks, _BLOCK, stream](*args)


def _ew_grid(n):
    return (min((n + EW_THREADS - 1) // EW_THREADS, 1024),)


def sgd_update(W, G, lr, momentum=0.0, nesterov=False, V=None, stream=0):
    """In place on 1-D (flat) float32 arrays, torch.optim.SGD semantics (reference.sgd_update)."""
    n = W.shape[0]
    k_sgd_update["f32"][_ew_grid(n), EW_THREADS, stream](W, G, lr, momentum, bool(nesterov),
                                                         _f32(V))


def adam_update(W, G, M, V, lr, t, beta1=0.9, beta2=0.999, eps=1e-8, stream=0):
    """In place on 1-D float32 arrays, torch.optim.Adam semantics at step t >= 1."""
    step_size = lr / (1.0 - beta1**t)
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2**t)
    n = W.shape[0]
    k_adam_update["f32"][_ew_grid(n), EW_THREADS, stream](
        W, G, M, V, step_size, inv_bc2_sqrt, beta1, beta2, eps)


def zero_(x, stream=0):
    """x[:] <- 0 for a 1-D float64 device array (the loss accumulator)."""
    k_zero_f64["f64"][(x.shape[0] + 255) // 256, 256, stream](x)


def compile_ptx(pyfunc, signature, cc):
    """PTX text of one kernel for compute capability ``cc``, with no GPU needed.

    numba-cuda compiles the *device functions* a kernel calls for the current device's compute
    capability, which needs a driver; when there is none, this pretends the device is ``cc`` for
    the duration of the call (the device functions are compiled to NVVM IR, linked into the
    kernel and compiled for ``cc`` with it). Not usable under the simulator.
    """
    from numba.cuda import dispatcher as _dispatcher

    real = _dispatcher.get_current_device

    class _Pretend:
        compute_capability = tuple(cc)

    try:
        real()
        have_device = True
    except Exception:
        have_device = False
    if not have_device:
        _dispatcher.get_current_device = lambda: _Pretend()
    try:
        ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=tuple(cc), fastmath=_FASTMATH)
    finally:
        _dispatcher.get_current_device = real
    return ptx
