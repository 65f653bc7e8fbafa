"""Kernels 2 (+3) on the CPU, for any loss: ``y = sigmoid(H W^T + b)`` with the loss's gradient
``dZ`` and its sum in the sgemm's epilogue (training), the loss alone (evaluation), or y alone
(reconstructions).

``loss`` is the loss's number (``losses_cpu.code(name)``), a compile-time literal as
``cpu_hidden``'s ``act``: ``mse`` (number 0) compiles to the expressions of the kernels before
losses were a choice (tests/test_golden_cpu.py). Every loss function returns
``(loss sum, squared-error sum)`` in float64; for mse they are the same sum (one accumulator,
as before), for the others the epilogue keeps a second one, so MSE is always reported.
"""

from __future__ import annotations

import numpy as np
from numba import literally, njit

from .blas import gemm
from .cpu_math import (_FAST, _as_float32, _sigmoid, _sigmoid32_and_slope, flush_subnormal,
                       unit, wide_vectors)
from .losses_cpu import code, eval_terms, grad_factor, point, sums_squared_error

MSE = code("mse")


@njit(**_FAST)
def bias_sigmoid_(Z, b):
    """Epilogue of kernel 2, in place: Z <- sigmoid(Z + b)."""
    wide_vectors()
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] = _sigmoid(np.float64(Z[i, j] + b[j]))


@njit(**_FAST)
def linear_sigmoid(H, W, b, Y):
    """Y <- sigmoid(H W^T + b). H (B, K); W (N, K); b (N,); Y (B, N)."""
    gemm(False, True, 1.0, _as_float32(H), W, 0.0, Y)
    bias_sigmoid_(Y, b)


@njit(**_FAST)
def sigmoid_loss_row_(z, b, t, s32, yrow, colsum, loss):
    """One row of ``bias_sigmoid_loss_``, in place: z <- dZ = s32 * g, g the loss's gradient at
    the logit z + b. z float32 (N,); t (N,) uint8 pixels or float32 targets; s32 the float32
    scale. Writes y to ``yrow`` when it has elements, adds dZ to ``colsum`` (float64) when it
    has elements. Returns (loss sum, squared-error sum) of the row: float32 sums, widened (for
    mse, whose squared error is its loss, the same sum twice).

    A row is a call of its own so that the paired epilogue (``blas_pair``) can interleave its
    rows with the next batch's gather: calling the 2-D ``bias_sigmoid_loss_`` once per row
    cost ~190 ns a row, a fifth of the row's arithmetic (bench/RESULTS.md, session 12).
    """
    wide_vectors()
    if yrow.shape[0] > 0:
        for j in range(z.shape[0]):
            yrow[j] = _sigmoid32_and_slope(z[j] + b[j])[0]
    rowf = np.float32(0.0)
    rows = np.float32(0.0)
    for j in range(z.shape[0]):
        e, sq, g = point(loss, z[j] + b[j], unit(t[j]), s32)
        rowf += e
        if sums_squared_error(loss):
            rows += sq
        # flush what would be a float32 subnormal to 0, as the CUDA kernels do (-ftz): a
        # trained model's background pixels have y ~ 1e-18, so g ~ 1e-40, and subnormal
        # operands take a slow path in the two sgemms that read dZ (a NaN stays a NaN)
        z[j] = flush_subnormal(g)
    if colsum.shape[0] > 0:
        for j in range(z.shape[0]):
            colsum[j] += z[j]
    return np.float64(rowf), np.float64(rows if sums_squared_error(loss) else rowf)


@njit(**_FAST)
def bias_sigmoid_loss_(Z, b, T, scale, Y, colsum, loss):
    """Epilogue of kernels 2+3, in place: Z <- dZ = scale * g, g the loss's gradient at the
    logit Z + b (mse: (y - t) y (1 - y)). T: (B, N) uint8 pixels or float32 targets. Writes y
    to Y when Y has rows (pass a (0, N) array to skip); adds dZ's column sums to ``colsum``
    (float64, (N,)) when it has elements. Returns (loss sum, squared-error sum) in float64.

    The inner loops (``sigmoid_loss_row_``) have no branches, so they vectorize; the optional
    outputs are extra passes over the row just written, which is still in L1.
    """
    wide_vectors()  # for the row kernel where LLVM inlines it here
    s32 = np.float32(scale)
    no_y = b[:0]
    total = 0.0
    total_sq = 0.0
    for i in range(Z.shape[0]):
        row, row_sq = sigmoid_loss_row_(Z[i], b, T[i], s32, Y[i] if Y.shape[0] > 0 else no_y,
                                        colsum, loss)
        total += row
        total_sq += row_sq
    return total, total_sq


