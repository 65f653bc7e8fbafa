"""The interface every backend implements: ``Engine``.

An *engine* owns the model's parameters and optimizer state in its device's memory (RAM for
``cpu``, GPU memory for ``cuda``) and runs training steps over a dataset that was copied there
once, as uint8. The trainer (``aecore.trainer``) drives it; it never sees device arrays.
``aecore.devices.make_engine`` builds one by device name.

Units: a *loss sum* is the sum of the trained loss (``loss``: mse, bce or l1, per pixel, on the
Sigmoid output) over the pixels of the samples it covers; the mean loss is
``loss_sum / (n_samples * image_size)``, ``image_size`` the pixels per image (784 for
Fashion-MNIST; an engine takes it from its parameters' shapes). Every loss sum comes with the
sum of squared errors too (``*_sums`` methods), so runs trained with different losses compare
on MSE; for mse the two are the same number.
"""

from __future__ import annotations

import abc

import numpy as np

from .kernels.activations_reference import DEFAULT_ACTIVATION, check_activation
from .kernels.losses_reference import DEFAULT_LOSS, check_loss
from .model import PARAM_NAMES, W1, param_shapes
from .optim import OptimConfig, init_state

EVAL_BATCH = 1000  # images per chunk of evaluate / reconstruct / encode, on every engine


