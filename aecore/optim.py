"""The optimizers: their names, hyper-parameters and per-parameter state, for every engine.

``Optimizer`` is the one vocabulary: its values are the names the CLI and config.json use, and
each member knows its kernel code (``kernels.optim``) and the state buffers it keeps, named as
in torch.optim's state_dict (a checkpoint stores them under ``f"{param}.{name}"``, e.g.
``"0.weight.exp_avg"``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .kernels import optim as ko
from .model import B1, B2, PARAM_NAMES, W1, W2


class Optimizer(str, enum.Enum):
    SGD = "sgd"  # plain SGD (the paper's)
    MOMENTUM = "momentum"  # torch.optim.SGD with momentum
    NESTEROV = "nesterov"  # torch.optim.SGD with Nesterov momentum
    ADAM = "adam"  # torch.optim.Adam

    def __str__(self):
        return self.value

    @property
    def kernel_code(self) -> int:
        return _CODES[self]

    @property
    def state_names(self) -> tuple[str, ...]:
        """Per-parameter state buffers, as torch.optim names them."""
        return _STATE[self]

    @classmethod
    def parse(cls, name) -> "Optimizer":
        """``name`` ("sgd", ... or a member) as a member, or ValueError naming the choices."""
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown optimizer {name!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}") from None


OPTIMIZERS = tuple(o.value for o in Optimizer)  # the names, for the CLI and messages
_CODES = {Optimizer.SGD: ko.OPT_SGD, Optimizer.MOMENTUM: ko.OPT_MOMENTUM,
          Optimizer.NESTEROV: ko.OPT_NESTEROV, Optimizer.ADAM: ko.OPT_ADAM}
_STATE = {Optimizer.SGD: (), Optimizer.MOMENTUM: ("momentum_buffer",),
          Optimizer.NESTEROV: ("momentum_buffer",), Optimizer.ADAM: ("exp_avg", "exp_avg_sq")}


@dataclass(frozen=True)
class OptimConfig:
    """An optimizer and its hyper-parameters. ``name`` may be given as a string; it is kept as
    an ``Optimizer``. ``momentum`` is for momentum / Nesterov; beta1, beta2, eps for Adam."""

    name: Optimizer = Optimizer.SGD
    lr: float = 0.1
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        object.__setattr__(self, "name", Optimizer.parse(self.name))

    def state_names(self) -> tuple[str, ...]:
        return self.name.state_names

    def hyper_params(self) -> ko.HyperParams:
        """The slots this optimizer uses (the others 0), as the kernels take them."""
        o = self.name
        if o is Optimizer.ADAM:
            return ko.HyperParams(lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps)
        return ko.HyperParams(lr=self.lr, momentum=0.0 if o is Optimizer.SGD else self.momentum)


def init_state(optim: OptimConfig, params: dict[str, np.ndarray], saved=None) -> dict:
    """The optimizer buffers for ``params``, flat float32 (the layout every engine keeps),
    keyed ``f"{param}.{state_name}"``: copies of ``saved``'s (a checkpoint's, any shape of the
    right size) where it has them, else zeros."""
    saved = saved or {}
    out = {}
    for name in optim.state_names():
        for p in PARAM_NAMES:
            key = f"{p}.{name}"
            init = saved.get(key)
            out[key] = (np.zeros(params[p].size, np.float32) if init is None
                        else np.array(init, np.float32).reshape(params[p].size))
    return out


def buffers_of(state: dict, optim: OptimConfig, layer: int, empty=None) -> tuple:
    """(VW, Vb, MW, Mb) of layer 1 (``0.weight``/``0.bias``) or 2 (``2.*``) as the weight-step
    kernels take them (kernels/optim.py): V the momentum buffer or Adam's exp_avg_sq, M Adam's
    exp_avg; ``empty`` where the optimizer keeps none."""
    w, b = (W1, B1) if layer == 1 else (W2, B2)
    o = optim.name
    if o is Optimizer.ADAM:
        v, m = "exp_avg_sq", "exp_avg"
    elif o in (Optimizer.MOMENTUM, Optimizer.NESTEROV):
        v, m = "momentum_buffer", None
    else:
        v = m = None
    return tuple(empty if s is None else state[f"{p}.{s}"] for s in (v, m) for p in (w, b))
