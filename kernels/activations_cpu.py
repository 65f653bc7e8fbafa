"""Hidden-layer activations for the @njit CPU epilogues: scalar float32 functions, inlined.

The definitions, the derivative conventions and the reason gelu needs Z are in
``activations_reference``; this face computes the same in float32. A kernel factory takes
``forward, backward = activation(name)`` once and closes over them (or passes them as
arguments, which numba specialises on), so the epilogue loop is straight-line code, e.g.::

    fwd, bwd = activation(name)
    @njit(**_FAST)
    def bias_act_(Z, b, slope):                    # today's bias_leaky_relu_ for leaky_relu
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                Z[i, j] = fwd(Z[i, j] + b[j], slope)
    ...
            g[j] = bwd(g[j], h[j], z[j], slope)    # today's leaky_relu_grad_: g * f'(z)

``leaky_relu`` / ``leaky_relu_backward`` are today's expressions (``z if z > 0 else z * slope``,
``g if h > 0 else g * slope``), so that configuration compiles to the same code. Float32
discipline: every constant is an ``np.float32`` and the exponentials are ``kernels.cpu``'s
vectorizable float32 ``_exp_neg32`` (no libm call, no float64 promotion;
tests/test_activations.py checks the compiled types and that the loops vectorize).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import overload

from .activations_reference import (ACTIVATIONS, check_activation, face_selector,
                                    needs_preactivation)
from .cpu_math import _FAST, _exp_neg32, _sigmoid32_and_slope

_0 = np.float32(0.0)
_1 = np.float32(1.0)
_2 = np.float32(2.0)
_EXPM1_SMALL = np.float32(-0.7)  # above: a Taylor polynomial; below: exp(x) - 1 (no cancellation)
_GELU_2BETA = np.float32(2.0 * np.sqrt(2.0 / np.pi))
_GELU_BETA = np.float32(np.sqrt(2.0 / np.pi))
_GELU_KAPPA = np.float32(0.044715)
_GELU_3KAPPA = np.float32(3.0 * 0.044715)
_GELU_TAIL = np.float32(44.0)  # |u| beyond which sigmoid(2u)' < 1e-38: the tail term is 0


@njit(inline="always", **_FAST)
def _expm1_neg32(x):
    """expm1(x) for float32 x <= 0, to a few ulp also near 0 (where exp(x) - 1 would lose the
    digits): degree-9 Taylor on (-0.7, 0], ``_exp_neg32(x) - 1`` below. NaN stays NaN."""
    p = x * (_1 + x * (np.float32(1 / 2) + x * (np.float32(1 / 6) + x * (np.float32(1 / 24) + x * (
        np.float32(1 / 120) + x * (np.float32(1 / 720) + x * (np.float32(1 / 5040) + x * (
            np.float32(1 / 40320) + x * np.float32(1 / 362880)))))))))
    return p if x > _EXPM1_SMALL else _exp_neg32(x) - _1


@njit(inline="always", **_FAST)
def leaky_relu(z, slope):
    return z if z > 0 else z * slope


@njit(inline="always", **_FAST)
def leaky_relu_backward(g, h, z, slope):
    return g if h > 0 else g * slope


@njit(inline="always", **_FAST)
def relu(z, slope):
    return z if not z <= _0 else _0  # NaN stays NaN


@njit(inline="always", **_FAST)
def relu_backward(g, h, z, slope):
    return g if h > _0 else _0


@njit(inline="always", **_FAST)
def tanh(z, slope):
    """tanh(|z|) = -m / (2 + m) with m = expm1(-2|z|): accurate near 0 and saturating at 1."""
    m = _expm1_neg32(-_2 * abs(z))
    t = -m / (_2 + m)
    return t if z >= _0 else -t


@njit(inline="always", **_FAST)
def tanh_backward(g, h, z, slope):
    return g * (_1 - h * h)


@njit(inline="always", **_FAST)
def sigmoid(z, slope):
    return _sigmoid32_and_slope(z)[0]


@njit(inline="always", **_FAST)
def sigmoid_backward(g, h, z, slope):
    return g * (h * (_1 - h))


@njit(inline="always", **_FAST)
def elu(z, slope):
    return z if z > _0 else _expm1_neg32(z)


@njit(inline="always", **_FAST)
def elu_backward(g, h, z, slope):
    return g if h > _0 else g * (h + _1)


@njit(inline="always", **_FAST)
def gelu(z, slope):
    """z * sigmoid(2u) = 0.5 z (1 + tanh(u)), u = beta (z + kappa z^3): no 1 + tanh cancellation."""
    u = _GELU_BETA * (z + _GELU_KAPPA * z * z * z)
    h = z * _sigmoid32_and_slope(_2 * u)[0]
    # beyond the tail, 0 (times z, so NaN stays NaN), not z times exp's clamp value 1.6e-38
    return h if abs(u) < _GELU_TAIL else (z if z > _0 else z * _0)


@njit(inline="always", **_FAST)
def gelu_backward(g, h, z, slope):
    """g (s + 2 z s (1 - s) u'(z)), s = sigmoid(2u); from Z (h is not used)."""
    z2 = z * z
    u = _GELU_BETA * (z + _GELU_KAPPA * z2 * z)
    s, sl = _sigmoid32_and_slope(_2 * u)
    tail = _GELU_2BETA * z * sl * (_1 + _GELU_3KAPPA * z2)
    return g * (s + (tail if abs(u) < _GELU_TAIL else _0))


activation = face_selector(globals())


# --- compile-time selection by number: what the fused kernels call --------------------------
# The kernels take the activation as an integer argument that numba sees as a literal
# (``numba.literally`` at the entry points), so every (activation, loss) is its own cached
# specialisation and these resolve to one activation's code while compiling: no run-time branch.
def code(name: str) -> int:
    """The number the kernels take for activation ``name``."""
    return ACTIVATIONS.index(check_activation(name))


def _literal_name(act) -> str:
    if not isinstance(act, types.IntegerLiteral):
        raise TypingError("the activation must be a compile-time literal (numba.literally)")
    return ACTIVATIONS[act.literal_value]


def forward(act, z, slope):
    """f(z) of activation number ``act`` (@njit only)."""
    raise NotImplementedError("only callable from @njit code")


def backward(act, g, h, z, slope):
    """g f'(z) of activation number ``act`` from h = f(z) (and z where it keeps Z; @njit only)."""
    raise NotImplementedError("only callable from @njit code")


def keeps_preactivation(act):
    """True (a compile-time constant) when activation ``act``'s backward reads Z (@njit only)."""
    raise NotImplementedError("only callable from @njit code")


@overload(forward, inline="always")
def _forward(act, z, slope):
    fwd = activation(_literal_name(act))[0]
    return lambda act, z, slope: fwd(z, slope)


@overload(backward, inline="always")
def _backward(act, g, h, z, slope):
    bwd = activation(_literal_name(act))[1]
    return lambda act, g, h, z, slope: bwd(g, h, z, slope)


@overload(keeps_preactivation, inline="always")
def _keeps_preactivation(act):
    if needs_preactivation(_literal_name(act)):
        return lambda act: True
    return lambda act: False
