"""The CPU training step on two threads of aecore's own, with BLAS on one thread in each.

Why: with OpenBLAS on two threads the products use both cores while the epilogues (Sigmoid +
MSE, the gather, LeakyReLU, bias updates) run on one: that serial work was a quarter of a step
at small h (bench/RESULTS.md, "Amdahl gap"). A numba ``prange`` next to OpenBLAS's spinning
threads was 9-63x slower (two pools on two cores), so here OpenBLAS runs single-threaded
(``openblas_set_num_threads(1)`` for the call) and two threads -- the caller and one Python
thread, both inside ``@njit(nogil=True)`` code -- each run half of every product *and* of its
epilogue, meeting at a spin barrier four times a step:

    gather half the batch rows                        (the next batch's, during phase 4)
    1. H  <- leaky(X W1^T + b1)       rows or hidden columns split        | barrier
    2. dZ <- mse'(sigmoid(H W2^T + b2)) pixel columns split (loss, db2) | barrier
    3. dH <- (dZ W2) * leaky'(H)      rows or hidden columns split (db1)  | barrier
    4. W2 rows, W1 (SGD: pixel columns; else hidden rows) and their biases | barrier

A product split in two packs one operand twice (each thread packs it); the split duplicates
the smaller one: rows when h <= B (W is packed twice), columns otherwise. The weight-gradient
products are split by output rows/columns, never by batch, so no partial gradients are summed.
Every output element is computed by one thread in a fixed order: results are the same run to
run (not bit-equal to the one-thread path: the loss's per-row float32 sums are split).
"""

from __future__ import annotations

import ctypes
import threading

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import cpu as K
from .kernels.blas import gemm
from .kernels.ftz import X86, flush_denormals_on, restore
from .kernels.optim import OPT_SGD
_LINE = 8  # int64 slots per flag: each thread's flag on its own 64-byte line
_ABORT = 2 * _LINE
_SPINS = 200  # pause-spins (~3 us) before a waiting thread starts yielding its core

# sched_yield from the C library, as a named symbol (so the callers can be cached on disk)
llvm.add_symbol("aecore_sched_yield",
                ctypes.cast(ctypes.CDLL(None).sched_yield, ctypes.c_void_p).value)
_sched_yield = types.ExternalFunction("aecore_sched_yield", types.int32())


@intrinsic
def _load_acquire(typingctx, arr, index):
    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(a.data, [args[1]]), "acquire", 8)

    return types.int64(arr, types.intp), codegen


