"""The CUDA engine: parameters, optimizer state and the uint8 dataset live in GPU memory.

Per batch (B rows, h hidden units, 784 pixels) five kernel launches from ``aecore.kernels.cuda``,
no host<->device copy and no synchronisation (1.-3. split their reduction between blocks when
the output has too few tiles to fill the GPU: ``kernels.cuda.SplitK``):

    1. H  <- leaky(X[perm[s:e]] W1^T + b1)          linear_leaky_relu   (gathers + scales uint8)
    2. dZ <- mse'(sigmoid(H W2^T + b2)), loss += .. linear_sigmoid_mse  (targets gathered too)
    3. dH <- (dZ W2) * leaky'(H)                    backward_hidden     (reads W2 before 4.)
    4. W2, b2 <- update(dZ^T H, sum(dZ))            weight_step         (gradient never stored)
    5. W1, b1 <- update(dH^T X[perm[s:e]], sum(dH)) weight_step

Everything the engine does on the GPU (uploads, launches, graph replays, reads) is ordered on
one stream of its own, a non-blocking one: nothing waits on the legacy default stream or on the
whole device, so engines driven from several host threads (``aecore study --jobs``) run their
kernels side by side, and each engine's results are the same as when it runs alone. The host
waits only when it reads something back (the loss, evaluations, parameters).

The epoch's permutation is generated on the host by the trainer's seeded NumPy Generator (so a
CPU and a CUDA run of the same seed see the same batches) and copied to the device once per
epoch (8 bytes per sample); every batch then reads its rows through it on the device. The loss
sum accumulates in a float64 device scalar with atomics and is read when the trainer asks for
it (once per chunk of ~8k samples: the only synchronisation).

Adam's per-step hyper-parameters (bias corrections) are computed for a whole chunk on the host
and copied in one transfer per chunk. Runs under Numba's CUDA simulator too (slowly), which is
how CI exercises it.

CUDA graphs (real GPUs, when ``cuda.core``'s GraphBuilder is available; ``AECORE_CUDA_GRAPHS=0``
turns them off): the trainer calls ``train_steps`` with the same chunk boundaries every epoch,
so the second time a chunk ``(start, stop)`` is seen its launches (5 per batch) are recorded
once into a graph, through the same ``_enqueue`` code the eager path runs, and every later epoch
replays that graph with one launch on the engine's stream. What changes between epochs lives in
device buffers the graph points at and that are refilled in place (by copies ordered on the same
stream) before each replay: the permutation and Adam's hyper-parameters. If recording fails the
engine says so once and stays eager.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from numba import cuda

from .engine import OptimConfig, check_images, engine_setup
from .kernels import cuda as kc
from .model import B1, B2, W1, W2, param_shapes

EVAL_BATCH = 1024


class CudaEngine:
    """Engine protocol (aecore.engine) on a CUDA GPU through numba-cuda device arrays."""

    device = "cuda"

    def __init__(self, params, optim: OptimConfig, batch_size: int, slope: float = 0.01,
                 opt_state=None, step: int = 0):
        host, state = engine_setup(self, params, optim, batch_size, slope, step, opt_state)
        self._graphs = _graph_support()  # None (eager) or {} of recorded chunks
        try:
            self.stream, self._core_stream = _make_stream(self._graphs is not None)
        except Exception as e:  # cuda.core is new: never lose a run to it
            if self._graphs is None:
                raise
            _say_eager("no cuda.core stream", e)
            self._graphs = None
            self.stream, self._core_stream = _make_stream(False)
        s = self.stream
        self.params = {k: cuda.to_device(v, stream=s) for k, v in host.items()}
        # optimizer buffers flat: the kernels index them linearly
        self.state = {k: cuda.to_device(v.reshape(-1), stream=s) for k, v in state.items()}
        B, h, n = self.batch_size, self.hidden, self.image_size
        self._H = cuda.device_array((B, h), np.float32)
        self._dZ = cuda.device_array((B, n), np.float32)
        self._dH = cuda.device_array((B, h), np.float32)
        self._views = {B: (self._H, self._dZ, self._dH)}
        self._loss = cuda.to_device(np.zeros(1, np.float64), stream=s)
        o = optim
        self._hp = cuda.to_device(kc.hparams(lr=o.lr, momentum=o.momentum), stream=s)  # sgd / momentum
        self._opt_kind = {"sgd": kc.OPT_SGD, "momentum": kc.OPT_MOMENTUM,
                          "nesterov": kc.OPT_NESTEROV, "adam": kc.OPT_ADAM}[o.name]
        # per weight: (VW, Vb, MW, Mb) as the fused weight-step kernels take them
        self._opt_state = {w: _state_of(self.state, o.name, w, b) for w, b in ((W1, B1), (W2, B2))}
        self._perm_host = None
        self._perm_dev = None
        # workspace of the split-K products (kernels 1-3), sized once; this engine's alone
        self._splitk = kc.SplitK(stream=s)
        for dtype, ndim in ((np.float32, 1), (np.float32, 2), (np.int64, 1), (np.int32, 1)):
            kc.empty(dtype, ndim)  # allocate the launchers' placeholders now, not mid-capture
        self._eval = None  # evaluation buffers (H, Y, loss), made at the first evaluation
        self._seen = set()
        s.synchronize()

    # -- data ---------------------------------------------------------------------------------
    def put(self, images):
        return cuda.to_device(check_images(images, self.image_size), stream=self.stream)

    def _batch_views(self, nb):
        v = self._views.get(nb)
        if v is None:  # the short last batch: views of the full buffers, made once
            v = self._views[nb] = (self._H[:nb], self._dZ[:nb], self._dH[:nb])
        return v

    def _device_perm(self, perm):
        if perm is not self._perm_host:
            arr = np.ascontiguousarray(perm, np.int64)
            if self._graphs is not None and self._perm_dev is not None \
                    and self._perm_dev.shape == arr.shape:
                # in place (recorded graphs point at it), after the work queued before it
                self._perm_dev.copy_to_device(arr, stream=self.stream)
            else:
                self._perm_dev = cuda.to_device(arr, stream=self.stream)
                if self._graphs:
                    self._graphs.clear()  # they point at the old buffer
            self._perm_host = perm
        return self._perm_dev

    def _adam_hparams(self, n_steps):
        o = self.optim
        return kc.adam_hparams_steps(o.lr, self.step + 1, n_steps, o.beta1, o.beta2, o.eps)

    # -- training -----------------------------------------------------------------------------
    def _enqueue(self, data, dperm, starts, stop, hps, stream):
        """Launch the 5 kernels of every batch in ``starts`` on ``stream`` (the engine's, or a
        graph builder while recording). Nothing here allocates or synchronises."""
        o = self.optim
        p = self.params
        B = self.batch_size
        sk = self._splitk
        for i, s in enumerate(starts):
            nb = min(B, stop - s)
            H, dZ, dH = self._batch_views(nb)
            kc.linear_leaky_relu(data, p[W1], p[B1], H, self.slope, perm=dperm, off=s,
                                 stream=stream, splitk=sk)
            kc.linear_sigmoid_mse(H, p[W2], p[B2], data, dZ, self._loss, perm=dperm, off=s,
                                  stream=stream, splitk=sk)
            kc.backward_hidden(dZ, p[W2], H, dH, self.slope, stream=stream, splitk=sk)
            hp = hps[i] if o.name == "adam" else self._hp
            upd2 = (dZ, H, p[W2], p[B2], *self._opt_state[W2], None, 0)
            upd1 = (dH, data, p[W1], p[B1], *self._opt_state[W1], dperm, s)
            kc.weight_step(self._opt_kind, hp, upd2, stream=stream)
            kc.weight_step(self._opt_kind, hp, upd1, stream=stream)

    def train_steps(self, data, perm, start, stop):
        start, stop = int(start), int(stop)
        dperm = self._device_perm(perm)
        starts = range(start, stop, self.batch_size)
        hp_host = self._adam_hparams(len(starts)) if self.optim.name == "adam" else None
        key = (id(data), start, stop)
        if self._graphs is not None and key in self._seen:
            try:
                self._replay(key, data, dperm, starts, stop, hp_host)
                self.step += len(starts)
                return
            except Exception as e:  # recording is new in numba-cuda: never lose a run to it
                _say_eager("CUDA graph recording failed", e)
                self._graphs = None
                self.stream.synchronize()
        self._seen.add(key)
        hps = None if hp_host is None else cuda.to_device(hp_host, stream=self.stream)
        self._enqueue(data, dperm, starts, stop, hps, self.stream)
        self.step += len(starts)

    def _replay(self, key, data, dperm, starts, stop, hp_host):
        """Record the chunk's launches into a graph (its first replay) and launch the graph on
        the engine's stream. Returns without waiting: the buffers the graph reads (perm, hps)
        are refilled by copies ordered after it on the same stream."""
        rec = self._graphs.get(key)
        if rec is None:
            hps = None if hp_host is None else cuda.to_device(hp_host, stream=self.stream)
            self.stream.synchronize()  # hps has landed before recording starts
            builder = self._core_stream.create_graph_builder()
            builder.begin_building("relaxed")  # other threads' engines go on meanwhile
            self._enqueue(data, dperm, starts, stop, hps, builder)
            builder.end_building()
            # the record holds `data`, so its id (in the key) cannot be reused while it lives
            rec = self._graphs[key] = (builder.complete(), hps, data)
        graph, hps, _ = rec
        if hp_host is not None:
            hps.copy_to_device(hp_host, stream=self.stream)
        graph.launch(self._core_stream)

    def _read(self, arr):
        """``arr`` on the host, once the work queued before on the engine's stream is done."""
        out = arr.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return out

    def take_loss_sum(self) -> float:
        value = float(self._read(self._loss)[0])
        kc.zero_(self._loss, stream=self.stream)  # ordered before the next chunk's launches
        return value

    # -- inference ----------------------------------------------------------------------------
    def _forward(self, images, want):
        """want: 0 -> loss sum, 1 -> outputs (n, 784), 2 -> hidden activations (n, h)."""
        X = self.put(images) if isinstance(images, np.ndarray) else images  # host or device
        n = X.shape[0]
        p = self.params
        B = min(EVAL_BATCH, max(n, 1))
        st = self.stream
        if self._eval is None:  # the per-epoch validation allocates nothing after the first
            self._eval = (cuda.device_array((EVAL_BATCH, self.hidden), np.float32, stream=st),
                          cuda.device_array((EVAL_BATCH, self.image_size), np.float32, stream=st),
                          cuda.device_array(1, np.float64, stream=st))
        H, Y, loss = self._eval
        if want == 2:
            H = cuda.device_array((n, self.hidden), np.float32, stream=st)
        elif want == 1:
            Y = cuda.device_array((n, self.image_size), np.float32, stream=st)
        else:
            kc.zero_(loss, stream=st)
        for s in range(0, n, B):
            nb = min(B, n - s)
            h = H[s:s + nb] if want == 2 else H[:nb]
            kc.linear_leaky_relu(X, p[W1], p[B1], h, self.slope, off=s, stream=st,
                                 splitk=self._splitk)
            if want == 0:
                kc.linear_sigmoid_mse(h, p[W2], p[B2], X, Y[:nb], loss, off=s, stream=st,
                                      splitk=self._splitk)
            elif want == 1:
                kc.linear_sigmoid(h, p[W2], p[B2], Y[s:s + nb], stream=st)
        if want == 0:
            return float(self._read(loss)[0])
        return self._read(Y if want == 1 else H)

    def evaluate(self, data) -> float:
        n = data.shape[0]
        if n == 0:
            return float("nan")
        return self._forward(data, 0) / (n * self.image_size)

    def reconstruct(self, images):
        return self._forward(images, 1)

    def encode(self, images):
        return self._forward(images, 2)

    # -- state --------------------------------------------------------------------------------
    def get_params(self):
        out = {k: v.copy_to_host(stream=self.stream) for k, v in self.params.items()}
        self.stream.synchronize()
        return out

    def get_opt_state(self):
        shapes = param_shapes(self.hidden, self.image_size)
        out = {k: v.copy_to_host(stream=self.stream) for k, v in self.state.items()}
        self.stream.synchronize()
        return {k: v.reshape(shapes[k.rsplit(".", 1)[0]]) for k, v in out.items()}


