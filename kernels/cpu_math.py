"""The scalar float helpers every @njit CPU kernel inlines: the compile options, the vectorizable
exponentials and Sigmoid, the uint8 pixel scaling.

Why a hand-written ``exp``: numba lowers ``math.exp`` to a scalar libm call, which does not
vectorize. ``_exp_neg`` is a Cody-Waite range reduction plus a polynomial, with 2^n built from
the exponent bits: plain arithmetic, so LLVM vectorizes it (AVX2 / AVX-512).

(Split out of ``kernels.cpu``, which re-exports these names, so that the activation and loss
faces, which need them, and the fused kernels, which need those faces, import without a cycle.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

from . import PIXEL_SCALE

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
def flush_subnormal(x):
    """x, or 0 where |x| is a float32 subnormal; a NaN stays a NaN. The CUDA kernels flush
    subnormals too (fast-math: -ftz=1), and keep NaN. Written as ``|x| < FLT_MIN``, not
    ``|x| >= FLT_MIN``: a NaN fails every comparison, so the second form stored it as 0."""
    return np.float32(0.0) if abs(x) < _FLT_MIN else x


# LLVM's own string attribute: the widest vectors its loop vectorizer may use in that function
_WIDE = '"prefer-vector-width"="512"'


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorize the calling function with 512-bit registers where the CPU has them.

    LLVM's tuning for Intel's AVX-512 server cores (Skylake-X to Sapphire Rapids, `rocketlake`)
    prefers 256-bit vectors, so numba's loops there use half the lanes the CPU has; AMD's Zen 4
    and 5 already get 512. This adds the function attribute clang sets for
    ``-mprefer-vector-width=512`` to the one function being compiled. A call costs nothing at
    run time and changes no element's bits (every lane computes what it did); what changes is
    the order of a fast-math sum across lanes (a loss total) in its last bits. Where the CPU
    has no AVX-512 the widest vectors stay 256-bit. Measured on an AVX-512 Xeon: the Sigmoid +
    MSE epilogue in 0.78-0.81x the time (bench/RESULTS.md, session 11).

    The epilogue kernels call it first thing. (llvmlite's attribute set only knows LLVM's
    keyword attributes, so the string attribute goes into the underlying set; tested in
    tests/test_wide_vectors.py.)
    """
    def codegen(context, builder, sig, args):
        try:
            set.add(builder.function.attributes, _WIDE)
        except TypeError:  # an llvmlite whose attributes are no set: LLVM's default width
            pass
        return context.get_dummy_value()

    return types.none(), codegen


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
    wide_vectors()
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            out[i, j] = unit(X[i, j])


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

