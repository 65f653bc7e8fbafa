"""Kernels 5-6: the weight-gradient products (reduction over the batch), alone or with the
optimizer update fused in its epilogue, and the bias gradient (the column sums of dZ / dH)
taken from the operand tiles the product stages anyway."""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from .config import BK, BLOCK, BM, BN, F1, F2, I1, PAD, TM, TN, TX, TY, U2, device
from .gemm import finish_colsum, idx, mainloop, this_thread
from .launch import Kernel, f32_or_empty, grid, key, named, perm_or_empty, scale_of

OPT_NONE, OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM = 0, 1, 2, 3, 4


@device
def apply_update(kind, w, g, v, m, lr, mu, b1, b2, eps, step_size, inv_bc2_sqrt):
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


@device
def update(kind, hp, f, g, w, VW, MW):
    """The stepped value of a weight (or bias) w with gradient g, whose optimizer state is
    element f of VW / MW (read and written only where ``kind`` keeps it)."""
    v = float32(0.0)
    mm = float32(0.0)
    if kind != OPT_SGD:
        v = VW[f]
    if kind == OPT_ADAM:
        mm = MW[f]
    w, v, mm = apply_update(kind, w, g, v, mm, hp[0], hp[1], hp[2], hp[3], hp[4], hp[5],
                            hp[6])
    if kind != OPT_SGD:
        VW[f] = v
    if kind == OPT_ADAM:
        MW[f] = mm
    return w


def make_tile(gather, prefetch=False):
    """Device function: output tile (by, bx) of C = D^T X (scaled), then per ``kind`` the
    gradient stored or the update applied; the blocks of column 0 also finish the column sums
    of D (the bias gradient) that the main loop accumulated from its staged D tiles."""
    gemm = mainloop("tn", gather, prefetch, colsum=True)

    def tile(bx, by, D, X, px, ox, scale, kind, G, gb, W, b, VW, Vb, MW, Mb, hp, As, Bs, acc,
             tid, tx, ty):
        m0 = by * BM
        n0 = bx * BN
        Kb = D.shape[0]  # batch rows: the reduction
        M = D.shape[1]  # output features
        N = X.shape[1]  # input features
        s = gemm(D, X, px, ox, M, N, 0, Kb, m0, n0, As, Bs, acc, tid, tx, ty)
        Nu = idx(N)  # unsigned element indices: no wraparound code in the epilogue
        for i in range(TM):
            m = idx(m0 + ty + TY * i)
            if m < M:
                for j in range(TN):
                    n = idx(n0 + tx + TX * j)
                    if n < Nu:
                        g = acc[i, j] * scale
                        if kind == OPT_NONE:
                            G[m, n] = g
                        else:
                            W[m, n] = update(kind, hp, m * Nu + n, g, W[m, n], VW, MW)
        if bx == 0:  # the bias
            total = finish_colsum(s, As, tid)
            m = idx(m0 + tid)
            if tid < BM and m < M:
                if kind == OPT_NONE:
                    gb[m] = total
                else:
                    b[m] = update(kind, hp, m, total, b[m], Vb, Mb)

    return device(named(tile, "weight_step_tile" + "_gather" * gather + "_prefetch" * prefetch))


def make(gather, prefetch=False):
    tile = make_tile(gather, prefetch)

    def k(D, X, px, ox, scale, kind, G, gb, W, b, VW, Vb, MW, Mb, hp):
        """C = D^T X (scaled) then, per ``kind``: OPT_NONE -> G <- C, gb <- colsum(D);
        otherwise the optimizer update of W (N, K) and b (N,) with gradient C / colsum(D),
        the gradient never written. D (B, N); X (B, K) maybe gathered; hp = float32
        hyper-parameters (lr, momentum, beta1, beta2, eps, step_size, inv_bc2_sqrt). State
        arrays VW/Vb (momentum buffer or Adam's exp_avg_sq) and MW/Mb (Adam's exp_avg) are
        unused (may be empty) otherwise."""
        As = cuda.shared.array((BK, PAD), float32)
        Bs = cuda.shared.array((BK, PAD), float32)
        acc = cuda.local.array((TM, TN), float32)
        tx, ty, tid, _, _ = this_thread()
        tile(cuda.blockIdx.x, cuda.blockIdx.y, D, X, px, ox, scale, kind, G, gb, W, b, VW, Vb,
             MW, Mb, hp, As, Bs, acc, tid, tx, ty)

    return named(k, "k_weight_step" + "_gather" * gather + "_prefetch" * prefetch)


def signature(x):
    return (f"void({F2}, {x}, {I1}, int64, float32, int64, {F2}, {F1}, {F2}, {F1}, "
            f"{F1}, {F1}, {F1}, {F1}, {F1})")


def variants(prefetch=False):
    return {f"{d}{'+gather' * g}": (make(g, prefetch), signature(x))
            for g in (False, True) for d, x in (("u8", U2), ("f32", F2))}


kernel = Kernel(variants())


