"""Kernel 1: H <- f(X W^T + b), the uint8 pixels scaled on the accumulator, for the hidden
activation f: leaky_relu (the default model's ``kernel``, ``linear_leaky_relu``) or any other
(``linear_activation``; one Kernel per activation, made on first use by ``activation_kernel``).
Every one is ``make(gather, prefetch, activation)`` with the epilogue ``activation_epilogue``;
the other activations' kernels also take Zp, which gets the pre-activation where f's backward
needs it (gelu)."""

from __future__ import annotations

from numba import cuda, float32, int32

from ..activations_cuda import activation as activation_pair
from ..activations_reference import needs_preactivation
from .config import BK, BLOCK, F1, F2, I1, PAD, SPLIT, TM, TN, TX, TY, U2, device
from .gemm import kslice, mainloop, splitk_fixup, this_thread
from .launch import Kernel, f32_or_empty, grid, key, named, perm_or_empty, scale_of, split_args

DEFAULT_ACTIVATION = "leaky_relu"


def activation_epilogue(name):
    """The epilogue of activation ``name``: H's tile at (m0, n0) <- f(acc scale + b), and Zp's
    <- the pre-activation where f's backward needs it (else Zp is not touched)."""
    fwd = activation_pair(name)[0]
    keep = needs_preactivation(name)

    @device
    def epilogue_act(acc, scale, b, slope, H, Zp, m0, n0, tx, ty):
        M = H.shape[0]
        N = H.shape[1]
        for i in range(TM):
            m = m0 + ty + TY * i
            if m < M:
                for j in range(TN):
                    n = n0 + tx + TX * j
                    if n < N:
                        z = acc[i, j] * scale + b[n]
                        if keep:
                            Zp[m, n] = z
                        H[m, n] = fwd(z, slope)

    return epilogue_act


_leaky_relu_epilogue = activation_epilogue(DEFAULT_ACTIVATION)


@device
def epilogue(acc, scale, b, slope, H, m0, n0, tx, ty):
    """H's tile at (m0, n0) <- leaky_relu(acc scale + b): the default's epilogue, which keeps no
    pre-activation (H stands in for Zp, never written). The persistent kernel calls it."""
    _leaky_relu_epilogue(acc, scale, b, slope, H, H, m0, n0, tx, ty)


def make(gather, prefetch=False, activation=DEFAULT_ACTIVATION):
    """Kernel 1 of ``activation`` for rows ``perm[off + r]`` (gather) or ``off + r`` of X.
    The default's kernel has no Zp operand (so its launch and PTX are those it had before the
    other activations); the others take Zp after H."""
    gemm = mainloop("nt", gather, prefetch)
    epi = activation_epilogue(activation)

    @device
    def body(X, perm, off, scale, W, b, slope, H, Zp, ws, cnt, kchunk):
        As = cuda.shared.array((BK, PAD), float32)
        Bs = cuda.shared.array((BK, PAD), float32)
        flag = cuda.shared.array(1, int32)
        acc = cuda.local.array((TM, TN), float32)
        tx, ty, tid, m0, n0 = this_thread()
        M = H.shape[0]
        N = H.shape[1]
        kb, ke = kslice(W.shape[1], kchunk)
        gemm(X, perm, off, W, M, N, kb, ke, m0, n0, As, Bs, acc, tid, tx, ty)
        if not splitk_fixup(acc, ws, cnt, flag, tid):
            return
        epi(acc, scale, b, slope, H, Zp, m0, n0, tx, ty)

    if activation == DEFAULT_ACTIVATION:
        def k(X, perm, off, scale, W, b, slope, H, ws, cnt, kchunk):
            body(X, perm, off, scale, W, b, slope, H, H, ws, cnt, kchunk)
    else:
        def k(X, perm, off, scale, W, b, slope, H, Zp, ws, cnt, kchunk):
            body(X, perm, off, scale, W, b, slope, H, Zp, ws, cnt, kchunk)

    return named(k, f"k_linear_{activation}" + "_gather" * gather + "_prefetch" * prefetch)


def signature(x, zp=False):
    zp_arg = f"{F2}, " if zp else ""  # Zp, after H, in the other activations' kernels
    return f"void({x}, {I1}, int64, float32, {F2}, {F1}, float32, {F2}, {zp_arg}{SPLIT})"


def variants(prefetch=False, activation=DEFAULT_ACTIVATION):
    zp = activation != DEFAULT_ACTIVATION
    return {f"{d}{'+gather' * g}": (make(g, prefetch, activation), signature(x, zp))
            for g in (False, True) for d, x in (("u8", U2), ("f32", F2))}


kernel = Kernel(variants())
_BY_ACTIVATION = {DEFAULT_ACTIVATION: kernel}


def activation_kernel(name):
    """The Kernel of activation ``name`` (made once; only the default's is in the registry, so
    ``KERNELS`` stays the default model's: tests/test_cuda_activation_loss.py compiles these)."""
    k = _BY_ACTIVATION.get(name)
    if k is None:
        k = _BY_ACTIVATION[name] = Kernel(variants(activation=name), register=False)
    return k


def linear_activation(X, W, b, H, slope, activation, Zp=None, perm=None, off=0, stream=0,
                      splitk=None, kernel=None):
    """H <- f(X W^T + b) for hidden activation ``activation``. X (B, K) uint8 or float32, or
    with ``perm`` the rows ``X[perm[off:off+B]]`` of a larger X (without, the rows
    ``off:off+B``); W (N, K); b (N,); H (B, N). Zp (H's shape) receives the pre-activation where
    the activation's backward needs it (gelu), else may be None. ``splitk``: a SplitK to split
    the reduction over K between blocks. ``kernel``: another Kernel of the same operands (the
    dev/cuda variants)."""
    kernel = kernel or activation_kernel(activation)
    zp = () if activation == DEFAULT_ACTIVATION else (f32_or_empty(Zp, 2),)
    M, N = H.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W.shape[1])
    kernel[key(X, perm)][grid(M, N, S), BLOCK, stream](
        X, perm_or_empty(perm), off, scale_of(X), W, b, slope, H, *zp, ws, cnt, kchunk)


def linear_leaky_relu(X, W, b, H, slope=0.01, perm=None, off=0, stream=0, splitk=None,
                      kernel=kernel):
    """H <- leaky_relu(X W^T + b): ``linear_activation`` of the default activation."""
    linear_activation(X, W, b, H, slope, DEFAULT_ACTIVATION, None, perm, off, stream, splitk,
                      kernel)
