"""The autoencoder's parameters: names, shapes, initialisation.

Parameters are kept in a plain dict under PyTorch's names for
``nn.Sequential(nn.Linear(784, h), nn.LeakyReLU(slope), nn.Linear(h, 784), nn.Sigmoid())``,
so ``model.load_state_dict(safetensors.torch.load_file(path))`` works on our checkpoints:

    "0.weight" (h, 784)   "0.bias" (h,)     encoder, followed by LeakyReLU
    "2.weight" (784, h)   "2.bias" (784,)   decoder, followed by Sigmoid

784 is Fashion-MNIST's image width (``IMAGE_SIZE``, the default); ``image_size`` gives a model
of another width w (w -> h -> w, the same names), as the trainer builds for data of w pixels.
"""

from __future__ import annotations

import math

import numpy as np

from . import IMAGE_SIZE

W1, B1, W2, B2 = "0.weight", "0.bias", "2.weight", "2.bias"
PARAM_NAMES = (W1, B1, W2, B2)


def param_shapes(hidden: int, image_size: int = IMAGE_SIZE) -> dict[str, tuple[int, ...]]:
    return {
        W1: (hidden, image_size),
        B1: (hidden,),
        W2: (image_size, hidden),
        B2: (image_size,),
    }


def param_count(hidden: int, image_size: int = IMAGE_SIZE) -> int:
    return sum(math.prod(s) for s in param_shapes(hidden, image_size).values())


def init_params(
    hidden: int, seed: int, slope: float = 0.01, image_size: int = IMAGE_SIZE
) -> dict[str, np.ndarray]:
    """He (Kaiming) normal init for the LeakyReLU layer, Glorot (Xavier) uniform for the Sigmoid
    layer, zero biases; float32, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    gain = math.sqrt(2.0 / (1.0 + slope * slope))  # torch.nn.init.calculate_gain('leaky_relu')
    w1 = rng.standard_normal((hidden, image_size)) * (gain / math.sqrt(image_size))
    limit = math.sqrt(6.0 / (hidden + image_size))
    w2 = rng.uniform(-limit, limit, (image_size, hidden))
    return {
        W1: w1.astype(np.float32),
        B1: np.zeros(hidden, np.float32),
        W2: w2.astype(np.float32),
        B2: np.zeros(image_size, np.float32),
    }
