"""CPU versions of the fused kernels: BLAS for the products, ``@njit`` epilogues on cache-hot tiles.

Each kernel computes exactly the function of the same name in ``kernels.reference`` (float64),
in float32, writing into caller-provided output arrays (so a training loop allocates nothing).
The products go to OpenBLAS ``sgemm`` (``kernels.blas.gemm``, called from inside ``@njit``),
and the bias, activation, loss gradient, column sums and optimizer updates are applied in one
pass over the product's output while it is still in cache: that pass is the "epilogue" of
CUTLASS / Triton, here on the CPU.

Shapes (PyTorch ``nn.Linear`` layout): X (B, K), W (N, K), b (N,), outputs (B, N).
All floating arrays are float32 and C-contiguous; X / T may also be uint8 pixels (scaled 1/255).

Why a hand-written ``exp``: numba lowers ``math.exp`` to a scalar libm call, which does not
vectorize. ``_exp_neg`` is a Cody-Waite range reduction plus a polynomial, with 2^n built from
the exponent bits: plain arithmetic, so LLVM vectorizes it (AVX2 / AVX-512).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from . import PIXEL_SCALE
from .blas import gemm
from .optim import OPT_ADAM, OPT_NESTEROV, OPT_SGD, HyperParams

_PIXEL_SCALE_F32 = np.float32(PIXEL_SCALE)  # a float32 constant: uint8 * it stays float32
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453

# Fast-math without 'nnan'/'ninf': a NaN must stay a NaN (that is how divergence is caught).
# 'reassoc' lets the reductions vectorize; it is harmless in _exp_neg, whose range reduction
# runs in float64 where x - n*ln2 stays exact to ~1e-16 in any order.
# error_model="numpy": no ZeroDivisionError check on every float division (it stops the
# Sigmoid epilogue from vectorizing).
_FAST = dict(cache=True, fastmath={"contract", "reassoc", "nsz", "arcp", "afn"}, nogil=True,
             error_model="numpy")
_FLT_MIN = np.float32(1.1754944e-38)  # smallest normal float32


@njit(inline="always", **_FAST)
def _exp_neg(x):
    """exp(x) for float64 x <= 0 (x is clamped at -700; relative error ~1e-9; NaN stays NaN)."""
    x = -700.0 if x < -700.0 else x
    n = math.floor(x * _LOG2E + 0.5)
    r = x - n * _LN2
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (
        1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040)))))))
    bits = np.int64((np.int64(n) + 1023) << 52)
    return p * bits.view(np.float64)


@njit(inline="always", **_FAST)
def _sigmoid(z):
    """Safe logistic: exp is only ever taken of -|z|."""
    e = _exp_neg(-abs(z))
    return (1.0 if z >= 0.0 else e) / (1.0 + e)


_F32_LOG2E = np.float32(1.4426950408889634)
_F32_LN2_HI = np.float32(0.693145751953125)  # ln 2 split for Cody-Waite: hi has 12 bits,
_F32_LN2_LO = np.float32(1.428606765330187e-06)  # so n * hi is exact for |n| < 2^12


@njit(inline="always", **_FAST)
def _exp_neg32(x):
    """exp(x) in float32 for x <= 0 (clamped at -87, where exp is ~1.6e-38; relative error
    ~2e-7; NaN stays NaN). 16 lanes per AVX-512 instruction instead of float64's 8."""
    x = np.float32(-87.0) if x < np.float32(-87.0) else x
    # np.floor, not math.floor: numba's math.floor returns an int64, which turns the rest into
    # float64 (bench/RESULTS.md)
    n = np.floor(x * _F32_LOG2E + np.float32(0.5))
    r = (x - n * _F32_LN2_HI) - n * _F32_LN2_LO
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (
        np.float32(1.0 / 6) + r * (np.float32(1.0 / 24) + r * (
            np.float32(1.0 / 120) + r * np.float32(1.0 / 720))))))
    bits = np.int32((np.int32(n) + 127) << 23)
    return p * bits.view(np.float32)


@njit(inline="always", **_FAST)
def _sigmoid32_and_slope(z):
    """(y, y (1 - y)) for y = sigmoid(z), safe and accurate in float32: with e = exp(-|z|) and
    r = 1 / (1 + e), y is r or e r, and y (1 - y) = e r^2 on both sides. (1 - y computed from a
    float32 y is 0 for z > ~17, where the true slope is still ~e.)"""
    e = _exp_neg32(-abs(z))
    r = np.float32(1.0) / (np.float32(1.0) + e)
    er = e * r
    return (r if z >= np.float32(0.0) else er), er * r


def unit(v):
    """A pixel as a float in [0, 1]: integers (uint8) are scaled by 1/255, floats pass through."""
    raise NotImplementedError("only callable from @njit code")


@overload(unit, inline="always")
def _unit(v):
    if isinstance(v, types.Integer):
        return lambda v: np.float32(v) * _PIXEL_SCALE_F32
    return lambda v: v


