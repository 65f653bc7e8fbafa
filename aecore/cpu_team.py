"""The CPU training step with its products *and* epilogues on one two-thread team
(``CpuEngine(team=True)``; the team and OpenBLAS's thread callback: ``aecore.blas_callback``).

The default path (engine_cpu._train_steps) runs each sgemm on OpenBLAS's two threads and the
epilogues (the gather, LeakyReLU, Sigmoid + MSE, column sums, optimizer updates) on one. Here
OpenBLAS hands its two jobs of every product to aecore's two threads, and the same two threads
split each epilogue:

    phase       driver's / worker's half                      then
    GATHER      batch rows (and the next batch's prefetch)    sgemm  H <- Xb W1^T
    LEAKY       rows of H                                      sgemm  dZ <- H W2^T
    SIGMOID     rows of dZ (each row's loss into rowloss)     sgemm  dH <- dZ W2
    BACKWARD    pixel columns of db2, hidden columns of dH / db1
    UPDATE      (not SGD) rows of W2 / b2 and of W1 / b1, after both gradient sgemms

Every element is computed by the same code, in the same order, as on the default path (the
products by OpenBLAS's own two-way split, the column sums per column over the rows in order,
the loss summed row by row by the driver), so the results are the default path's bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import blas_callback as bc
from .cpu_pair import _half, _leaky_grad_cols, _update_rows
from .kernels import cpu as K
from .kernels.blas import gemm
from .kernels.ftz import flush_denormals_on, restore
from .kernels.optim import OPT_SGD

GATHER, LEAKY, SIGMOID, BACKWARD, UPDATE = range(5)


@njit(**K._FAST)
def _column_sums(dz, colsum, c0, c1):
    """colsum[c0:c1] <- dz[:, c0:c1].sum(0) in float64, row by row (as bias_sigmoid_mse_)."""
    colsum[c0:c1] = 0.0
    for i in range(dz.shape[0]):
        z = dz[i]
        for j in range(c0, c1):
            colsum[j] += z[j]


@njit(cache=True, nogil=True)  # no fast-math: the rows' losses added in order
def _sum_rows(rowloss, n):
    total = 0.0
    for i in range(n):
        total += rowloss[i]
    return total


@njit(cache=True, nogil=True)
def _phase(t, ph, s, nb, tt, a):
    """Thread t's half of phase ``ph`` for the batch X[perm[s:s + nb]] (optimizer step tt)."""
    (X, perm, start, stop, batch, W1, b1, W2, b2, slope, kind, hp, lrs, step, S1, S2, Xb, H,
     dZ, dH, G1, G2, gb1, gb2, gsum1, gsum2, rowloss) = a
    r0, r1 = _half(nb, t)
    if ph == GATHER:
        K.gather_rows(X, perm[s + r0:s + r1], Xb[r0:r1])
        e = s + nb
        n0, n1 = _half(min(e + batch, stop) - e, t)
        K.prefetch_rows(X, perm[e + n0:e + n1])
    elif ph == LEAKY:
        K.bias_leaky_relu_(H[r0:r1], b1, slope)
    elif ph == SIGMOID:
        no_y = np.empty((0, dZ.shape[1]), np.float32)
        no_sum = np.empty(0, np.float64)
        scale = 2.0 / (nb * dZ.shape[1])
        for i in range(r0, r1):
            rowloss[i] = K.bias_sigmoid_mse_(dZ[i:i + 1], b2, Xb[i:i + 1], scale, no_y, no_sum)
    elif ph == BACKWARD:
        p0, p1 = _half(dZ.shape[1], t)
        _column_sums(dZ[:nb], gsum2, p0, p1)
        q0, q1 = _half(H.shape[1], t)
        gsum1[q0:q1] = 0.0
        _leaky_grad_cols(dH[:nb], H[:nb], slope, gsum1, q0, q1)
    elif ph == UPDATE:
        hp_t = K.with_lr(hp, lrs[tt - step - 1])  # the schedule's rate of optimizer step tt
        for W, b, G, gb, gsum, S in ((W2, b2, G2, gb2, gsum2, S2), (W1, b1, G1, gb1, gsum1, S1)):
            w0, w1 = _half(W.shape[0], t)
            for j in range(w0, w1):
                gb[j] = gsum[j]
            _update_rows(kind, hp_t, tt, W, G, S[0], S[2], w0, w1)
            _update_rows(kind, hp_t, tt, b, gb, S[1], S[3], w0, w1)