def hparams(lr=0.0, momentum=0.0, beta1=0.0, beta2=0.0, eps=0.0, step_size=0.0,
            inv_bc2_sqrt=0.0):
    """The float32 hyper-parameter vector the fused weight steps read (copy it to the device)."""
    return np.array([lr, momentum, beta1, beta2, eps, step_size, inv_bc2_sqrt], np.float32)


def launch_weight_step(dZ, A, kind, G, gb, W, b, VW, Vb, MW, Mb, hp, perm, off, stream,
                       kernel=kernel):
    """The fused weight-step launch every public form below goes through."""
    N = dZ.shape[1]
    K = A.shape[1]
    kernel[key(A, perm)][grid(N, K), BLOCK, stream](
        dZ, A, perm_or_empty(perm), off, scale_of(A), kind, f32_or_empty(G, 2), f32_or_empty(gb),
        f32_or_empty(W, 2), f32_or_empty(b), *map(f32_or_empty, (VW, Vb, MW, Mb)), hp)


def weight_grad(dZ, A, G, gb, perm=None, off=0, stream=0):
    """G <- dZ^T A (N, K) and gb <- dZ.sum(0) (N,). A (B, K) uint8/float32, rows gathered
    through ``perm`` if given (else rows off..)."""
    hp = cuda.to_device(hparams(), stream=stream)
    launch_weight_step(dZ, A, OPT_NONE, G, gb, None, None, None, None, None, None, hp, perm,
                       off, stream)


def sgd_weight_step(dZ, A, W, b, lr, perm=None, off=0, stream=0, hp=None):
    """Plain SGD fused into the weight-gradient product: W <- W - lr dZ^T A, b <- b - lr sum(dZ).

    The gradient is never written to memory. ``hp`` may be a device copy of ``hparams(lr=lr)``
    (the engine keeps one, so that no host->device copy happens per step).
    """
    if hp is None:
        hp = cuda.to_device(hparams(lr=lr), stream=stream)
    launch_weight_step(dZ, A, OPT_SGD, None, None, W, b, None, None, None, None, hp, perm, off,
                       stream)


def momentum_weight_step(dZ, A, W, b, VW, Vb, lr, momentum, nesterov=False, perm=None, off=0,
                         stream=0, hp=None):
    """torch.optim.SGD with (Nesterov) momentum fused into the weight-gradient product.

    VW is the momentum buffer of W flattened ((N*K,) float32), Vb that of b."""
    if hp is None:
        hp = cuda.to_device(hparams(lr=lr, momentum=momentum), stream=stream)
    kind = OPT_NESTEROV if nesterov else OPT_MOMENTUM
    launch_weight_step(dZ, A, kind, None, None, W, b, VW, Vb, None, None, hp, perm, off, stream)


def adam_hparams(lr, t, beta1=0.9, beta2=0.999, eps=1e-8):
    """The float32 hyper-parameter vector of Adam's step t (bias corrections folded in)."""
    return hparams(lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                   step_size=lr / (1.0 - beta1**t), inv_bc2_sqrt=1.0 / math.sqrt(1.0 - beta2**t))


def adam_hparams_steps(lr, t0, n, beta1=0.9, beta2=0.999, eps=1e-8):
    """``adam_hparams`` of steps t0 .. t0 + n - 1 as one (n, 7) array: the same values,
    computed for a whole chunk of steps at once (the CUDA engine copies them in one transfer)."""
    t = np.arange(t0, t0 + n, dtype=np.float64)
    out = np.empty((n, 7), np.float32)
    out[:, :5] = hparams(lr=lr, beta1=beta1, beta2=beta2, eps=eps)[:5]
    out[:, 5] = lr / (1.0 - np.power(beta1, t))
    out[:, 6] = 1.0 / np.sqrt(1.0 - np.power(beta2, t))
    return out


def adam_weight_step(dZ, A, W, b, MW, Mb, VW, Vb, hp, perm=None, off=0, stream=0):
    """torch.optim.Adam fused into the weight-gradient product; ``hp`` a device copy of
    ``adam_hparams(lr, t, ...)``. MW/VW are exp_avg / exp_avg_sq of W flattened, Mb/Vb of b."""
    launch_weight_step(dZ, A, OPT_ADAM, None, None, W, b, VW, Vb, MW, Mb, hp, perm, off, stream)


def weight_step(kind, hp, update, stream=0):
    """One fused weight step: ``update`` = (dZ, A, W, b, VW, Vb, MW, Mb, perm, off) (VW/Vb the
    momentum buffer for momentum, None where the optimizer keeps no state); the same as
    ``sgd_/momentum_/adam_weight_step`` by ``kind`` (OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV,
    OPT_ADAM), ``hp`` its device hyper-parameter vector."""
    dZ, A, W, b, VW, Vb, MW, Mb, perm, off = update
    launch_weight_step(dZ, A, kind, None, None, W, b, VW, Vb, MW, Mb, hp, perm, off, stream)
