"""Where a CUDA training step's time goes: the GPU time of each of its five launches.

    python bench/cuda_kernel_times.py [--batch 64,256] [--hidden 64,128,256,512] [--reps 200]
                                      [--kernels FILE]

Needs a real GPU. For each kernel of the SGD step it enqueues a sleeping kernel first and then
``reps`` launches behind it, so the launches queue up while the GPU sleeps and the events around
them measure GPU execution back to back (not the host's launch rate, which is printed
separately as "host us/launch"). Kernels 1-3 are timed twice: with the split-K plan the engine
uses (``kc.SplitK()``) and without (one block per output tile). The tile shape comes from
AECORE_CUDA_TILE / AECORE_CUDA_BK (read at import), so run it once per setting to compare
tilings; also printed: the time to compile every kernel once (numba-cuda, no disk cache) and
the step's GFLOP/s at batch B. ``--kernels FILE`` times the launchers of another kernel module
with the same API instead (the one-file kernels/cuda.py before the GEMM-core rewrite, from
``git show effbbb7:kernels/cuda.py``): the before/after per-kernel comparison.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import numpy as np
from numba import cuda

from aecore.kernels import cuda as kc


def _sleep_py(n):
    for _ in range(n):
        cuda.nanosleep(1000)


_SLEEP = []


def _sleep():
    """The sleeping kernel, compiled on first use (None in the simulator: no nanosleep)."""
    if not _SLEEP:
        _SLEEP.append(None if kc.SIMULATOR else cuda.jit("void(int64)")(_sleep_py))
    return _SLEEP[0]


def gpu_us(fn, reps):
    """GPU microseconds per call of fn, with the launches queued behind a sleeping kernel."""
    fn()
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t0) / reps * 1e6
    cuda.synchronize()
    # sleep long enough for the host to enqueue all launches (host time x 2 + 1 ms)
    if _sleep() is not None:
        _sleep()[1, 1](int(host * reps * 2) + 1000)
    start, end = cuda.event(), cuda.event()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / reps, host


def step_kernels(batch, hidden, sk, n_images=4096, seed=0, kc=kc, kernels=None):
    """The step's five launches as closures (name -> fn). ``kc``: the kernel module;
    ``kernels``: launcher keyword overrides {"llr", "lsm", "bh", "ws"} -> a Kernel (dev/cuda
    variants)."""
    kw = {k: ({} if not kernels or k not in kernels else {"kernel": kernels[k]})
          for k in ("llr", "lsm", "bh", "ws")}
    hparams = getattr(kc, "hparams", None) or kc._hp
    ws_step = getattr(kc, "launch_weight_step", None)

    def sgd_step(dZ, A, W, b, perm=None, off=0):
        if ws_step is None:  # the kernels before the rewrite
            return kc.sgd_weight_step(dZ, A, W, b, 1e-6, perm=perm, off=off, hp=hp)
        return ws_step(dZ, A, kc.OPT_SGD, None, None, W, b, None, None, None, None, hp, perm,
                       off, 0, **kw["ws"])

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
    hp = cuda.to_device(hparams(lr=1e-6))
    return {
        "1 linear_leaky_relu": lambda: kc.linear_leaky_relu(X, W1, b1, H, 0.01, perm=perm, off=64,
                                                            splitk=sk, **kw["llr"]),
        "2 linear_sigmoid_mse": lambda: kc.linear_sigmoid_mse(H, W2, b2, X, dZ, loss, perm=perm,
                                                              off=64, splitk=sk, **kw["lsm"]),
        "3 backward_hidden": lambda: kc.backward_hidden(dZ, W2, H, dH, 0.01, splitk=sk,
                                                        **kw["bh"]),
        "4 sgd_weight_step W2": lambda: sgd_step(dZ, H, W2, b2),
        "5 sgd_weight_step W1": lambda: sgd_step(dH, X, W1, b1, perm=perm, off=64),
    }


def load_kernels(path):
    """A kernel module from a file (the pre-rewrite one-file kernels/cuda.py)."""
    spec = importlib.util.spec_from_file_location("kernels_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="64,256")
    ap.add_argument("--hidden", default="64,128,256,512")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--kernels", default=None,
                    help="time this kernel module file instead of aecore.kernels.cuda")
    a = ap.parse_args(argv)
    mod = load_kernels(a.kernels) if a.kernels else kc
    which = a.kernels or "aecore.kernels.cuda"
    t = time.perf_counter()
    mod.compile_all()
    compile_s = time.perf_counter() - t
    print(f"{which}: tile {mod.BM}x{mod.BN}, BK {mod.BK}; compile_all {compile_s:.1f} s; "
          f"device {getattr(cuda.get_current_device(), 'name', '?')}")
    rows = []
    sk = mod.SplitK()
    for B in map(int, a.batch.split(",")):
        for h in map(int, a.hidden.split(",")):
            total = {"split": 0.0, "whole": 0.0}
            split_fns = step_kernels(B, h, sk, kc=mod)
            for name, fn in step_kernels(B, h, None, kc=mod).items():
                gpu, host = gpu_us(fn, a.reps)
                gpu_s = gpu_us(split_fns[name], a.reps)[0] if name[0] in "123" else gpu
                total["whole"] += gpu
                total["split"] += gpu_s
                rows.append(dict(kernels=which, tile=mod.BM, bk=mod.BK, batch=B, hidden=h,
                                 kernel=name, gpu_us=gpu, gpu_us_splitk=gpu_s, host_us=host))
                print(f"B={B:<4} h={h:<4} {name:<22} gpu {gpu:8.2f} us, split-K {gpu_s:8.2f} us"
                      f"   host {host:6.2f} us/launch")
            flops = 6 * B * 784 * h
            print(f"B={B:<4} h={h:<4} {'step (sum)':<22} gpu {total['whole']:8.2f} us, split-K "
                  f"{total['split']:8.2f} us   {flops / total['split'] / 1e3:8.1f} GFLOP/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"compile_s": compile_s, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
