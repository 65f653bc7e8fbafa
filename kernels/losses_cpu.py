"""Output losses for the @njit CPU epilogue: scalar float32 functions, inlined.

Definitions and conventions in ``losses_reference``. ``point = loss_point(name)`` is
``point(z, t, scale) -> (loss, squared error, dZ)`` for one element: ``z`` the logit (product
plus bias), ``t`` the float32 target (``unit(T[i, j])``), ``scale`` the float32
``grad_scale(name, B * N)``. The fused epilogue (today's ``bias_sigmoid_mse_``) becomes::

    rowf = 0; rows = 0                      # float32 row sums, float64 totals, as today
    for j in range(z.shape[0]):
        loss, sq, g = point(z[j] + b[j], unit(t[j]), s32)
        rowf += loss
        if SQ: rows += sq                   # SQ = needs_squared_error(name), a closure constant
        z[j] = flush_subnormal(g)           # subnormal -> 0, NaN stays NaN
    total += float64(rowf); total_sq += float64(rows if SQ else rowf)

``mse``'s terms are today's expressions in today's order (``d = y - t``, ``d * d``,
``scale * d * slope``), and with one accumulator (``SQ`` False) this template reproduces
today's ``bias_sigmoid_mse_`` bit for bit (tests/test_losses.py runs it); with a second
accumulator the float32 row sum vectorized differently and the loss sum changed in its last bits.
"""

from __future__ import annotations

import numpy as np
import math

from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import overload

from .cpu_math import _FAST, _exp_neg, _exp_neg32, _sigmoid, _sigmoid32_and_slope, unit
from .losses_reference import GRAD_FACTOR, LOSSES, check_loss, face_selector, needs_squared_error

_0 = np.float32(0.0)
_1 = np.float32(1.0)
_2 = np.float32(2.0)
_M1 = np.float32(-1.0)


@njit(inline="always", **_FAST)
def _log1p_unit32(e):
    """log1p(e) in float32 for e in [0, 1]: 2 atanh(s), s = e / (2 + e) <= 1/3, by its odd
    series to s^15 (truncation < 2e-9 relative); no cancellation for small e."""
    s = e / (_2 + e)
    s2 = s * s
    return _2 * s * (_1 + s2 * (np.float32(1 / 3) + s2 * (np.float32(1 / 5) + s2 * (
        np.float32(1 / 7) + s2 * (np.float32(1 / 9) + s2 * (np.float32(1 / 11) + s2 * (
            np.float32(1 / 13) + s2 * np.float32(1 / 15))))))))


@njit(inline="always", **_FAST)
def mse(z, t, scale):
    y, slope = _sigmoid32_and_slope(z)
    d = y - t
    sq = d * d
    return sq, sq, scale * d * slope


@njit(inline="always", **_FAST)
def bce(z, t, scale):
    """Stable from the logit: max(z, 0) - z t + log1p(exp(-|z|)), the first two terms as
    (1 - t) z or -t z (no cancellation: for t in [0, 1] every term is >= 0); dZ = scale (y - t)."""
    e = _exp_neg32(-abs(z))
    r = _1 / (_1 + e)
    y = r if z >= _0 else e * r
    d = y - t
    loss = ((_1 - t) * z if z > _0 else -t * z) + _log1p_unit32(e)
    return loss, d * d, scale * d


@njit(inline="always", **_FAST)
def l1(z, t, scale):
    """|y - t|; dZ = scale sign(y - t) y (1 - y), sign(0) = 0 (torch); NaN stays NaN."""
    y, slope = _sigmoid32_and_slope(z)
    d = y - t
    sign = _1 if d > _0 else (_M1 if d < _0 else d)
    return abs(d), d * d, scale * sign * slope


loss_point = face_selector(globals())


# --- compile-time selection by number: what the fused kernels call --------------------------
# As activations_cpu's: the kernels take the loss as a literal integer argument.
def code(name: str) -> int:
    """The number the kernels take for loss ``name``."""
    return LOSSES.index(check_loss(name))


def _literal_name(loss) -> str:
    if not isinstance(loss, types.IntegerLiteral):
        raise TypingError("the loss must be a compile-time literal (numba.literally)")
    return LOSSES[loss.literal_value]


def point(loss, z, t, scale):
    """``(loss, (y - t)^2, dZ)`` in float32 of loss number ``loss`` (@njit only)."""
    raise NotImplementedError("only callable from @njit code")


def sums_squared_error(loss):
    """True (a compile-time constant) when loss ``loss`` is not the squared error, so the
    epilogue keeps a second sum (@njit only)."""
    raise NotImplementedError("only callable from @njit code")


def grad_factor(loss):
    """The mean loss's gradient factor (2 for mse, 1 otherwise; @njit only)."""
    raise NotImplementedError("only callable from @njit code")


def eval_terms(loss, z, t):
    """``(loss, (y - t)^2)`` in float64 for the logit z and pixel t (evaluation; @njit only)."""
    raise NotImplementedError("only callable from @njit code")


@overload(point, inline="always")
def _point(loss, z, t, scale):
    fn = loss_point(_literal_name(loss))
    return lambda loss, z, t, scale: fn(z, t, scale)


@overload(sums_squared_error, inline="always")
def _sums_squared_error(loss):
    if needs_squared_error(_literal_name(loss)):
        return lambda loss: True
    return lambda loss: False


@overload(grad_factor, inline="always")
def _grad_factor(loss):
    factor = float(GRAD_FACTOR[_literal_name(loss)])
    return lambda loss: factor


@njit(inline="always", **_FAST)
def _mse64(z, t):
    d = _sigmoid(np.float64(z)) - np.float64(unit(t))  # today's evaluation, as written
    return d * d, d * d


@njit(inline="always", **_FAST)
def _bce64(z, t):
    z = np.float64(z)
    tt = np.float64(unit(t))
    e = _exp_neg(-abs(z))
    d = (1.0 if z >= 0.0 else e) / (1.0 + e) - tt
    return ((1.0 - tt) * z if z > 0.0 else -tt * z) + math.log1p(e), d * d


@njit(inline="always", **_FAST)
def _l164(z, t):
    d = _sigmoid(np.float64(z)) - np.float64(unit(t))
    return abs(d), d * d


_EVAL = {"mse": _mse64, "bce": _bce64, "l1": _l164}


@overload(eval_terms, inline="always")
def _eval_terms(loss, z, t):
    fn = _EVAL[_literal_name(loss)]
    return lambda loss, z, t: fn(z, t)
