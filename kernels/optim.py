"""The optimizer vocabulary the kernels share: kind codes and named hyper-parameter slots.

``kernels.cpu.weight_step`` and ``kernels.cuda.weight_step`` take an optimizer as one of the
integer codes below (compiled-in constants) and its hyper-parameters as ``HyperParams``; the
CUDA kernels read them from a packed float32 device vector, laid out by ``pack`` (the only
place that knows the order). Optimizer buffers travel as ``(VW, Vb, MW, Mb)``: V is the
momentum buffer (momentum / Nesterov) or Adam's exp_avg_sq, M is Adam's exp_avg.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

OPT_NONE, OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM = 0, 1, 2, 3, 4


class HyperParams(NamedTuple):
    """SGD: lr. Momentum / Nesterov (torch.optim.SGD): lr, momentum. Adam (torch.optim.Adam):
    lr, beta1, beta2, eps. Unused slots are 0."""

    lr: float = 0.0
    momentum: float = 0.0
    beta1: float = 0.0
    beta2: float = 0.0
    eps: float = 0.0


PACKED_SIZE = 7  # the five slots, then Adam's step size and 1 / sqrt(bias correction 2)


def pack(hp: HyperParams, step_size: float = 0.0, inv_bc2_sqrt: float = 0.0) -> np.ndarray:
    """The float32 vector the CUDA weight-step kernels read: ``hp``'s slots in order, then
    ``step_size`` and ``inv_bc2_sqrt`` (Adam's bias corrections of one step folded in)."""
    return np.array([*hp, step_size, inv_bc2_sqrt], np.float32)


def pack_adam_steps(hp: HyperParams, t0: int, n: int) -> np.ndarray:
    """``pack`` of Adam steps t0 .. t0 + n - 1 as one (n, 7) float32 array, the bias
    corrections computed in float64: lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t)."""
    t = np.arange(t0, t0 + n, dtype=np.float64)
    out = np.empty((n, PACKED_SIZE), np.float32)
    out[:] = pack(hp)
    out[:, 5] = hp.lr / (1.0 - np.power(hp.beta1, t))
    out[:, 6] = 1.0 / np.sqrt(1.0 - np.power(hp.beta2, t))
    return out
