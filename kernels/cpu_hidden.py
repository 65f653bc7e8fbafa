"""Kernels 1 and 4 on the CPU, for any hidden activation: the forward layer
``H <- f(X W^T + b)`` and the backward product ``dH <- (dZ W2) * f'(Z)``, each an sgemm with its
epilogue on the cache-hot output.

``act`` is the activation's number (``activations_cpu.code(name)``), a compile-time literal:
the entry points take it with ``numba.literally``, so each activation is its own cached
specialisation, straight-line code with no per-element branch; ``leaky_relu`` (number 0)
compiles to the expressions of the kernels before activations were a choice
(tests/test_golden_cpu.py checks the engine bit for bit). ``Zpre`` (H's shape) receives the
pre-activation ``X W^T + b`` where the activation's backward needs it (gelu:
``needs_preactivation``); for the others it is never touched (pass any float32 2-D array).
"""

from __future__ import annotations

import numpy as np
from numba import literally, njit

from .activations_cpu import backward, code, forward, keeps_preactivation
from .blas import gemm
from .cpu_math import _FAST, _as_float32, wide_vectors

LEAKY_RELU = code("leaky_relu")


# --- kernel 1: matmul + bias + activation -----------------------------------------------------
@njit(**_FAST)
def bias_activation_(Z, b, slope, act, Zpre):
    """Epilogue of kernel 1, in place: Z <- f(Z + b), f activation number ``act``."""
    wide_vectors()
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            z = Z[i, j] + b[j]
            if keeps_preactivation(act):
                Zpre[i, j] = z
            Z[i, j] = forward(act, z, slope)


@njit(**_FAST)
def linear_activation(X, W, b, H, slope, act, Zpre):
    """H <- f(X W^T + b). X (B, K) float32 or uint8; W (N, K); b (N,); H, Zpre (B, N)."""
    gemm(False, True, 1.0, _as_float32(X), W, 0.0, H)
    bias_activation_(H, b, np.float32(slope), literally(act), Zpre)


@njit(**_FAST)
def bias_leaky_relu_(Z, b, slope):
    """Epilogue of kernel 1 for leaky_relu, in place: Z <- leaky_relu(Z + b)."""
    bias_activation_(Z, b, slope, LEAKY_RELU, Z)


@njit(**_FAST)
def linear_leaky_relu(X, W, b, H, slope=0.01):
    """H <- leaky_relu(X W^T + b). X (B, K) float32 or uint8; W (N, K); b (N,); H (B, N)."""
    linear_activation(X, W, b, H, slope, LEAKY_RELU, H)


# --- kernel 4: the backward product through the hidden layer ----------------------------------
@njit(**_FAST)
def activation_grad_(dH, H, Zpre, slope, colsum, act):
    """Epilogue of the dH product, in place: dH <- dH * f'(Z), read off H (and Zpre where the
    activation keeps it). When ``colsum`` (float64, (K,)) has elements, dH's column sums are
    added to it."""
    wide_vectors()
    sum_cols = colsum.shape[0] > 0
    for i in range(dH.shape[0]):
        g = dH[i]
        h = H[i]
        z = Zpre[i] if keeps_preactivation(act) else h
        for j in range(g.shape[0]):
            g[j] = backward(act, g[j], h[j], z[j], slope)
        if sum_cols:
            for j in range(g.shape[0]):
                colsum[j] += g[j]


@njit(**_FAST)
def backward_activation(dZ, W2, H, Zpre, dH, slope, act, colsum):
    """dH <- (dZ W2) * f'(Z). dZ (B, N); W2 (N, K); H, Zpre, dH (B, K); ``colsum`` ((K,)
    float64, or empty) receives dH's column sums (the bias gradient) from the same pass."""
    gemm(False, False, 1.0, dZ, W2, 0.0, dH)
    colsum[:] = 0.0
    activation_grad_(dH, H, Zpre, np.float32(slope), colsum, literally(act))


@njit(**_FAST)
def leaky_relu_grad_(dH, H, slope, colsum):
    """activation_grad_ for leaky_relu: dH <- dH * leaky_relu'(H), read off H's sign."""
    activation_grad_(dH, H, H, slope, colsum, LEAKY_RELU)


@njit(**_FAST)
def backward_hidden(dZ, W2, H, dH, slope=0.01, colsum=None):
    """dH <- (dZ W2) * leaky_relu'(H). dZ (B, N); W2 (N, K); H, dH (B, K). ``colsum`` ((K,)
    float64), if given, receives dH's column sums (the bias gradient) from the same pass."""
    sums = np.empty(0, np.float64) if colsum is None else colsum
    backward_activation(dZ, W2, H, H, dH, slope, LEAKY_RELU, sums)
