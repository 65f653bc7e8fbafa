"""Kernel 1: H <- leaky_relu(X W^T + b), the uint8 pixels scaled on the accumulator; and the
same for any other hidden activation, ``linear_activation`` (one kernel per activation, made on
first use by ``activation_kernel``; leaky_relu is always the kernel above, unchanged)."""

from __future__ import annotations

from numba import cuda, float32, int32

from .config import BK, BLOCK, F1, F2, I1, PAD, SPLIT, TM, TN, TX, TY, U2, device
from .gemm import kslice, mainloop, splitk_fixup, this_thread
from .launch import Kernel, f32_or_empty, grid, key, named, perm_or_empty, scale_of, split_args

DEFAULT_ACTIVATION = "leaky_relu"


@device
def epilogue(acc, scale, b, slope, H, m0, n0, tx, ty):
    """H's tile at (m0, n0) <- leaky_relu(acc scale + b)."""
    M = H.shape[0]
    N = H.shape[1]
    for i in range(TM):
        m = m0 + ty + TY * i
        if m < M:
            for j in range(TN):
                n = n0 + tx + TX * j
                if n < N:
                    z = acc[i, j] * scale + b[n]
                    H[m, n] = z if z > float32(0.0) else z * slope


def activation_epilogue(name):
    """``epilogue`` for activation ``name``: H's tile <- f(acc scale + b), and Zp's <- the
    pre-activation where the activation's backward needs it (else Zp is not touched)."""
    from ..activations_cuda import activation
    from ..activations_reference import needs_preactivation

    fwd = activation(name)[0]
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


def make_activation(name, gather, prefetch=False):
    """``make``'s kernel for activation ``name`` (not leaky_relu), with the Zp operand."""
    gemm = mainloop("nt", gather, prefetch)
    epi = activation_epilogue(name)

    def k(X, perm, off, scale, W, b, slope, H, Zp, ws, cnt, kchunk):
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

    return named(k, f"k_linear_{name}" + "_gather" * gather + "_prefetch" * prefetch)


def make(gather, prefetch=False):
    """The kernel for rows ``perm[off + r]`` (gather) or ``off + r`` of X."""
    gemm = mainloop("nt", gather, prefetch)

    def k(X, perm, off, scale, W, b, slope, H, ws, cnt, kchunk):
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
        epilogue(acc, scale, b, slope, H, m0, n0, tx, ty)

    return named(k, "k_linear_leaky_relu" + "_gather" * gather + "_prefetch" * prefetch)


def signature(x, zp=False):
    zp_arg = f"{F2}, " if zp else ""  # Zp, after H, in the other activations' kernels
    return f"void({x}, {I1}, int64, float32, {F2}, {F1}, float32, {F2}, {zp_arg}{SPLIT})"


def variants(prefetch=False, activation=DEFAULT_ACTIVATION):
    if activation == DEFAULT_ACTIVATION:
        return {f"{d}{'+gather' * g}": (make(g, prefetch), signature(x))
                for g in (False, True) for d, x in (("u8", U2), ("f32", F2))}
    return {f"{d}{'+gather' * g}": (make_activation(activation, g, prefetch), signature(x, True))
            for g in (False, True) for d, x in (("u8", U2), ("f32", F2))}


kernel = Kernel(variants())
_BY_ACTIVATION = {DEFAULT_ACTIVATION: kernel}


def activation_kernel(name):
    """The Kernel of activation ``name`` (made once; not in the registry, so ``KERNELS`` stays
    the default model's: tests/test_cuda_activation_loss.py compiles these)."""
    k = _BY_ACTIVATION.get(name)
    if k is None:
        k = _BY_ACTIVATION[name] = Kernel(variants(activation=name), register=False)
    return k


def linear_leaky_relu(X, W, b, H, slope=0.01, perm=None, off=0, stream=0, splitk=None,
                      kernel=kernel):
    """H <- leaky_relu(X W^T + b). X (B, K) uint8 or float32, or with ``perm`` the rows
    ``X[perm[off:off+B]]`` of a larger X (without, the rows ``off:off+B``); W (N, K); b (N,);
    H (B, N). ``splitk``: a SplitK to split the reduction over K between blocks."""
    M, N = H.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W.shape[1])
    kernel[key(X, perm)][grid(M, N, S), BLOCK, stream](
        X, perm_or_empty(perm), off, scale_of(X), W, b, slope, H, ws, cnt, kchunk)


def linear_activation(X, W, b, H, slope, activation, Zp=None, perm=None, off=0, stream=0,
                      splitk=None):
    """H <- f(X W^T + b) for hidden activation ``activation``, as ``linear_leaky_relu`` (which it
    is for leaky_relu); Zp (H's shape) receives the pre-activation where the activation's
    backward needs it (gelu), else may be None."""
    if activation == DEFAULT_ACTIVATION:
        return linear_leaky_relu(X, W, b, H, slope, perm, off, stream, splitk)
    M, N = H.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W.shape[1])
    activation_kernel(activation)[key(X, perm)][grid(M, N, S), BLOCK, stream](
        X, perm_or_empty(perm), off, scale_of(X), W, b, slope, H, f32_or_empty(Zp, 2), ws, cnt,
        kchunk)
