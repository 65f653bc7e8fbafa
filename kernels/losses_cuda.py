"""Output losses for the CUDA epilogue: float32 device functions, force-inlined.

Definitions and conventions in ``losses_reference``; the same signature as ``losses_cpu``:
``point(z, t, scale) -> (loss, (y - t)^2, dZ)``. The output kernel's epilogue
(``loss_epilogue`` in ``kernels/cuda/fused_linear_sigmoid.py``, mse's included) is, with
``point = loss_point(name)`` closed over by the factory::

    loss_e, sq, g = point(acc[i, j] + b[n], float32(T[src, n]) * tscale, dscale)
    part += float64(loss_e)
    if both: part_sq += float64(sq)    # both = needs_squared_error(name); a second block
    dZ[m, n] = g                       # reduction and atomic into loss[1]

``mse``'s terms are the expressions (and order) of the mse kernel before the other losses.
Float32 only (tests check the PTX for f64 instructions); ``bce``'s log1p is libdevice's
``log1pf``.
"""

from __future__ import annotations

import math

import numpy as np

from .cuda_math import device as _device
from .cuda_math import sigmoid_and_slope as _sigmoid_and_slope
from .losses_reference import face_selector

_0 = np.float32(0.0)
_1 = np.float32(1.0)
_M1 = np.float32(-1.0)


@_device
def mse(z, t, scale):
    y, slope = _sigmoid_and_slope(z)
    d = y - t
    sq = d * d
    return sq, sq, scale * d * slope


@_device
def bce(z, t, scale):
    """Stable from the logit: max(z, 0) - z t + log1p(exp(-|z|)), the first two terms as
    (1 - t) z or -t z (no cancellation: for t in [0, 1] every term is >= 0); dZ = scale (y - t)."""
    e = math.exp(-abs(z))
    r = _1 / (_1 + e)
    y = r if z >= _0 else e * r
    d = y - t
    loss = ((_1 - t) * z if z > _0 else -t * z) + math.log1p(e)
    return loss, d * d, scale * d


@_device
def l1(z, t, scale):
    """|y - t|; dZ = scale sign(y - t) y (1 - y), sign(0) = 0 (torch); NaN stays NaN."""
    y, slope = _sigmoid_and_slope(z)
    d = y - t
    sign = _1 if d > _0 else (_M1 if d < _0 else d)
    return abs(d), d * d, scale * sign * slope


loss_point = face_selector(globals())
