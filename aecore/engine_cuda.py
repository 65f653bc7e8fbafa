"""The CUDA engine: parameters, optimizer state and the uint8 dataset live in GPU memory.

Per batch (B rows, h hidden units, 784 pixels) five kernel launches from ``aecore.kernels.cuda``,
no host<->device copy and no synchronisation (1.-3. split their reduction between blocks when
the output has too few tiles to fill the GPU: ``kernels.cuda.SplitK``):

    1. H  <- f(X[perm[s:e]] W1^T + b1)              linear_activation   (gathers + scales uint8)
    2. dZ <- loss'(H W2^T + b2), loss += ..         linear_sigmoid_loss_grad (targets gathered)
    3. dH <- (dZ W2) * f'(H)                        backward_activation (reads W2 before 4.)

(f the hidden activation, ``loss`` the trained loss: kernels compiled per choice; leaky_relu
and mse are the kernels linear_leaky_relu, linear_sigmoid_mse, backward_hidden.)
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

The per-step hyper-parameters of every optimizer (the learning rate of each step, from the
schedule, and Adam's bias corrections) are computed for a whole chunk on the host and copied in
one transfer per chunk (``kernels.optim.pack_chunk``). Runs under Numba's CUDA simulator too
(slowly), which is how CI exercises it.

CUDA graphs (real GPUs, when ``cuda.core``'s GraphBuilder is available and the engine was made
with ``graphs=True``, the default; ``aecore train --cuda-path eager`` turns them off): the
trainer calls ``train_steps`` with the same chunk boundaries every epoch, so the second time a
chunk ``(start, stop)`` is seen its launches (5 per batch) are recorded once into a graph,
through the same ``_enqueue`` code the eager path runs, and every later epoch replays that graph
with one launch on the engine's stream. What changes between epochs lives in device buffers the
graph points at and that are refilled in place (by copies ordered on the same stream) before
each replay: the permutation and the per-step hyper-parameters. If recording fails the engine
says so once and stays eager.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import cuda

from .engine import EVAL_BATCH, Engine
from .kernels.activations_reference import DEFAULT_ACTIVATION, needs_preactivation
from .kernels.losses_reference import DEFAULT_LOSS
from .kernels import cuda as kc
from .kernels import optim as ko
from .model import B1, B2, W1, W2
from .optim import Optimizer, buffers_of



class CudaEngine(Engine):
    """Engine (aecore.engine) on a CUDA GPU through numba-cuda device arrays. ``graphs``: record
    each chunk's launches into a CUDA graph and replay it (where cuda.core supports it)."""

    device = "cuda"

    def __init__(self, params, optim=None, batch_size=None, slope=0.01, opt_state=None, step=0,
                 *, graphs: bool = True, lr_schedule=None, activation: str = DEFAULT_ACTIVATION,
                 loss: str = DEFAULT_LOSS):
        self._graphs = _graph_support(graphs)  # None (eager) or {} of recorded chunks
        try:
            self.stream, self._core_stream = _make_stream(self._graphs is not None)
        except Exception as e:  # cuda.core is new: never lose a run to it
            if self._graphs is None:
                raise
            _say_eager("no cuda.core stream", e)
            self._graphs = None
            self.stream, self._core_stream = _make_stream(False)
        self._splitk = kc.SplitK(stream=self.stream)  # split-K workspace, sized once
        self._eval = None  # evaluation buffers (H, Y, loss), made at the first evaluation
        super().__init__(params, optim, batch_size, slope, opt_state, step,
                         lr_schedule=lr_schedule, activation=activation, loss=loss)
        self._sums = 1 if self.loss == DEFAULT_LOSS else 2  # (loss[, squared error]) on device
        if optim is not None:
            self._setup_training()
        self.stream.synchronize()

    def _setup_training(self):
        s = self.stream
        B, h, n = self.batch_size, self.hidden, self.image_size
        self._H = cuda.device_array((B, h), np.float32)
        self._dZ = cuda.device_array((B, n), np.float32)
        self._dH = cuda.device_array((B, h), np.float32)
        self._Zp = self._preactivations(B)
        self._views = {B: (self._H, self._dZ, self._dH, self._Zp)}
        self._loss = cuda.to_device(np.zeros(self._sums, np.float64), stream=s)
        self._adam = self.optim.name is Optimizer.ADAM
        self._opt_kind = self.optim.name.kernel_code
        self._perm_host = None
        self._perm_dev = None
        # The launchers' placeholders for absent operands are made by the first (eager) run of
        # a chunk: a chunk is recorded into a graph only when it is seen the second time.
        self._seen = set()

    @property
    def uses_graphs(self) -> bool:
        """Whether chunks are recorded into CUDA graphs and replayed (else launched eagerly)."""
        return self._graphs is not None

    @property
    def recorded_graphs(self) -> int:
        return len(self._graphs or ())

    # -- state --------------------------------------------------------------------------------
    def _put_state(self, params, state):
        s = self.stream
        self.params = {k: cuda.to_device(v, stream=s) for k, v in params.items()}
        self.state = {k: cuda.to_device(v, stream=s) for k, v in state.items()}  # flat
        if self.optim is not None:  # per layer: (VW, Vb, MW, Mb) as the weight steps take them
            self._opt_state = {w: buffers_of(self.state, self.optim, layer)
                               for w, layer in ((W1, 1), (W2, 2))}
        if self._graphs:
            self._graphs.clear()  # they point at the old buffers
        s.synchronize()

    def get_params(self):
        out = {k: v.copy_to_host(stream=self.stream) for k, v in self.params.items()}
        self.stream.synchronize()
        return out

    def get_opt_state(self):
        out = {k: v.copy_to_host(stream=self.stream) for k, v in self.state.items()}
        self.stream.synchronize()
        return self._opt_state_shaped(out)

    # -- data ---------------------------------------------------------------------------------
    def put(self, images):
        return cuda.to_device(self.check_images(images), stream=self.stream)

    def _batch_views(self, nb):
        v = self._views.get(nb)
        if v is None:  # the short last batch: views of the full buffers, made once
            v = self._views[nb] = (self._H[:nb], self._dZ[:nb], self._dH[:nb],
                                   None if self._Zp is None else self._Zp[:nb])
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

    def _step_hparams(self, n_steps):
        """(n_steps, 7) float32: the packed hyper-parameters of the chunk's steps."""
        return ko.pack_chunk(self.optim.hyper_params(), self._adam, self.step + 1, n_steps,
                             self.step_lrs(n_steps))

    # -- training -----------------------------------------------------------------------------
    def _enqueue(self, data, dperm, starts, stop, hps, stream):
        """Launch the 5 kernels of every batch in ``starts`` on ``stream`` (the engine's, or a
        graph builder while recording). Nothing here allocates or synchronises."""
        p = self.params
        B = self.batch_size
        sk = self._splitk
        for i, s in enumerate(starts):
            nb = min(B, stop - s)
            H, dZ, dH, Zp = self._batch_views(nb)
            kc.linear_activation(data, p[W1], p[B1], H, self.slope, self.activation, Zp,
                                 perm=dperm, off=s, stream=stream, splitk=sk)
            kc.linear_sigmoid_loss_grad(H, p[W2], p[B2], data, dZ, self._loss, self.loss,
                                        perm=dperm, off=s, stream=stream, splitk=sk)
            kc.backward_activation(dZ, p[W2], H, dH, self.slope, self.activation, Zp,
                                   stream=stream, splitk=sk)
            hp = hps[i]
            upd2 = (dZ, H, p[W2], p[B2], *self._opt_state[W2], None, 0)
            upd1 = (dH, data, p[W1], p[B1], *self._opt_state[W1], dperm, s)
            kc.weight_step(self._opt_kind, hp, upd2, stream=stream)
            kc.weight_step(self._opt_kind, hp, upd1, stream=stream)

    def train_steps(self, data, perm, start, stop):
        self._require_optimizer()
        start, stop = int(start), int(stop)
        dperm = self._device_perm(perm)
        starts = range(start, stop, self.batch_size)
        hp_host = self._step_hparams(len(starts))
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
        hps = cuda.to_device(hp_host, stream=self.stream)
        self._enqueue(data, dperm, starts, stop, hps, self.stream)
        self.step += len(starts)

    def _replay(self, key, data, dperm, starts, stop, hp_host):
        """Record the chunk's launches into a graph (its first replay) and launch the graph on
        the engine's stream. Returns without waiting: the buffers the graph reads (perm, hps)
        are refilled by copies ordered after it on the same stream."""
        rec = self._graphs.get(key)
        if rec is None:
            hps = cuda.to_device(hp_host, stream=self.stream)
            self.stream.synchronize()  # hps has landed before recording starts
            builder = self._core_stream.create_graph_builder()
            builder.begin_building("relaxed")  # other threads' engines go on meanwhile
            self._enqueue(data, dperm, starts, stop, hps, builder)
            builder.end_building()
            # the record holds `data`, so its id (in the key) cannot be reused while it lives
            rec = self._graphs[key] = (builder.complete(), hps, data)
        graph, hps, _ = rec
        hps.copy_to_device(hp_host, stream=self.stream)  # this chunk's steps' rates
        graph.launch(self._core_stream)

    def _read(self, arr):
        """``arr`` on the host, once the work queued before on the engine's stream is done."""
        out = arr.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return out

    def take_loss_sums(self):
        sums = self._read(self._loss)
        kc.zero_(self._loss, stream=self.stream)  # ordered before the next chunk's launches
        return float(sums[0]), float(sums[-1])

    def _preactivations(self, rows):
        """The pre-activation buffer (rows, h) where the activation's backward reads Z, else
        None."""
        if not needs_preactivation(self.activation):
            return None
        return cuda.device_array((rows, self.hidden), np.float32, stream=self.stream)

    # -- inference ----------------------------------------------------------------------------
    def _on_device(self, images):
        return self.put(images) if isinstance(images, np.ndarray) else images  # host or device

    def _eval_buffers(self):
        """(H, Y, loss sums, Zp) scratch of one evaluation batch, made once: the per-epoch
        validation allocates nothing after the first."""
        if self._eval is None:
            st = self.stream
            self._eval = (cuda.device_array((EVAL_BATCH, self.hidden), np.float32, stream=st),
                          cuda.device_array((EVAL_BATCH, self.image_size), np.float32, stream=st),
                          cuda.device_array(self._sums, np.float64, stream=st),
                          self._preactivations(EVAL_BATCH))
        return self._eval

    def _hidden_batches(self, X, H, all_rows=False):
        """Layer 1 over X in batches of EVAL_BATCH: yields (start, rows, h) once h, the hidden
        activations of the batch, are launched: H's rows of the batch when ``all_rows`` (H has
        a row per image), else the first ``rows`` of H (one batch's scratch)."""
        n = X.shape[0]
        B = min(EVAL_BATCH, max(n, 1))
        p = self.params
        Zp = self._eval_buffers()[3]
        for s in range(0, n, B):
            nb = min(B, n - s)
            h = H[s:s + nb] if all_rows else H[:nb]
            kc.linear_activation(X, p[W1], p[B1], h, self.slope, self.activation,
                                 None if Zp is None else Zp[:nb], off=s, stream=self.stream,
                                 splitk=self._splitk)
            yield s, nb, h

    def loss_sums(self, data):
        X = self._on_device(data)
        H, Y, loss, _ = self._eval_buffers()
        kc.zero_(loss, stream=self.stream)
        p = self.params
        for s, nb, h in self._hidden_batches(X, H):
            kc.linear_sigmoid_loss_grad(h, p[W2], p[B2], X, Y[:nb], loss, self.loss, off=s,
                                        stream=self.stream, splitk=self._splitk)
        sums = self._read(loss)
        return float(sums[0]), float(sums[-1])

    def reconstruct(self, images):
        X = self._on_device(images)
        Y = cuda.device_array((X.shape[0], self.image_size), np.float32, stream=self.stream)
        p = self.params
        for s, nb, h in self._hidden_batches(X, self._eval_buffers()[0]):
            kc.linear_sigmoid(h, p[W2], p[B2], Y[s:s + nb], stream=self.stream)
        return self._read(Y)

    def encode(self, images):
        X = self._on_device(images)
        H = cuda.device_array((X.shape[0], self.hidden), np.float32, stream=self.stream)
        for _ in self._hidden_batches(X, H, all_rows=True):
            pass
        return self._read(H)


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


def _graph_support(wanted: bool):
    """{} when graphs are ``wanted`` and kernel launches can be recorded into them here, else
    None."""
    if not wanted or kc.SIMULATOR:
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