class Engine(abc.ABC):
    """Parameters, optimizer state and step count on one device, and the steps that use them.

    ``optim`` None builds an engine for inference only (evaluate, reconstruct, encode): it
    keeps no optimizer state and ``train_steps`` raises. ``step`` counts the optimizer steps
    taken so far (Adam's t); ``opt_state`` (a checkpoint's buffers, keyed
    ``f"{param}.{state_name}"``) starts the optimizer where it stopped, zeros where it has none.
    ``lr_schedule`` (an ``aecore.schedules.LRSchedule`` of ``optim.lr``): the rate of each
    optimizer step, by ``step``; None keeps ``optim.lr`` throughout.
    ``activation`` (the hidden layer's, ``kernels.activations_reference.ACTIVATIONS``; ``slope``
    is leaky_relu's) and ``loss`` (``kernels.losses_reference.LOSSES``) are compile-time choices
    of the engine's kernels.
    """

    device: str  # "cpu" or "cuda"

    def __init__(self, params, optim: OptimConfig | None = None, batch_size: int | None = None,
                 slope: float = 0.01, opt_state=None, step: int = 0, *, lr_schedule=None,
                 activation: str = DEFAULT_ACTIVATION, loss: str = DEFAULT_LOSS):
        self.activation = check_activation(activation)
        self.loss = check_loss(loss)
        if optim is not None and (batch_size is None or int(batch_size) < 1):
            raise ValueError(f"a training engine needs a batch size >= 1, got {batch_size!r}")
        if lr_schedule is not None and (optim is None or lr_schedule.lr != optim.lr):
            raise ValueError(f"the learning-rate schedule's lr ({lr_schedule.lr}) must be the "
                             f"optimizer's ({None if optim is None else optim.lr})")
        self.lr_schedule = lr_schedule
        self.optim = optim
        self.batch_size = None if batch_size is None else int(batch_size)
        self.slope = float(slope)
        self.hidden, self.image_size = np.shape(params[W1])
        self.set_state(params, opt_state, step)

    # -- state ----------------------------------------------------------------------------------
    def set_state(self, params, opt_state=None, step: int = 0) -> None:
        """Copy ``params`` (under aecore.model's names, this engine's shapes), the optimizer
        buffers and the step count to the device, replacing what the engine held."""
        shapes = param_shapes(self.hidden, self.image_size)
        host = {}
        for k in PARAM_NAMES:
            host[k] = np.array(params[k], np.float32, order="C")
            if host[k].shape != shapes[k]:
                raise ValueError(f"parameter {k} has shape {host[k].shape}, expected {shapes[k]}")
        state = {} if self.optim is None else init_state(self.optim, host, opt_state)
        self.step = int(step)
        self._put_state(host, state)

    @abc.abstractmethod
    def _put_state(self, params: dict, state: dict) -> None:
        """Take host float32 ``params`` (shaped) and optimizer buffers (flat) to the device."""

    @abc.abstractmethod
    def get_params(self) -> dict[str, np.ndarray]:
        """Host float32 copies of the parameters, under aecore.model's (PyTorch's) names."""

    @abc.abstractmethod
    def get_opt_state(self) -> dict[str, np.ndarray]:
        """Host copies of the optimizer buffers, keyed ``f"{param}.{state_name}"``, shaped as
        their parameters."""

    def _opt_state_shaped(self, flat: dict) -> dict[str, np.ndarray]:
        shapes = param_shapes(self.hidden, self.image_size)
        return {k: v.reshape(shapes[k.rsplit(".", 1)[0]]) for k, v in flat.items()}

    # -- data -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def put(self, images: np.ndarray):
        """Copy ``images`` ((n, image_size) uint8) to the device once; returns an opaque handle."""

    def check_images(self, images) -> np.ndarray:
        """``images`` as a C-contiguous (n, image_size) uint8 array, or ValueError saying why not."""
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != self.image_size:
            raise ValueError(f"expected uint8 images of shape (n, {self.image_size}), "
                             f"got {images.dtype} {images.shape}")
        return images

    # -- training -------------------------------------------------------------------------------
    @abc.abstractmethod
    def train_steps(self, data, perm: np.ndarray, start: int, stop: int) -> None:
        """Train on samples ``perm[start:stop]`` (indices into ``data``), in consecutive batches
        of ``batch_size`` starting at ``start`` (the last one may be short). ``start`` is a
        multiple of ``batch_size`` or ``stop == len(perm)``. Adds each batch's loss sum (before
        its update) to the device-side accumulator; does not synchronise."""

    @abc.abstractmethod
    def take_loss_sums(self) -> tuple[float, float]:
        """Read (one device->host copy) and reset the accumulated training sums: (loss sum,
        squared-error sum)."""

    def take_loss_sum(self) -> float:
        """Read and reset the accumulated training loss sum (of the trained loss)."""
        return self.take_loss_sums()[0]

    def take_loss_parts(self) -> list[float]:
        """The training loss sums not taken yet, one per chunk in order (the trainer adds them
        one by one): here the one sum since the last take; an engine that reads a chunk's loss
        late (RunView) may give none or two."""
        return [self.take_loss_sum()]

    def step_lrs(self, n_steps: int) -> np.ndarray:
        """The float64 learning rates of the next ``n_steps`` optimizer steps (from ``step``)."""
        if self.lr_schedule is None:
            return np.full(n_steps, float(self.optim.lr))
        return self.lr_schedule.lrs(self.step, n_steps)

    def _require_optimizer(self):
        if self.optim is None:
            raise RuntimeError("this engine was built for inference (optim=None); "
                               "it cannot train")

    # -- inference ------------------------------------------------------------------------------
    @abc.abstractmethod
    def loss_sums(self, data) -> tuple[float, float]:
        """(loss sum, squared-error sum) over all of ``data`` (a ``put`` handle or uint8
        images), no update."""

    def loss_sum(self, data) -> float:
        """Reconstruction loss sum (of the trained loss) over all of ``data``."""
        return self.loss_sums(data)[0]

    @abc.abstractmethod
    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Sigmoid outputs (n, image_size) float32 for uint8 images (n, image_size)."""

    @abc.abstractmethod
    def encode(self, images: np.ndarray) -> np.ndarray:
        """Hidden activations (n, h) float32 (the latent vectors) for uint8 images (n, image_size)."""

    def evaluate(self, data) -> float:
        """Mean squared reconstruction error over all of ``data`` (no update); NaN if empty."""
        return self.evaluate_losses(data)[1]

    def evaluate_losses(self, data) -> tuple[float, float]:
        """(mean trained loss, mean squared error) over all of ``data``; NaNs if empty."""
        n = data.shape[0]
        if n == 0:
            return float("nan"), float("nan")
        loss, sq = self.loss_sums(data)
        return loss / (n * self.image_size), sq / (n * self.image_size)
