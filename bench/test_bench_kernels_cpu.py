"""Micro-benchmarks: each fused CPU kernel (aecore.kernels.cpu) against the unfused NumPy way
(np.dot / @, then one NumPy pass per elementwise op), for B in {64, 256} and h in {64..512}.

Target (issue 2): every fused kernel at least as fast as its NumPy equivalent at every size.
The ratio table printed at the end of the run (bench/conftest.py) gives aecore/numpy per group.
"""

from __future__ import annotations

import numpy as np
import pytest

from aecore.kernels import cpu as K

from .conftest import BATCHES, HIDDEN

D = 784


def operands(B, h, seed=0):
    rng = np.random.default_rng(seed)
    f = np.float32
    return dict(
        X=rng.integers(0, 256, (B, D), dtype=np.uint8),
        W1=(rng.standard_normal((h, D)) * 0.05).astype(f),
        b1=(rng.standard_normal(h) * 0.1).astype(f),
        W2=(rng.standard_normal((D, h)) * 0.1).astype(f),
        b2=(rng.standard_normal(D) * 0.1).astype(f),
        H=rng.standard_normal((B, h)).astype(f),
        dZ=(rng.standard_normal((B, D)) * 1e-4).astype(f),
        dH=(rng.standard_normal((B, h)) * 1e-4).astype(f),
    )


def run(benchmark, impl, flops, fn):
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["flops"] = flops
    fn()  # compile / warm up outside the timing
    benchmark(fn)
    benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9


IMPLS = ["aecore", "numpy"]
GRID = [(B, h) for B in BATCHES for h in HIDDEN]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,h", GRID)
def test_linear_leaky_relu(benchmark, B, h, impl):
    o = operands(B, h)
    benchmark.group = f"cpu linear_leaky_relu B={B} h={h}"
    H = np.empty((B, h), np.float32)
    X, W, b, s = o["X"], o["W1"], o["b1"], np.float32(0.01)
    if impl == "aecore":
        fn = lambda: K.linear_leaky_relu(X, W, b, H, 0.01)  # noqa: E731
    else:
        def fn():
            Z = (X.astype(np.float32) / np.float32(255)) @ W.T + b
            return np.where(Z > 0, Z, s * Z)
    run(benchmark, impl, 2 * B * D * h, fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,h", GRID)
def test_linear_sigmoid_mse(benchmark, B, h, impl):
    o = operands(B, h)
    benchmark.group = f"cpu linear_sigmoid_mse B={B} h={h}"
    dZ = np.empty((B, D), np.float32)
    H, W, b, X = o["H"], o["W2"], o["b2"], o["X"]
    if impl == "aecore":
        fn = lambda: K.linear_sigmoid_mse(H, W, b, X, dZ)  # noqa: E731
    else:
        def fn():
            Y = 1.0 / (1.0 + np.exp(-(H @ W.T + b)))
            Dif = Y - X.astype(np.float32) / np.float32(255)
            loss = float(np.sum(Dif * Dif, dtype=np.float64))
            return (np.float32(2.0 / Dif.size) * Dif) * Y * (1.0 - Y), loss
    run(benchmark, impl, 2 * B * D * h, fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,h", GRID)
def test_backward_hidden(benchmark, B, h, impl):
    o = operands(B, h)
    benchmark.group = f"cpu backward_hidden B={B} h={h}"
    dH = np.empty((B, h), np.float32)
    dZ, W2, H, s = o["dZ"], o["W2"], o["H"], np.float32(0.01)
    if impl == "aecore":
        fn = lambda: K.backward_hidden(dZ, W2, H, dH, 0.01)  # noqa: E731
    else:
        fn = lambda: (dZ @ W2) * np.where(H > 0, np.float32(1), s)  # noqa: E731
    run(benchmark, impl, 2 * B * D * h, fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,h", GRID)
def test_sgd_weight_step(benchmark, B, h, impl):
    """The weight-gradient product with the SGD update (W1 <- W1 - lr dH^T X, b1 too)."""
    o = operands(B, h)
    benchmark.group = f"cpu sgd_weight_step B={B} h={h}"
    W, b, dH, X = o["W1"].copy(), o["b1"].copy(), o["dH"], o["X"]
    lr = np.float32(1e-3)
    if impl == "aecore":
        fn = lambda: K.sgd_weight_step(dH, X, W, b, 1e-3)  # noqa: E731
    else:
        def fn():
            W[...] -= lr * (dH.T @ (X.astype(np.float32) / np.float32(255)))
            b[...] -= lr * dH.sum(axis=0)
    run(benchmark, impl, 2 * B * D * h, fn)


@pytest.mark.parametrize("shape", [(512, 784), (64, 784)])
@pytest.mark.parametrize("impl", IMPLS)
def test_adam_update(benchmark, shape, impl):
    rng = np.random.default_rng(0)
    W, G, M, V = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
    V = np.abs(V)
    benchmark.group = f"cpu adam_update {shape[0]}x{shape[1]}"
    if impl == "aecore":
        fn = lambda: K.adam_update(W, G, M, V, 1e-3, 10, 0.9, 0.999, 1e-8)  # noqa: E731
    else:
        def fn():
            M[...] = 0.9 * M + 0.1 * G
            V[...] = 0.999 * V + 0.001 * G * G
            W[...] -= (1e-3 / (1 - 0.9**10)) * M / (np.sqrt(V / (1 - 0.999**10)) + 1e-8)
    run(benchmark, impl, 0, fn)
