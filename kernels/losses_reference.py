"""Output losses on the Sigmoid output, float64 NumPy: the definition the @njit and CUDA faces
compute, plus the whole model's loss and gradients for any activation and loss.

Every loss is fused into the output layer's epilogue from the logit ``z`` (the product plus
bias, before the Sigmoid) and the target pixel ``t``; per element it gives
``(loss, squared error, g)`` and the epilogue writes ``dZ = scale * g`` with
``scale = grad_scale(name, B * N)``:

* ``mse`` (today's): ``(y - t)^2``; ``g = (y - t) y (1 - y)``, scale ``2 / (B N)``;
* ``bce``: binary cross-entropy of ``y = sigmoid(z)``, in its stable form from the logit
  (as ``nn.BCEWithLogitsLoss``): ``max(z, 0) - z t + log1p(exp(-|z|))``; ``g = y - t``, scale
  ``1 / (B N)``. (``nn.BCELoss`` on a float32 ``y`` clamps ``log`` at -100; the two agree
  wherever ``y`` is not saturated.);
* ``l1`` (as ``nn.L1Loss``): ``|y - t|``; ``g = sign(y - t) y (1 - y)``, scale ``1 / (B N)``;
  ``sign(0) = 0`` as torch's backward gives 0 where ``y == t``.

Conventions kept from today's MSE epilogue (``kernels.cpu.bias_sigmoid_mse_``): the kernel
returns the loss *sum* over the batch's pixels (the engine divides by the pixel count for the
mean), and the gradient is that of the *mean* (scale divides by ``B * N``, B the actual rows of
a possibly short batch). The squared error is always returned as well, so the epilogue of a
bce / l1 run also sums it into a second accumulator (``needs_squared_error``) and runs with
different losses report MSE on one scale; for mse the two are the same sum.
"""

from __future__ import annotations

import numpy as np

from .activations_reference import activation, activation_grad
from .reference import as_input, sigmoid, weight_grad

LOSSES = ("mse", "bce", "l1")
DEFAULT_LOSS = "mse"
GRAD_FACTOR = {"mse": 2.0, "bce": 1.0, "l1": 1.0}


def check_loss(name: str) -> str:
    """``name`` if it is a loss, else ValueError naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
    return name


def face_selector(namespace: dict):
    """``loss_point(name)`` for a face module whose point functions are named as the losses
    (``namespace`` its globals())."""
    points = {n: namespace[n] for n in LOSSES}

    def loss_point(name: str):
        """``point(z, t, scale) -> (loss, (y - t)^2, dZ)`` of loss ``name``."""
        return points[check_loss(name)]

    return loss_point


def torch_loss(name: str):
    """The matching ``torch.nn`` loss on the model's Sigmoid output (mean reduction):
    nn.MSELoss, nn.BCELoss, nn.L1Loss. (On logits, bce is nn.BCEWithLogitsLoss.)"""
    from torch import nn

    return {"mse": nn.MSELoss, "bce": nn.BCELoss, "l1": nn.L1Loss}[check_loss(name)]()


def needs_squared_error(name: str) -> bool:
    """True when the trained loss is not the squared error: the epilogue sums both."""
    return check_loss(name) != "mse"


def grad_scale(name: str, count: int) -> float:
    """The factor of ``g`` in dZ: the mean loss's gradient over ``count`` = B * N elements."""
    return GRAD_FACTOR[check_loss(name)] / count


def loss_terms(name, Z, T):
    """Per element ``(loss, (y - t)^2, g)`` in float64 from logits Z and targets T (uint8 ok)."""
    check_loss(name)
    Z = np.asarray(Z, np.float64)
    T = as_input(T)
    Y = sigmoid(Z)
    D = Y - T
    if name == "mse":
        return D * D, D * D, D * Y * (1.0 - Y)
    if name == "bce":
        return np.maximum(Z, 0.0) - Z * T + np.log1p(np.exp(-np.abs(Z))), D * D, D
    return np.abs(D), D * D, np.sign(D) * Y * (1.0 - Y)


def output_loss_grad(name, Z, T):
    """The fused output epilogue on a (B, N) batch of logits: ``(dZ, loss_sum, sq_sum)``."""
    loss, sq, g = loss_terms(name, Z, T)
    return grad_scale(name, g.size) * g, float(np.sum(loss)), float(np.sum(sq))


def gradients(X, W1, b1, W2, b2, activation_name="leaky_relu", loss="mse", slope=0.01):
    """Mean loss, mean squared error and the four parameter gradients of one batch X for any
    activation and loss: ``(loss_mean, mse_mean, dW1, db1, dW2, db2)``. With leaky_relu and
    mse it is ``reference.gradients`` (plus the MSE, the same number)."""
    Xf = as_input(X)
    Z1 = Xf @ np.asarray(W1, np.float64).T + np.asarray(b1, np.float64)
    H = activation(activation_name, Z1, slope)
    Z2 = H @ np.asarray(W2, np.float64).T + np.asarray(b2, np.float64)
    dZ2, loss_sum, sq_sum = output_loss_grad(loss, Z2, Xf)
    dW2, db2 = weight_grad(dZ2, H)
    dH = (dZ2 @ np.asarray(W2, np.float64)) * activation_grad(activation_name, H, Z1, slope)
    dW1, db1 = weight_grad(dH, Xf)
    return loss_sum / dZ2.size, sq_sum / dZ2.size, dW1, db1, dW2, db2
