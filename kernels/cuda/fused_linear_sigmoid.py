"""Kernels 2 (+3): y = sigmoid(H W^T + b), with the loss's gradient and sum in the epilogue
(training and evaluation) or alone (reconstructions); and the loss accumulator's reset. One
Kernel per loss, all from ``make_loss(name)`` with the epilogue ``loss_epilogue(name)``: mse
(the default model's ``mse_kernel``, ``linear_sigmoid_mse``; it can also write y) and the
others (``linear_sigmoid_loss_grad``, made on first use), which also sum the squared error
into loss[1]."""

from __future__ import annotations

from numba import cuda, float32, float64, int32

from ..cuda_math import sigmoid, sigmoid_and_slope  # noqa: F401  (sigmoid_and_slope: re-exported)
from ..losses_cuda import loss_point
from ..losses_reference import grad_scale, needs_squared_error
from .config import (BK, BLOCK, D1, F1, F2, I1, NTHREADS, PAD, SPLIT, TM, TN, TX, TY,
                     U2, dcuda, device)
from .gemm import kslice, mainloop, splitk_fixup, this_thread
from .launch import (Kernel, f32_or_empty, grid, key, named, perm_or_empty, scale_of,
                     split_args)

DEFAULT_LOSS = "mse"


def loss_epilogue(name):
    """The epilogue of loss ``name``: dZ's tile at (m0, n0) <- the loss's gradient at
    y = sigmoid(acc + b) and t, the rows ``tperm[toff + m]`` (or ``toff + m``) of T scaled;
    returns this thread's float64 shares of the loss sum and (for a loss other than mse, else
    0) of the squared-error sum. mse also writes y into Y unless it is empty; the others never
    touch Y (a Sigmoid for Y made bce's epilogue too long for the compiler to unroll, and its
    register tile went to local memory)."""
    point = loss_point(name)
    both = needs_squared_error(name)
    has_y = not both  # mse

    @device
    def epilogue_loss(acc, b, T, tperm, toff, tscale, dscale, dZ, Y, m0, n0, tx, ty):
        M = dZ.shape[0]
        N = dZ.shape[1]
        write_y = has_y and Y.shape[0] > 0
        gather = tperm.shape[0] > 0
        part = float64(0.0)
        part_sq = float64(0.0)
        for i in range(TM):
            m = m0 + ty + TY * i
            if m < M:
                src = tperm[toff + m] if gather else toff + m
                for j in range(TN):
                    n = n0 + tx + TX * j
                    if n < N:
                        z = acc[i, j] + b[n]
                        e, sq, g = point(z, float32(T[src, n]) * tscale, dscale)
                        part += float64(e)
                        if both:
                            part_sq += float64(sq)
                        dZ[m, n] = g
                        if write_y:
                            # mse's point computed this y too: the compiler keeps one
                            Y[m, n] = sigmoid_and_slope(z)[0]
        return part, part_sq

    return epilogue_loss


_mse_epilogue = loss_epilogue(DEFAULT_LOSS)


@device
def mse_epilogue(acc, b, T, tperm, toff, tscale, dscale, dZ, Y, m0, n0, tx, ty):
    """dZ's tile at (m0, n0) <- dscale (y - t) y (1 - y), y = sigmoid(acc + b) (also into Y
    unless it is empty), t the rows ``tperm[toff + m]`` (or ``toff + m``) of T scaled; returns
    this thread's float64 share of sum((y - t)^2). The persistent kernel calls it."""
    return _mse_epilogue(acc, b, T, tperm, toff, tscale, dscale, dZ, Y, m0, n0, tx, ty)[0]


@device
def block_sum(red, part, tid):
    """The sum of every thread's ``part`` (a fixed tree order), valid in thread 0; ``red`` a
    (NTHREADS,) float64 shared array. All threads must call it."""
    red[tid] = part
    dcuda.syncthreads()
    s = NTHREADS // 2
    while s > 0:
        if tid < s:
            red[tid] += red[tid + s]
        dcuda.syncthreads()
        s //= 2
    return red[0]


def make_loss(name=DEFAULT_LOSS, prefetch=False):
    """Kernels 2+3 of loss ``name``: loss[0] += the loss sum and, for a loss other than mse,
    loss[1] += the squared-error sum (one float64 atomic per block and sum)."""
    gemm = mainloop("nt", False, prefetch, indexed=False)
    epi = loss_epilogue(name)
    both = needs_squared_error(name)

    def k(Hin, W, b, T, tperm, toff, tscale, dscale, dZ, Y, loss, ws, cnt, kchunk):
        As = cuda.shared.array((BK, PAD), float32)
        Bs = cuda.shared.array((BK, PAD), float32)
        red = cuda.shared.array(NTHREADS, float64)
        flag = cuda.shared.array(1, int32)
        acc = cuda.local.array((TM, TN), float32)
        tx, ty, tid, m0, n0 = this_thread()
        M = dZ.shape[0]
        N = dZ.shape[1]
        kb, ke = kslice(W.shape[1], kchunk)
        gemm(Hin, W, M, N, kb, ke, m0, n0, As, Bs, acc, tid, tx, ty)
        if not splitk_fixup(acc, ws, cnt, flag, tid):
            return
        part, part_sq = epi(acc, b, T, tperm, toff, tscale, dscale, dZ, Y, m0, n0, tx, ty)
        total = block_sum(red, part, tid)  # (valid in thread 0 only: it reads it before the
        if both:                           # second sum overwrites red[0])
            total_sq = block_sum(red, part_sq, tid)
        if tid == 0:
            cuda.atomic.add(loss, 0, total)
            if both:
                cuda.atomic.add(loss, 1, total_sq)

    return named(k, f"k_linear_sigmoid_{name}" + "_prefetch" * prefetch)