def _state_of(state, optimizer, w, b):
    """(VW, Vb, MW, Mb) of weight ``w`` and bias ``b``: the momentum buffers, or Adam's
    exp_avg_sq (V) and exp_avg (M); None where the optimizer keeps none."""
    if optimizer in ("momentum", "nesterov"):
        return state[f"{w}.momentum_buffer"], state[f"{b}.momentum_buffer"], None, None
    if optimizer == "adam":
        return (state[f"{w}.exp_avg_sq"], state[f"{b}.exp_avg_sq"], state[f"{w}.exp_avg"],
                state[f"{b}.exp_avg"])
    return None, None, None, None


def _say_eager(what, e):
    first = str(e).splitlines()[0] if str(e) else ""
    print(f"notice: {what} ({type(e).__name__}: {first}); launching kernels one by one",
          file=sys.stderr)


def _make_stream(graphs: bool):
    """The engine's stream for numba launches and copies, and the same stream as a
    ``cuda.core`` Stream (graph recording and replay; None without graphs). Both non-blocking
    on a GPU with ``cuda.core``: the legacy default stream, which other code in the process may
    use, never serialises with it."""
    if not graphs:
        return cuda.stream(), None
    from cuda.core import Device

    dev = Device(cuda.get_current_device().id)
    dev.set_current()  # the primary context, which numba uses too, current in this thread
    core = dev.create_stream()  # StreamOptions(nonblocking=True) is cuda.core's default
    # the numba view does not own the stream: `core` (kept by the engine) does
    return cuda.external_stream(int(core.handle)), core


def _graph_support():
    """{} when kernel launches can be recorded into CUDA graphs here, else None."""
    if kc.SIMULATOR or os.environ.get("AECORE_CUDA_GRAPHS", "1") in ("0", "", "false", "no"):
        return None
    try:
        from cuda.core import Device  # noqa: F401
        try:
            from cuda.core.graph import GraphBuilder  # noqa: F401
        except ImportError:
            from cuda.core import GraphBuilder  # noqa: F401
    except ImportError:
        return None
    return {}
