"""Kernel 4: dH <- (dZ W2) * leaky_relu'(H), the backward product through the hidden layer."""

from __future__ import annotations

from numba import cuda, float32, int32

from .config import BK, BLOCK, F2, PAD, SPLIT, TM, TN, TX, TY, device
from .gemm import kslice, mainloop, splitk_fixup, this_thread
from .launch import Kernel, grid, named, split_args


@device
def epilogue(acc, H, slope, dH, m0, n0, tx, ty):
    """dH's tile at (m0, n0) <- acc * leaky_relu'(H)."""
    M = dH.shape[0]
    N = dH.shape[1]
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


def make(prefetch=False):
    gemm = mainloop("nn", False, prefetch, indexed=False)

    def k(dZ, W2, H, slope, dH, ws, cnt, kchunk):
        As = cuda.shared.array((BK, PAD), float32)
        Bs = cuda.shared.array((BK, PAD), float32)
        flag = cuda.shared.array(1, int32)
        acc = cuda.local.array((TM, TN), float32)
        tx, ty, tid, m0, n0 = this_thread()
        M = dH.shape[0]
        N = dH.shape[1]
        kb, ke = kslice(W2.shape[0], kchunk)
        gemm(dZ, W2, M, N, kb, ke, m0, n0, As, Bs, acc, tid, tx, ty)
        if not splitk_fixup(acc, ws, cnt, flag, tid):
            return
        epilogue(acc, H, slope, dH, m0, n0, tx, ty)

    return named(k, "k_backward_hidden" + "_prefetch" * prefetch)


def variants(prefetch=False):
    return {"f32": (make(prefetch), f"void({F2}, {F2}, {F2}, float32, {F2}, {SPLIT})")}


kernel = Kernel(variants())


def backward_hidden(dZ, W2, H, dH, slope=0.01, stream=0, splitk=None, kernel=kernel):
    """dH <- (dZ W2) * leaky_relu'(H). dZ (B, N); W2 (N, K); H, dH (B, K). ``splitk`` as in
    ``linear_leaky_relu`` (the reduction is over the N = 784 pixels)."""
    M, N = dH.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W2.shape[0])
    kernel["f32"][grid(M, N, S), BLOCK, stream](dZ, W2, H, slope, dH, ws, cnt, kchunk)