@njit(**_FAST)
def to_float(X, out):
    """out <- X as float32 (uint8 pixels scaled by 1/255; float32 copied)."""
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            out[i, j] = unit(X[i, j])


@njit(**_FAST)
def gather_rows(X, idx, out):
    """out[i] <- X[idx[i]] as float32 (the batch gather; uint8 pixels scaled by 1/255)."""
    for i in range(idx.shape[0]):
        src = X[idx[i]]
        for j in range(X.shape[1]):
            out[i, j] = unit(src[j])


@intrinsic
def _prefetch(typingctx, arr, index):
    """A hint to bring element ``index`` of the C-contiguous ``arr`` (flat) into all cache
    levels (``llvm.prefetch``: read, locality 3); no effect on results, never faults."""
    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        # declare_intrinsic mangles the name for this LLVM (p0i8 typed; newer LLVMs upgrade it)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        builder.call(fn, [builder.bitcast(builder.gep(a.data, [args[1]]), i8p),
                          i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, types.intp), codegen


@njit(**_FAST)
def prefetch_rows(X, idx):
    """Start loading rows X[idx] into cache without waiting (one hint per 64-byte line).

    The training loop calls it for the *next* batch right after gathering this one: the
    dataset (47 MB of uint8) does not fit in cache (bench/RESULTS.md has the gather times)."""
    n = X.shape[1]
    flat = X.reshape(-1)
    for i in range(idx.shape[0]):
        base = idx[i] * n
        for k in range(0, n, 64):
            _prefetch(flat, base + k)
        _prefetch(flat, base + n - 1)


def _as_float32(X):
    """X as float32: float32 arrays as they are, uint8 pixels as a scaled copy (@njit only)."""
    raise NotImplementedError("only callable from @njit code")


@overload(_as_float32)
def _as_float32_impl(X):
    if X.dtype == types.float32:
        return lambda X: X

    def convert(X):
        out = np.empty(X.shape, np.float32)
        to_float(X, out)
        return out
    return convert


# --- kernel 1: matmul + bias + LeakyReLU ------------------------------------------------------
@njit(**_FAST)
def bias_leaky_relu_(Z, b, slope):
    """Epilogue of kernel 1, in place: Z <- leaky_relu(Z + b)."""
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            z = Z[i, j] + b[j]
            Z[i, j] = z if z > 0 else z * slope


@njit(**_FAST)
def linear_leaky_relu(X, W, b, H, slope=0.01):
    """H <- leaky_relu(X W^T + b). X (B, K) float32 or uint8; W (N, K); b (N,); H (B, N)."""
    gemm(False, True, 1.0, _as_float32(X), W, 0.0, H)
    bias_leaky_relu_(H, b, np.float32(slope))


# --- kernel 2 (+3): matmul + bias + Sigmoid (+ MSE gradient) ----------------------------------
@njit(**_FAST)
def bias_sigmoid_(Z, b):
    """Epilogue of kernel 2, in place: Z <- sigmoid(Z + b)."""
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] = _sigmoid(np.float64(Z[i, j] + b[j]))


@njit(**_FAST)
def bias_sigmoid_mse_(Z, b, T, scale, Y, colsum):
    """Epilogue of kernels 2+3, in place: Z <- dZ = scale*(y-t)*y*(1-y), y = sigmoid(Z + b).

    T: (B, N) uint8 pixels or float32 targets. Writes y to Y when Y has rows (pass a (0, N)
    array to skip). When ``colsum`` (float64, (N,)) has elements, dZ's column sums (the bias
    gradient) are added to it. Returns sum((y - t)^2) in float64.

    The inner loop has no branches, so it vectorizes; the optional outputs are extra passes
    over the row just written, which is still in L1.
    """
    write_y = Y.shape[0] > 0
    sum_cols = colsum.shape[0] > 0
    s32 = np.float32(scale)
    total = 0.0
    for i in range(Z.shape[0]):
        z = Z[i]
        t = T[i]
        if write_y:
            yrow = Y[i]
            for j in range(z.shape[0]):
                yrow[j] = _sigmoid32_and_slope(z[j] + b[j])[0]
        rowf = np.float32(0.0)
        for j in range(z.shape[0]):
            y, slope = _sigmoid32_and_slope(z[j] + b[j])
            d = y - unit(t[j])
            rowf += d * d
            g = s32 * d * slope
            # flush what would be a float32 subnormal to 0, as the CUDA kernels do (-ftz): a
            # trained model's background pixels have y ~ 1e-18, so g ~ 1e-40, and subnormal
            # operands take a slow path in the two sgemms that read dZ
            z[j] = g if abs(g) >= _FLT_MIN else np.float32(0.0)
        row = np.float64(rowf)
        if sum_cols:
            for j in range(z.shape[0]):
                colsum[j] += z[j]
        total += row
    return total


