"""The persistent CUDA path (``cuda_path`` "persistent"): runs that share batch size, data and
chunk grid train together, one launch of the persistent kernel (kernels/cuda/persistent.py) per
chunk for all of them.

A ``RunGroup`` owns one ``PersistentRuns`` for its runs. Each run keeps its own trainer
(``aecore.trainer.train``, in its own thread: ``aecore.side_by_side``) and drives a ``RunView``,
an Engine whose ``train_steps`` is a rendezvous: the last member to ask for the chunk launches it
for every member, then reads every run's loss of the chunk before (a double-buffered slot: the
only synchronisation of a chunk waits for the previous launch, with this one queued; the chunk
ending an epoch is read at once, the pending one on a stop or a leave); a member
that ends (done, diverged, stopped, failed) leaves, and the next launch rebuilds the group
without it. Members must ask for the same chunks (``group_key``: batch size, data, chunk grid and
the position a resumed run starts from).

Per epoch the host does no copies of parameters or optimizer state: ``snapshot()`` (the state
the trainer keeps at an epoch's end) copies the run's slots device to device, and they reach the
host only when the trainer saves. Validation is one more launch of the persistent kernel after
the epoch's last chunk (its validation kernel, every run at once: today's evaluation batches,
split-K plans and sum order, so the same bits) once every member has evaluated the same images:
a member learns its validation set at its first evaluation, which, like the reconstructions and
the test loss, runs on an inference ``CudaEngine`` per run whose parameters are refreshed from
the group's slots device to device. Ctrl-C: members read the stop flag as the first of them read
it after the group's last launch (``signals_for``), so all of them stop after the same chunk,
and a resume finds them at one position again.

Each run's results are bitwise those of the run trained alone by the eager path in the
simulator (tests/test_engine_persistent.py): same split-K plan (``SplitK()``), same partial-sum
order, the loss per tile added in tile order.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import zlib

import numpy as np
from numba import cuda

from .engine import EVAL_BATCH, Engine
from .engine_cuda import CudaEngine
from .kernels import optim as ko
from .kernels.cuda import SIMULATOR
from .kernels.cuda import persistent as kp
from .model import B1, B2, W1, W2
from .optim import Optimizer, buffers_of


# Numba's simulator runs one kernel at a time in a process (its kernel context is global): there,
# every simulated launch of the members' threads goes through this lock.
_SIMULATED = threading.Lock() if SIMULATOR else contextlib.nullcontext()


def group_key(config, position: int, chunk: int) -> tuple:
    """Runs with equal keys can share a launch: one batch grid, the same training rows, the
    same chunks from the same position."""
    return (config.batch_size, config.limit, config.val_size, int(position), int(chunk))


class _Stopped(RuntimeError):
    pass


class RunGroup:
    """Runs (``keys``: one per member, e.g. run directories) trained by one PersistentRuns.

    ``engine_factory(key)`` gives the member its engine builder (``devices.make_engine``'s
    signature). A member asking for another device than cuda (the trainer's fallback to the CPU
    after CUDA ran out of memory) leaves the group and gets its engine from ``fallback``: the
    group's creator passes ``devices.make_engine`` (this module does not import devices, which
    imports it: no import circle); None refuses the other device.
    Every member must ``leave(key)`` when its training ends, however it ends."""

    def __init__(self, keys, fallback=None):
        self._fallback = fallback
        self._cond = threading.Condition()
        self._expected = set(keys)  # members that have not left
        self._views = {}  # key -> RunView
        self._arrived = {}  # key -> (data, perm, start, stop), waiting for the launch
        self._order = []  # keys in the PersistentRuns' run order
        self._pr = None
        self._perms = (None, None)  # (host perms in _order, their device stack)
        self._launches = 0
        self._pending = None  # (chunk, keys): the launch whose losses are not read yet
        self._failure = None
        self._data = {}  # (shape, crc32) -> device array
        self._signals = None
        self._flag = (-1, None)  # (launch, the stop flag as first read after it)
        self.stream = cuda.stream()

    @classmethod
    def alone(cls, fallback=None):
        """A group of one run (``devices.make_engine(..., cuda_path="persistent")``)."""
        return cls([0], fallback)

    def engine_factory(self, key):
        return functools.partial(self.make_engine, key=key)

    def make_engine(self, device, params, optim, batch_size, slope=0.01, opt_state=None,
                    step=0, *, key=0, **options):
        if device != "cuda":  # the trainer fell back to the CPU
            self.leave(key)
            if self._fallback is None:
                raise ValueError(f"this persistent group trains on cuda only, not {device}")
            return self._fallback(device, params, optim, batch_size, slope, opt_state, step,
                                  **options)
        view = RunView(self, key, params, optim, batch_size, slope, opt_state, step,
                       options.get("lr_schedule"))
        with self._cond:
            self._views[key] = view
        return view

    def signals_for(self, signals):
        """What a member's trainer reads as its StopSignals: ``received`` as the first member
        to read it after the group's last launch saw it (so every member stops after the same
        chunk); ``stop`` reaches all."""
        self._signals = signals
        return _GroupSignals(self, signals)

    def stop_flag(self):
        with self._cond:
            if self._signals is None:  # no trainer's signals (engine level)
                return None
            if self._flag[0] != self._launches:
                self._flag = (self._launches, self._signals.received)
            return self._flag[1]

    def stopping(self):
        """Whether the stop flag, as read after the last launch, is set; not reading it
        (``stop_flag`` reads it once per launch, for every member)."""
        with self._cond:
            return self._flag[0] == self._launches and self._flag[1] is not None

    def leave(self, key):
        with self._cond:
            if self._failure is None:
                self._drain()  # the members that stay get the pending losses now
            self._expected.discard(key)
            self._views.pop(key, None)
            self._arrived.pop(key, None)
            if self._arrived and set(self._arrived) >= self._expected:
                self._launch()

    # -- data -----------------------------------------------------------------------------------
    def put(self, images):
        """One device copy per distinct array of images, shared by the members."""
        key = (images.shape, zlib.crc32(images.data))
        with self._cond:
            if key not in self._data:
                self._data[key] = cuda.to_device(images, stream=self.stream)
                self.stream.synchronize()
            return self._data[key]

    # -- training -------------------------------------------------------------------------------
    def train(self, key, data, perm, start, stop):
        """Train member ``key`` on ``perm[start:stop]``, with every other member's chunk, in one
        launch; returns when it is done."""
        with self._cond:
            self._raise_failure()
            self._arrived[key] = (data, perm, int(start), int(stop))
            seen = self._launches
            if set(self._arrived) >= self._expected:
                self._launch()
            while self._launches == seen and self._failure is None:
                self._cond.wait()
            self._raise_failure()

    def _raise_failure(self):
        if self._failure is not None:
            raise _Stopped(f"the persistent launch of this run's group failed: "
                           f"{type(self._failure).__name__}: {self._failure}")

    def _launch(self):
        """Launch the chunk every member asked for (under the lock)."""
        try:
            keys = [k for k in self._order if k in self._arrived]
            keys += [k for k in self._arrived if k not in keys]
            chunks = {(id(d), a, b) for d, _, a, b in self._arrived.values()}
            if len(chunks) != 1:
                raise ValueError(f"the runs of a persistent group asked for different chunks "
                                 f"{sorted((a, b) for _, a, b in chunks)}")
            data, _, start, stop = self._arrived[keys[0]]
            if self._pr is None or keys != self._order:
                self._rebuild(keys)
            perms = self._device_perms([self._arrived[k][1] for k in keys])
            steps = -(-(stop - start) // self._pr.B)
            hps = np.stack([self._views[k].hparams(steps) for k in keys])
            val = self._validation(keys, stop)
            with _SIMULATED:
                self._pr.train_chunk(data, perms, start, stop, hps, val=val, carry=False)
            # the previous chunk's losses, while this one runs; this one's at an epoch's end
            self._drain()
            self._pending = (self._pr.chunks - 1, keys)
            vsums = self._pr.take_loss_sums("vloss") if val else [None] * len(keys)
            if stop == len(self._arrived[keys[0]][1]):
                self._drain()
            for r, k in enumerate(keys):
                self._views[k].done(steps, vsums[r], self._launches + 1)
        except BaseException as e:  # noqa: BLE001 -- every member's trainer raises it
            self._failure = e
        finally:
            self._arrived.clear()
            self._launches += 1
            self._cond.notify_all()

    def drain(self):
        """Read the pending launch's losses into its members' views (a stop, a leave)."""
        with self._cond:
            self._drain()

    def _drain(self):
        """(Under the lock.) Wait for the pending launch (its event only) and add each
        member's loss of it to its view: the last launch's losses, read late."""
        if self._pending is None:
            return
        chunk, keys = self._pending
        self._pending = None
        losses = self._pr.read_loss(chunk)
        for r, k in enumerate(keys):
            if k in self._views:
                self._views[k].add_loss(float(losses[r]))

    def _validation(self, keys, stop):
        """(images, batch) of the launch's validation phase: at an epoch's end, when every
        member validates on the same images (learned at its first evaluation); else None."""
        vals = [self._views[k].val for k in keys]
        if stop != len(self._arrived[keys[0]][1]) or vals[0] is None or \
                any(v is not vals[0] for v in vals):
            return None
        return vals[0], EVAL_BATCH

    def _rebuild(self, keys):
        """A PersistentRuns for ``keys``: the state of members trained so far from the old one
        (device -> host -> device: once per change of the group), the others' from their view."""
        self._drain()  # the old PersistentRuns' last losses
        specs = []
        for k in keys:
            v = self._views[k]
            if self._pr is not None and k in self._order:
                params, state = self._pr.run(self._order.index(k))
                v.spec = v.spec._replace(params=params, state=state)
            specs.append(v.spec)
        self._pr = kp.PersistentRuns(specs, self._views[keys[0]].batch_size, stream=self.stream)
        self._order = list(keys)
        self._perms = (None, None)

    def _device_perms(self, perms):
        host, dev = self._perms
        if host is None or any(a is not b for a, b in zip(host, perms)):
            stack = np.ascontiguousarray(np.stack(perms), np.int64)
            if dev is not None and dev.shape == stack.shape:
                dev.copy_to_device(stack, stream=self.stream)
            else:
                dev = cuda.to_device(stack, stream=self.stream)
            self._perms = (list(perms), dev)
        return self._perms[1]

    # -- a member's state -----------------------------------------------------------------------
    def rows(self, key):
        """(PersistentRuns, run index) of ``key``, or (None, None) before its first launch."""
        if self._pr is None or key not in self._order:
            return None, None
        return self._pr, self._order.index(key)


