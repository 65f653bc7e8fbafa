"""The GEMM core every kernel shares: one main loop, specialised at compile time, and split-K.

``mainloop(layout, gather, prefetch, colsum)`` returns a device function that computes this
thread's ``TM x TN`` register tile of a ``BM x BN`` output tile, ``acc <- sum over k in [kb, ke)
of A(m, k) B(k, n)``, for one operand layout:

* ``nt``: ``C = A W^T`` (forward layers): A (M, K) and W (N, K), both k-contiguous; A's rows
  are ``off + r``, or ``perm[off + r]`` with ``gather`` (the epoch's permutation);
* ``nn``: ``C = A W`` (``backward_hidden``: dZ (B, N) @ W2 (N, K));
* ``tn``: ``C = D^T X`` (weight gradients: D (B, M)^T @ X (B, N), reduction over the batch;
  X's rows ``off + k`` or ``perm[off + k]``); ``colsum`` also returns this thread's share of
  D's column sums (the bias gradient), read from the staged tiles (see ``finish_colsum``).

The function is generated from a template (``mainloop_source`` prints it) with the K step
unrolled in the source: BK calls of ``kstep`` (``kstep_source``: one row of the staged tiles,
TM + TN shared loads and TM x TN multiply-adds) with constant rows, which inline to
``BK x TM x TN`` multiply-adds in straight-line code at constant offsets from per-thread
addresses computed once (Numba does not unroll a loop itself, and its signed-index wraparound
code inside the rolled loop cost ~35 integer instructions per 16 multiply-adds). Indices are
unsigned (``idx``), so no wraparound code is emitted. Each thread's load positions (and the
gathered row indices of an ``nt`` operand) are computed once per block. Per K step:
fetch the step's elements from global memory into registers (bounds-checked: zero outside, so
any M, N, K works), stash them in shared memory as ``[k][m]`` tiles (padded by one column),
sync, multiply, sync. With ``prefetch`` the next step's fetch is issued before this step's
multiply-adds (a variant kept in dev/cuda to measure). Every output element sums its products
in k order, whichever variant: the results are the same bit for bit.
"""

from __future__ import annotations

import linecache

from numba import float32, uint64

from .config import BK, BM, BN, LOADS, NTHREADS, SIMULATOR, TM, TN, TX, TY, device
from .config import dcuda as cuda

# Index casts: unsigned 64-bit indices need no negative-index wraparound code (Numba emits it
# for every signed index); plain ints in the simulator (fast, and the same values).
idx = int if SIMULATOR else uint64
LAYOUTS = {"nt": ("k", "k"), "nn": ("k", "m"), "tn": ("m", "m")}
INDEXED = {"nt": "a", "nn": "", "tn": "b"}  # the operand whose rows go through off (and perm)


def _operand(side, form, indexed, gather):
    """Prologue, fetch (at K offset ``k0``) and stash lines of one operand.

    form "k": src (rows, K); this thread loads rows ``r_q = tid // BK + q NTHREADS / BK`` of the
    tile at column ``tid % BK`` of the K step: the rows (and their gathered indices) are fixed.
    form "m": src (K, cols); it loads K offsets ``tid // W + q NTHREADS / W`` at column
    ``tid % W`` of the tile (W its width): the column is fixed, the rows move with k0.
    """
    x, src, tile = side, side.upper(), f"{side.upper()}s"
    ext, org, width = ("M", "m0", BM) if side == "a" else ("N", "n0", BN)
    perm, off = f"p{x}", f"o{x}"
    pro, fetch, stash = [], [], []

    def plus(q, step):
        return f" + {q * step}" if q else ""

    if form == "k":
        pro.append(f"{x}k = idx(tid % {BK})")
        for q in range(LOADS):
            pro.append(f"{x}r{q} = idx(tid // {BK}{plus(q, NTHREADS // BK)})")
            pro.append(f"{x}ok{q} = {org} + {x}r{q} < {ext}")
            if gather:
                pro.append(f"{x}s{q} = idx(0)")
                pro.append(f"if {x}ok{q}:")
                pro.append(f"    {x}s{q} = idx({perm}[{off} + {org} + {x}r{q}])")
            else:
                pro.append(f"{x}s{q} = idx({off + ' + ' if indexed else ''}{org} + {x}r{q})")
        fetch.append(f"{x}kk = k0 + {x}k")
        fetch.append(f"{x}kin = {x}kk < kend")
        for q in range(LOADS):
            fetch.append(f"{x}v{q} = float32(0.0)")
            fetch.append(f"if {x}ok{q} and {x}kin:")
            fetch.append(f"    {x}v{q} = float32({src}[{x}s{q}, {x}kk])")
            stash.append(f"{tile}[{x}k, {x}r{q}] = {x}v{q}")
    else:
        pro.append(f"{x}c = idx(tid % {width})")
        pro.append(f"{x}col = idx({org}) + {x}c")
        pro.append(f"{x}ok = {x}col < {ext}")
        if indexed:
            pro.append(f"{x}o = idx({off})")
        for q in range(LOADS):
            pro.append(f"{x}r{q} = idx(tid // {width}{plus(q, NTHREADS // width)})")
        for q in range(LOADS):
            fetch.append(f"{x}kk{q} = k0 + {x}r{q}")
            fetch.append(f"{x}v{q} = float32(0.0)")
            fetch.append(f"if {x}ok and {x}kk{q} < kend:")
            row = (f"idx({perm}[{x}o + {x}kk{q}])" if gather else
                   f"{x}o + {x}kk{q}" if indexed else f"{x}kk{q}")
            fetch.append(f"    {x}v{q} = float32({src}[{row}, {x}col])")
            stash.append(f"{tile}[{x}r{q}, {x}c] = {x}v{q}")
    return pro, fetch, stash


