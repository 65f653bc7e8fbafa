"""The interface every backend implements, and the optimizer configuration.

An *engine* owns the model's parameters and optimizer state in its device's memory (RAM for
``cpu``, GPU memory for ``cuda``) and runs training steps over a dataset that was copied there
once, as uint8. The trainer (``aecore.trainer``) drives it; it never sees device arrays.

Units: a *loss sum* is the sum of squared errors over the pixels of the samples it covers;
the mean squared error is ``loss_sum / (n_samples * 784)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
EVAL_BATCH = 1000  # images per chunk of evaluate / reconstruct / encode, on every engine


@dataclass(frozen=True)
class OptimConfig:
    """``sgd``: plain SGD (the paper's). ``momentum`` / ``nesterov``: SGD with (Nesterov)
    momentum, torch.optim.SGD semantics. ``adam``: torch.optim.Adam semantics."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")

    def state_names(self) -> tuple[str, ...]:
        """Per-parameter state buffers, suffixes as in torch.optim's state_dict."""
        if self.name in ("momentum", "nesterov"):
            return ("momentum_buffer",)
        if self.name == "adam":
            return ("exp_avg", "exp_avg_sq")
        return ()

    def to_dict(self) -> dict:
        return asdict(self)


def check_images(images, image_size: int) -> np.ndarray:
    """``images`` as a C-contiguous (n, image_size) uint8 array, or ValueError saying why not."""
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != image_size:
        raise ValueError(f"expected uint8 images of shape (n, {image_size}), "
                         f"got {images.dtype} {images.shape}")
    return images


def engine_setup(engine, params, optim: OptimConfig, batch_size, slope, step, opt_state):
    """The part of every engine's constructor that does not depend on the device: sets
    ``optim, batch_size, slope, step, hidden, image_size`` on ``engine`` and returns
    (host float32 copies of the parameters, host float32 optimizer buffers), the buffers keyed
    ``f"{param}.{state_name}"``, zeros unless ``opt_state`` (a checkpoint's) has them."""
    from .model import B1, B2, W1, W2

    engine.optim = optim
    engine.batch_size = int(batch_size)
    engine.slope = float(slope)
    engine.step = int(step)
    host = {k: np.ascontiguousarray(params[k], np.float32).copy() for k in (W1, B1, W2, B2)}
    engine.hidden, engine.image_size = host[W1].shape
    opt_state = opt_state or {}
    state = {}
    for name in optim.state_names():
        for p in (W1, B1, W2, B2):
            key = f"{p}.{name}"
            init = opt_state.get(key)
            state[key] = (np.zeros_like(host[p]) if init is None
                          else np.ascontiguousarray(init, np.float32).reshape(host[p].shape).copy())
    return host, state


class Engine(Protocol):
    device: str  # "cpu" or "cuda"
    batch_size: int
    step: int  # optimizer steps taken so far (Adam's t)

    def put(self, images: np.ndarray):
        """Copy ``images`` ((n, 784) uint8) to the device once; returns an opaque handle."""

    def train_steps(self, data, perm: np.ndarray, start: int, stop: int) -> None:
        """Train on samples ``perm[start:stop]`` (indices into ``data``), in consecutive batches
        of ``batch_size`` starting at ``start`` (the last one may be short). ``start`` is a
        multiple of ``batch_size`` or ``stop == len(perm)``. Adds each batch's loss sum (before
        its update) to the device-side accumulator; does not synchronise."""

    def take_loss_sum(self) -> float:
        """Read (one device->host copy) and reset the accumulated training loss sum."""

    def evaluate(self, data) -> float:
        """Mean squared reconstruction error over all of ``data`` (no update)."""

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Sigmoid outputs (n, 784) float32 for uint8 images (n, 784)."""

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Hidden activations (n, h) float32 (the latent vectors) for uint8 images (n, 784)."""

    def get_params(self) -> dict[str, np.ndarray]:
        """Host float32 copies of the parameters, under aecore.model's (PyTorch's) names."""

    def get_opt_state(self) -> dict[str, np.ndarray]:
        """Host copies of the optimizer buffers, keyed ``f"{param}.{state_name}"``."""


def make_engine(device: str, params, optim: OptimConfig, batch_size: int, slope: float = 0.01,
                opt_state=None, step: int = 0) -> Engine:
    """Build the engine for ``device`` ("cpu" or "cuda"); CUDA modules are imported only here."""
    if device == "cpu":
        from .engine_cpu import CpuEngine

        return CpuEngine(params, optim, batch_size, slope, opt_state, step)
    if device == "cuda":
        from .engine_cuda import CudaEngine

        return CudaEngine(params, optim, batch_size, slope, opt_state, step)
    raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
