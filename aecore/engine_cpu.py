"""The CPU engine: the whole training loop over a range of batches runs inside ``@njit``.

Per batch (B rows, h hidden units, 784 pixels), five BLAS products with fused epilogues
(``aecore.kernels.cpu``), and nothing else touches memory at full size:

    1. Xb   <- X[perm[s:e]] / 255            gather + scale (uint8 dataset stays uint8 in RAM;
                                             the next batch's rows are prefetched meanwhile)
    2. H    <- leaky(Xb W1^T + b1)           sgemm NT + epilogue
    3. dZ   <- mse'(sigmoid(H W2^T + b2))    sgemm NT + epilogue (loss sum, db2 column sums)
    4. dH   <- (dZ W2) * leaky'(H)           sgemm NN + epilogue (db1 column sums)
    5. W2   <- W2 - lr dZ^T H                sgemm TN with alpha=-lr, beta=1 (plain SGD)
       W1   <- W1 - lr dH^T Xb               sgemm TN with alpha=-lr, beta=1
       (momentum / Adam: G <- dZ^T H by sgemm, then one fused update pass)

The epoch driver (``aecore.trainer``) calls ``train_steps`` in chunks so it can show progress
and notice Ctrl-C; chunking does not change the result (the same batches in the same order).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .engine import EVAL_BATCH, OptimConfig, check_images, engine_setup
from .kernels import cpu as K
from .kernels.blas import gemm
from .kernels.ftz import flush_denormals_on, restore
from .model import B1, B2, W1, W2

_SGD, _MOMENTUM, _NESTEROV, _ADAM = 0, 1, 2, 3
_KIND = {"sgd": _SGD, "momentum": _MOMENTUM, "nesterov": _NESTEROV, "adam": _ADAM}


@njit(cache=True, nogil=True)
def _update(kind, W, G, Sa, Sb, lr, mu, beta1, beta2, eps, t):
    """One parameter's momentum / Nesterov / Adam update from its gradient G (in place)."""
    if kind == _ADAM:
        K.adam_update(W, G, Sa, Sb, lr, t, beta1, beta2, eps)
    else:
        K.sgd_update(W, G, lr, mu, kind == _NESTEROV, Sa)


@njit(cache=True, nogil=True)
def _train_steps(X, perm, start, stop, batch, W1, b1, W2, b2, slope, kind, lr, mu, beta1, beta2,
                 eps, step, S, Xb, H, dZ, dH, G1, G2, gb1, gb2):
    """Train on X[perm[start:stop]] in batches; returns (loss sum, optimizer steps taken).

    S: the optimizer buffers as a tuple (W1a, b1a, W2a, b2a, W1b, b1b, W2b, b2b); 'a' is the
    momentum buffer / Adam's exp_avg, 'b' Adam's exp_avg_sq (unused ones are never touched).
    """
    mxcsr = flush_denormals_on()  # subnormals -> 0 inside the loop, as on the GPU (kernels/ftz.py)
    total = 0.0
    n_steps = 0
    gsum1 = np.zeros(b1.shape[0], np.float64)
    gsum2 = np.zeros(b2.shape[0], np.float64)
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        nb = e - s
        xb = Xb[:nb]
        h = H[:nb]
        dz = dZ[:nb]
        dh = dH[:nb]
        K.gather_rows(X, perm[s:e], xb)
        K.prefetch_rows(X, perm[e:min(e + batch, stop)])  # the next batch's rows, from DRAM
        # forward: kernel 1, kernel 2 + 3 (loss, dZ2, db2 in one epilogue)
        gemm(False, True, 1.0, xb, W1, 0.0, h)
        K.bias_leaky_relu_(h, b1, slope)
        gemm(False, True, 1.0, h, W2, 0.0, dz)
        gsum2[:] = 0.0
        total += K.bias_sigmoid_mse_(dz, b2, xb, 2.0 / (nb * dz.shape[1]), Xb[:0], gsum2)
        # backward: kernel 4 (dH with db1), using W2 before its update
        gemm(False, False, 1.0, dz, W2, 0.0, dh)
        gsum1[:] = 0.0
        K.leaky_relu_grad_(dh, h, slope, gsum1)
        t = step + n_steps + 1
        if kind == _SGD:  # kernel 5 fused into the weight-gradient products: G never written
            gemm(True, False, -lr, dz, h, 1.0, W2)
            gemm(True, False, -lr, dh, xb, 1.0, W1)
            for j in range(b2.shape[0]):
                b2[j] -= lr * gsum2[j]
            for j in range(b1.shape[0]):
                b1[j] -= lr * gsum1[j]
        else:
            gemm(True, False, 1.0, dz, h, 0.0, G2)
            gemm(True, False, 1.0, dh, xb, 0.0, G1)
            gb2[:] = gsum2
            gb1[:] = gsum1
            _update(kind, W2, G2, S[2], S[6], lr, mu, beta1, beta2, eps, t)
            _update(kind, b2, gb2, S[3], S[7], lr, mu, beta1, beta2, eps, t)
            _update(kind, W1, G1, S[0], S[4], lr, mu, beta1, beta2, eps, t)
            _update(kind, b1, gb1, S[1], S[5], lr, mu, beta1, beta2, eps, t)
        n_steps += 1
    restore(mxcsr)
    return total, n_steps


