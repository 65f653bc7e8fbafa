"""CPU versions of the fused kernels: BLAS for the products, ``@njit`` epilogues on cache-hot tiles.

Each kernel computes exactly the function of the same name in ``kernels.reference`` (float64),
in float32, writing into caller-provided output arrays (so a training loop allocates nothing).
The products go to OpenBLAS ``sgemm`` (``kernels.blas.gemm``, called from inside ``@njit``),
and the bias, activation, loss gradient, column sums and optimizer updates are applied in one
pass over the product's output while it is still in cache: that pass is the "epilogue" of
CUTLASS / Triton, here on the CPU.

Shapes (PyTorch ``nn.Linear`` layout): X (B, K), W (N, K), b (N,), outputs (B, N).
All floating arrays are float32 and C-contiguous; X / T may also be uint8 pixels (scaled 1/255).

The scalar helpers (exponentials, Sigmoid, pixel scaling, compile options) are in ``cpu_math``;
the kernels with an activation or a loss epilogue (1-4) in ``cpu_hidden`` / ``cpu_output``,
compiled per (activation, loss); all re-exported here.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .blas import gemm
from .cpu_math import (_FAST, _as_float32, _exp_neg, _exp_neg32, _sigmoid,  # noqa: F401
                       _sigmoid32_and_slope, flush_subnormal, to_float, unit, wide_vectors)
from .optim import OPT_ADAM, OPT_NESTEROV, OPT_SGD, HyperParams
# kernels 1-4 (the products with an activation or a loss epilogue), re-exported
from .cpu_hidden import (LEAKY_RELU, activation_grad_, backward_activation,  # noqa: F401
                         backward_hidden, bias_activation_, bias_leaky_relu_, leaky_relu_grad_,
                         linear_activation, linear_leaky_relu)
from .cpu_output import (MSE, bias_sigmoid_, bias_sigmoid_eval_, bias_sigmoid_loss,  # noqa: F401
                         bias_sigmoid_loss_, bias_sigmoid_mse_, linear_sigmoid,
                         linear_sigmoid_eval, linear_sigmoid_loss, linear_sigmoid_loss_grad,
                         linear_sigmoid_mse)


@njit(inline="always", **_FAST)
def gather_row(src, out):
    """out <- src as float32 (one row of the batch gather; uint8 pixels scaled by 1/255)."""
    for j in range(src.shape[0]):
        out[j] = unit(src[j])


@njit(**_FAST)
def gather_rows(X, idx, out):
    """out[i] <- X[idx[i]] as float32 (the batch gather; uint8 pixels scaled by 1/255)."""
    wide_vectors()
    for i in range(idx.shape[0]):
        gather_row(X[idx[i]], out[i])


def declare_prefetch(builder):
    """(llvm.prefetch, i8*, i32) in ``builder``'s module: call it as fn(p, rw, locality, 1)
    (rw 0 read, 1 write; locality 3: every cache level; 1: data). declare_intrinsic mangles the
    name for this LLVM (p0i8 typed; newer LLVMs upgrade it)."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = builder.module.declare_intrinsic(
        "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
    return fn, i8p, i32