def make_sigmoid(prefetch=False):
    gemm = mainloop("nt", False, prefetch, indexed=False)

    def k(Hin, W, b, Y):
        As = cuda.shared.array((BK, PAD), float32)
        Bs = cuda.shared.array((BK, PAD), float32)
        acc = cuda.local.array((TM, TN), float32)
        tx, ty, tid, m0, n0 = this_thread()
        M = Y.shape[0]
        N = Y.shape[1]
        gemm(Hin, W, M, N, 0, W.shape[1], m0, n0, As, Bs, acc, tid, tx, ty)
        for i in range(TM):
            m = m0 + ty + TY * i
            if m < M:
                for j in range(TN):
                    n = n0 + tx + TX * j
                    if n < N:
                        Y[m, n] = sigmoid(acc[i, j] + b[n])

    return named(k, "k_linear_sigmoid_output" + "_prefetch" * prefetch)


def mse_variants(prefetch=False, loss=DEFAULT_LOSS):
    sig = "void({F2}, {F2}, {F1}, {t}, {I1}, int64, float32, float32, {F2}, {F2}, {D1}, {S})"
    return {d: (make_loss(loss, prefetch), sig.format(F2=F2, F1=F1, I1=I1, D1=D1, S=SPLIT, t=t))
            for d, t in (("u8", U2), ("f32", F2))}


def sigmoid_variants(prefetch=False):
    return {"f32": (make_sigmoid(prefetch), f"void({F2}, {F2}, {F1}, {F2})")}


mse_kernel = Kernel(mse_variants())
sigmoid_kernel = Kernel(sigmoid_variants())
_BY_LOSS = {DEFAULT_LOSS: mse_kernel}


def loss_kernel(name):
    """The Kernel of loss ``name`` (made once; not in the registry, so ``KERNELS`` stays the
    default model's: tests/test_cuda_activation_loss.py compiles these)."""
    k = _BY_LOSS.get(name)
    if k is None:
        k = _BY_LOSS[name] = Kernel(mse_variants(loss=name), register=False)
    return k


def linear_sigmoid_loss_grad(H, W, b, T, dZ, loss_sums, loss, Y=None, perm=None, off=0,
                             stream=0, splitk=None, kernel=None):
    """Kernels 2+3 fused for loss ``loss``: dZ <- the mean loss's gradient at
    y = sigmoid(H W^T + b) (``losses_reference.grad_scale``; mse: 2/(B*N) (y - t) y (1 - y)).

    ``t`` are the rows of T (uint8 pixels or float32), gathered as ``T[perm[off:off+B]]`` when
    ``perm`` is given (else ``T[off:off+B]``). ``loss_sums`` (a float64 device array; 2
    elements for a loss other than mse) gets the loss sum added to element 0 and the
    squared-error sum to 1, with atomics (not reset; no host sync). Y (B, N) receives y if
    given (mse only). ``splitk`` as in ``linear_activation`` (the reduction is over the hidden
    units); ``kernel``: another Kernel of the same operands (the dev/cuda variants).
    """
    if Y is not None and loss != DEFAULT_LOSS:
        raise ValueError(f"the {loss} kernel does not write y (Y is for mse only)")
    kernel = kernel or loss_kernel(loss)
    M, N = dZ.shape
    S, ws, cnt, kchunk = split_args(splitk, M, N, W.shape[1])
    kernel[key(T)][grid(M, N, S), BLOCK, stream](
        H, W, b, T, perm_or_empty(perm), off, scale_of(T), grad_scale(loss, M * N), dZ,
        f32_or_empty(Y, 2), loss_sums, ws, cnt, kchunk)


def linear_sigmoid_mse(H, W, b, T, dZ, loss, Y=None, perm=None, off=0, stream=0, splitk=None,
                       kernel=mse_kernel):
    """dZ <- 2/(B*N) (y - t) y (1 - y), loss[0] += sum((y - t)^2), Y <- y if given:
    ``linear_sigmoid_loss_grad`` of mse."""
    linear_sigmoid_loss_grad(H, W, b, T, dZ, loss, DEFAULT_LOSS, Y, perm, off, stream, splitk,
                             kernel)


def linear_sigmoid(H, W, b, Y, stream=0, kernel=sigmoid_kernel):
    """Y <- sigmoid(H W^T + b). H (B, K) float32; W (N, K); b (N,); Y (B, N)."""
    M, N = Y.shape
    kernel["f32"][grid(M, N), BLOCK, stream](H, W, b, Y)


def _k_zero_f64(x):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] = 0.0


zero_kernel = Kernel({"f64": (named(_k_zero_f64, "k_zero_f64"), f"void({D1})")})


def zero_(x, stream=0):
    """x[:] <- 0 for a 1-D float64 device array (the loss accumulator)."""
    zero_kernel["f64"][(x.shape[0] + 255) // 256, 256, stream](x)
