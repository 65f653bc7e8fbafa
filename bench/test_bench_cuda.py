"""GPU throughput: the CUDA kernels against CuPy (cuBLAS + elementwise), and a full training step /
epoch of the CUDA engine against PyTorch CUDA eager and the cuBLAS GEMM floor.

Needs a real GPU: everything here skips cleanly without one (the simulator would time Python).
Run on a GPU machine with ``pytest bench -k cuda --benchmark-only`` (``bench/gpu_session.sh``
does that and everything else a GPU session should record). Every timed function ends with a
device synchronisation, so the time is the GPU's work, not the launch queue's.
"""

from __future__ import annotations

import numpy as np
import pytest

from aecore.devices import real_gpu_present

if not real_gpu_present():
    pytest.skip("no CUDA GPU here (the CUDA benchmarks need real hardware)", allow_module_level=True)

from numba import cuda  # noqa: E402

from aecore.baselines import step_flops  # noqa: E402
from aecore.bench import _cuda_floor_fn, _torch_fn  # noqa: E402
from aecore.devices import make_engine  # noqa: E402
from aecore.optim import OptimConfig  # noqa: E402
from aecore.kernels import cuda as kc  # noqa: E402
from aecore.model import init_params  # noqa: E402

from .conftest import BATCHES, HIDDEN  # noqa: E402

cp = pytest.importorskip("cupy")


def _bench(benchmark, fn, rounds, **info):
    fn()
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(info)
    return med


# --- kernels vs CuPy ----------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["aecore", "cupy"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("batch", BATCHES)
def test_cuda_forward_kernels(benchmark, impl, hidden, batch):
    """Kernels 1-3 (matmul+LeakyReLU, matmul+Sigmoid+MSE gradient) x 100 launches."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (batch, 784), dtype=np.uint8)
    W1 = (rng.standard_normal((hidden, 784)) * 0.05).astype(np.float32)
    W2 = (rng.standard_normal((784, hidden)) * 0.05).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    b2 = np.zeros(784, np.float32)
    reps = 100
    if impl == "aecore":
        d = {k: cuda.to_device(v) for k, v in dict(X=X, W1=W1, W2=W2, b1=b1, b2=b2).items()}
        H = cuda.device_array((batch, hidden), np.float32)
        dZ = cuda.device_array((batch, 784), np.float32)
        loss = cuda.to_device(np.zeros(1))

        def fn():
            for _ in range(reps):
                kc.linear_leaky_relu(d["X"], d["W1"], d["b1"], H)
                kc.linear_sigmoid_mse(H, d["W2"], d["b2"], d["X"], dZ, loss)
            cuda.synchronize()
    else:
        Xc = cp.asarray(X)
        W1c, W2c, b1c, b2c = map(cp.asarray, (W1, W2, b1, b2))
        scale = 2.0 / (batch * 784)

        def fn():
            for _ in range(reps):
                x = Xc.astype(cp.float32) / 255
                z = x @ W1c.T + b1c
                h = cp.where(z > 0, z, 0.01 * z)
                y = 1 / (1 + cp.exp(-(h @ W2c.T + b2c)))
                d = y - x
                _ = scale * d * y * (1 - y)
                _ = (d * d).sum()
            cp.cuda.Device().synchronize()
    med = _bench(benchmark, fn, 10, impl=impl, hidden=hidden, batch=batch)
    benchmark.group = f"cuda fwd kernels B={batch} h={hidden}"
    benchmark.extra_info["gflops"] = reps * 2 * 2 * batch * 784 * hidden / med / 1e9


# --- training step / epoch vs PyTorch CUDA and the cuBLAS floor -----------------------------------
def _train_fn(impl, hidden, batch, images, n):
    params = init_params(hidden, 0)
    opt = OptimConfig("sgd", lr=20.0)
    perm = np.random.default_rng(0).permutation(images.shape[0])[:n].astype(np.int64)
    if impl.startswith("aecore"):
        eng = make_engine("cuda", params, opt, batch, graphs=impl != "aecore-eager")
        data = eng.put(images)

        def fn():
            eng.train_steps(data, perm, 0, n)
            eng.take_loss_sum()  # synchronises
        return fn
    if impl == "torch":
        fn = _torch_fn("cuda", params, opt, batch, images, perm)
        if fn is None:
            pytest.skip("torch with CUDA is not installed")
        return fn
    return _cuda_floor_fn(hidden, batch, n)


@pytest.mark.parametrize("impl", ["aecore", "torch", "floor"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("batch", BATCHES)
def test_cuda_epoch(benchmark, train_images, impl, hidden, batch):
    """One epoch over the 60,000 training images, plain SGD."""
    n = train_images.shape[0]
    med = _bench(benchmark, _train_fn(impl, hidden, batch, train_images, n), 5,
                 impl=impl, hidden=hidden, batch=batch, samples=n)
    benchmark.group = f"cuda epoch B={batch} h={hidden}"
    benchmark.extra_info.update(samples_per_s=n / med, gflops=step_flops(n, hidden) / med / 1e9)


@pytest.mark.parametrize("impl", ["aecore", "aecore-eager", "torch", "floor"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("batch", BATCHES)
def test_cuda_step(benchmark, train_images, impl, hidden, batch):
    """200 consecutive steps: per-step launch overhead shows here. ``aecore`` replays a CUDA
    graph of the 1000 launches (recorded on the second call: the warm-up rounds), and
    ``aecore-eager`` launches them one by one: their ratio is the graph's effect."""
    n = 200 * batch
    med = _bench(benchmark, _train_fn(impl, hidden, batch, train_images, n), 7,
                 impl=impl, hidden=hidden, batch=batch, samples=n)
    benchmark.group = f"cuda 200 steps B={batch} h={hidden}"
    benchmark.extra_info.update(samples_per_s=n / med, us_per_step=med / 200 * 1e6,
                                gflops=step_flops(n, hidden) / med / 1e9)
