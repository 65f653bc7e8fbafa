"""Throughput of a full training step and a full epoch on the CPU: aecore's fused engine vs the
unfused NumPy baseline, PyTorch eager (when installed) and the GEMM floor (the step's five
products alone, same BLAS), for h in {64..512} and batch 64 / 256, plain SGD.

Targets (issue 5, ratios of this run): aecore epoch <= 0.8x PyTorch at batch 64 and <= 0.9x at
batch 256; <= 1.2x the GEMM floor; and (issue 2) the fused step >= 1.2x faster than NumPy.
``extra_info`` holds samples/s and GFLOP/s (of the five products).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from aecore.baselines import GemmFloor, NumpyEngine, TorchEngine, step_flops
from aecore.engine_cpu import CpuEngine
from aecore.model import init_params
from aecore.optim import OptimConfig

from .conftest import BATCHES, HIDDEN

IMPLS = ["aecore", "numpy", "torch", "floor"]
STEPS_PER_ROUND = 50  # the "step" benchmarks time this many consecutive steps per round


def make(impl, hidden, batch):
    params = init_params(hidden, seed=0)
    opt = OptimConfig("sgd", lr=0.05)
    if impl == "aecore":
        return CpuEngine(params, opt, batch)
    if impl == "numpy":
        return NumpyEngine(params, opt, batch)
    if impl == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(int(os.environ.get("AECORE_TORCH_THREADS", os.cpu_count())))
        return TorchEngine(params, opt, batch)
    return GemmFloor(hidden, batch)


def time_samples(benchmark, impl, hidden, batch, images, n, rounds):
    eng = make(impl, hidden, batch)
    perm = np.random.default_rng(0).permutation(images.shape[0])[:n]
    if impl == "floor":
        fn = lambda: eng.run(n)  # noqa: E731
    else:
        data = eng.put(images)
        fn = lambda: eng.train_steps(data, perm, 0, n)  # noqa: E731
    fn()  # compile / warm up
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(
        impl=impl, hidden=hidden, batch=batch, samples=n, samples_per_s=n / med,
        gflops=step_flops(n, hidden) / med / 1e9,
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("batch", BATCHES)
def test_epoch(benchmark, train_images, impl, hidden, batch):
    """One epoch over the 60,000 training images."""
    benchmark.group = f"cpu epoch B={batch} h={hidden}"
    time_samples(benchmark, impl, hidden, batch, train_images, train_images.shape[0], rounds=3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("batch", BATCHES)
def test_step(benchmark, train_images, impl, hidden, batch):
    """STEPS_PER_ROUND consecutive training steps (the step's own cost, no epoch bookkeeping)."""
    benchmark.group = f"cpu {STEPS_PER_ROUND} steps B={batch} h={hidden}"
    time_samples(benchmark, impl, hidden, batch, train_images, STEPS_PER_ROUND * batch, rounds=7)
