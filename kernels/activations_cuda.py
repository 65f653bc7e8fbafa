"""Hidden-layer activations for the CUDA epilogues: float32 device functions, force-inlined.

Definitions and conventions in ``activations_reference``; the same uniform signatures as
``activations_cpu``: ``forward(z, slope)``, ``backward(g, h, z, slope)``. Declared with
``kernels.cuda_math``'s ``device`` (``cuda.jit(device=True, forceinline=True)`` with the kernels'
fastmath; plain Python functions under the simulator). The epilogue factories of kernels 1 and 4
(``kernels/cuda/fused_linear_leaky_relu.py``, ``fused_backward_hidden.py``) close over the pair
from ``activation(name)``, so numba-cuda compiles one straight-line epilogue per activation
(leaky_relu's included)::

    fwd, bwd = activation(name)
        ...                                        # kernel 1's epilogue
        H[m, n] = fwd(acc[i, j] * scale + b[n], slope)
        ...                                        # kernel 4's epilogue
        dH[m, n] = bwd(acc[i, j], H[m, n], Zp[m, n] if keep else H[m, n], slope)

``leaky_relu`` and ``leaky_relu_backward`` are today's expressions (the PTX of an elementwise
kernel over them equals that of today's inline code: tests/test_activations.py). Float32
only: every constant is a float32 (a Python float literal would make the expression float64;
the tests check the PTX for f64 instructions). The exponentials are libdevice's float32
``expm1f`` and, through ``kernels.cuda_math``'s Sigmoid, the fast-math ``exp`` (``ex2.approx``).
"""

from __future__ import annotations

import math

import numpy as np

from .activations_reference import face_selector
from .cuda_math import device as _device
from .cuda_math import sigmoid_and_slope as _sigmoid_and_slope

_0 = np.float32(0.0)
_1 = np.float32(1.0)
_2 = np.float32(2.0)
_GELU_2BETA = np.float32(2.0 * np.sqrt(2.0 / np.pi))
_GELU_BETA = np.float32(np.sqrt(2.0 / np.pi))
_GELU_KAPPA = np.float32(0.044715)
_GELU_3KAPPA = np.float32(3.0 * 0.044715)
_GELU_TAIL = np.float32(44.0)  # |u| beyond which sigmoid(2u)' < 1e-38: the tail term is 0


@_device
def leaky_relu(z, slope):
    return z if z > _0 else z * slope


@_device
def leaky_relu_backward(g, h, z, slope):
    return g if h > _0 else g * slope


@_device
def relu(z, slope):
    return z if not z <= _0 else _0  # NaN stays NaN


@_device
def relu_backward(g, h, z, slope):
    return g if h > _0 else _0


@_device
def tanh(z, slope):
    """tanh(|z|) = -m / (2 + m), m = expm1(-2|z|), as the CPU face: fast-math ``math.tanh``
    would compile to ``tanh.approx.f32`` (relative error ~5e-4)."""
    m = math.expm1(-_2 * abs(z))
    t = -m / (_2 + m)
    return t if z >= _0 else -t


@_device
def tanh_backward(g, h, z, slope):
    return g * (_1 - h * h)


@_device
def sigmoid(z, slope):
    return _sigmoid_and_slope(z)[0]


@_device
def sigmoid_backward(g, h, z, slope):
    return g * (h * (_1 - h))


@_device
def elu(z, slope):
    return z if z > _0 else math.expm1(z)


@_device
def elu_backward(g, h, z, slope):
    return g if h > _0 else g * (h + _1)


@_device
def gelu(z, slope):
    """z * sigmoid(2u) = 0.5 z (1 + tanh(u)), u = beta (z + kappa z^3)."""
    u = _GELU_BETA * (z + _GELU_KAPPA * z * z * z)
    h = z * _sigmoid_and_slope(_2 * u)[0]
    # beyond the tail, 0 (times z, so NaN stays NaN), not z times exp's clamp value 1.6e-38
    return h if abs(u) < _GELU_TAIL else (z if z > _0 else z * _0)


@_device
def gelu_backward(g, h, z, slope):
    """g (s + 2 z s (1 - s) u'(z)), s = sigmoid(2u); from Z (h is not used)."""
    z2 = z * z
    u = _GELU_BETA * (z + _GELU_KAPPA * z2 * z)
    s, sl = _sigmoid_and_slope(_2 * u)
    if abs(u) < _GELU_TAIL:
        return g * (s + _GELU_2BETA * z * sl * (_1 + _GELU_3KAPPA * z2))
    return g * s


activation = face_selector(globals())