@intrinsic
def _prefetch(typingctx, arr, index):
    """A hint to bring element ``index`` of the C-contiguous ``arr`` (flat) into all cache
    levels (``llvm.prefetch``: read, locality 3); no effect on results, never faults."""
    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        fn, i8p, i32 = declare_prefetch(builder)
        builder.call(fn, [builder.bitcast(builder.gep(a.data, [args[1]]), i8p),
                          i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, types.intp), codegen


@njit(inline="always", **_FAST)
def prefetch_row(X, i):
    """Start loading row X[i] (C-contiguous X) into cache without waiting (one hint per 64-byte
    line)."""
    n = X.shape[1]
    flat = X.reshape(-1)
    base = i * n
    for k in range(0, n, 64):
        _prefetch(flat, base + k)
    _prefetch(flat, base + n - 1)


@njit(**_FAST)
def prefetch_rows(X, idx):
    """Start loading rows X[idx] into cache without waiting (one hint per 64-byte line).

    The training loop calls it for the *next* batch right after gathering this one: the
    dataset (47 MB of uint8) does not fit in cache (bench/RESULTS.md has the gather times)."""
    for i in range(idx.shape[0]):
        prefetch_row(X, idx[i])


@njit(**_FAST)
def column_sums(dZ, out, alpha, beta):
    """out <- beta * out + alpha * dZ.sum(axis=0), accumulated in float64."""
    wide_vectors()
    acc = np.zeros(dZ.shape[1], np.float64)
    for i in range(dZ.shape[0]):
        for j in range(dZ.shape[1]):
            acc[j] += dZ[i, j]
    if beta == 0.0:  # overwrite: never read out (it may hold garbage or NaN)
        for j in range(dZ.shape[1]):
            out[j] = alpha * acc[j]
    else:
        for j in range(dZ.shape[1]):
            out[j] = beta * out[j] + alpha * acc[j]


@njit(**_FAST)
def weight_grad(dZ, A, G, gb):
    """G <- dZ^T A (N, K) and gb <- dZ.sum(0) (N,). A may be uint8 pixels."""
    gemm(True, False, 1.0, dZ, _as_float32(A), 0.0, G)
    column_sums(dZ, gb, 1.0, 0.0)


@njit(cache=True, nogil=True)  # no fast-math: b - lr g rounds as written (no fused multiply-add)
def _bias_step(b, g, lr):
    for j in range(b.shape[0]):
        b[j] -= lr * g[j]


@njit(**_FAST)
def sgd_weight_step(dZ, A, W, b, lr, gsum=None):
    """Plain SGD fused into the weight-gradient product: W <- W - lr dZ^T A, b <- b - lr sum(dZ).

    One sgemm with alpha = -lr, beta = 1: the gradient G is never written to memory. ``gsum``:
    dZ's column sums (float64) when the caller has them (an epilogue summed them).
    """
    gemm(True, False, -lr, dZ, _as_float32(A), 1.0, W)
    if gsum is None:
        sums = np.empty(dZ.shape[1], np.float64)
        column_sums(dZ, sums, 1.0, 0.0)
        _bias_step(b, sums, lr)
    else:
        _bias_step(b, gsum, lr)


# --- kernel 5: optimizer updates --------------------------------------------------------------
# The momentum / Adam buffers go through flush_subnormal: a weight whose gradient is always 0 (a
# pixel that is 0 in every image) has its buffers decay geometrically towards subnormals, which
# x86 handles in microcode. The engine's loop flushes too (kernels/ftz.py); flushing here as
# well keeps the kernel's result the same whoever calls it.

# Serial loops (they vectorise): once per batch on at most 0.4M parameters, a parallel
# region's thread wake-up costs more than it saves.
@njit(**_FAST)
def sgd_update(W, G, lr, momentum, nesterov, V):
    """In place, torch.optim.SGD semantics (see reference.sgd_update). V is unused if momentum=0."""
    wide_vectors()
    w = W.reshape(-1)
    g = G.reshape(-1)
    v = V.reshape(-1)
    lr = np.float32(lr)
    mu = np.float32(momentum)
    if momentum == 0.0:
        for i in range(w.size):
            w[i] -= lr * g[i]
    elif nesterov:
        for i in range(w.size):
            vi = flush_subnormal(mu * v[i] + g[i])
            v[i] = vi
            w[i] -= lr * (g[i] + mu * vi)
    else:
        for i in range(w.size):
            vi = flush_subnormal(mu * v[i] + g[i])
            v[i] = vi
            w[i] -= lr * vi


@njit(**_FAST)
def adam_update(W, G, M, V, lr, t, beta1, beta2, eps):
    """In place, torch.optim.Adam semantics at step t >= 1 (see reference.adam_update)."""
    wide_vectors()
    w = W.reshape(-1)
    g = G.reshape(-1)
    m = M.reshape(-1)
    v = V.reshape(-1)
    step = np.float32(lr / (1.0 - beta1**t))
    inv_bc2_sqrt = np.float32(1.0 / math.sqrt(1.0 - beta2**t))
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    e = np.float32(eps)
    for i in range(w.size):
        gi = g[i]
        mi = flush_subnormal(b1 * m[i] + (np.float32(1.0) - b1) * gi)
        vi = flush_subnormal(b2 * v[i] + (np.float32(1.0) - b2) * gi * gi)
        m[i] = mi
        v[i] = vi
        w[i] -= step * mi / (math.sqrt(vi) * inv_bc2_sqrt + e)


@njit(cache=True, nogil=True)
def optimizer_update(kind, hp, t, W, G, V, M):
    """One parameter's update from its gradient G, in place: ``kind`` OPT_MOMENTUM /
    OPT_NESTEROV (sgd_update, V the momentum buffer) or OPT_ADAM (adam_update at step t, M
    exp_avg, V exp_avg_sq); ``hp`` a kernels.optim.HyperParams."""
    if kind == OPT_ADAM:
        adam_update(W, G, M, V, np.float32(hp.lr), t, hp.beta1, hp.beta2, hp.eps)
    else:
        sgd_update(W, G, np.float32(hp.lr), np.float32(hp.momentum), kind == OPT_NESTEROV, V)


@njit(cache=True, nogil=True, inline="always")
def with_lr(hp, lr):
    """``hp`` (HyperParams) with the learning rate ``lr``: one step of a schedule."""
    return HyperParams(lr, hp.momentum, hp.beta1, hp.beta2, hp.eps)


# No fast-math: gb's float32 copy of gsum and SGD's bias step round as written.
@njit(cache=True, nogil=True)
def weight_step(kind, hp, t, dZ, A, W, b, gsum, VW, Vb, MW, Mb, G, gb):
    """One optimizer step of a layer (kernel 5): W's gradient is dZ^T A, b's is ``gsum`` (dZ's
    column sums in float64, as linear_sigmoid_mse / backward_hidden leave them).

    ``kind``, ``hp`` (HyperParams), buffers (VW, Vb, MW, Mb) as in kernels/optim.py; ``t`` the
    step number (Adam's, from 1). OPT_SGD: sgd_weight_step, the update fused into the product
    (G, gb and the buffers unused). Otherwise G <- dZ^T A and gb <- gsum (float32 scratch of
    W's and b's shapes), then optimizer_update of W and of b.
    """
    lr = np.float32(hp.lr)
    if kind == OPT_SGD:
        sgd_weight_step(dZ, A, W, b, lr, gsum)
    else:
        gemm(True, False, 1.0, dZ, A, 0.0, G)
        gb[:] = gsum
        optimizer_update(kind, hp, t, W, G, VW, MW)
        optimizer_update(kind, hp, t, b, gb, Vb, Mb)
