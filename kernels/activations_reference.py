"""Hidden-layer activations, float64 NumPy: the definition the @njit and CUDA faces compute.

Each activation ``f`` comes with the derivative the backward pass multiplies ``dH`` by. The
fused backward epilogue reads what the forward pass kept: today that is only ``H = f(Z)``
(``backward_hidden`` reads ``H > 0``). For leaky_relu, relu, tanh, sigmoid and elu the
derivative is a function of ``H`` alone; gelu's is not (``f`` is not monotone, so ``H`` does not
determine ``Z``), so an engine training with gelu must also keep the pre-activation ``Z``
(``needs_preactivation``): one more (B, h) float32 buffer, written by the forward epilogue and
read by the backward one, allocated only for those activations. (Equivalent alternative: the
forward epilogue writes ``f'(Z) = backward(1, h, z, slope)`` into that buffer instead of Z,
and the backward multiplies by it without recomputing the exponential.)

How the kernels use them (``activations_cpu`` / ``activations_cuda`` hold the float32 faces):
a kernel factory picks ``(forward, backward)`` by name once, before compiling, and closes
over the pair, so each configuration compiles to straight-line code with no per-element
branch on the activation. Uniform signatures, so one epilogue serves every activation:

* ``forward(z, slope) -> h``; ``slope`` is the runtime leaky_relu slope (a float32 argument
  as today), ignored by the others;
* ``backward(g, h, z, slope) -> g * f'(z)``, the incoming gradient times the derivative;
  ``z`` is read only where ``needs_preactivation`` (pass ``h`` for the others: the argument is
  dead and compiles away).

leaky_relu's pair is today's code: ``z if z > 0 else z * slope`` and ``g if h > 0 else
g * slope`` (tests/test_activations.py checks it against today's kernels.cpu epilogues and
today's CUDA PTX).
All forms keep a NaN a NaN (divergence is caught through the loss). torch conventions at the
kinks: relu' and leaky_relu' at 0 are 0 and ``slope``; elu is ``nn.ELU(alpha=1.0)``; gelu is
``nn.GELU(approximate="tanh")``.
"""

from __future__ import annotations

import numpy as np

from .reference import leaky_relu, sigmoid

ACTIVATIONS = ("leaky_relu", "relu", "tanh", "sigmoid", "elu", "gelu")
DEFAULT_ACTIVATION = "leaky_relu"
GELU_BETA = np.sqrt(2.0 / np.pi)  # tanh-approximation constants, as torch's
GELU_KAPPA = 0.044715


def check_activation(name: str) -> str:
    """``name`` if it is an activation, else ValueError naming the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return name


def needs_preactivation(name: str) -> bool:
    """True when the derivative needs Z, not only H = f(Z): the engine keeps a Z buffer."""
    return check_activation(name) == "gelu"


def torch_activation(name: str, slope: float = 0.01):
    """The matching ``torch.nn`` module (for nn.Sequential(Linear, it, Linear, Sigmoid))."""
    from torch import nn

    return {"leaky_relu": lambda: nn.LeakyReLU(slope), "relu": nn.ReLU, "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid, "elu": lambda: nn.ELU(alpha=1.0),
            "gelu": lambda: nn.GELU(approximate="tanh")}[check_activation(name)]()


def face_selector(namespace: dict):
    """``activation(name) -> (forward, backward)`` for a face module whose functions are
    named ``NAME`` and ``NAME_backward`` (``namespace`` its globals())."""
    pairs = {n: (namespace[n], namespace[n + "_backward"]) for n in ACTIVATIONS}

    def activation(name: str):
        """``(forward(z, slope), backward(g, h, z, slope))`` of activation ``name``."""
        return pairs[check_activation(name)]

    return activation


def _gelu_inner(Z):
    """u with gelu(z) = 0.5 z (1 + tanh(u)) = z * sigmoid(2u)."""
    return GELU_BETA * (Z + GELU_KAPPA * Z**3)


def activation(name, Z, slope=0.01):
    """H = f(Z) in float64."""
    Z = np.asarray(Z, np.float64)
    check_activation(name)
    if name == "leaky_relu":
        return leaky_relu(Z, slope)
    if name == "relu":
        return np.where(Z > 0, Z, 0.0 * Z)  # 0 * NaN stays NaN
    if name == "tanh":
        return np.tanh(Z)
    if name == "sigmoid":
        return sigmoid(Z)
    if name == "elu":
        return np.where(Z > 0, Z, np.expm1(np.minimum(Z, 0.0)))
    with np.errstate(over="ignore"):
        return Z * sigmoid(2.0 * _gelu_inner(Z))


def activation_grad(name, H, Z=None, slope=0.01):
    """f'(Z) in float64, from H = f(Z) (and Z where ``needs_preactivation(name)``)."""
    check_activation(name)
    H = np.asarray(H, np.float64)
    if name == "leaky_relu":
        return np.where(H > 0, 1.0, slope)
    if name == "relu":
        return np.where(H > 0, 1.0, 0.0)
    if name == "tanh":
        return 1.0 - H * H
    if name == "sigmoid":
        return H * (1.0 - H)
    if name == "elu":
        return np.where(H > 0, 1.0, H + 1.0)
    if Z is None:
        raise ValueError("gelu's derivative needs the pre-activation Z")
    Z = np.asarray(Z, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        u = _gelu_inner(Z)
        s = sigmoid(2.0 * u)
        # d/dz [z s(2u)] = s + z * 2 s (1 - s) u'(z); the second term is exactly 0 where
        # s (1 - s) underflows (it would be 0 * inf for |z| beyond ~1e100)
        tail = np.where(s * (1.0 - s) > 0,
                        2.0 * Z * s * (1.0 - s) * GELU_BETA * (1.0 + 3.0 * GELU_KAPPA * Z * Z), 0.0)
    return s + tail
