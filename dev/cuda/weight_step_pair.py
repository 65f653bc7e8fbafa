"""Variant: the step's two weight updates (W2 from dZ^T H, W1 from dH^T X) in one launch, a 1-D
grid whose first blocks are the first update's tiles and the rest the second's. Each is a small
grid at batch 64 (13 blocks at h=64): launched together they share the GPU instead of running
one after the other, and the step has one launch fewer.

    python dev/cuda/weight_step_pair.py --check   # same bits as two single launches
    python dev/cuda/weight_step_pair.py --time    # GPU: 4 + 5 apart vs paired, per batch / h
"""

from __future__ import annotations

import numpy as np

import harness  # noqa: F401  (the repository on sys.path)
from harness import gpu_us, main, same_bits, step_operands

from numba import cuda, float32

from aecore.kernels import cuda as kc
from aecore.kernels.cuda.config import BK, BLOCK, BM, BN, F1, F2, I1, PAD, TM, TN, U2
from aecore.kernels.cuda.launch import Kernel, f32_or_empty, grid, named, perm_or_empty
from aecore.kernels.cuda.launch import scale_of
from aecore.kernels.cuda.fused_weight_step import make_tile
from aecore.kernels.cuda.gemm import this_thread


def make(gather):
    """The first update's X rows are plain (H); the second's gathered or not."""
    tile1 = make_tile(False)
    tile2 = make_tile(gather)

    def k(kind, hp, G, gb,
          D1, X1, px1, ox1, scale1, W1, b1, VW1, Vb1, MW1, Mb1,
          D2, X2, px2, ox2, scale2, W2, b2, VW2, Vb2, MW2, Mb2):
        As = cuda.shared.array((BK, PAD), float32)
        Bs = cuda.shared.array((BK, PAD), float32)
        acc = cuda.local.array((TM, TN), float32)
        tx, ty, tid, _, _ = this_thread()
        bid = cuda.blockIdx.x
        nx1 = (X1.shape[1] + BN - 1) // BN
        n1 = nx1 * ((D1.shape[1] + BM - 1) // BM)
        if bid < n1:
            tile1(bid % nx1, bid // nx1, D1, X1, px1, ox1, scale1, kind, G, gb, W1, b1,
                  VW1, Vb1, MW1, Mb1, hp, As, Bs, acc, tid, tx, ty)
        else:
            nx2 = (X2.shape[1] + BN - 1) // BN
            bid -= n1
            tile2(bid % nx2, bid // nx2, D2, X2, px2, ox2, scale2, kind, G, gb, W2, b2,
                  VW2, Vb2, MW2, Mb2, hp, As, Bs, acc, tid, tx, ty)

    return named(k, "k_weight_step_pair" + "_gather" * gather)


_PART = f"{F2}, {{x}}, {I1}, int64, float32, {F2}, {F1}, {F1}, {F1}, {F1}, {F1}"
kernel = Kernel({
    f"{key}{'+gather' * g}": (make(g), f"void(int64, {F1}, {F2}, {F1}, {_PART.format(x=F2)}, "
                                       f"{_PART.format(x=x)})")
    for g in (False, True) for key, x in (("u8", U2), ("f32", F2))}, register=False)


def weight_step_pair(kind, hp, first, second, stream=0):
    """Two fused weight steps (``kc.weight_step``'s ``update`` tuples, ``first`` with plain
    float32 rows, ``second`` uint8/float32 maybe gathered) in one launch; they must not share
    outputs. Same results as the two single launches, bit for bit."""
    args = [kind, hp, f32_or_empty(None, 2), f32_or_empty(None)]
    blocks = 0
    for dZ, A, W, b, VW, Vb, MW, Mb, perm, off in (first, second):
        args += [dZ, A, perm_or_empty(perm), off, scale_of(A), W, b,
                 *map(f32_or_empty, (VW, Vb, MW, Mb))]
        gx, gy, _ = grid(dZ.shape[1], A.shape[1])
        blocks += gx * gy
    X2, perm2 = second[1], second[8]
    k = ("u8" if X2.dtype == np.uint8 else "f32") + ("+gather" if perm2 is not None else "")
    kernel[k][blocks, BLOCK, stream](*args)


def _updates(o, kind, seed):
    """(first, second) as weight_step_pair takes them; the same values for the same seed."""
    r = np.random.default_rng(seed)
    h = o["H"].shape[1]
    P = o["dZ"].shape[1]

    def copy(a):
        return cuda.to_device(a.copy_to_host())

    first = (o["dZ"], o["H"], copy(o["W2"]), copy(o["b2"]), *_state(r, kind, P, h), None, 0)
    second = (o["dH"], o["X"], copy(o["W1"]), copy(o["b1"]), *_state(r, kind, h, P), o["perm"],
              o["off"])
    return first, second


def _state(r, kind, n, k):
    """VW, Vb (momentum buffer / exp_avg_sq), MW, Mb (exp_avg) of an (n, k) weight."""
    if kind == kc.OPT_SGD:
        return [None] * 4
    arrays = [r.random(n * k) * 1e-4, r.random(n) * 1e-4]
    arrays += [r.standard_normal(n * k) * 1e-2, r.standard_normal(n) * 1e-2] \
        if kind == kc.OPT_ADAM else [None, None]
    return [None if a is None else cuda.to_device(a.astype(np.float32)) for a in arrays]


def check(B=5, h=13, P=70, seed=0):
    """Every optimizer: the paired launch gives the two single launches' bits (shapes whose
    two grids differ: 2x1 and 1x2 tiles; the second input gathered uint8 pixels)."""
    o = step_operands(np.random.default_rng(seed), B, h, P)
    for kind in (kc.OPT_SGD, kc.OPT_MOMENTUM, kc.OPT_NESTEROV, kc.OPT_ADAM):
        hp = cuda.to_device(kc.adam_hparams(1e-2, 3) if kind == kc.OPT_ADAM
                            else kc.hparams(lr=0.3, momentum=0.9))
        single = _updates(o, kind, 1)
        for upd in single:
            kc.weight_step(kind, hp, upd)
        paired = _updates(o, kind, 1)
        weight_step_pair(kind, hp, *paired)
        for one, two in zip(single, paired):
            for a, b in zip(one[2:8], two[2:8]):  # W, b and the optimizer state
                if a is not None:
                    same_bits(a.copy_to_host(), b.copy_to_host(), f"pair, optimizer {kind}")
        assert not np.array_equal(single[0][2].copy_to_host(), o["W2"].copy_to_host())
    return True


def time_pair(batches=(64, 256), hidden=(64, 128, 256, 512), reps=200):
    for B in batches:
        for h in hidden:
            o = step_operands(np.random.default_rng(0), B, h, 784, n_images=4096)
            hp = cuda.to_device(kc.hparams(lr=1e-6))
            first, second = _updates(o, kc.OPT_SGD, 0)
            apart = gpu_us(lambda: (kc.weight_step(kc.OPT_SGD, hp, first),
                                    kc.weight_step(kc.OPT_SGD, hp, second)), reps)[0]
            paired = gpu_us(lambda: weight_step_pair(kc.OPT_SGD, hp, first, second), reps)[0]
            print(f"B={B:<4} h={h:<4} 4+5 apart {apart:8.2f} us  paired {paired:8.2f} us  "
                  f"({paired / apart:.2f}x)", flush=True)


if __name__ == "__main__":
    main(__doc__, check, time_pair, "weight_step_pair: same bits as two single launches, every optimizer")
