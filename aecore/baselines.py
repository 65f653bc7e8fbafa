"""What aecore is measured against: the unfused NumPy way, PyTorch eager, and the GEMM floor.

All three train the same model with the same batches as the engines (``train_steps(data, perm,
start, stop)``), so a benchmark can time them side by side in one run:

* ``NumpyEngine`` — ``@`` products, then one NumPy pass per elementwise op (bias, activation,
  loss, gradient, update): what a user writes without fused kernels.
* ``TorchEngine`` — ``nn.Sequential`` + ``MSELoss`` + ``torch.optim`` in eager mode
  (optional: needs ``torch``).
* ``GemmFloor`` — only the step's five matrix products, through the same sgemm the CPU engine
  calls: the time no implementation using this BLAS can beat.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import IMAGE_SIZE
from .optim import OptimConfig, Optimizer
from .kernels.blas import gemm
from .model import B1, B2, W1, W2


def step_flops(batch: int, hidden: int, image_size: int = IMAGE_SIZE) -> int:
    """FLOPs of one training step's five matrix products (2 per multiply-add); the elementwise
    work is O(batch * (image_size + hidden)) and left out."""
    return 5 * 2 * batch * image_size * hidden


class NumpyEngine:
    """Plain-SGD training step written the unfused NumPy way (float32 throughout)."""

    device = "cpu"

    def __init__(self, params, optim: OptimConfig, batch_size: int, slope: float = 0.01):
        if optim.name is not Optimizer.SGD:
            raise ValueError("the NumPy baseline implements plain SGD only")
        self.p = {k: np.array(v, np.float32) for k, v in params.items()}
        self.lr = np.float32(optim.lr)
        self.slope = np.float32(slope)
        self.batch_size = batch_size
        self.loss = 0.0

    def put(self, images):
        return np.ascontiguousarray(images, np.uint8)

    def train_steps(self, data, perm, start, stop):
        p, lr, slope = self.p, self.lr, self.slope
        for s in range(start, stop, self.batch_size):
            X = data[perm[s:min(s + self.batch_size, stop)]].astype(np.float32) / np.float32(255)
            Z1 = X @ p[W1].T + p[B1]
            H = np.where(Z1 > 0, Z1, slope * Z1)
            Y = 1.0 / (1.0 + np.exp(-(H @ p[W2].T + p[B2])))
            D = Y - X
            self.loss += float(np.sum(D * D, dtype=np.float64))
            dZ2 = (np.float32(2.0 / D.size) * D) * Y * (1.0 - Y)
            dH = (dZ2 @ p[W2]) * np.where(H > 0, np.float32(1), slope)
            p[W2] -= lr * (dZ2.T @ H)
            p[B2] -= lr * dZ2.sum(axis=0)
            p[W1] -= lr * (dH.T @ X)
            p[B1] -= lr * dH.sum(axis=0)

    def take_loss_sum(self):
        loss, self.loss = self.loss, 0.0
        return loss


class TorchEngine:
    """The same model and optimizer in PyTorch eager mode (``device`` "cpu" or "cuda")."""

    def __init__(self, params, optim: OptimConfig, batch_size: int, slope: float = 0.01,
                 device: str = "cpu", activation: str = "leaky_relu", loss: str = "mse"):
        import torch

        from .kernels.activations_reference import torch_activation
        from .kernels.losses_reference import torch_loss

        self.torch = torch
        self.device = device
        h = params[W1].shape[0]
        self.model = torch.nn.Sequential(
            torch.nn.Linear(params[W1].shape[1], h), torch_activation(activation, slope),
            torch.nn.Linear(h, params[W2].shape[0]), torch.nn.Sigmoid(),
        ).to(device)
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
        ps = self.model.parameters()
        if optim.name is Optimizer.ADAM:
            self.opt = torch.optim.Adam(ps, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)
        else:
            mu = 0.0 if optim.name is Optimizer.SGD else optim.momentum
            self.opt = torch.optim.SGD(ps, lr=optim.lr, momentum=mu,
                                       nesterov=optim.name is Optimizer.NESTEROV)
        self.batch_size = batch_size
        self.loss_fn = torch_loss(loss)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)

    def put(self, images):
        return self.torch.from_numpy(np.ascontiguousarray(images, np.uint8)).to(self.device)

    def train_steps(self, data, perm, start, stop):
        torch = self.torch
        idx = torch.from_numpy(np.asarray(perm[start:stop], np.int64)).to(self.device)
        for s in range(0, stop - start, self.batch_size):
            X = data[idx[s:s + self.batch_size]].float() / 255.0
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(X), X)
            loss.backward()
            self.opt.step()
            self.loss += loss.detach().double() * X.numel()

    def take_loss_sum(self):
        loss = float(self.loss)  # synchronises on CUDA
        self.loss.zero_()
        return loss

    def get_params(self):
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}


@njit(cache=True, nogil=True)
def _five_products(n, batch, Xb, H, dZ, dH, W1_, W2_):
    for s in range(0, n, batch):
        nb = min(s + batch, n) - s
        gemm(False, True, 1.0, Xb[:nb], W1_, 0.0, H[:nb])          # forward 1
        gemm(False, True, 1.0, H[:nb], W2_, 0.0, dZ[:nb])          # forward 2
        gemm(False, False, 1.0, dZ[:nb], W2_, 0.0, dH[:nb])        # dH
        gemm(True, False, -1e-12, dZ[:nb], H[:nb], 1.0, W2_)       # dW2 (+ update)
        gemm(True, False, -1e-12, dH[:nb], Xb[:nb], 1.0, W1_)      # dW1 (+ update)


class GemmFloor:
    """Times the five products of ``n`` samples' steps alone, on fixed random operands."""

    def __init__(self, hidden: int, batch_size: int, image_size: int = IMAGE_SIZE, seed: int = 0):
        rng = np.random.default_rng(seed)
        f32 = np.float32
        self.batch_size = batch_size
        self.Xb = rng.random((batch_size, image_size), f32)
        self.H = np.empty((batch_size, hidden), f32)
        self.dZ = np.empty((batch_size, image_size), f32)
        self.dH = np.empty((batch_size, hidden), f32)
        self.W1 = (rng.standard_normal((hidden, image_size)) * 0.05).astype(f32)
        self.W2 = (rng.standard_normal((image_size, hidden)) * 0.05).astype(f32)

    def run(self, n: int):
        _five_products(n, self.batch_size, self.Xb, self.H, self.dZ, self.dH, self.W1, self.W2)