@intrinsic
def _store_release(typingctx, arr, index, value):
    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        builder.store_atomic(args[2], builder.gep(a.data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return types.void(arr, types.intp, types.int64), codegen


@intrinsic
def _pause(typingctx):
    def codegen(context, builder, sig, args):
        if X86:  # tells the core this is a spin-wait (saves power, yields to the sibling)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def _barrier(flags, t, k):
    """Thread t (0 or 1) arrives at barrier number k and waits for the other; False if the
    other thread aborted. After _SPINS spins it yields the core at every check: on a busy host
    the other thread may be descheduled, and a pure spin then held the core it needed for a
    whole time slice (a step took 0.5-15 ms instead of 0.3)."""
    _store_release(flags, t * _LINE, k)
    return spin_wait(flags, (1 - t) * _LINE, k, _ABORT)


@njit(cache=True, nogil=True)
def spin_wait(flags, slot, value, abort_slot):
    """Wait until flags[slot] >= value (acquire); False as soon as flags[abort_slot] is set.
    Pause-spins _SPINS times, then yields the core at every check (cpu_team's waits too)."""
    spins = 0
    while _load_acquire(flags, slot) < value:
        if _load_acquire(flags, abort_slot) != 0:
            return False
        if spins < _SPINS:
            spins += 1
            _pause()
        else:
            _sched_yield()
    return True


@njit(inline="always", cache=True, nogil=True)
def _half(n, t):
    """Thread t's half of range(n): split at a multiple of 8 (vector-aligned columns)."""
    mid = min(((n // 2 + 4) // 8) * 8, n) if n >= 16 else (n + 1) // 2
    return (0, mid) if t == 0 else (mid, n)


@njit(cache=True, nogil=True)
def _leaky_cols(h, b, slope, c0, c1):
    for i in range(h.shape[0]):
        seg = h[i, c0:c1]
        K.bias_leaky_relu_(seg.reshape(1, seg.shape[0]), b[c0:c1], slope)


@njit(cache=True, nogil=True)
def _leaky_grad_cols(dh, h, slope, colsum, c0, c1):
    for i in range(dh.shape[0]):
        g = dh[i, c0:c1]
        K.leaky_relu_grad_(g.reshape(1, g.shape[0]), h[i, c0:c1].reshape(1, g.shape[0]), slope,
                           colsum[c0:c1])


@njit(cache=True, nogil=True)
def _sigmoid_mse_cols(dz, b, xb, scale, colsum, c0, c1, no_y):
    total = 0.0
    for i in range(dz.shape[0]):
        z = dz[i, c0:c1]
        n = z.shape[0]
        total += K.bias_sigmoid_mse_(z.reshape(1, n), b[c0:c1], xb[i, c0:c1].reshape(1, n),
                                     scale, no_y, colsum[c0:c1])
    return total


@njit(cache=True, nogil=True)
def _update_rows(kind, hp, t, W, G, V, M, r0, r1):
    """kernels.cpu.optimizer_update of rows r0:r1 of W (2-D) or elements r0:r1 of a bias
    (1-D); V, M flat (empty when the optimizer has none)."""
    n = W.size // W.shape[0]
    a, b = r0 * n, r1 * n
    K.optimizer_update(kind, hp, t, W.reshape(-1)[a:b], G.reshape(-1)[a:b], V[a:b], M[a:b])


@njit(cache=True, nogil=True)
def _gather_half(X, perm, s, e, Xb, t):
    r0, r1 = _half(e - s, t)
    K.gather_rows(X, perm[s + r0:s + r1], Xb[r0:r1])


@njit(cache=True, nogil=True)
def pair_steps(t, flags, X, perm, start, stop, batch, W1, b1, W2, b2, slope, kind, hp, lrs, step,
               S1, S2, Xb2, H, dZ, dH, G1, G2, gsum1, gsum2, gs1, gb1, gb2, out):
    """Thread t's half of training on X[perm[start:stop]]; out[t] <- its loss sum. Both
    threads must call it with the same arguments (t = 0 and 1) at the same time. The other
    arguments are those of engine_cpu._train_steps, plus the double-buffered batch Xb2 and the
    float64 bias-gradient sums gsum1, gsum2 and gs1 (2, h) shared by the two threads."""
    mxcsr = flush_denormals_on()
    hidden = W1.shape[0]
    npix = W2.shape[0]
    q0, q1 = _half(hidden, t)
    p0, p1 = _half(npix, t)
    no_y = np.empty((0, 1), np.float32)
    k = 0
    total = 0.0
    cur = 0
    n_steps = 0
    if start < stop:
        _gather_half(X, perm, start, min(start + batch, stop), Xb2[0], t)
    k += 1
    ok = _barrier(flags, t, k)
    for s in range(start, stop, batch):
        if not ok:
            break
        e = min(s + batch, stop)
        nb = e - s
        r0, r1 = _half(nb, t)
        e2 = min(e + batch, stop)
        n0, n1 = _half(e2 - e, t)
        K.prefetch_rows(X, perm[e + n0:e + n1])  # this thread's half of the next batch
        xb = Xb2[cur, :nb]
        h = H[:nb]
        dz = dZ[:nb]
        dh = dH[:nb]
        rows = hidden <= nb  # which operand a split packs twice: the smaller
        # 1. H <- leaky(X W1^T + b1)
        if rows:
            gemm(False, True, 1.0, xb[r0:r1], W1, 0.0, h[r0:r1])
            K.bias_leaky_relu_(h[r0:r1], b1, slope)
        else:
            gemm(False, True, 1.0, xb, W1[q0:q1], 0.0, h[:, q0:q1])
            _leaky_cols(h, b1, slope, q0, q1)
        k += 1
        ok = _barrier(flags, t, k)
        # 2. dZ <- mse'(sigmoid(H W2^T + b2)), this thread's pixel columns: loss, db2
        gemm(False, True, 1.0, h, W2[p0:p1], 0.0, dz[:, p0:p1])
        gsum2[p0:p1] = 0.0
        total += _sigmoid_mse_cols(dz, b2, xb, 2.0 / (nb * npix), gsum2, p0, p1, no_y)
        k += 1
        ok = ok and _barrier(flags, t, k)
        # 3. dH <- (dZ W2) * leaky'(H), db1 (per-thread partial sums when split by rows)
        if rows:
            gemm(False, False, 1.0, dz[r0:r1], W2, 0.0, dh[r0:r1])
            gs1[t, :] = 0.0
            K.leaky_relu_grad_(dh[r0:r1], h[r0:r1], slope, gs1[t])
        else:
            gemm(False, False, 1.0, dz, W2[:, q0:q1], 0.0, dh[:, q0:q1])
            gsum1[q0:q1] = 0.0
            _leaky_grad_cols(dh, h, slope, gsum1, q0, q1)
        k += 1
        ok = ok and _barrier(flags, t, k)
        if rows:
            for j in range(q0, q1):
                gsum1[j] = gs1[0, j] + gs1[1, j]
        # 4. updates: W2 rows p, b2[p]; W1 pixel columns (SGD) or hidden rows, b1[q]
        tt = step + n_steps + 1
        hp_t = K.with_lr(hp, lrs[n_steps])
        if kind == OPT_SGD:  # as kernels.cpu.sgd_weight_step, on this thread's part
            lr = np.float32(hp_t.lr)
            gemm(True, False, -lr, dz[:, p0:p1], h, 1.0, W2[p0:p1])
            gemm(True, False, -lr, dh, xb[:, p0:p1], 1.0, W1[:, p0:p1])
            K._bias_step(b2[p0:p1], gsum2[p0:p1], lr)
            K._bias_step(b1[q0:q1], gsum1[q0:q1], lr)
        else:  # as kernels.cpu.weight_step: G <- dZ^T A, then the update, by rows
            gemm(True, False, 1.0, dz[:, p0:p1], h, 0.0, G2[p0:p1])
            gemm(True, False, 1.0, dh[:, q0:q1], xb, 0.0, G1[q0:q1])
            for j in range(p0, p1):
                gb2[j] = gsum2[j]
            for j in range(q0, q1):
                gb1[j] = gsum1[j]
            _update_rows(kind, hp_t, tt, W2, G2, S2[0], S2[2], p0, p1)
            _update_rows(kind, hp_t, tt, b2, gb2, S2[1], S2[3], p0, p1)
            _update_rows(kind, hp_t, tt, W1, G1, S1[0], S1[2], q0, q1)
            _update_rows(kind, hp_t, tt, b1, gb1, S1[1], S1[3], q0, q1)
        if e < stop:  # the next batch's rows, into the other buffer (xb is still being read)
            _gather_half(X, perm, e, e2, Xb2[1 - cur], t)
        cur = 1 - cur
        n_steps += 1
        k += 1
        ok = ok and _barrier(flags, t, k)
    restore(mxcsr)
    out[t] = total
    return n_steps


class PairRunner:
    """Runs ``pair_steps`` on the calling thread and one Python thread, with the BLAS aecore
    calls set to one thread for the duration (threadpoolctl)."""

    def __init__(self, batch, hidden, image):
        from threadpoolctl import ThreadpoolController

        self._blas = ThreadpoolController().select(user_api="blas")
        self.Xb2 = np.empty((2, batch, image), np.float32)
        self.gsum1 = np.zeros(hidden, np.float64)
        self.gsum2 = np.zeros(image, np.float64)
        self.gs1 = np.zeros((2, hidden), np.float64)
        self.out = np.zeros(2, np.float64)

    def run(self, args_before, args_after):
        """args_before: pair_steps' arguments from X to S2; args_after: (H, dZ, dH, G1, G2, gb1,
        gb2) -> (loss sum, optimizer steps taken)."""
        flags = np.zeros(3 * _LINE, np.int64)
        H, dZ, dH, G1, G2, gb1, gb2 = args_after
        args = (*args_before, self.Xb2, H, dZ, dH, G1, G2, self.gsum1, self.gsum2, self.gs1,
                gb1, gb2, self.out)
        err = []

        def other():
            try:
                pair_steps(1, flags, *args)
            except BaseException as ex:  # noqa: BLE001 - re-raised on the caller's thread
                err.append(ex)
                flags[_ABORT] = 1

        with self._blas.limit(limits=1):
            th = threading.Thread(target=other, name="aecore-cpu-pair", daemon=True)
            th.start()
            try:
                n = pair_steps(0, flags, *args)
            except BaseException:
                flags[_ABORT] = 1
                raise
            finally:
                th.join()
        if err:
            raise err[0]
        return self.out[0] + self.out[1], n

