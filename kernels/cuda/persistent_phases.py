"""The work items of the persistent kernel's phases (kernels/cuda/persistent.py has the design)
and its validation pass, ``k_persistent_validate``: each run's loss sum over validation rows,
F1 and F2 as the training kernel runs them, in today's evaluation batches, split-K plans and
order of the tile sums. A kernel of its own: inside the training kernel it took ptxas to 255
registers with spills on sm_90 (168 and none without).
"""

from __future__ import annotations

from numba import cuda, float32, float64, int32

from .config import BK, BM, BN, C1, F1, F2, NTHREADS, PAD, TM, TN, TX, U2, device
from .fused_linear_leaky_relu import epilogue as leaky_epilogue
from .fused_linear_sigmoid import block_sum, mse_epilogue
from .gemm import mainloop, splitk_fixup_at
from .launch import Kernel, named

SPAN = TM * TN * NTHREADS  # split-K workspace floats per (tile, slice)
F3 = "float32[:, :, ::1]"


@device
def cdiv(a, b):
    return (a + b - 1) // b


@device
def phase_dims(p, h, nb, n):
    """(M, N) of phase product p: 0 H, 1 dZ, 2 dH, 3 the W2 step, 4 the W1 step."""
    if p == 0 or p == 2:
        return nb, h
    if p == 1:
        return nb, n
    if p == 3:
        return n, h
    return h, n


@device
def run_items(p, r, runs, plans, short, nb, n):
    """(items, tiles along x, tiles along y, slices, K per slice) of run r in phase product p."""
    M, N = phase_dims(p, runs[r, 0], nb, n)
    gx = cdiv(N, BN)
    gy = cdiv(M, BM)
    S = 1
    kchunk = 0
    if p < 3:
        S = plans[r, short, p, 0]
        kchunk = plans[r, short, p, 1]
    return gx * gy * S, gx, gy, S, kchunk


@device
def phase_items(p, runs, plans, short, nb, n):
    total = 0
    for r in range(runs.shape[0]):
        total += run_items(p, r, runs, plans, short, nb, n)[0]
    return total


@device
def add_loss_sums(loss, parts, runs, plans, short, nb, n):
    """Each run's F2 tile losses added to ``loss[r]`` in the order today's launches add them."""
    base = 0
    for r in range(runs.shape[0]):
        _, gx, gy, _, _ = run_items(1, r, runs, plans, short, nb, n)
        for x in range(gx):
            for y in range(gy):
                loss[r] += parts[base + y * gx + x]
        base += gx * gy


@device
def locate(it, p, runs, plans, short, nb, n):
    """Item ``it`` of phase product p: (run, x, y, z, gx, gy, S, kchunk, workspace base,
    counter / tile base), the bases summing the earlier runs' partials and tiles."""
    wbase = 0
    cbase = 0
    r = 0
    while True:
        items, gx, gy, S, kchunk = run_items(p, r, runs, plans, short, nb, n)
        if it < items:
            break
        it -= items
        wbase += items * SPAN
        cbase += gx * gy
        r += 1
    return r, it // (gy * S), (it // S) % gy, it % S, gx, gy, S, kchunk, wbase, cbase


def make_validation():
    """The validation pass (module docstring): the loss sum of each run over the rows
    ``perm[r, :nval]`` of X in batches of EB, added to ``vloss[r]``."""
    fwd = mainloop("nt", True)
    out = mainloop("nt", False, indexed=False)

    def v(X, perm, xscale, W1, b1, W2, b2, runs, plans, slopes, Hs, dZs, vloss, parts, ws, cnt,
          nval, EB):
        As = cuda.shared.array((BK, PAD), float32)
        Bs = cuda.shared.array((BK, PAD), float32)
        red = cuda.shared.array(NTHREADS, float64)
        flag = cuda.shared.array(1, int32)
        acc = cuda.local.array((TM, TN), float32)
        grid = cuda.cg.this_grid()
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        bid = cuda.blockIdx.x
        n = X.shape[1]
        noY = dZs[0, :0]
        s = 0
        while s < nval:
            nb = min(EB, nval - s)
            short = 1 if nb < EB else 0
            for p in range(2):  # F1, F2 (its loss; dZ goes to scratch)
                for it in range(bid, phase_items(p, runs, plans, short, nb, n), cuda.gridDim.x):
                    r, x, y, z, gx, gy, S, kchunk, wbase, cbase = locate(it, p, runs, plans,
                                                                         short, nb, n)
                    h = runs[r, 0]
                    kb = z * kchunk
                    cuda.syncthreads()
                    if p == 0:
                        fwd(X, perm[r], s, W1[r, :h], nb, h, kb, min(n, kb + kchunk), y * BM,
                            x * BN, As, Bs, acc, tid, tx, ty)
                    else:
                        out(Hs[r, :nb, :h], W2[r, :, :h], nb, n, kb, min(h, kb + kchunk), y * BM,
                            x * BN, As, Bs, acc, tid, tx, ty)
                    if not splitk_fixup_at(acc, ws, wbase, cnt, cbase, flag, tid, S, gx * gy,
                                           y * gx + x, z):
                        continue
                    if p == 0:
                        leaky_epilogue(acc, xscale, b1[r, :h], slopes[r], Hs[r, :nb, :h], y * BM,
                                       x * BN, tx, ty)
                    else:
                        total = block_sum(red, mse_epilogue(
                            acc, b2[r], X, perm[r], s, xscale, float32(1.0), dZs[r, :nb], noY,
                            y * BM, x * BN, tx, ty), tid)
                        if tid == 0:
                            parts[cbase + y * gx + x] = total
                grid.sync()
            if bid == 0 and tid == 0:  # before the next batch's F2 (after its F1's sync)
                add_loss_sums(vloss, parts, runs, plans, short, nb, n)
            s += EB

    return named(v, "k_persistent_validate")


def validation_signature(x):
    return (f"void({x}, int64[:, ::1], float32, {F3}, {F2}, {F3}, {F2}, int64[:, ::1], "
            f"int64[:, :, :, ::1], {F1}, {F3}, {F3}, float64[::1], float64[::1], {F1}, {C1}, "
            f"int64, int64)")


_v = make_validation()
VALIDATION_VARIANTS = {"u8": (_v, validation_signature(U2)), "f32": (_v, validation_signature(F2))}
validation = Kernel(VALIDATION_VARIANTS, register=False)  # not in KERNELS, as the training one