@njit(cache=True, nogil=True)
def _forward(X, W1, b1, W2, b2, slope, Xb, H, Z, Y, want):
    """Batched forward over all of X. want: 0 -> loss sum, 1 -> Y (sigmoid outputs), 2 -> H."""
    total = 0.0
    batch = Xb.shape[0]
    for s in range(0, X.shape[0], batch):
        e = min(s + batch, X.shape[0])
        nb = e - s
        xb = Xb[:nb]
        K.to_float(X[s:e], xb)
        h = H[s:e] if want == 2 else H[:nb]
        gemm(False, True, 1.0, xb, W1, 0.0, h)
        K.bias_leaky_relu_(h, b1, slope)
        if want == 2:
            continue
        z = Y[s:e] if want == 1 else Z[:nb]
        gemm(False, True, 1.0, h, W2, 0.0, z)
        if want == 1:
            K.bias_sigmoid_(z, b2)
        else:
            total += K.bias_sigmoid_loss(z, b2, xb)
    return total


class CpuEngine:
    """Engine protocol (aecore.engine) on the CPU: params and buffers are float32 NumPy arrays."""

    device = "cpu"

    def __init__(self, params, optim: OptimConfig, batch_size: int, slope: float = 0.01,
                 opt_state=None, step: int = 0):
        self.params, self.state = engine_setup(self, params, optim, batch_size, slope, step,
                                               opt_state)
        hidden, image = self.hidden, self.image_size
        names = optim.state_names()
        # The 8-tuple the @njit loop takes; unused slots alias a 1-element scratch.
        unused = np.zeros(1, np.float32)
        slots = []
        for name in (names + ("", ""))[:2]:
            for p in (W1, B1, W2, B2):
                arr = self.state.get(f"{p}.{name}")
                slots.append(arr.reshape(-1) if arr is not None else unused)
        self._S = tuple(slots)
        B = self.batch_size
        self._Xb = np.empty((B, image), np.float32)
        self._H = np.empty((B, hidden), np.float32)
        self._dZ = np.empty((B, image), np.float32)
        self._dH = np.empty((B, hidden), np.float32)
        fused = optim.name == "sgd"
        self._G1 = np.empty((0, image) if fused else (hidden, image), np.float32)
        self._G2 = np.empty((0, hidden) if fused else (image, hidden), np.float32)
        self._gb1 = np.empty(hidden, np.float32)
        self._gb2 = np.empty(image, np.float32)
        self._loss = 0.0

    def put(self, images):
        return check_images(images, self.image_size)

    def train_steps(self, data, perm, start, stop):
        o = self.optim
        p = self.params
        loss, n = _train_steps(
            data, np.ascontiguousarray(perm, np.int64), int(start), int(stop), self.batch_size,
            p[W1], p[B1], p[W2], p[B2], np.float32(self.slope), _KIND[o.name], np.float32(o.lr),
            np.float32(o.momentum), o.beta1, o.beta2, o.eps, self.step, self._S,
            self._Xb, self._H, self._dZ, self._dH, self._G1, self._G2, self._gb1, self._gb2)
        self._loss += loss
        self.step += n

    def take_loss_sum(self) -> float:
        loss, self._loss = self._loss, 0.0
        return float(loss)

    def _forward(self, images, want):
        images = self.put(images)
        n = images.shape[0]
        p = self.params
        B = min(EVAL_BATCH, max(n, 1))
        Xb = np.empty((B, self.image_size), np.float32)
        H = np.empty((n if want == 2 else B, self.hidden), np.float32)
        Z = np.empty((B, self.image_size), np.float32)
        Y = np.empty((n if want == 1 else 0, self.image_size), np.float32)
        total = _forward(images, p[W1], p[B1], p[W2], p[B2], np.float32(self.slope), Xb, H, Z, Y,
                         want)
        return total, H, Y

    def evaluate(self, data) -> float:
        n = data.shape[0]
        if n == 0:
            return float("nan")
        return self._forward(data, 0)[0] / (n * self.image_size)

    def reconstruct(self, images):
        return self._forward(images, 1)[2]

    def encode(self, images):
        return self._forward(images, 2)[1]

    def get_params(self):
        return {k: v.copy() for k, v in self.params.items()}

    def get_opt_state(self):
        return {k: v.copy() for k, v in self.state.items()}
