"""Float64 NumPy references: the *definition* of every fused kernel in aecore.

The CPU (`kernels.cpu`, @njit) and CUDA (`kernels.cuda`, Numba CUDA) versions compute exactly
these functions in float32; the tests compare them with these in float64 on fresh random inputs.

Conventions (the same as PyTorch's ``nn.Linear``, so checkpoints load there directly):

* A layer's weight ``W`` has shape ``(out_features, in_features)`` and its bias ``b`` shape
  ``(out_features,)``; the layer computes ``X @ W.T + b``.
* Inputs may be raw ``uint8`` pixels: they are scaled by 1/255 as they are read (``as_input``),
  so the dataset can stay ``uint8`` in memory, 4x smaller than float32.
* The model is 784 -> h -> 784: ``H = leaky_relu(X W1^T + b1)``, ``Y = sigmoid(H W2^T + b2)``,
  loss ``mean((Y - X)^2)`` over the batch and the 784 pixels.
"""

from __future__ import annotations

import numpy as np

from . import PIXEL_SCALE


def as_input(X) -> np.ndarray:
    """uint8 pixels -> float64 in [0, 1]; float inputs are taken as they are."""
    X = np.asarray(X)
    if X.dtype == np.uint8:
        return X.astype(np.float64) * PIXEL_SCALE
    return X.astype(np.float64)


def leaky_relu(Z, slope=0.01):
    return np.where(Z > 0, Z, slope * Z)


def sigmoid(Z):
    """Numerically safe logistic function: never evaluates exp of a large positive number."""
    Z = np.asarray(Z, dtype=np.float64)
    E = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1.0 / (1.0 + E), E / (1.0 + E))


# --- kernel 1: matmul + bias + LeakyReLU ------------------------------------------------------
def linear_leaky_relu(X, W, b, slope=0.01):
    """H = leaky_relu(X W^T + b). X: (B, K) uint8 or float; W: (N, K); b: (N,) -> (B, N)."""
    return leaky_relu(as_input(X) @ np.asarray(W, np.float64).T + np.asarray(b, np.float64), slope)


# --- kernel 2: matmul + bias + Sigmoid --------------------------------------------------------
def linear_sigmoid(H, W, b):
    """Y = sigmoid(H W^T + b). H: (B, K); W: (N, K); b: (N,) -> (B, N)."""
    return sigmoid(as_input(H) @ np.asarray(W, np.float64).T + np.asarray(b, np.float64))


# --- kernel 3: the MSE gradient (fused into kernel 2's epilogue in the fast versions) ---------
def mse_grad(Y, T):
    """Loss sum and gradient of mean((Y - T)^2) w.r.t. the Sigmoid's input Z.

    Returns ``(dZ, loss_sum)`` with ``dZ = 2/(B*N) * (Y - T) * Y * (1 - Y)`` and
    ``loss_sum = sum((Y - T)^2)`` (divide by B*N for the mean). T may be uint8 pixels.
    """
    Y = np.asarray(Y, np.float64)
    T = as_input(T)
    B, N = Y.shape
    D = Y - T
    return (2.0 / (B * N)) * D * Y * (1.0 - Y), float(np.sum(D * D))


def linear_sigmoid_mse(H, W, b, T):
    """Kernels 2+3 fused: returns ``(Y, dZ, loss_sum)``."""
    Y = linear_sigmoid(H, W, b)
    dZ, loss_sum = mse_grad(Y, T)
    return Y, dZ, loss_sum


# --- kernel 4: the backward products ----------------------------------------------------------
def backward_hidden(dZ, W2, H, slope=0.01):
    """dH = (dZ W2) * leaky_relu'(Z1), the derivative read off H's sign (H > 0 <=> Z1 > 0).

    dZ: (B, N) gradient at the output layer's input; W2: (N, K); H: (B, K) -> (B, K).
    """
    H = np.asarray(H, np.float64)
    return (np.asarray(dZ, np.float64) @ np.asarray(W2, np.float64)) * np.where(H > 0, 1.0, slope)


def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """alpha op(A) op(B) + beta C in float64 (op(X) = X.T when trans_x; C not read when beta
    is 0): the definition of the CPU step's own GEMM (kernels.cpu_gemm.gemm)."""
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    out = alpha * ((A.T if trans_a else A) @ (B.T if trans_b else B))
    return out if beta == 0 else out + beta * np.asarray(C, np.float64)


def weight_grad(dZ, A):
    """Gradients of a Linear layer: ``(dZ^T A, dZ.sum(0))`` = (dW (N, K), db (N,)).

    dZ: (B, N) gradient at the layer's output; A: (B, K) the layer's input (uint8 allowed).
    """
    dZ = np.asarray(dZ, np.float64)
    return dZ.T @ as_input(A), dZ.sum(axis=0)


# --- kernel 5: optimizer updates (PyTorch's torch.optim semantics) ----------------------------
def sgd_update(W, G, lr, momentum=0.0, nesterov=False, V=None):
    """SGD as torch.optim.SGD (dampening 0, no weight decay). Returns (W_new, V_new).

    With momentum: V <- momentum*V + G (V starts at 0, so the first V is G);
    the step is G + momentum*V with Nesterov, else V. Without momentum V is returned unchanged.
    """
    W = np.asarray(W, np.float64)
    G = np.asarray(G, np.float64)
    if momentum == 0.0:
        return W - lr * G, V
    V = momentum * np.asarray(V, np.float64) + G
    step = G + momentum * V if nesterov else V
    return W - lr * step, V


def adam_update(W, G, M, V, lr, t, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam as torch.optim.Adam at step t >= 1 (bias-corrected). Returns (W_new, M_new, V_new)."""
    W, G, M, V = (np.asarray(a, np.float64) for a in (W, G, M, V))
    M = beta1 * M + (1 - beta1) * G
    V = beta2 * V + (1 - beta2) * G * G
    m_hat = M / (1 - beta1**t)
    v_hat = V / (1 - beta2**t)
    return W - lr * m_hat / (np.sqrt(v_hat) + eps), M, V


# --- the whole step ----------------------------------------------------------------------------
def forward_loss(X, W1, b1, W2, b2, slope=0.01):
    """Mean squared reconstruction error of the batch X (the quantity training minimises)."""
    H = linear_leaky_relu(X, W1, b1, slope)
    Y = linear_sigmoid(H, W2, b2)
    return float(np.mean((Y - as_input(X)) ** 2))


def gradients(X, W1, b1, W2, b2, slope=0.01):
    """Loss and all four parameter gradients of one batch, composed from the kernels above.

    Returns ``(loss_mean, dW1, db1, dW2, db2)``.
    """
    H = linear_leaky_relu(X, W1, b1, slope)
    _, dZ2, loss_sum = linear_sigmoid_mse(H, W2, b2, X)
    dW2, db2 = weight_grad(dZ2, H)
    dH = backward_hidden(dZ2, W2, H, slope)
    dW1, db1 = weight_grad(dH, X)
    B, N = dZ2.shape
    return loss_sum / (B * N), dW1, db1, dW2, db2