@njit(**_FAST)
def linear_sigmoid_loss_grad(H, W, b, T, dZ, Y, colsum, loss):
    """Kernels 2+3 fused: dZ <- the mean loss's gradient at the logits H W^T + b (mse:
    2/(B*N) (y - T) y (1 - y)). Returns (loss sum, squared-error sum) in float64. Y (B, N)
    receives y when it has rows; ``colsum`` ((N,) float64, or empty) dZ's column sums."""
    gemm(False, True, 1.0, _as_float32(H), W, 0.0, dZ)
    scale = grad_factor(literally(loss)) / (dZ.shape[0] * dZ.shape[1])
    colsum[:] = 0.0
    return bias_sigmoid_loss_(dZ, b, T, scale, Y, colsum, loss)


@njit(**_FAST)
def bias_sigmoid_mse_(Z, b, T, scale, Y, colsum):
    """bias_sigmoid_loss_ for mse; returns sum((y - t)^2) in float64."""
    return bias_sigmoid_loss_(Z, b, T, scale, Y, colsum, MSE)[0]


@njit(**_FAST)
def linear_sigmoid_mse(H, W, b, T, dZ, Y=None, colsum=None):
    """Kernels 2+3 fused for mse: dZ <- 2/(B*N) (y - T) y (1 - y), y = sigmoid(H W^T + b).

    Returns the batch's loss sum, sum((y - T)^2), in float64. Y (B, N) receives y if given;
    otherwise y is never written to memory. ``colsum`` ((N,) float64), if given, receives dZ's
    column sums (the bias gradient) from the same pass.
    """
    # (numba resolves each `is None` when it compiles: no branch at run time)
    y = np.empty((0, dZ.shape[1]), np.float32) if Y is None else Y
    sums = np.empty(0, np.float64) if colsum is None else colsum
    return linear_sigmoid_loss_grad(H, W, b, T, dZ, y, sums, MSE)[0]


# --- evaluation: the loss without a gradient ---------------------------------------------------
@njit(**_FAST)
def bias_sigmoid_eval_(Z, b, T, loss):
    """(loss sum, squared-error sum) of sigmoid(Z + b) against T in float64, writing nothing."""
    wide_vectors()
    total = 0.0
    total_sq = 0.0
    for i in range(Z.shape[0]):
        row = 0.0
        rows = 0.0
        for j in range(Z.shape[1]):
            e, sq = eval_terms(loss, Z[i, j] + b[j], T[i, j])
            row += e
            if sums_squared_error(loss):
                rows += sq
        total += row
        if sums_squared_error(loss):
            total_sq += rows
    return total, (total_sq if sums_squared_error(loss) else total)


@njit(**_FAST)
def linear_sigmoid_eval(H, W, b, T, Z, loss):
    """(loss sum, squared-error sum) of sigmoid(H W^T + b) against T (evaluation: no
    gradient); Z (B, N) is scratch for the product."""
    gemm(False, True, 1.0, H, W, 0.0, Z)
    return bias_sigmoid_eval_(Z, b, T, literally(loss))


@njit(**_FAST)
def bias_sigmoid_loss(Z, b, T):
    """sum((sigmoid(Z + b) - T)^2) in float64, without writing anything (evaluation)."""
    return bias_sigmoid_eval_(Z, b, T, MSE)[0]


@njit(**_FAST)
def linear_sigmoid_loss(H, W, b, T, Z):
    """sum((sigmoid(H W^T + b) - T)^2) in float64 (evaluation: no gradient); Z (B, N) is
    scratch for the product."""
    return linear_sigmoid_eval(H, W, b, T, Z, MSE)[0]
