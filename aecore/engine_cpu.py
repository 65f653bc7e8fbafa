"""The CPU engine: the whole training loop over a range of batches runs inside ``@njit``.

Per batch (B rows, h hidden units, 784 pixels) the fused kernels of ``aecore.kernels.cpu``,
each an sgemm with its epilogue; nothing else touches memory at full size:

    Xb     <- X[perm[s:e]] / 255                  gather_rows (the uint8 dataset stays uint8;
                                                  prefetch_rows loads the next batch's rows)
    H      <- f(Xb W1^T + b1)                     linear_activation   (f: the hidden activation)
    dZ     <- loss'(H W2^T + b2), loss            linear_sigmoid_loss_grad  (+ db2 column sums)
    dH     <- (dZ W2) * f'(H)                     backward_activation (+ db1; W2 before its step)
    W2, b2 <- step(dZ^T H, db2)                   weight_step  (SGD: in the sgemm, alpha = -lr)
    W1, b1 <- step(dH^T Xb, db1)                  weight_step

Where scipy's OpenBLAS runs on two or more threads, the second half of the batch rows of the
Sigmoid + loss epilogue runs on OpenBLAS's own second thread, which is still spinning after
the product (``kernels.blas_pair``; dZ is the serial pass's bit for bit, db2 and the loss are
added as two partial sums, the loss equal to float32 rounding). Row by row, each half also
gathers half of the next batch's rows into a second batch buffer, so the dataset's random rows
load while the epilogue computes (the same bits as the caller's gather_rows).
``pair_epilogue=False`` keeps the epilogue and the gather on the calling thread.

The epoch driver (``aecore.trainer``) calls ``train_steps`` in chunks so it can show progress
and notice Ctrl-C; chunking does not change the result (the same batches in the same order).

``split=True`` runs the same step on two threads of aecore's own, each taking half of every
product and of its epilogue, with BLAS on one thread (``aecore.cpu_pair``). ``team=True`` runs
OpenBLAS's own two jobs of every product and the two halves of every epilogue on one team of
two aecore threads, through OpenBLAS's thread callback (``aecore.cpu_team``): the same bits as
the default path. Where the callback is missing (older OpenBLAS, another BLAS) it warns once
and runs the default path. Split and team run leaky_relu with mse only.

``gemm="own"`` runs the step on aecore's own GEMM instead of OpenBLAS's sgemm,
every phase (forward, output, backward, update) in two halves with its epilogue on OpenBLAS's
two threads (``kernels.own_step``, ``kernels.cpu_gemm``): faster on small batches, measured
in bench/RESULTS.md ("Session 13"); results differ from OpenBLAS's in the last bits. The
engine takes what it is given; ``devices.make_engine`` resolves TrainConfig's ``auto``.

The activation and the loss are compile-time choices: the loops take their numbers
(``kernels.activations_cpu.code`` / ``kernels.losses_cpu.code``) as literals, so each pair is
its own cached specialisation and the default (leaky_relu, mse) is the code it was before.
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import literally, njit

from .config import ENGINE_GEMMS
from .engine import EVAL_BATCH, Engine
from .kernels import activations_cpu, blas_pair as BP, losses_cpu
from .kernels import cpu as K
from .kernels import own_step
from .kernels.cpu_gemm import aligned_empty
from .kernels import optim as ko
from .kernels.activations_reference import DEFAULT_ACTIVATION, needs_preactivation
from .kernels.losses_reference import DEFAULT_LOSS
from .kernels.ftz import flush_denormals_on, restore
from .kernels.literal_call import LiteralCall
from .model import B1, B2, W1, W2
from .optim import Optimizer, buffers_of

_LOSS, _OUTPUT, _HIDDEN = 0, 1, 2  # what _forward computes


@njit(cache=True, nogil=True)
def _train_steps(X, perm, start, stop, batch, W1, b1, W2, b2, slope, kind, hp, lrs, step, S1, S2,
                 act, loss, Xb, H, Zp, dZ, dH, G1, G2, gb1, gb2, pair, blocks, half_sums, outs,
                 X8, Xb_next):
    """Train on X[perm[start:stop]] in batches; returns (loss sum, squared-error sum,
    optimizer steps taken).

    kind, hp: the optimizer (kernels/optim.py), whose lr is replaced by lrs[i] (float64) at the
    chunk's i-th step (the learning-rate schedule); S1, S2: layer 1's and layer 2's optimizer
    buffers (VW, Vb, MW, Mb); act, loss: the activation's and loss's numbers (literals); Zp:
    the pre-activations where the activation keeps them (else unused); G1, G2, gb1, gb2:
    gradient scratch (unused by SGD). pair: 0, or the function that runs half of the output
    epilogue on OpenBLAS's other thread (``kernels.blas_pair``; blocks, half_sums, outs: its
    scratch). X8: X when it is uint8 and pair is not 0, else empty: the two halves then also
    gather the next batch, into Xb_next (Xb's shape; the two buffers take turns).
    """
    act = literally(act)
    loss = literally(loss)
    mxcsr = flush_denormals_on()  # subnormals -> 0 inside the loop, as on the GPU (kernels/ftz.py)
    total = 0.0
    total_sq = 0.0
    n_steps = 0
    db1 = np.zeros(b1.shape[0], np.float64)
    db2 = np.zeros(b2.shape[0], np.float64)
    fuse = X8.shape[0] > 0  # the next batch's gather runs in the output epilogue's halves
    gathered = False  # whether Xb holds this batch already (the previous step gathered it)
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        nb = e - s
        xb, h, zp, dz, dh = Xb[:nb], H[:nb], Zp[:nb], dZ[:nb], dH[:nb]
        next_idx = perm[e:min(e + batch, stop)]
        if not gathered:
            K.gather_rows(X, perm[s:e], xb)
        if not fuse:
            K.prefetch_rows(X, next_idx)
        K.linear_activation(xb, W1, b1, h, slope, act, zp)
        if pair != 0:
            part, part_sq = BP.linear_sigmoid_loss_grad_pair(
                h, W2, b2, xb, dz, db2, pair, blocks, half_sums, outs, X8,
                next_idx if fuse else next_idx[:0], Xb_next)
        else:
            part, part_sq = K.linear_sigmoid_loss_grad(h, W2, b2, xb, dz, Xb[:0], db2, loss)
        total += part
        total_sq += part_sq
        K.backward_activation(dz, W2, h, zp, dh, slope, act, db1)
        t = step + n_steps + 1
        hp_t = K.with_lr(hp, lrs[n_steps])
        K.weight_step(kind, hp_t, t, dz, h, W2, b2, db2, S2[0], S2[1], S2[2], S2[3], G2, gb2)
        K.weight_step(kind, hp_t, t, dh, xb, W1, b1, db1, S1[0], S1[1], S1[2], S1[3], G1, gb1)
        n_steps += 1
        gathered = fuse and next_idx.shape[0] > 0
        if gathered:
            Xb, Xb_next = Xb_next, Xb
    restore(mxcsr)
    return total, total_sq, n_steps


@njit(cache=True, nogil=True)
def _forward(X, W1, b1, W2, b2, slope, Xb, H, Zp, Z, Y, what, act, loss):
    """Batched forward over all of X: ``what`` _LOSS -> returns (loss sum, squared-error sum);
    _OUTPUT -> the sigmoid outputs into Y (n rows); _HIDDEN -> the hidden activations into H
    (n rows). Zp, Z: scratch for the pre-activations (where kept) and the output's logits."""
    act = literally(act)
    loss = literally(loss)
    total = 0.0
    total_sq = 0.0
    batch = Xb.shape[0]
    for s in range(0, X.shape[0], batch):
        e = min(s + batch, X.shape[0])
        nb = e - s
        xb = Xb[:nb]
        K.to_float(X[s:e], xb)
        h = H[s:e] if what == _HIDDEN else H[:nb]
        K.linear_activation(xb, W1, b1, h, slope, act, Zp[:nb])
        if what == _OUTPUT:
            K.linear_sigmoid(h, W2, b2, Y[s:e])
        elif what == _LOSS:
            part, part_sq = K.linear_sigmoid_eval(h, W2, b2, xb, Z[:nb], loss)
            total += part
            total_sq += part_sq
    return total, total_sq


# Called from Python with the activation's and the loss's numbers, which the loops take as
# literals: without LiteralCall every call re-types the loop (~20 ms; kernels/literal_call.py).
_train_steps_call = LiteralCall(_train_steps, positions=(16, 17))
_forward_call = LiteralCall(_forward, positions=(12, 13))


def _aligned_copy(a: np.ndarray) -> np.ndarray:
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


class CpuEngine(Engine):
    """Engine (aecore.engine) on the CPU: params and buffers are float32 NumPy arrays."""

    device = "cpu"

    def __init__(self, params, optim=None, batch_size=None, slope=0.01, opt_state=None,
                 step=0, *, split: bool = False, team: bool = False, lr_schedule=None,
                 activation: str = DEFAULT_ACTIVATION, loss: str = DEFAULT_LOSS,
                 pair_epilogue: bool = True, gemm: str = "blas"):
        super().__init__(params, optim, batch_size, slope, opt_state, step,
                         lr_schedule=lr_schedule, activation=activation, loss=loss)
        # half of the output epilogue on OpenBLAS's second thread when BLAS runs on two or
        # more (kernels/blas_pair.py); False: on the calling thread, for A/B measurements
        self.pair_epilogue = bool(pair_epilogue)
        # with the pair, its two halves also gather the next batch (uint8 C-contiguous data);
        # False: the calling thread gathers every batch, for A/B measurements
        self.gather_ahead = True
        if split and team:
            raise ValueError("choose one of split and team")
        if gemm not in ENGINE_GEMMS:
            raise ValueError(f"gemm must be one of {', '.join(ENGINE_GEMMS)}, not {gemm!r} "
                             "(make_engine resolves 'auto')")
        # "own": the step on aecore's own GEMM, every phase in two halves (kernels/own_step.py)
        self.gemm = gemm
        if gemm == "own" and (split or team):
            raise ValueError("gemm='own' runs its own two halves: it cannot be combined with "
                             f"{'split' if split else 'team'}")
        self._act = activations_cpu.code(self.activation)
        self._loss_code = losses_cpu.code(self.loss)
        self._loss = self._sq = 0.0
        self.split = bool(split)
        self.team = bool(team)
        self.team_unavailable = None  # why the team path could not run (then the default ran)
        if (self.split or self.team) and \
                (self.activation, self.loss) != (DEFAULT_ACTIVATION, DEFAULT_LOSS):
            raise ValueError(f"the {'split' if self.split else 'team'} CPU step runs "
                             f"{DEFAULT_ACTIVATION} with {DEFAULT_LOSS} only, not "
                             f"{self.activation} with {self.loss}")
        if optim is None:
            return
        B, hidden, image = self.batch_size, self.hidden, self.image_size
        self._Xb = aligned_empty((B, image))
        self._H = aligned_empty((B, hidden))
        self._Zp = self._preactivations(B)
        self._dZ = aligned_empty((B, image))
        self._dH = aligned_empty((B, hidden))
        fused = optim.name is Optimizer.SGD  # the update happens in the sgemm: no G
        self._G1 = aligned_empty((0, image) if fused else (hidden, image))
        self._G2 = aligned_empty((0, hidden) if fused else (image, hidden))
        self._gb1 = np.empty(hidden, np.float32)
        self._gb2 = np.empty(image, np.float32)
        self._pair_scratch = BP.scratch(image)
        self._Xb_next = aligned_empty((B, image))  # the next batch, gathered by the pair
        self._no_images = np.empty((0, image), np.uint8)
        if gemm == "own":
            self._own_scratch = own_step.scratch(B, hidden, image)
            self.own_by_rows = own_step.by_rows(B)  # how the halves split (measured)
        if self.split:
            from .cpu_pair import PairRunner

            self._pair = PairRunner(B, hidden, image)
        if self.team:
            from .blas_callback import unavailable_reason

            self.team_unavailable = unavailable_reason()
            if self.team_unavailable is None:
                from .cpu_team import TeamRunner

                self._team = TeamRunner(B, hidden, image)
            else:
                self.team = False
                warnings.warn(f"CPU team engine unavailable ({self.team_unavailable}); "
                              "running the default path", RuntimeWarning, stacklevel=2)

    def _put_state(self, params, state):
        # copies that start on 64-byte lines, as the own GEMM's tiles read them (aligned_empty)
        params, state = ({k: _aligned_copy(v) for k, v in d.items()} for d in (params, state))
        self.params, self.state = params, state
        if self.optim is not None:  # the @njit loop's buffer tuples; absent ones are empty
            none = np.zeros(0, np.float32)
            self._S = tuple(buffers_of(state, self.optim, layer, none) for layer in (1, 2))

    def get_params(self):
        return {k: v.copy() for k, v in self.params.items()}

    def get_opt_state(self):
        return self._opt_state_shaped({k: v.copy() for k, v in self.state.items()})

    def put(self, images):
        return self.check_images(images)

    def train_steps(self, data, perm, start, stop):
        self._require_optimizer()
        o = self.optim
        p = self.params
        start, stop = int(start), int(stop)
        lrs = self.step_lrs(len(range(start, stop, self.batch_size)))
        hp = ko.HyperParams(*map(float, o.hyper_params()))  # one numba type, whatever was given
        args = (data, np.ascontiguousarray(perm, np.int64), start, stop, self.batch_size,
                p[W1], p[B1], p[W2], p[B2], np.float32(self.slope), o.name.kernel_code, hp, lrs,
                self.step, *self._S)
        scratch = (self._H, self._dZ, self._dH, self._G1, self._G2, self._gb1, self._gb2)
        if self.gemm == "own":  # data as put() returns it: C-contiguous uint8 pixels
            loss, sq, n = self._own_steps(self.check_images(data), args[1], start, stop, lrs,
                                          o.name.kernel_code, hp)
        elif self.split:
            loss, n = self._pair.run(args, scratch)
            sq = loss
        elif self.team:
            loss, n = self._team.run((*args, self._Xb, *scratch))
            sq = loss
        else:
            pair = BP.pair_function(self._loss_code) if self.pair_epilogue else 0
            fuse = (pair != 0 and self.gather_ahead and data.dtype == np.uint8
                    and data.flags.c_contiguous)
            X8 = data if fuse else self._no_images
            loss, sq, n = _train_steps_call(*args, self._act, self._loss_code, self._Xb,
                                            self._H, self._Zp, *scratch[1:], pair,
                                            *self._pair_scratch, X8, self._Xb_next)
        self._loss += loss
        self._sq += sq
        self.step += n

    def _own_steps(self, data, perm, start, stop, lrs, kind, hp):
        """train_steps on the own-GEMM step (kernels/own_step.py), the params in place."""
        p = self.params
        arrays = [a for layer, (G, gb) in ((0, (self._G1, self._gb1)), (1, (self._G2, self._gb2)))
                  for a in (*self._S[layer], G, gb)]
        opt = np.array([a.ctypes.data if a.size else 0 for a in arrays], np.int64)
        fn = own_step.half_function(self._act, self._loss_code)
        return own_step.train_steps(data, perm, start, stop, self.batch_size, p[W1], p[B1], p[W2],
                                    p[B2], np.float32(self.slope), lrs, self._Xb, self._H,
                                    self._Zp, self._dZ, self._dH, fn, own_step.in_pair(),
                                    *self._own_scratch, self._Xb_next, self.own_by_rows, kind,
                                    hp, self.step, opt)

    def take_loss_sums(self):
        sums = (float(self._loss), float(self._sq))
        self._loss = self._sq = 0.0
        return sums

    def _preactivations(self, rows):
        """The pre-activation buffer: (rows, h) where the activation's backward reads Z, else
        empty (never touched)."""
        return aligned_empty((rows if needs_preactivation(self.activation) else 0, self.hidden))

    def _forward(self, images, what):
        """((loss sum, squared-error sum), H, Y) of ``images``: H (n, h) filled for _HIDDEN,
        Y (n, 784) for _OUTPUT."""
        images = self.put(images)
        n = images.shape[0]
        p = self.params
        B = min(EVAL_BATCH, max(n, 1))
        Xb = np.empty((B, self.image_size), np.float32)
        H = np.empty((n if what == _HIDDEN else B, self.hidden), np.float32)
        Z = np.empty((B, self.image_size), np.float32)
        Y = np.empty((n if what == _OUTPUT else 0, self.image_size), np.float32)
        total = _forward_call(images, p[W1], p[B1], p[W2], p[B2], np.float32(self.slope), Xb,
                              H, self._preactivations(B), Z, Y, what, self._act,
                              self._loss_code)
        return total, H, Y

    def loss_sums(self, data):
        return self._forward(data, _LOSS)[0]

    def reconstruct(self, images):
        return self._forward(images, _OUTPUT)[2]

    def encode(self, images):
        return self._forward(images, _HIDDEN)[1]
