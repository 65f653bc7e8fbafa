"""The optimizer vocabulary the kernels share: kind codes and named hyper-parameter slots.

``kernels.cpu.weight_step`` and ``kernels.cuda.weight_step`` take an optimizer as one of the
integer codes below (compiled-in constants) and its hyper-parameters as ``HyperParams``; the
CUDA kernels read them from a packed float32 device vector, laid out by ``pack`` (the only
place that knows the order); the CUDA engine uploads one such row per optimizer step of a chunk
(``pack_chunk``), the learning rate of each step from the schedule. Optimizer buffers travel as
``(VW, Vb, MW, Mb)``: V is the momentum buffer (momentum / Nesterov) or Adam's exp_avg_sq, M is
Adam's exp_avg.
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


def pack_adam_steps(hp: HyperParams, t0: int, n: int, lrs=None) -> np.ndarray:
    """``pack`` of Adam steps t0 .. t0 + n - 1 as one (n, 7) float32 array, the bias
    corrections computed in float64: lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t). ``lrs``
    ((n,) float64): each step's learning rate (a schedule's), else ``hp.lr`` throughout."""
    t = np.arange(t0, t0 + n, dtype=np.float64)
    lr = hp.lr if lrs is None else _rates(lrs, n)
    out = np.empty((n, PACKED_SIZE), np.float32)
    out[:] = pack(hp)
    out[:, 0] = lr
    out[:, 5] = lr / (1.0 - np.power(hp.beta1, t))
    out[:, 6] = 1.0 / np.sqrt(1.0 - np.power(hp.beta2, t))
    return out


def pack_steps(hp: HyperParams, n: int, lrs=None) -> np.ndarray:
    """``pack`` of n steps of SGD / momentum / Nesterov as one (n, 7) float32 array, the
    learning rate of step i ``lrs[i]`` (float64; a schedule's), else ``hp.lr``."""
    out = np.empty((n, PACKED_SIZE), np.float32)
    out[:] = pack(hp)
    if lrs is not None:
        out[:, 0] = _rates(lrs, n)
    return out


def pack_chunk(hp: HyperParams, adam: bool, t0: int, n: int, lrs=None) -> np.ndarray:
    """The (n, 7) hyper-parameters of optimizer steps t0 .. t0 + n - 1 (t from 1) of any
    optimizer: ``pack_adam_steps`` for Adam, else ``pack_steps``."""
    return pack_adam_steps(hp, t0, n, lrs) if adam else pack_steps(hp, n, lrs)


def _rates(lrs, n: int) -> np.ndarray:
    lrs = np.asarray(lrs, np.float64)
    if lrs.shape != (n,):
        raise ValueError(f"expected {n} learning rates, got an array of shape {lrs.shape}")
    return lrs
