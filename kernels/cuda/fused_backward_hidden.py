"""Kernel 4: dH <- (dZ W2) * leaky_relu'(H), the backward product through the hidden layer; and
the same for any other hidden activation, ``backward_activation`` (one kernel per activation,
made on first use; leaky_relu is always the kernel above, unchanged)."""

from __future__ import annotations

from numba import cuda, float32, int32

from .config import BK, BLOCK, F2, PAD, SPLIT, TM, TN, TX, TY, device
from .gemm import kslice, mainloop, splitk_fixup, this_thread
from .launch import Kernel, f32_or_empty, grid, named, split_args

DEFAULT_ACTIVATION = "leaky_relu"


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


def activation_epilogue(name):
    """``epilogue`` for activation ``name``: dH's tile <- f'(Z) acc, from H (and Zp where the
    activation keeps the pre-activation)."""
    from ..activations_cuda import activation
    from ..activations_reference import needs_preactivation

    bwd = activation(name)[1]
    keep = needs_preactivation(name)

    @device
    def epilogue_act(acc, H, Zp, slope, dH, m0, n0, tx, ty):
        M = dH.shape[0]
        N = dH.shape[1]
        for i in range(TM):
            m = m0 + ty + TY * i
            if m < M:
                for j in range(TN):
                    n = n0 + tx + TX * j
                    if n < N:
                        h = H[m, n]
                        dH[m, n] = bwd(acc[i, j], h, Zp[m, n] if keep else h, slope)

    return epilogue_act


def make_activation(name, prefetch=False):
    """``make``'s kernel for activation ``name`` (not leaky_relu), with the Zp operand."""
    gemm = mainloop("nn", False, prefetch, indexed=False)
    epi = activation_epilogue(name)

    def k(dZ, W2, H, Zp, slope, dH, ws, cnt, kchunk):
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
        epi(acc, H, Zp, slope, dH, m0, n0, tx, ty)

    return named(k, f"k_backward_{name}" + "_prefetch" * prefetch)


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


def variants(prefetch=False, activation=DEFAULT_ACTIVATION):
    if activation == DEFAULT_ACTIVATION:
        return {"f32": (make(prefetch), f"void({F2}, {F2}, {F2}, float32, {F2}, {SPLIT})")}
    return {"f32": (make_activation(activation, prefetch),
                    f"void({F2}, {F2}, {F2}, {F2}, float32, {F2}, {SPLIT})")}


kernel = Kernel(variants())
_BY_ACTIVATION = {DEFAULT_ACTIVATION: kernel}


def activation_kernel(name):
    """The Kernel of activation ``name`` (made once; not in the registry, as kernel 1's)."""
    k = _BY_ACTIVATION.get(name)
    if k is None:
        k = _BY_ACTIVATION[name] = Kernel(variants(activation=name), register=False)
    return k


def backward_hidden(dZ, W2, H, dH, slope=0.01, stream=0, splitk=None, kernel=kernel):
    """dH <- (dZ W2) * leaky_relu'(H). dZ (B, N); W2 (N, K); H, dH (B, K). ``splitk`` as in
    ``linear_leaky_relu`` (the reduction is over the N = 784 pixels)."""
    M, N = dH.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W2.shape[0])
    kernel["f32"][grid(M, N, S), BLOCK, stream](dZ, W2, H, slope, dH, ws, cnt, kchunk)


def backward_activation(dZ, W2, H, dH, slope, activation, Zp=None, stream=0, splitk=None):
    """dH <- (dZ W2) * f'(Z) for hidden activation ``activation``, as ``backward_hidden`` (which
    it is for leaky_relu); Zp the pre-activations kernel 1 kept (gelu), else may be None."""
    if activation == DEFAULT_ACTIVATION:
        return backward_hidden(dZ, W2, H, dH, slope, stream, splitk)
    M, N = dH.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W2.shape[0])
    activation_kernel(activation)["f32"][grid(M, N, S), BLOCK, stream](
        dZ, W2, H, f32_or_empty(Zp, 2), slope, dH, ws, cnt, kchunk)
