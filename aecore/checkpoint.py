"""Weights and resumable checkpoints as safetensors files.

``model.safetensors`` holds only the four float32 parameters under PyTorch's names ("0.weight"
(h, w), "0.bias" (h,), "2.weight" (w, h), "2.bias" (w,); w = 784 pixels for Fashion-MNIST),
so ``nn.Sequential(Linear(w, h), LeakyReLU(), Linear(h, w), Sigmoid()).load_state_dict(
safetensors.torch.load_file(path))`` works. Its metadata says ``format: aecore-model``, hidden, slope.
The image width w is the parameters' own (the trainer takes it from the data); the checks
below only require the four shapes to agree with each other, and with a width when asked.

``checkpoint.safetensors`` holds the same four parameters, the optimizer buffers as
``optimizer.<param>.<buffer>`` (e.g. ``optimizer.0.weight.exp_avg``), and in its metadata
``format: aecore-checkpoint`` plus ``state``: a JSON object with everything else a resume needs
(epoch, position within the epoch, optimizer step count, RNG state, partial loss sum, the
config, the metrics so far). All writes are atomic (``aecore.atomic``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as st_save

from . import __version__
from .errors import CheckpointError
from .model import B1, B2, PARAM_NAMES, W1, W2, param_shapes
from .atomic import atomic_write_bytes

MODEL = "model.safetensors"  # the two files' names in a run directory
CHECKPOINT = "checkpoint.safetensors"
MODEL_FORMAT = "aecore-model"
CHECKPOINT_FORMAT = "aecore-checkpoint"
CHECKPOINT_VERSION = "1"
OPT_PREFIX = "optimizer."


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    opt_state: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # resume state (checkpoints only)
    meta: dict = field(default_factory=dict)  # the raw safetensors metadata
    path: Path | None = None

    @property
    def hidden(self) -> int:
        return int(self.params[W1].shape[0])

    @property
    def image_size(self) -> int:
        """The image width (pixels) the model takes and gives: 784 for Fashion-MNIST."""
        return int(self.params[W1].shape[1])


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def model_bytes(params: dict, slope: float = 0.01, activation: str = "leaky_relu",
                loss: str = "mse") -> bytes:
    hidden = int(params[W1].shape[0])
    meta = {"format": MODEL_FORMAT, "hidden": str(hidden), "slope": repr(float(slope)),
            "activation": activation, "loss": loss, "aecore_version": __version__}
    return st_save({k: _f32(params[k]) for k in PARAM_NAMES}, metadata=meta)


def save_model(path, params: dict, slope: float = 0.01, activation: str = "leaky_relu",
               loss: str = "mse") -> None:
    atomic_write_bytes(path, model_bytes(params, slope, activation, loss))


def save_checkpoint(path, params: dict, opt_state: dict, state: dict) -> None:
    tensors = {k: _f32(params[k]) for k in PARAM_NAMES}
    for k, v in opt_state.items():
        tensors[OPT_PREFIX + k] = _f32(v)
    meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
            "aecore_version": __version__, "state": json.dumps(state)}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def _read(path: Path) -> tuple[dict, dict]:
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types, OSError, ValueError...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({msg})") from None
    return tensors, meta


def check_params(params: dict, path, hidden: int | None = None,
                 image_size: int | None = None) -> int:
    """Check that ``params`` are a w -> h -> w autoencoder's (the four shapes agree with each
    other; ``hidden`` / ``image_size`` w are checked when given); returns h."""
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise CheckpointError(
            f"{path}: not an aecore autoencoder (missing tensors {', '.join(missing)}; "
            f"found {', '.join(sorted(params)) or 'none'})")
    w1 = params[W1]
    if w1.ndim != 2 or w1.shape[0] < 1 or w1.shape[1] < 1:
        raise CheckpointError(f"{path}: '0.weight' has shape {tuple(w1.shape)}, expected "
                              "(h, image width) with both at least 1")
    h, w = int(w1.shape[0]), int(w1.shape[1])
    for k, shape in param_shapes(h, w).items():
        if tuple(params[k].shape) != shape:
            raise CheckpointError(f"{path}: {k!r} has shape {tuple(params[k].shape)}, expected {shape}"
                                  f" for hidden size {h} and image width {w} (from '0.weight')")
        if params[k].dtype != np.float32:
            raise CheckpointError(f"{path}: {k!r} is {params[k].dtype}, expected float32")
    if hidden is not None and h != hidden:
        raise CheckpointError(f"{path}: checkpoint is for hidden size {h}, not {hidden}")
    if image_size is not None and w != image_size:
        raise CheckpointError(f"{path}: checkpoint is for images of {w} pixels, not {image_size}")
    return h


def load_checkpoint(path, hidden: int | None = None, optimizer_states=None,
                    image_size: int | None = None) -> Checkpoint:
    """Load a resumable checkpoint; ``hidden`` / ``optimizer_states`` (buffer names expected,
    e.g. ``OptimConfig.state_names()``) / ``image_size`` (pixels per image) are checked when
    given."""
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an aecore resume checkpoint (format "
                              f"{meta.get('format', 'missing')!r}, expected {CHECKPOINT_FORMAT!r})")
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')!r} "
                              f"is not supported (this aecore writes {CHECKPOINT_VERSION})")
    try:
        state = json.loads(meta["state"])
        assert isinstance(state, dict)
    except Exception:
        raise CheckpointError(f"{path}: checkpoint state metadata is missing or corrupt") from None
    params = {k: v for k, v in tensors.items() if not k.startswith(OPT_PREFIX)}
    opt = {k[len(OPT_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
    check_params(params, path, hidden, image_size)
    extra = sorted(set(params) - set(PARAM_NAMES))
    if extra:
        raise CheckpointError(f"{path}: unexpected tensors {', '.join(extra)}")
    if optimizer_states is not None:
        want = {f"{p}.{s}" for p in PARAM_NAMES for s in optimizer_states}
        if set(opt) != want:
            raise CheckpointError(f"{path}: optimizer buffers {sorted(opt)} do not match the "
                                  f"optimizer's {sorted(want)}")
        for k, v in opt.items():
            p = k.rsplit(".", 1)[0]
            if v.shape != params[p].shape:
                raise CheckpointError(f"{path}: optimizer buffer {k!r} has shape {v.shape}, "
                                      f"expected {params[p].shape}")
    return Checkpoint(params, opt, state, meta, path)


def resolve_weights_path(path) -> Path:
    """A run directory -> its model.safetensors (or checkpoint.safetensors); a file -> itself."""
    p = Path(path)
    if p.is_dir():
        for name in (MODEL, CHECKPOINT):
            if (p / name).exists():
                return p / name
        raise CheckpointError(f"{p}: no {MODEL} or {CHECKPOINT} in this directory")
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    return p


def load_weights(path, image_size: int | None = None) -> Checkpoint:
    """The parameters from a run directory, a model.safetensors or a checkpoint.safetensors
    (or any safetensors file with the four PyTorch-named tensors); ``image_size``: the width
    they must take, when given."""
    p = resolve_weights_path(path)
    tensors, meta = _read(p)
    params = {k: v for k, v in tensors.items() if k in PARAM_NAMES}
    check_params(params, p, image_size=image_size)
    return Checkpoint(params, {}, {}, meta, p)


def _recorded(ckpt: Checkpoint, key: str, default, cast):
    """The run setting ``key`` a weights file records (its metadata, or its checkpoint's
    config), ``default`` where it does not say (files saved before the setting existed)."""
    try:
        if key in ckpt.meta:
            return cast(ckpt.meta[key])
        if ckpt.state.get("config", {}).get(key) is not None:
            return cast(ckpt.state["config"][key])
        if ckpt.meta.get("format") == CHECKPOINT_FORMAT:
            return cast(json.loads(ckpt.meta["state"])["config"][key])
    except (ValueError, KeyError, TypeError):
        pass
    return default


def slope_of(ckpt: Checkpoint, default: float = 0.01) -> float:
    """The LeakyReLU slope a weights file was trained with, when it says."""
    return _recorded(ckpt, "slope", default, float)


def activation_of(ckpt: Checkpoint) -> str:
    """The hidden activation a weights file was trained with (leaky_relu before it was a
    choice); ``torch_activation(activation_of(c), slope_of(c))`` is its torch module."""
    return _recorded(ckpt, "activation", "leaky_relu", str)


def loss_of(ckpt: Checkpoint) -> str:
    """The loss a weights file was trained with (mse before it was a choice)."""
    return _recorded(ckpt, "loss", "mse", str)


__all__ = ["Checkpoint", "save_model", "save_checkpoint", "load_checkpoint", "load_weights",
           "check_params", "resolve_weights_path", "slope_of",
           "activation_of", "loss_of", "B1", "B2", "W1", "W2"]