@njit(**_FAST)
def bias_sigmoid_loss(Z, b, T):
    """sum((sigmoid(Z + b) - T)^2) in float64, without writing anything (evaluation)."""
    total = 0.0
    for i in range(Z.shape[0]):
        row = 0.0
        for j in range(Z.shape[1]):
            d = _sigmoid(np.float64(Z[i, j] + b[j])) - np.float64(unit(T[i, j]))
            row += d * d
        total += row
    return total


@njit(**_FAST)
def linear_sigmoid(H, W, b, Y):
    """Y <- sigmoid(H W^T + b). H (B, K); W (N, K); b (N,); Y (B, N)."""
    gemm(False, True, 1.0, _as_float32(H), W, 0.0, Y)
    bias_sigmoid_(Y, b)


@njit(**_FAST)
def linear_sigmoid_mse(H, W, b, T, dZ, Y=None, colsum=None):
    """Kernels 2+3 fused: dZ <- 2/(B*N) (y - T) y (1 - y), y = sigmoid(H W^T + b).

    Returns the batch's loss sum, sum((y - T)^2), in float64. Y (B, N) receives y if given;
    otherwise y is never written to memory. ``colsum`` ((N,) float64), if given, receives dZ's
    column sums (the bias gradient) from the same pass.
    """
    gemm(False, True, 1.0, _as_float32(H), W, 0.0, dZ)
    scale = 2.0 / (dZ.shape[0] * dZ.shape[1])
    # (numba resolves each `is None` when it compiles: no branch at run time)
    y = np.empty((0, dZ.shape[1]), np.float32) if Y is None else Y
    sums = np.empty(0, np.float64) if colsum is None else colsum
    sums[:] = 0.0
    return bias_sigmoid_mse_(dZ, b, T, scale, y, sums)


@njit(**_FAST)
def linear_sigmoid_loss(H, W, b, T, Z):
    """sum((sigmoid(H W^T + b) - T)^2) in float64 (evaluation: no gradient); Z (B, N) is
    scratch for the product."""
    gemm(False, True, 1.0, H, W, 0.0, Z)
    return bias_sigmoid_loss(Z, b, T)


# --- kernel 4: the backward products ----------------------------------------------------------
@njit(**_FAST)
def leaky_relu_grad_(dH, H, slope, colsum):
    """Epilogue of the dH product, in place: dH <- dH * leaky_relu'(H), read off H's sign.

    When ``colsum`` (float64, (K,)) has elements, dH's column sums are added to it.
    """
    sum_cols = colsum.shape[0] > 0
    for i in range(dH.shape[0]):
        g = dH[i]
        h = H[i]
        for j in range(g.shape[0]):
            g[j] = g[j] if h[j] > 0 else g[j] * slope
        if sum_cols:
            for j in range(g.shape[0]):
                colsum[j] += g[j]


@njit(**_FAST)
def backward_hidden(dZ, W2, H, dH, slope=0.01, colsum=None):
    """dH <- (dZ W2) * leaky_relu'(H). dZ (B, N); W2 (N, K); H, dH (B, K). ``colsum`` ((K,)
    float64), if given, receives dH's column sums (the bias gradient) from the same pass."""
    gemm(False, False, 1.0, dZ, W2, 0.0, dH)
    sums = np.empty(0, np.float64) if colsum is None else colsum
    sums[:] = 0.0
    leaky_relu_grad_(dH, H, np.float32(slope), sums)


@njit(**_FAST)
def column_sums(dZ, out, alpha, beta):
    """out <- beta * out + alpha * dZ.sum(axis=0), accumulated in float64."""
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
@njit(inline="always", **_FAST)
def _ftz(x):
    """x, or 0 where |x| is subnormal. A weight whose gradient is always 0 (a pixel that is 0
    in every image) has its momentum / Adam buffers decay geometrically towards subnormals,
    which x86 handles in microcode. The CUDA kernels flush to zero too (fast-math: -ftz=1), and
    so does the engine's loop (kernels/ftz.py); flushing here as well keeps the kernel's result
    the same whoever calls it."""
    return x if abs(x) >= _FLT_MIN else np.float32(0.0)


# Serial loops (they vectorise): once per batch on at most 0.4M parameters, a parallel
# region's thread wake-up costs more than it saves.
@njit(**_FAST)
def sgd_update(W, G, lr, momentum, nesterov, V):
    """In place, torch.optim.SGD semantics (see reference.sgd_update). V is unused if momentum=0."""
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
            vi = _ftz(mu * v[i] + g[i])
            v[i] = vi
            w[i] -= lr * (g[i] + mu * vi)
    else:
        for i in range(w.size):
            vi = _ftz(mu * v[i] + g[i])
            v[i] = vi
            w[i] -= lr * vi


@njit(**_FAST)
def adam_update(W, G, M, V, lr, t, beta1, beta2, eps):
    """In place, torch.optim.Adam semantics at step t >= 1 (see reference.adam_update)."""
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
        mi = _ftz(b1 * m[i] + (np.float32(1.0) - b1) * gi)
        vi = _ftz(b2 * v[i] + (np.float32(1.0) - b2) * gi * gi)
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