_TILE_ARGS = ", ".join([f"ai{i}" for i in range(TM)] + [f"bj{j}" for j in range(TN)])


def kstep_source() -> str:
    """Python source of one row ``kk`` of a K step: this thread's TM x TN multiply-adds on the
    staged tiles, written out. The main loop calls it BK times with constant ``kk``; inlined,
    every shared load is at a constant offset from an address computed once. (One small function
    called BK times, not BK copies of its body: Numba's front end types it once, where the
    written-out K step took it ~20 s per kernel to type and lower.)"""
    lines = [f"a{i} = As[kk, ai{i}]" for i in range(TM)]
    lines += [f"b{j} = Bs[kk, bj{j}]" for j in range(TN)]
    lines += [f"acc[{i}, {j}] += a{i} * b{j}" for i in range(TM) for j in range(TN)]
    return f"def kstep(As, Bs, kk, {_TILE_ARGS}, acc):\n" + "".join(f"    {ln}\n" for ln in lines)


def mainloop_source(layout, gather=False, prefetch=False, colsum=False, indexed=True) -> str:
    """Python source of the main loop specialised for these compile-time choices (arguments:
    ``A[, pa, oa], B[, pb, ob], M, N, kb, ke, m0, n0, As, Bs, acc, tid, tx, ty``, the
    permutation and offset of the layout's indexed operand unless ``indexed`` is False)."""
    fa, fb = LAYOUTS[layout]
    ia = indexed and INDEXED[layout] == "a"
    ib = indexed and INDEXED[layout] == "b"
    if gather and not (ia or ib):
        raise ValueError(f"layout {layout} has no gathered operand")
    if colsum and layout != "tn":
        raise ValueError("colsum: the column sums of the tn layout's D operand only")
    pa, fetch_a, stash_a = _operand("a", fa, ia, gather and ia)
    pb, fetch_b, stash_b = _operand("b", fb, ib, gather and ib)
    args = ["A"] + (["pa", "oa"] if ia else []) + ["B"] + (["pb", "ob"] if ib else [])
    args += ["M", "N", "kb", "ke", "m0", "n0", "As", "Bs", "acc", "tid", "tx", "ty"]
    name = f"mainloop_{layout}" + "_plain" * (not indexed) + "_gather" * gather + "_prefetch" * prefetch \
        + "_colsum" * colsum
    body = pa + pb
    body += [f"ai{i} = ty" + (f" + {TY * i}" if i else "") for i in range(TM)]
    body += [f"bj{j} = tx" + (f" + {TX * j}" if j else "") for j in range(TN)]
    body += [f"acc[{i}, {j}] = float32(0.0)" for i in range(TM) for j in range(TN)]
    if colsum:  # this thread's column of D, every (NTHREADS // BM)-th row from `part` on
        parts = NTHREADS // BM
        body += [f"cpart = tid // {BM}", f"ccol = tid % {BM}", "s = float32(0.0)"]
    body += ["kend = idx(ke)", "k0 = idx(kb)"] + fetch_a + fetch_b
    loop = stash_a + stash_b + ["cuda.syncthreads()"]
    step = [f"k1 = k0 + idx({BK})"]
    fetch_next = [ln.replace("k0 + ", "k1 + ") for ln in fetch_a + fetch_b]
    if prefetch:
        loop += step + fetch_next
    # idx(kk), not a literal kk: Numba would compile kstep once per literal value
    loop += [f"kstep(As, Bs, idx({kk}), {_TILE_ARGS}, acc)" for kk in range(BK)]
    if colsum:
        loop += [f"s += As[cpart{f' + {parts * u}' if u else ''}, ccol]" for u in range(BK // parts)]
    loop += ["cuda.syncthreads()"]
    if not prefetch:
        loop += step + fetch_next
    loop += ["k0 = k1"]
    body += ["while k0 < kend:"] + ["    " + ln for ln in loop]
    body += ["return s" if colsum else "return"]
    return f"def {name}({', '.join(args)}):\n" + "".join(f"    {ln}\n" for ln in body)


_MADE = {}


def _device_from_source(src, name):
    """The device function defined by ``src`` (its lines kept for tracebacks)."""
    filename = f"<aecore gemm {name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    scope = {"cuda": cuda, "float32": float32, "idx": idx, "kstep": _MADE.get("kstep")}
    exec(compile(src, filename, "exec"), scope)
    return device(scope[src.split("(")[0][4:]])


_MADE["kstep"] = _device_from_source(kstep_source(), "kstep")


def mainloop(layout, gather=False, prefetch=False, colsum=False, indexed=True):
    """The device function of ``mainloop_source(...)`` (made once per choice)."""
    key = (layout, bool(gather), bool(prefetch), bool(colsum), bool(indexed))
    fn = _MADE.get(key)
    if fn is None:
        fn = _MADE[key] = _device_from_source(mainloop_source(*key), "/".join(map(str, key)))
    return fn


@device
def this_thread():
    """(tx, ty, tid, m0, n0): the thread in its block and the block's output tile origin."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    return tx, ty, ty * TX + tx, cuda.blockIdx.y * BM, cuda.blockIdx.x * BN


@device
def finish_colsum(s, red, tid):
    """Column sums of the tn main loop's D tile, valid in threads ``tid < BM``: the
    ``NTHREADS // BM`` partial sums of each column (rows ``part``, ``part + NTHREADS // BM``,
    ..., in order) added in part order, through ``red`` (the (BK, PAD) float32 shared tile,
    free once the main loop is done). All threads must call it."""
    red[tid // BM, tid % BM] = s
    cuda.syncthreads()
    total = float32(0.0)
    if tid < BM:
        for p in range(NTHREADS // BM):
            total += red[p, tid]
    return total


# --- split-K ------------------------------------------------------------------------------------
# A product with few output tiles and a long reduction (the forward X W1^T and the backward
# dZ W2 at batch 64: one or a few 64 x 64 tiles, K = 784) leaves most of the GPU idle. Split-K
# gives each tile gridDim.z blocks, block z reducing over its own slice of K; each stores its
# partial tile in a workspace, and the last of a tile's blocks to finish (a per-tile counter,
# atomically incremented) sums the partials in slice order (deterministic, whichever block is
# last), runs the kernel's epilogue, and resets the counter for the next launch.
@device
def kslice(K, kchunk):
    """[kb, ke): this block's slice of the reduction (all of it when gridDim.z == 1)."""
    kb = cuda.blockIdx.z * kchunk
    return kb, min(K, kb + kchunk)


@device
def splitk_fixup(acc, ws, cnt, flag, tid):
    """True in the block that must run the epilogue, with ``acc`` holding the full sum (this
    block's tile and slice from its block index: ``splitk_fixup_at``)."""
    return splitk_fixup_at(acc, ws, 0, cnt, 0, flag, tid, cuda.gridDim.z,
                           cuda.gridDim.x * cuda.gridDim.y,
                           cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x, cuda.blockIdx.z)


@device
def splitk_fixup_at(acc, ws, wbase, cnt, cbase, flag, tid, S, T, t, z):
    """True in the block that must run the epilogue of tile ``t`` (of ``T``) after adding its
    slice ``z`` (of ``S``), with ``acc`` holding the full sum; the partials from ``ws[wbase:]``
    and the tile's counter ``cnt[cbase + t]`` (a persistent kernel's per-run offsets).

    Partials are laid out per tile, contiguous and in thread order (coalesced, and no cache line
    shared between tiles, so the last block never reads a line an earlier reader cached). The
    last block reads slice after slice, each slice's TM x TN partials independent loads, and
    adds them onto ``0 + p_0 + p_1 + ...`` per element (slice order).
    """
    if S == 1:
        return True
    span = TM * TN * NTHREADS
    base = idx(wbase + (z * T + t) * span + tid)  # non-negative: no wraparound code
    for i in range(TM):
        for j in range(TN):
            ws[base + idx((i * TN + j) * NTHREADS)] = acc[i, j]
    cuda.threadfence()  # the partial is visible device-wide before the count says so
    cuda.syncthreads()
    if tid == 0:
        flag[0] = cuda.atomic.add(cnt, cbase + t, 1)
    cuda.syncthreads()
    if flag[0] != S - 1:
        return False
    cuda.threadfence()
    for i in range(TM):
        for j in range(TN):
            acc[i, j] = float32(0.0)
    for zz in range(S):
        base = idx(wbase + (zz * T + t) * span + tid)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += ws[base + idx((i * TN + j) * NTHREADS)]
    if tid == 0:
        cnt[cbase + t] = 0
    return True
