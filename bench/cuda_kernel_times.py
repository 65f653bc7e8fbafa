"""Where a CUDA training step's time goes: the GPU time of each of its five launches.

    python bench/cuda_kernel_times.py [--batch 64,256] [--hidden 64,128,256,512] [--reps 200]

Needs a real GPU. For each kernel of the SGD step it enqueues a sleeping kernel first and then
``reps`` launches behind it, so the launches queue up while the GPU sleeps and the events around
them measure GPU execution back to back (not the host's launch rate, which is printed
separately as "host us/launch"). Kernels 1-3 are timed twice: with the split-K plan the engine
uses (``kc.SplitK()``) and without (one block per output tile). The tile shape comes from
AECORE_CUDA_TILE / AECORE_CUDA_BK (read at import), so run it once per setting to compare
tilings; also printed: the time to compile every kernel once (numba-cuda, no disk cache) and
the step's GFLOP/s at batch B.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from numba import cuda

from aecore.kernels import cuda as kc


def _sleep_py(n):
    for _ in range(n):
        cuda.nanosleep(1000)


_sleep = None if kc.SIMULATOR else cuda.jit("void(int64)")(_sleep_py)  # no nanosleep there


def _gpu_us(fn, reps):
    """GPU microseconds per call of fn, with the launches queued behind a sleeping kernel."""
    fn()
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t0) / reps * 1e6
    cuda.synchronize()
    # sleep long enough for the host to enqueue all launches (host time x 2 + 1 ms)
    if _sleep is not None:
        _sleep[1, 1](int(host * reps * 2) + 1000)
    start, end = cuda.event(), cuda.event()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / reps, host


def step_kernels(batch, hidden, sk, n_images=4096, seed=0):
    rng = np.random.default_rng(seed)
    X = cuda.to_device(rng.integers(0, 256, (n_images, 784), dtype=np.uint8))
    perm = cuda.to_device(rng.permutation(n_images).astype(np.int64))
    W1 = cuda.to_device((rng.standard_normal((hidden, 784)) * 0.05).astype(np.float32))
    W2 = cuda.to_device((rng.standard_normal((784, hidden)) * 0.05).astype(np.float32))
    b1 = cuda.to_device(np.zeros(hidden, np.float32))
    b2 = cuda.to_device(np.zeros(784, np.float32))
    H = cuda.device_array((batch, hidden), np.float32)
    dH = cuda.device_array((batch, hidden), np.float32)
    dZ = cuda.device_array((batch, 784), np.float32)
    loss = cuda.to_device(np.zeros(1))
    hp = cuda.to_device(kc._hp(lr=1e-6))
    return {
        "1 linear_leaky_relu": lambda: kc.linear_leaky_relu(X, W1, b1, H, 0.01, perm=perm, off=64,
                                                            splitk=sk),
        "2 linear_sigmoid_mse": lambda: kc.linear_sigmoid_mse(H, W2, b2, X, dZ, loss, perm=perm,
                                                              off=64, splitk=sk),
        "3 backward_hidden": lambda: kc.backward_hidden(dZ, W2, H, dH, 0.01, splitk=sk),
        "4 sgd_weight_step W2": lambda: kc.sgd_weight_step(dZ, H, W2, b2, 1e-6, hp=hp),
        "5 sgd_weight_step W1": lambda: kc.sgd_weight_step(dH, X, W1, b1, 1e-6, perm=perm, off=64,
                                                           hp=hp),
        # 4 and 5 in one launch (AECORE_CUDA_PAIRED_UPDATES=1); not part of the step sum
        "4+5 weight_step_pair": lambda: kc.weight_step_pair(
            kc.OPT_SGD, hp, (dZ, H, W2, b2, None, None, None, None, None, 0),
            (dH, X, W1, b1, None, None, None, None, perm, 64)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="64,256")
    ap.add_argument("--hidden", default="64,128,256,512")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    kc.compile_all()
    compile_s = time.perf_counter() - t
    print(f"tile {kc.BM}x{kc.BN}, BK {kc.BK}, prefetch {kc.PREFETCH}; "
          f"compile_all {compile_s:.1f} s; "
          f"device {getattr(cuda.get_current_device(), 'name', '?')}")
    rows = []
    sk = kc.SplitK()
    for B in map(int, a.batch.split(",")):
        for h in map(int, a.hidden.split(",")):
            total = {"split": 0.0, "whole": 0.0}
            split_fns = step_kernels(B, h, sk)
            single = paired = 0.0
            for name, fn in step_kernels(B, h, None).items():
                gpu, host = _gpu_us(fn, a.reps)
                gpu_s = _gpu_us(split_fns[name], a.reps)[0] if name[0] in "123" else gpu
                if name.startswith("4+5"):
                    paired = gpu
                else:
                    total["whole"] += gpu
                    total["split"] += gpu_s
                    single += gpu if name[0] in "45" else 0.0
                rows.append(dict(tile=kc.BM, bk=kc.BK, prefetch=kc.PREFETCH, batch=B, hidden=h,
                                 kernel=name,
                                 gpu_us=gpu, gpu_us_splitk=gpu_s, host_us=host))
                print(f"B={B:<4} h={h:<4} {name:<22} gpu {gpu:8.2f} us, split-K {gpu_s:8.2f} us"
                      f"   host {host:6.2f} us/launch")
            flops = 6 * B * 784 * h
            print(f"B={B:<4} h={h:<4} {'step (sum)':<22} gpu {total['whole']:8.2f} us, split-K "
                  f"{total['split']:8.2f} us   {flops / total['split'] / 1e3:8.1f} GFLOP/s")
            print(f"B={B:<4} h={h:<4} {'step, 4+5 paired':<22} split-K "
                  f"{total['split'] - single + paired:8.2f} us   (4 + 5: {single:.2f} us apart, "
                  f"{paired:.2f} us in one launch)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"compile_s": compile_s, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
