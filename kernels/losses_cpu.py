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
        z[j] = g if abs(g) >= _FLT_MIN else 0
    total += float64(rowf); total_sq += float64(rows if SQ else rowf)

``mse``'s terms are today's expressions in today's order (``d = y - t``, ``d * d``,
``scale * d * slope``), and with one accumulator (``SQ`` False) this template reproduces
today's ``bias_sigmoid_mse_`` bit for bit (tests/test_losses.py runs it); with a second
accumulator the float32 row sum vectorized differently and the loss sum changed in its last bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cpu import _FAST, _exp_neg32, _sigmoid32_and_slope
from .losses_reference import face_selector

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