class _GroupSignals:
    def __init__(self, group, signals):
        self._group, self._signals = group, signals

    @property
    def received(self):
        return self._group.stop_flag()

    def stop(self, reason):
        self._signals.stop(reason)


class RunView(Engine):
    """One member of a RunGroup, as an Engine (aecore.engine) for the trainer."""

    device = "cuda"

    def __init__(self, group, key, params, optim, batch_size, slope, opt_state, step,
                 lr_schedule=None):
        self._group, self._key = group, key
        self._losses = []  # the chunks' loss sums read and not taken yet, in chunk order
        self._snap = None  # device copies of the run's slots (snapshot)
        self.val = None  # the images of its first evaluation: the validation set
        self._val_sum = (-1, 0.0)  # (launch, the validation loss sum that launch computed)
        self._fresh = -1  # the group launch whose parameters _infer holds
        super().__init__(params, optim, batch_size, slope, opt_state, step,
                         lr_schedule=lr_schedule)
        self._require_optimizer()

    def _put_state(self, params, state):
        keys = buffers_of({k: k for k in state}, self.optim, 1) + \
            buffers_of({k: k for k in state}, self.optim, 2)
        self._state_keys = keys  # the flat state's names in RunSpec's order (None: not kept)
        self.spec = kp.RunSpec(tuple(params[k] for k in (W1, B1, W2, B2)),
                               tuple(None if k is None else state[k] for k in keys),
                               self.optim.name.kernel_code, self.slope)
        self._infer = CudaEngine(params, None, slope=self.slope, graphs=False)
        self._fresh = self._group._launches

    def hparams(self, steps):
        """(steps, 7) float32: the packed hyper-parameters of this run's next ``steps``, as
        CudaEngine packs them (the rate of each step from ``lr_schedule``)."""
        return ko.pack_chunk(self.optim.hyper_params(), self.optim.name is Optimizer.ADAM,
                             self.step + 1, steps, self.step_lrs(steps))

    def done(self, steps, val_sum, launch):
        self.step += steps
        if val_sum is not None:
            self._val_sum = (launch, float(val_sum))

    # -- state ------------------------------------------------------------------------------------
    def _host(self, pr=None, r=None, rows=None):
        """(params, opt_state) dicts from the group's slots, or the view's own before its first
        launch."""
        if pr is None:
            params, state = self.spec.params, self.spec.state
        else:
            params, state = pr.run(r, rows)
        out_p = {k: np.array(a, np.float32) for k, a in zip((W1, B1, W2, B2), params)}
        flat = {k: np.array(a, np.float32) for k, a in zip(self._state_keys, state)
                if k is not None}
        return out_p, self._opt_state_shaped(flat)

    def _current(self):
        with self._group._cond:
            return self._host(*self._group.rows(self._key))

    def get_params(self):
        return self._current()[0]

    def get_opt_state(self):
        return self._current()[1]

    def snapshot(self):
        """The run's state now, copied on the device; returns a function that brings it to the
        host as (params, opt_state): what the trainer keeps at an epoch's end."""
        with self._group._cond:
            pr, r = self._group.rows(self._key)
            if pr is None:
                state = self._host()
                return lambda: state
            rows = pr.rows(r)
            if self._snap is None or [a.shape for a in self._snap] != [a.shape for a in rows]:
                self._snap = [cuda.device_array(a.shape, a.dtype, stream=pr.stream) for a in rows]
            for dst, src in zip(self._snap, rows):
                dst.copy_to_device(src, stream=pr.stream)
            snap = list(self._snap)
        return lambda: self._host(pr, r, snap)

    # -- data / training --------------------------------------------------------------------------
    def put(self, images):
        return self._group.put(self.check_images(images))

    def train_steps(self, data, perm, start, stop):
        self._group.train(self._key, data, perm, start, stop)

    def add_loss(self, loss):
        self._losses.append(loss)

    def take_loss_parts(self):
        """The loss sums of the chunks read since the last take, one per chunk: the group
        reads a chunk's once the next is queued, the last of an epoch's at once. Once the
        trainer has seen the group's stop flag, the pending one too (the trainer takes again
        before it saves), so a checkpoint's loss sum is exact."""
        if self._group.stopping():
            self._group.drain()
        out, self._losses = self._losses, []
        return out

    def take_loss_sums(self):
        out = 0.0
        for part in self.take_loss_parts():
            out += part
        return out, out  # mse only: the trained loss is the squared error

    # -- inference: the inference engine, its parameters refreshed from the group's slots -------
    def _inference(self):
        g = self._group
        with g._cond:
            pr, r = g.rows(self._key)
            if pr is not None and self._fresh != g._launches:
                st = self._infer.stream
                h = pr.h[r]
                w1, b1, w2, b2 = pr.rows(r)[:4]
                p = self._infer.params
                p[W1].copy_to_device(w1[:h], stream=st)
                p[B1].copy_to_device(b1[:h], stream=st)
                _strided_copy(p[W2], w2[:, :h], st)
                p[B2].copy_to_device(b2, stream=st)
                st.synchronize()
                self._fresh = g._launches
        return self._infer

    def loss_sums(self, data):
        """The validation set's, after the epoch's last launch: computed in that launch. The
        first evaluation (and any other images): on the inference engine. (mse only: the
        trained loss is the squared error.)"""
        with self._group._cond:
            if data is self.val and self._val_sum[0] == self._group._launches:
                return self._val_sum[1], self._val_sum[1]
        infer = self._inference()
        with _SIMULATED:
            out = infer.loss_sum(data)
        if self.val is None:
            self.val = data
        return out, out

    def reconstruct(self, images):
        infer = self._inference()
        with _SIMULATED:
            return infer.reconstruct(images)

    def encode(self, images):
        infer = self._inference()
        with _SIMULATED:
            return infer.encode(images)


def _strided_copy(dst, src, stream):
    """``dst[:] = src`` on the device (src a strided view): numba's assignment kernel on
    ``stream``; the simulator's arrays take the assignment directly."""
    if SIMULATOR:
        dst[:] = src
    else:
        dst.setitem(slice(None), src, stream=stream)

