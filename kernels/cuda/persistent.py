"""A persistent cooperative kernel that trains several runs for a chunk of steps in one launch.

``PersistentRuns`` is the kernel's launcher, tested in the simulator against today's kernels
(tests/test_cuda_persistent.py); aecore/engine_persistent.py drives it for the trainer
(``--cuda-path persistent``).

Work decomposition of one training step (batch rows ``s .. s+nb`` of every run, n pixels, run r
with h_r hidden units). Each phase is one grid-stride loop over its work items, all runs' items
concatenated (run after run), and ends in a grid-wide barrier (``cuda.cg.this_grid().sync()``):

    phase  item (per run)                         product, K       epilogue          today's kernel
    F1     (tile x, tile y, K-slice z) of H       X[perm] W1^T, n  + b1, LeakyReLU   linear_leaky_relu
    F2     (x, y, z) of dZ                        H W2^T, h        + b2, Sigmoid,    linear_sigmoid_mse
                                                                   MSE grad, loss
    F3     (x, y, z) of dH                        dZ W2, n         * LeakyReLU'(H)   backward_hidden
           (+ block 0 folds F2's per-tile loss sums into the run's loss, in tile order)
    F4     (x, y) of W2 (n x h), then of W1       dZ^T H, nb /     optimizer update  weight_step x2
           (h x n), no split                      dH^T X[perm], nb (+ bias colsums)

The validation pass (``k_persistent_validate``, launched by ``train_chunk(val=...)`` right
after the steps; X the validation images, perm the identity): per batch of EB rows (today's
evaluation batches), F1 and F2 (dZ into scratch, unused) over every run with the split-K plans
of those shapes, then block 0 adds the per-tile losses to ``vloss[r]`` in tile order: today's
evaluation's loss sum. A kernel of its own: inside the training kernel it took ptxas to 255
registers with spills on sm_90 (168 and none without).

F4 holds both weight steps: they are independent (the W2 step reads dZ and H, the W1 step dH and
X; F3 has read W2 before F4 starts), so a step is four barriers. Within a run the items are
ordered as a launch of today's kernel walks its blocks in the simulator (x outer, y, z inner),
the tile index ``t = y gx + x`` as ``splitk_fixup`` has it.

Split-K: item (x, y, z) reduces over its K-slice ``[z kchunk, (z+1) kchunk)``; ``S`` and
``kchunk`` are the plan today's engine uses for that product and batch (``SplitK.plan`` of the
run's shapes), per run and for the full and the short last batch. The fixup is folded into the
phase as today: each slice stores its partial tile, the last of a tile's slices to arrive
(per-tile counter) sums the partials in slice order ``0 + p_0 + p_1 + ...`` and runs the
epilogue; no extra barrier. The runs share one workspace and one counter array at per-run
offsets. So every output element is summed in the same order as by today's kernels, and each
run's parameters, optimizer state and loss are bitwise those of the run trained alone (the loss
too: today's per-block float64 atomics become per-tile slots added in tile order by one thread,
the order today's launches have in the simulator; on a GPU today's order varies, this one not).

Buffers (Numba has no arrays of arrays): one array per quantity with a leading run axis, padded
to the largest run: W1 (R, hmax, n), b1 (R, hmax), W2 (R, n, hmax), b2 (R, n); optimizer state
flat per run as the engine keeps it, (R, size) per buffer (V/M of W1, b1, W2, b2; width 0 where
no run keeps it); scratch H, dH (R, B, hmax), dZ (R, B, n). A run sees 2-D views of its part
(``W2[r, :, :h]``; slices, not reshapes: a reshape in device code leaves a local-memory depot).
The uint8 dataset is shared; each run has its own permutation row ``perm[r]`` and its own rows
of per-step hyper-parameters ``hps[r, i]`` (kernels/optim.py's packing; Adam's per step).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import cuda, float32, float64, int32

from .config import (BK, BLOCK, BM, BN, C1, F1, F2, NTHREADS, PAD, SIMULATOR, TM,
                     TN, TX, U2)
from .fused_backward_hidden import epilogue as leaky_grad_epilogue
from .fused_linear_leaky_relu import epilogue as leaky_epilogue
from .fused_linear_sigmoid import block_sum, mse_epilogue
from .fused_weight_step import make_tile
from .gemm import mainloop, splitk_fixup_at
from .launch import Kernel, SplitK, named, scale_of
from .persistent_phases import (F3, SPAN, VALIDATION_VARIANTS, locate, phase_items,  # noqa: F401
                                run_items, validation)  # VALIDATION_VARIANTS: for its PTX test


def make():
    fwd = mainloop("nt", True)  # X[perm] W1^T
    out = mainloop("nt", False, indexed=False)  # H W2^T
    bwd = mainloop("nn", False, indexed=False)  # dZ W2
    step_w2 = make_tile(False)  # dZ^T H: the W2 step
    step_w1 = make_tile(True)  # dH^T X[perm]: the W1 step

    def k(X, perm, xscale, W1, b1, W2, b2, V1, Vb1, M1, Mb1, V2, Vb2, M2, Mb2, hps, runs, plans,
          slopes, Hs, dZs, dHs, loss, parts, ws, cnt, start, stop, B):
        """Steps ``start, start + B, .. < stop`` of every run (module docstring)."""
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
        nblocks = cuda.gridDim.x
        n = X.shape[1]
        noperm = perm[0, :0]
        noY = dZs[0, :0]
        nog = b2[0, :0]
        i = 0
        s = start
        while s < stop:
            nb = min(B, stop - s)
            short = 1 if nb < B else 0
            dscale = float32(2.0 / (nb * n))
            for p in range(3):  # F1, F2, F3
                for it in range(bid, phase_items(p, runs, plans, short, nb, n), nblocks):
                    r, x, y, z, gx, gy, S, kchunk, wbase, cbase = locate(it, p, runs, plans,
                                                                         short, nb, n)
                    h = runs[r, 0]
                    m0 = y * BM
                    n0 = x * BN
                    K = h if p == 1 else n
                    kb = z * kchunk
                    ke = min(K, kb + kchunk)
                    cuda.syncthreads()  # the previous item's epilogue is done with As / red
                    if p == 0:
                        fwd(X, perm[r], s, W1[r, :h], nb, h, kb, ke, m0, n0, As, Bs, acc, tid, tx,
                            ty)
                    elif p == 1:
                        out(Hs[r, :nb, :h], W2[r, :, :h], nb, n, kb, ke, m0, n0, As, Bs, acc,
                            tid, tx, ty)
                    else:
                        bwd(dZs[r, :nb], W2[r, :, :h], nb, h, kb, ke, m0, n0, As, Bs, acc, tid,
                            tx, ty)
                    if not splitk_fixup_at(acc, ws, wbase, cnt, cbase, flag, tid, S, gx * gy,
                                           y * gx + x, z):
                        continue
                    if p == 0:
                        leaky_epilogue(acc, xscale, b1[r, :h], slopes[r], Hs[r, :nb, :h], m0, n0,
                                       tx, ty)
                    elif p == 1:
                        part = mse_epilogue(acc, b2[r], X, perm[r], s, xscale, dscale,
                                            dZs[r, :nb], noY, m0, n0, tx, ty)
                        total = block_sum(red, part, tid)
                        if tid == 0:
                            parts[cbase + y * gx + x] = total
                    else:
                        leaky_grad_epilogue(acc, Hs[r, :nb, :h], slopes[r], dHs[r, :nb, :h], m0,
                                            n0, tx, ty)
                if p == 2 and bid == 0 and tid == 0:  # F2's loss sums, in launch order
                    base = 0
                    for r in range(runs.shape[0]):
                        _, gx, gy, _, _ = run_items(1, r, runs, plans, short, nb, n)
                        for x in range(gx):
                            for y in range(gy):
                                loss[r] += parts[base + y * gx + x]
                        base += gx * gy
                grid.sync()
            n3 = phase_items(3, runs, plans, short, nb, n)
            for it in range(bid, n3 + phase_items(4, runs, plans, short, nb, n), nblocks):
                p = 3 if it < n3 else 4
                r, x, y, _, _, _, _, _, _, _ = locate(it if p == 3 else it - n3, p, runs, plans,
                                                      short, nb, n)
                h = runs[r, 0]
                kind = runs[r, 1]
                cuda.syncthreads()
                if p == 3:
                    step_w2(x, y, dZs[r, :nb], Hs[r, :nb, :h], noperm, 0, float32(1.0), kind,
                            noY, nog, W2[r, :, :h], b2[r], V2[r], Vb2[r], M2[r], Mb2[r],
                            hps[r, i], As, Bs, acc, tid, tx, ty)
                else:
                    step_w1(x, y, dHs[r, :nb, :h], X, perm[r], s, xscale, kind, noY, nog,
                            W1[r, :h], b1[r, :h], V1[r], Vb1[r], M1[r], Mb1[r], hps[r, i], As,
                            Bs, acc, tid, tx, ty)
            grid.sync()
            i += 1
            s += B

    return named(k, "k_persistent_train")

def signature(x):
    return (f"void({x}, int64[:, ::1], float32, {F3}, {F2}, {F3}, {F2}, " + ", ".join([F2] * 8)
            + f", {F3}, int64[:, ::1], int64[:, :, :, ::1], {F1}, {F3}, {F3}, {F3}, float64[::1], "
            f"float64[::1], {F1}, {C1}, int64, int64, int64)")


_k = make()
VARIANTS = {"u8": (_k, signature(U2)), "f32": (_k, signature(F2))}
kernel = Kernel(VARIANTS, register=False)  # not in KERNELS: its PTX test is its own


class RunSpec(NamedTuple):
    """One run of a launch: ``params`` (W1 (h, n), b1 (h,), W2 (n, h), b2 (n,)) float32;
    ``state`` the optimizer buffers as the fused weight step takes them, flat float32 or None
    where the optimizer keeps none: (VW1, Vb1, MW1, Mb1, VW2, Vb2, MW2, Mb2) (kernels/optim.py:
    V the momentum buffer or Adam's exp_avg_sq, M Adam's exp_avg); ``kind`` an OPT_* code."""

    params: tuple
    state: tuple
    kind: int
    slope: float = 0.01


def _padded(arrays, shape_of):
    """One float32 array with a leading run axis: each of ``arrays`` (or zeros for None) at the
    origin of its slot, the slots as large as the largest."""
    shape = tuple(max(d) for d in zip(*(shape_of(a) for a in arrays))) if arrays else ()
    out = np.zeros((len(arrays),) + shape, np.float32)
    for r, a in enumerate(arrays):
        if a is not None:
            out[(r,) + tuple(slice(0, d) for d in a.shape)] = a
    return out


class PersistentRuns:
    """Several runs' parameters, optimizer state and scratch on the device, trained together a
    chunk of steps per launch of the persistent kernel (``train_chunk``).

    ``splitk``: the SplitK whose ``plan`` decides each product's split, as in today's engine
    (default: ``SplitK()``, what a CudaEngine makes); ``blocks``: the grid (default: the
    cooperative maximum for 256-thread blocks; 1 in the simulator, which runs a cooperative grid
    as one block).
    """

    def __init__(self, runs, batch_size, splitk=None, blocks=None, stream=0):
        self.runs = list(runs)
        self.B = int(batch_size)
        self.stream = stream
        self.h = [int(r.params[0].shape[0]) for r in self.runs]
        self.n = int(self.runs[0].params[0].shape[1])
        for r, (spec, h) in enumerate(zip(self.runs, self.h)):
            shapes = [np.shape(a) for a in spec.params]
            if shapes != [(h, self.n), (h,), (self.n, h), (self.n,)]:
                raise ValueError(f"run {r}: parameter shapes {shapes} do not make one "
                                 f"{self.n} -> {h} -> {self.n} model (runs share their pixels)")
        self.splitk = splitk if splitk is not None else SplitK(stream=stream)
        self.blocks = blocks
        to = lambda a: cuda.to_device(a, stream=stream)  # noqa: E731
        w1, b1, w2, b2 = zip(*(r.params for r in self.runs))
        self.params = [to(_padded(w1, np.shape)), to(_padded(b1, np.shape)),
                       to(_padded([np.asarray(w).T for w in w2], np.shape).transpose(0, 2, 1)
                          .copy()), to(_padded(b2, np.shape))]
        self.state = [to(_padded([r.state[j] for r in self.runs],
                                 lambda a: (0,) if a is None else a.shape)) for j in range(8)]
        R, B = len(self.runs), self.B
        self.table = to(np.array([[h, r.kind] for h, r in zip(self.h, self.runs)], np.int64))
        self.slopes = to(np.array([r.slope for r in self.runs], np.float32))
        # Chunk c adds its loss sums into slot c % 2, read back through pinned memory after an
        # event (read_loss): a reader may queue chunk c + 1 before it waits for chunk c.
        self.loss = to(np.zeros((2, R), np.float64))
        self._pinned = [cuda.pinned_array(R, np.float64) for _ in range(2)]
        self._ready = [cuda.event(**({} if SIMULATOR else {"timing": False}))  # the sim's:
                       for _ in range(2)]  # no arguments
        self._first = [0, 0]  # per slot: the first chunk its sum holds
        self._zeros = to(np.zeros(R, np.float64))
        self.chunks = 0  # launches of train_chunk so far
        self._unread = 0  # the first chunk whose loss is not read yet
        self.vloss = to(np.zeros(R, np.float64))
        self._rows = 0
        self._scratch(B)
        self.ws = cuda.device_array(1, np.float32, stream=stream)
        self._vidx = cuda.device_array((0, 0), np.int64, stream=stream)
        self._uploads = {}  # name -> device array (_upload)

    def _scratch(self, rows):
        """H, dZ, dH, the F2 tile losses and the split-K counters for batches of ``rows``
        (the training batch, or a validation batch when larger)."""
        if rows <= self._rows:
            return
        R, hmax, n, s = len(self.runs), max(self.h), self.n, self.stream
        self.scratch = [cuda.device_array((R, rows, c), np.float32, stream=s)
                        for c in (hmax, n, hmax)]
        self.parts = cuda.device_array(R * _cdiv(rows, BM) * _cdiv(n, BN), np.float64, stream=s)
        self.cnt = cuda.to_device(
            np.zeros(3 * R * _cdiv(rows, BM) * _cdiv(max(n, hmax), BN), np.int32), stream=s)
        self._rows = rows

    def plans(self, nb_last, nb_full=None):
        """(R, 2, 3, 2) int64: (S, K per slice) of F1-F3 per run, full batch (B, or
        ``nb_full``) then ``nb_last``, and the workspace floats the largest phase needs."""
        out = np.ones((len(self.runs), 2, 3, 2), np.int64)
        need = [0] * 6
        for r, h in enumerate(self.h):
            for q, nb in enumerate((nb_full or self.B, nb_last)):
                for p, (M, N, K) in enumerate(((nb, h, self.n), (nb, self.n, h),
                                               (nb, h, self.n))):
                    S, kchunk = self.splitk.plan(M, N, K)
                    out[r, q, p] = S, kchunk
                    need[3 * q + p] += _cdiv(M, BM) * _cdiv(N, BN) * S * SPAN
        return out, max(need)

    def validation_rows(self, nval):
        """(R, nval) int64 on the device: 0 .. nval - 1 per run (the validation pass reads its
        rows through the gathering F1)."""
        shape = (len(self.runs), nval)
        if self._vidx.shape != shape:
            rows = np.broadcast_to(np.arange(nval, dtype=np.int64), shape)
            self._vidx = cuda.to_device(np.ascontiguousarray(rows), stream=self.stream)
        return self._vidx

    def grid(self, compiled):
        if SIMULATOR:
            return 1
        most = compiled.overloads[compiled.signatures[0]].max_cooperative_grid_blocks(NTHREADS)
        return most if self.blocks is None else min(int(self.blocks), most)

    def train_chunk(self, X, perms, start, stop, hps, compiled=None, val=None, carry=True):
        """Train every run on its samples ``perms[r, start:stop]`` of ``X`` (device, (N, n)
        uint8 or float32) in batches of B (the last may be short); ``perms`` a device (R, N)
        int64 array; ``hps`` (R, steps, 7) float32 host: each run's packed hyper-parameters per
        step (kernels/optim.py). Does not synchronise: the chunk's loss sums go to slot
        ``chunks % 2`` of ``loss``, then (stream order) to pinned host memory and an event.
        ``carry``: the slot starts from the sums of the chunks not read yet (``take_loss_sums``
        reads them all, as one device sum); False: from zero (``read_loss`` reads this chunk
        alone, also after the next chunk is queued).
        ``compiled``: another compilation of the kernel for X's dtype (bench: a register cap).
        ``val`` (images like X, eval batch): then the launch ends with each run's validation
        loss sum over those images, in batches as today's evaluation takes them, added to
        ``vloss`` (``take_val_sums``)."""
        start, stop = int(start), int(stop)
        steps = _cdiv(stop - start, self.B)
        hps = np.ascontiguousarray(hps, np.float32)
        if hps.shape != (len(self.runs), steps, 7):
            raise ValueError(f"hps has shape {hps.shape}, expected {(len(self.runs), steps, 7)}")
        s = self.stream
        plans = self._plans((stop - start) % self.B or self.B)
        slot = self._open_slot(carry)
        k = compiled or kernel[_variant(X)]
        k[self.grid(k), BLOCK, s](
            X, perms, scale_of(X), *self.params, *self.state, self._upload("hps", hps),
            self.table, plans, self.slopes, *self.scratch, self.loss[slot], self.parts, self.ws,
            self.cnt, start, stop, self.B)
        self.loss[slot].copy_to_host(self._pinned[slot], stream=s)  # after the launch
        self._ready[slot].record(s)
        self.chunks += 1
        if val is not None:
            Xv, eb = val
            nval = int(Xv.shape[0])
            eb = max(1, min(int(eb), nval))
            self._scratch(eb)
            plans = self._plans(nval % eb or eb, eb, "vplans")
            H, dZ, _ = self.scratch
            v = validation[_variant(Xv)]
            v[self.grid(v), BLOCK, s](
                Xv, self.validation_rows(nval), scale_of(Xv), *self.params, self.table, plans,
                self.slopes, H, dZ, self.vloss, self.parts, self.ws, self.cnt, nval, eb)

    def _plans(self, nb_last, nb_full=None, name="plans"):
        """``plans`` on the device, the workspace grown to what they need."""
        plans, need = self.plans(nb_last, nb_full)
        if need > self.ws.shape[0]:
            self.ws = cuda.device_array(need, np.float32, stream=self.stream)
        return self._upload(name, plans)

    def _upload(self, name, host):
        """``host`` copied (stream order) into the device array kept for ``name``, reused while
        the shape holds: no allocation per chunk (numba's deferred frees synchronise the
        device), so a chunk is queued without waiting for the one before."""
        dev = self._uploads.get(name)
        if dev is None or dev.shape != host.shape:
            dev = self._uploads[name] = cuda.device_array(host.shape, host.dtype,
                                                          stream=self.stream)
        dev.copy_to_device(host, stream=self.stream)  # pageable: staged before it returns
        return dev

    def _open_slot(self, carry):
        """The loss slot of the next chunk, set (on the stream) to the sums it continues."""
        c, s = self.chunks, self.stream
        slot, prev = c % 2, (c - 1) % 2
        carry = carry and c > self._unread and self._first[prev] == self._unread
        if c - 2 >= self._unread and not carry:  # its pinned copy is about to be overwritten
            raise RuntimeError(f"chunk {c - 2}'s loss is not read (read_loss) before chunk {c}")
        self.loss[slot].copy_to_device(self.loss[prev] if carry else self._zeros, stream=s)
        self._first[slot] = self._first[prev] if carry else c
        return slot

    def read_loss(self, c):
        """Each run's loss sum (host float64 (R,)) of chunk ``c`` (0-based launch count) and
        of the unread chunks it carries: waits for that chunk's event only, so chunk c + 1 may
        be queued already."""
        slot = c % 2
        if not (self._unread == self._first[slot] <= c < self.chunks and c >= self.chunks - 2):
            raise RuntimeError(f"chunk {c}'s loss is not the next to read (chunks "
                               f"{self._unread}..{self.chunks - 1} unread)")
        self._ready[slot].synchronize()
        self._unread = c + 1
        return self._pinned[slot].copy()

    def take_loss_sums(self, which="loss"):
        """Each run's training loss sum (``which`` "vloss": validation) since the last call
        (host float64 (R,)); resets them."""
        if which == "loss":
            out = np.zeros(len(self.runs), np.float64)
            while self._unread < self.chunks:
                last = self.chunks - 1
                out += self.read_loss(last if self._first[last % 2] == self._unread else last - 1)
            return out
        sums = getattr(self, which)
        out = sums.copy_to_host(stream=self.stream)
        sums.copy_to_device(np.zeros(len(self.runs), np.float64), stream=self.stream)
        return out

    def rows(self, r):
        """Run r's padded slots (device views, contiguous): W1, b1, W2, b2, then the 8 state
        buffers (width 0 where no run keeps one)."""
        return [a[r] for a in self.params + self.state]

    def run(self, r, rows=None):
        """Host copies of run r's (params, state) in RunSpec's layout, from ``rows`` (default:
        ``rows(r)``; or device copies of them taken earlier)."""
        h, n = self.h[r], self.n
        host = [a.copy_to_host(stream=self.stream) for a in (rows or self.rows(r))]
        if self.stream:
            self.stream.synchronize()
        w1, b1, w2, b2 = host[:4]
        params = (w1[:h], b1[:h], w2[:, :h].copy(), b2)
        sizes = (h * n, h, h * n, h, n * h, n, n * h, n)
        state = tuple(None if self.runs[r].state[j] is None else host[4 + j][:sizes[j]]
                      for j in range(8))
        return params, state


def _variant(X):
    return "u8" if np.dtype(X.dtype) == np.uint8 else "f32"


def _cdiv(a, b):
    return (a + b - 1) // b
