"""Kernel 4: dH <- (dZ W2) * f'(Z), the backward product through the hidden layer, for the hidden
activation f: leaky_relu (the default model's ``kernel``, ``backward_hidden``) or any other
(``backward_activation``; one Kernel per activation, made on first use). Every one is
``make(prefetch, activation)`` with the epilogue ``activation_epilogue``; the other
activations' kernels also take Zp, the pre-activations kernel 1 kept (gelu)."""

from __future__ import annotations

from numba import cuda, float32, int32

from ..activations_cuda import activation as activation_pair
from ..activations_reference import needs_preactivation
from .config import BK, BLOCK, F2, PAD, SPLIT, TM, TN, TX, TY, device
from .gemm import kslice, mainloop, splitk_fixup, this_thread
from .launch import Kernel, f32_or_empty, grid, named, split_args

DEFAULT_ACTIVATION = "leaky_relu"


def activation_epilogue(name):
    """The epilogue of activation ``name``: dH's tile at (m0, n0) <- acc f'(Z), from H (and from
    Zp where the activation keeps the pre-activation; else Zp is not read)."""
    bwd = activation_pair(name)[1]
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


_leaky_relu_epilogue = activation_epilogue(DEFAULT_ACTIVATION)


@device
def epilogue(acc, H, slope, dH, m0, n0, tx, ty):
    """dH's tile at (m0, n0) <- acc * leaky_relu'(H): the default's epilogue (H stands in for
    Zp, never read). The persistent kernel calls it."""
    _leaky_relu_epilogue(acc, H, H, slope, dH, m0, n0, tx, ty)


def make(prefetch=False, activation=DEFAULT_ACTIVATION):
    """Kernel 4 of ``activation``. The default's kernel has no Zp operand (so its launch and PTX
    are those it had before the other activations); the others take Zp after H."""
    gemm = mainloop("nn", False, prefetch, indexed=False)
    epi = activation_epilogue(activation)

    @device
    def body(dZ, W2, H, Zp, slope, dH, ws, cnt, kchunk):
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

    if activation == DEFAULT_ACTIVATION:
        def k(dZ, W2, H, slope, dH, ws, cnt, kchunk):
            body(dZ, W2, H, H, slope, dH, ws, cnt, kchunk)
        name = "k_backward_hidden"  # its name from before the other activations
    else:
        def k(dZ, W2, H, Zp, slope, dH, ws, cnt, kchunk):
            body(dZ, W2, H, Zp, slope, dH, ws, cnt, kchunk)
        name = f"k_backward_{activation}"

    return named(k, name + "_prefetch" * prefetch)


def variants(prefetch=False, activation=DEFAULT_ACTIVATION):
    zp = f"{F2}, " if activation != DEFAULT_ACTIVATION else ""  # Zp, after H
    return {"f32": (make(prefetch, activation),
                    f"void({F2}, {F2}, {F2}, {zp}float32, {F2}, {SPLIT})")}


kernel = Kernel(variants())
_BY_ACTIVATION = {DEFAULT_ACTIVATION: kernel}


def activation_kernel(name):
    """The Kernel of activation ``name`` (made once; not in the registry, as kernel 1's)."""
    k = _BY_ACTIVATION.get(name)
    if k is None:
        k = _BY_ACTIVATION[name] = Kernel(variants(activation=name), register=False)
    return k


def backward_activation(dZ, W2, H, dH, slope, activation, Zp=None, stream=0, splitk=None,
                        kernel=None):
    """dH <- (dZ W2) * f'(Z) for hidden activation ``activation``. dZ (B, N); W2 (N, K); H, dH
    (B, K); Zp the pre-activations kernel 1 kept (gelu), else may be None. ``splitk`` as in
    ``linear_activation`` (the reduction is over the N = 784 pixels); ``kernel``: another
    Kernel of the same operands (the dev/cuda variants)."""
    kernel = kernel or activation_kernel(activation)
    zp = () if activation == DEFAULT_ACTIVATION else (f32_or_empty(Zp, 2),)
    M, N = dH.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W2.shape[0])
    kernel["f32"][grid(M, N, S), BLOCK, stream](dZ, W2, H, *zp, slope, dH, ws, cnt, kchunk)


def backward_hidden(dZ, W2, H, dH, slope=0.01, stream=0, splitk=None, kernel=kernel):
    """dH <- (dZ W2) * leaky_relu'(H): ``backward_activation`` of the default activation."""
    backward_activation(dZ, W2, H, dH, slope, DEFAULT_ACTIVATION, None, stream, splitk, kernel)
