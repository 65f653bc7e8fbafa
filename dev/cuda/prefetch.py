"""Variant: the GEMM main loops fetch the next K step into registers before this step's
multiply-adds (``mainloop(..., prefetch=True)``), to hide the global-memory latency.

    python dev/cuda/prefetch.py --check     # bit-for-bit against production (simulator or GPU)
    python dev/cuda/prefetch.py --time      # per-kernel GPU times, production vs prefetch

Same products in the same order, so the results must be the same bits; whether it is faster is
for a GPU to say (it holds a second K step's operands in registers).
"""

from __future__ import annotations

import numpy as np

import harness  # noqa: F401  (the repository on sys.path)
from harness import gpu_us, main, same_bits, step_kernels, step_operands

from aecore.kernels import cuda as kc
from aecore.kernels.cuda import fused_backward_hidden, fused_linear_leaky_relu, launch
from aecore.kernels.cuda import fused_linear_sigmoid, fused_weight_step


def kernels():
    """The prefetch variant of every GEMM kernel, keyed as ``step_kernels`` overrides them."""
    K = launch.Kernel
    return {"llr": K(fused_linear_leaky_relu.variants(prefetch=True), register=False),
            "lsm": K(fused_linear_sigmoid.mse_variants(prefetch=True), register=False),
            "ls": K(fused_linear_sigmoid.sigmoid_variants(prefetch=True), register=False),
            "bh": K(fused_backward_hidden.variants(prefetch=True), register=False),
            "ws": K(fused_weight_step.variants(prefetch=True), register=False)}


def check(B=37, h=70, P=100, splits=3, seed=0):
    """Every GEMM kernel, production and prefetch, on the same operands: same bits (split-K
    slices, gathered rows, the fused Adam update with its column sums)."""
    from numba import cuda

    pf = kernels()
    rng = np.random.default_rng(seed)
    o = step_operands(rng, B, h, P)
    sk = kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=16)
    loss = cuda.to_device(np.zeros(1))
    results = []
    for extra in ({}, pf):
        k = {n: {"kernel": extra[n]} if n in extra else {} for n in ("llr", "lsm", "ls", "bh",
                                                                      "ws")}
        H = cuda.device_array((B, h), np.float32)
        dZ, Y = cuda.device_array((B, P), np.float32), cuda.device_array((B, P), np.float32)
        dH = cuda.device_array((B, h), np.float32)
        kc.linear_leaky_relu(o["X"], o["W1"], o["b1"], H, 0.01, perm=o["perm"], off=o["off"],
                             splitk=sk, **k["llr"])
        kc.linear_sigmoid_mse(H, o["W2"], o["b2"], o["X"], dZ, loss, perm=o["perm"],
                              off=o["off"], splitk=sk, **k["lsm"])
        kc.linear_sigmoid(H, o["W2"], o["b2"], Y, **k["ls"])
        kc.backward_hidden(dZ, o["W2"], H, dH, 0.01, splitk=sk, **k["bh"])
        W1 = cuda.to_device(o["W1"].copy_to_host())
        b1 = cuda.to_device(o["b1"].copy_to_host())
        S = [cuda.to_device(np.full(n, 1e-3, np.float32)) for n in (h * P, h, h * P, h)]
        hp = cuda.to_device(kc.adam_hparams(1e-2, 2))
        kc.launch_weight_step(dH, o["X"], kc.OPT_ADAM, None, None, W1, b1, *S, hp, o["perm"],
                              o["off"], 0, **k["ws"])
        results.append([a.copy_to_host() for a in (H, dZ, Y, dH, W1, b1, *S)])
    for name, a, b in zip("H dZ Y dH W1 b1 VW1 Vb1 MW1 Mb1".split(), *results):
        same_bits(a, b, f"prefetch {name}")
    return True


def time_kernels(batches=(64, 256), hidden=(64, 128, 256, 512), reps=200):
    pf = kernels()
    sk = kc.SplitK()
    for B in batches:
        for h in hidden:
            base = step_kernels(B, h, sk)
            var = step_kernels(B, h, sk, kernels=pf)
            for name in base:
                t0, t1 = gpu_us(base[name], reps)[0], gpu_us(var[name], reps)[0]
                print(f"B={B:<4} h={h:<4} {name:<22} production {t0:8.2f} us  "
                      f"prefetch {t1:8.2f} us  ({t1 / t0:.2f}x)", flush=True)


if __name__ == "__main__":
    main(__doc__, check, time_kernels, "prefetch: same bits as production on every GEMM kernel")