@njit(cache=True, nogil=True)
def _both(ctrl, ph, s, nb, tt, a):
    """Driver: post phase ``ph`` to the worker, do its own half, wait; False on abort."""
    seq = bc.post(ctrl, ph, s, nb, tt, 0)
    _phase(0, ph, s, nb, tt, a)
    return bc.wait(ctrl, seq)


@njit(cache=True, nogil=True)
def team_steps(ctrl, a):
    """The driver: _train_steps' loop on the team; a = _train_steps' arguments + (gsum1,
    gsum2, rowloss). Returns (loss sum, optimizer steps taken)."""
    (X, perm, start, stop, batch, W1, b1, W2, b2, slope, kind, hp, lrs, step, S1, S2, Xb, H,
     dZ, dH, G1, G2, gb1, gb2, gsum1, gsum2, rowloss) = a
    mxcsr = flush_denormals_on()
    bc.begin(ctrl)
    total = 0.0
    n_steps = 0
    ok = True
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        nb = e - s
        xb, h, dz, dh = Xb[:nb], H[:nb], dZ[:nb], dH[:nb]
        tt = step + n_steps + 1
        ok = _both(ctrl, GATHER, s, nb, tt, a)
        gemm(False, True, 1.0, xb, W1, 0.0, h)
        ok = ok and _both(ctrl, LEAKY, s, nb, tt, a)
        gemm(False, True, 1.0, h, W2, 0.0, dz)
        ok = ok and _both(ctrl, SIGMOID, s, nb, tt, a)
        total += _sum_rows(rowloss, nb)
        gemm(False, False, 1.0, dz, W2, 0.0, dh)
        ok = ok and _both(ctrl, BACKWARD, s, nb, tt, a)
        if kind == OPT_SGD:  # as kernels.cpu.sgd_weight_step
            lr = np.float32(lrs[n_steps])
            gemm(True, False, -lr, dz, h, 1.0, W2)
            K._bias_step(b2, gsum2, lr)
            gemm(True, False, -lr, dh, xb, 1.0, W1)
            K._bias_step(b1, gsum1, lr)
        else:  # as kernels.cpu.weight_step: G <- dZ^T A for both layers, then the updates
            gemm(True, False, 1.0, dz, h, 0.0, G2)
            gemm(True, False, 1.0, dh, xb, 0.0, G1)
            ok = ok and _both(ctrl, UPDATE, s, nb, tt, a)
        if not ok:
            break
        n_steps += 1
    bc.finish(ctrl)
    restore(mxcsr)
    return total, n_steps


@njit(cache=True, nogil=True)
def team_worker(ctrl, a):
    """The worker: runs OpenBLAS jobs and its halves of the phases until told to stop."""
    mxcsr = flush_denormals_on()  # its own MXCSR (no flush-to-zero) comes back for BLAS jobs
    seen = 0
    while True:
        seq = bc.next_command(ctrl, seen)
        if seq < 0:
            break
        seen = seq
        cmd = ctrl[bc.CMD]
        if cmd == bc.CMD_EXIT:
            bc.done(ctrl, seq)
            break
        if cmd == bc.CMD_JOB:
            bc.run_job(ctrl, mxcsr)
        else:
            _phase(1, cmd, ctrl[bc.ARG], ctrl[bc.ARG + 1], ctrl[bc.ARG + 2], a)
        bc.done(ctrl, seq)
    restore(mxcsr)


class TeamRunner:
    """The engine's side: scratch for the team's step and the BlasTeam that runs it."""

    def __init__(self, batch, hidden, image):
        self._team = bc.BlasTeam()
        self.gsum1 = np.zeros(hidden, np.float64)
        self.gsum2 = np.zeros(image, np.float64)
        self.rowloss = np.zeros(batch, np.float64)

    def run(self, train_args):
        """train_args: engine_cpu._train_steps' arguments -> (loss sum, steps taken)."""
        a = (*train_args, self.gsum1, self.gsum2, self.rowloss)
        return self._team.run(team_steps, team_worker, (a,))
