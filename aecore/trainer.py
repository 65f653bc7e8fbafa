"""The training loop: epochs of seeded shuffles driven through an engine, with metrics,
reconstructions, checkpoints, Ctrl-C / SIGTERM handling and exact resume.

Per epoch: a permutation of the training set from a NumPy Generator seeded by ``seed`` (its
state is checkpointed, so a resumed run draws the same permutations), ``engine.train_steps``
over fixed chunks of the permutation (progress and signals are handled between chunks; the
chunk grid is stored in the checkpoint so a resume splits the epoch the same way), then the
validation loss. The state at the end of each epoch is kept in memory, and the run directory
(``aecore.runs``) is updated from it atomically -- metrics.csv, summary.json, model.safetensors,
checkpoint.safetensors and reconstructions.npz -- at the start, when ``checkpoint_every`` seconds
have passed since the last save (0: after every epoch), after the last epoch, on Ctrl-C / SIGTERM
(then with the exact mid-epoch position) and on divergence (then the last good epoch's state).
Not saving after every epoch keeps the fsync'ed writes out of short (GPU) epochs; a hard crash
(power, SIGKILL) loses at most ``checkpoint_every`` seconds of training.
The test loss is computed once, at the end (with ``track_test``, also after every epoch).

Resume is exact: on the CPU an interrupted-then-resumed run ends with the same weights, bit
for bit, as an uninterrupted run with the same configuration.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from . import cuda_path, devices, runs
from .config import TrainConfig, config_problems
from .errors import (AecoreError, CheckpointError, DataError, DeviceError, DivergenceError,
                     RunWriteError, TrainingInterrupted)
from .model import init_params
from .progress import Progress
from .stop import StopSignals

CHUNK_SAMPLES = 8192  # about this many samples between progress updates / signal checks
CHECKPOINT_EVERY = 30.0  # seconds between saves of the run directory (0: every epoch)
N_RECON = 10  # one test image per class
_COMPILED = set()  # (device, optimizer) whose kernels this process has run: compiled by now


# --- pieces ---------------------------------------------------------------------------------------

def recon_images(test_images, test_labels):
    """The fixed images shown as training goes: the first test image of each class."""
    idx = []
    for c in range(N_RECON):
        hits = np.flatnonzero(test_labels == c)
        if hits.size:
            idx.append(int(hits[0]))
    idx = np.array(idx, np.int64)
    return idx, np.ascontiguousarray(test_images[idx]), np.asarray(test_labels[idx], np.uint8)


def image_width(data) -> int:
    """Pixels per image in ``data``'s splits (784 for Fashion-MNIST): the model's input and
    output width. Splits that are not (n, pixels) arrays of one width: a one-line DataError."""
    widths = {}
    for name in ("train", "val", "test"):
        shape = np.shape(getattr(data, name).images)
        if len(shape) != 2 or shape[1] < 1:
            raise DataError(f"the {name} images have shape {shape}, expected (n, pixels)")
        widths[name] = int(shape[1])
    if len(set(widths.values())) > 1:
        raise DataError("the splits' images differ in width ("
                        + ", ".join(f"{k} {w} pixels" for k, w in widths.items()) + ")")
    return widths["train"]


def _is_oom(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".upper()
    return "OUT_OF_MEMORY" in text or "OUTOFMEMORY" in text or "OUT OF MEMORY" in text


def _crc(images) -> int:
    return zlib.crc32(np.ascontiguousarray(images).data) & 0xFFFFFFFF


# --- the run --------------------------------------------------------------------------------------

class _Run:
    def __init__(self, config: TrainConfig, run_dir: Path, data, progress: bool,
                 label: str | None = None, bar: bool = True, *, image_size: int):
        self.config, self.dir, self.data = config, run_dir, data
        self.image_size = image_size  # pixels per image: the model's width
        train = data.train.images if config.limit is None else data.train.images[: config.limit]
        self.train_images = np.ascontiguousarray(train)
        self.n = int(self.train_images.shape[0])
        self.recon_idx, self.recon_orig, self.recon_labels = recon_images(data.test.images,
                                                                         data.test.labels)
        self.rd = runs.RunDir(run_dir)
        self.recons: dict[int, np.ndarray] = {}  # epoch -> reconstructions
        self.recons_dirty = False
        self.kept = self.kept_model = None
        self.snapshot = None  # an engine's on-device copy of the kept state (see keep)
        self.t_saved = time.perf_counter()
        self.metrics: list[dict] = []
        self.progress = Progress(progress, config.epochs, self.n,
                                 label or f"h{config.hidden}", bar)
        self.wall_before = 0.0
        self.t_start = time.perf_counter()

    # files ----------------------------------------------------------------------------------
    def write_config(self, device, resumed_from=None):
        self.rd.write_config(self.config, device, self.data, self.n, self.train_crc, resumed_from,
                             self.image_size)

    def write_recons(self):
        self.rd.write_reconstructions(self.recon_orig, self.recon_labels, self.recon_idx,
                                      self.recons)
        self.recons_dirty = False

    def load_recons(self):
        try:
            saved = self.rd.reconstructions()
        except CheckpointError:
            saved = None
        self.recons = saved.by_epoch if saved else {}

    def summary(self, status, device, test_loss=None, extra=None):
        return self.rd.write_summary(self.config, self.metrics, status, device,
                                     self.wall_before + time.perf_counter() - self.t_start,
                                     test_loss, extra, image_size=self.image_size)

    def state(self, engine, epoch_done, position, rng_state, loss_sum, seconds, chunk) -> dict:
        """The checkpoint's training state (the weights and optimizer buffers go beside it)."""
        return {
            "epoch": epoch_done,  # completed epochs
            "position": position,  # samples of epoch `epoch + 1` already trained on
            "step": int(engine.step),
            "rng_state": rng_state,  # Generator state before drawing epoch `epoch + 1`'s shuffle
            "loss_sum": loss_sum, "seconds": seconds,  # partial epoch so far
            "chunk": chunk, "n_train": self.n, "train_crc32": self.train_crc,
            "config": self.config.to_dict(), "metrics": list(self.metrics),
            "wall_time_s": self.wall_before + time.perf_counter() - self.t_start,
        }

    def keep(self, engine, epoch_done, rng_state, chunk):
        """Copy the state after ``epoch_done`` whole epochs to host memory: the next save writes
        it (its weights are also the model file's), and a divergence falls back to it. An
        engine with ``snapshot()`` keeps it on the device; it reaches the host at the save."""
        state = self.state(engine, epoch_done, 0, rng_state, 0.0, 0.0, chunk)
        if hasattr(engine, "snapshot"):
            self.kept, self.kept_model = (None, None, state), None
            self.snapshot = engine.snapshot()
            return
        params = engine.get_params()
        self.kept = (params, engine.get_opt_state(), state)
        self.kept_model = params

    def save(self, checkpoint=None):
        """Write the run's files from the kept state; ``checkpoint`` (params, opt_state, state)
        replaces the kept checkpoint (an interrupt mid-epoch). Metrics are the kept epochs'."""
        if self.snapshot is not None:  # the kept state, still on the device
            params, opt_state = self.snapshot()
            self.kept, self.kept_model = (params, opt_state, self.kept[2]), params
            self.snapshot = None
        params, opt_state, state = checkpoint or self.kept
        if self.recons_dirty:
            self.write_recons()
        self.rd.write_metrics(self.kept[2]["metrics"])
        if self.kept_model is not None:
            self.rd.save_model(self.kept_model, self.config.slope, self.config.activation,
                               self.config.loss)
        self.rd.save_checkpoint(params, opt_state, state)
        self.t_saved = time.perf_counter()


def _make_engine(config, params, opt_state, step, handles_for, fallback_cpu, schedule=None,
                 factory=None):
    """Build the engine (``schedule``: its LRSchedule; with ``factory``, make_engine's
    signature, when given: a run of a persistent group) and copy the data to it; CUDA
    out-of-memory -> DeviceError (or, with ``fallback_cpu``, a notice and the CPU engine)."""
    device = config.device
    while True:
        try:
            eng = (factory or devices.make_engine)(
                device, params, config.optim(), config.batch_size, config.slope, opt_state, step,
                cuda_path=cuda_path.resolve(config), cpu_split=config.cpu_split,
                cpu_team=config.cpu_team, lr_schedule=schedule, activation=config.activation,
                loss=config.loss, cpu_gemm=config.cpu_gemm)
            return eng, [eng.put(x) for x in handles_for]
        except AecoreError:
            raise
        except Exception as e:
            if not _is_oom(e):
                raise
            if device == "cuda" and fallback_cpu:
                print(f"notice: CUDA ran out of memory ({str(e).splitlines()[0]}); "
                      "falling back to the CPU", file=sys.stderr)
                device = "cpu"
                continue
            raise DeviceError(f"{device} out of memory for hidden={config.hidden}, batch size "
                              f"{config.batch_size}; try --device cpu or a smaller model") from None


def train(config: TrainConfig, run_dir, data, resume: bool = False, progress: bool = True,
          overwrite: bool = False, fallback_cpu: bool = False, on_chunk=None,
          chunk_samples: int = CHUNK_SAMPLES, checkpoint_every: float = CHECKPOINT_EVERY,
          signals: StopSignals | None = None, label: str | None = None,
          progress_bar: bool = True, on_epoch=None, engine_factory=None) -> dict:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns the summary dict.

    ``data``: an object with ``.train/.val/.test`` splits (``.images`` uint8 (n, w),
    ``.labels``), as ``aecore.data.load_fashion_mnist`` returns (w = 784; the model is
    w -> h -> w for any width w the splits share, and a resume needs the checkpoint's w).
    ``on_chunk(epoch, position)`` is called after every chunk of about ``chunk_samples``
    samples (tests use it);
    ``on_epoch(row)`` after every epoch, once its files are saved if they are saved that epoch
    (``row``: metrics.csv's columns; ``aecore sweep`` reports it to Ray Tune).
    ``checkpoint_every``: seconds between saves of the run's files (module docstring).
    ``signals``: a StopSignals installed by the caller (runs in threads share the main
    thread's); by default the run installs its own for its duration. ``label`` starts its
    progress lines (default ``h<hidden>``); ``progress_bar`` False keeps only the epoch lines.
    ``engine_factory``: builds the engine instead of ``devices.make_engine`` (a run trained in
    a persistent group: aecore/engine_persistent.py).
    Raises DivergenceError on a NaN/inf loss, TrainingInterrupted on SIGINT/SIGTERM (after writing a resumable checkpoint).

    The run owns ``run_dir`` throughout (``runs.lock_run_dir``): another run into it, in any
    process or thread, is refused with RunDirBusyError before anything is read or changed. A
    file that cannot be written (disk full...) stops the run with RunWriteError; the files
    written before it, the last checkpoint included, are intact."""
    run_dir = Path(run_dir)
    problems = config_problems(config)
    if problems:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
    with runs.lock_run_dir(run_dir, create=not resume):
        try:
            return _train(config, run_dir, data, resume, progress, overwrite, fallback_cpu,
                          on_chunk, chunk_samples, checkpoint_every, signals, label, progress_bar,
                          on_epoch, engine_factory)
        except RunWriteError as e:
            raise RunWriteError(f"{e}; training stopped. {_resume_note(run_dir)}", e.path,
                                e.errno) from None


def _resume_note(run_dir: Path) -> str:
    """What a run stopped by a write failure left, and how to continue it."""
    try:
        st = runs.RunDir(run_dir).checkpoint().state
    except CheckpointError:
        return f"No checkpoint was saved in {run_dir}: start the run again once there is space"
    where = f"epoch {st['epoch']}" + (f" + {st['position']} samples" if st.get("position") else "")
    return (f"The checkpoint of {where} is intact: once there is space, continue with "
            f"aecore train --resume {run_dir}")


def _train(config, run_dir, data, resume, progress, overwrite, fallback_cpu, on_chunk,
           chunk_samples, checkpoint_every, signals, label, progress_bar, on_epoch,
           engine_factory) -> dict:
    ckpt = None
    width = image_width(data)  # before anything in run_dir is read or changed
    if resume:
        ckpt = runs.RunDir(run_dir).resume_checkpoint(config, width)
        runs.check_writable(run_dir)
    else:
        runs.prepare_run_dir(run_dir, overwrite)

    run = _Run(config, run_dir, data, progress, label, progress_bar, image_size=width)
    run.train_crc = _crc(run.train_images)
    n = run.n
    if n < 1 or config.batch_size > n:
        raise ValueError(f"batch_size {config.batch_size} does not fit a training set of {n} images")
    schedule = config.schedule(n)  # the rate of every step: a function of the step alone

    if ckpt is None:
        params, opt_state, step = init_params(config.hidden, config.seed, config.slope,
                                              width), None, 0
        rng = np.random.default_rng([config.seed, 1])
        epoch0, position, loss_sum, seconds0 = 0, 0, 0.0, 0.0
        chunk = max(1, chunk_samples // config.batch_size) * config.batch_size
    else:
        st = ckpt.state
        if st["n_train"] != n or st["train_crc32"] != run.train_crc:
            raise CheckpointError(f"{run_dir}: the training data differs from the run's "
                                  f"({n} images now, {st['n_train']} then, or other contents)")
        params, opt_state, step = ckpt.params, ckpt.opt_state, st["step"]
        rng = np.random.default_rng()
        rng.bit_generator.state = st["rng_state"]
        epoch0, position, loss_sum = st["epoch"], st["position"], st["loss_sum"]
        seconds0, chunk = st["seconds"], st["chunk"]
        # runs from before the schedules (no "lr" in their rows) trained at a constant rate
        run.metrics = [{"lr": config.lr, **r} for r in st["metrics"]]
        run.wall_before = st["wall_time_s"]
        run.load_recons()

    eng, (h_train, h_val, h_test) = _make_engine(
        config, params, opt_state, step,
        (run.train_images, data.val.images, data.test.images), fallback_cpu, schedule,
        engine_factory)
    device = eng.device
    run.write_config(device, resumed_from=({"epoch": epoch0, "position": position} if ckpt else None))
    if ckpt is None:
        run.recons_dirty = True
        run.keep(eng, 0, rng.bit_generator.state, chunk)
        run.save()
    else:  # what is on disk, as loaded (mid-epoch: the model file keeps the last whole epoch)
        run.kept = (ckpt.params, ckpt.opt_state, st)
        run.kept_model = ckpt.params if position == 0 else None
    saved_epochs = set(config.saved_epochs())
    compiling = (device, config.optimizer) not in _COMPILED

    with (StopSignals() if signals is None else contextlib.nullcontext(signals)) as sig, \
            contextlib.closing(run.progress):
        for epoch in range(epoch0 + 1, config.epochs + 1):
            rng_state = rng.bit_generator.state
            perm = rng.permutation(n).astype(np.int64)
            t0 = time.perf_counter()
            pos = position
            while pos < n:
                stop = min(pos + chunk, n)
                try:
                    eng.train_steps(h_train, perm, pos, stop)
                    parts = eng.take_loss_parts()  # a pipelined engine's come a chunk late
                except AecoreError:
                    raise
                except Exception as e:
                    if _is_oom(e):
                        raise DeviceError(f"{device} out of memory in epoch {epoch}") from None
                    raise
                loss_sum = _add_losses(run, device, epoch, parts, loss_sum, pos, stop)
                pos = stop
                elapsed = seconds0 + time.perf_counter() - t0
                run.progress.chunk(epoch, pos, loss_sum / (pos * width),
                                   (pos - position) / max(time.perf_counter() - t0, 1e-9))
                if on_chunk is not None:
                    on_chunk(epoch, pos)
                if sig.received and pos < n:
                    loss_sum = _add_losses(run, device, epoch, eng.take_loss_parts(), loss_sum,
                                           stop - chunk, stop)  # a late engine's last
                    run.save((eng.get_params(), eng.get_opt_state(),
                              run.state(eng, epoch - 1, pos, rng_state, loss_sum, elapsed, chunk)))
                    run.summary("interrupted", device)
                    raise TrainingInterrupted(
                        f"interrupted by {sig.received} in epoch {epoch} after {pos} of {n} "
                        f"samples; checkpoint saved in {run_dir}", run_dir, epoch, pos)
            seconds = seconds0 + time.perf_counter() - t0
            train_loss = loss_sum / (n * width)  # per pixel
            # val_loss is always the MSE (runs with different losses compare on it); the
            # trained loss too, as val_<loss>, when it is not mse. train_loss: the trained loss.
            val_trained, val_loss = eng.evaluate_losses(h_val)
            if not math.isfinite(val_loss):
                _diverged(run, device, epoch, "validation", val_loss)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   **_trained(config, "val", val_trained),
                   "seconds": seconds, "samples_per_s": n / max(seconds, 1e-9),
                   "lr": schedule.lr_at(epoch * schedule.steps_per_epoch - 1)}  # its last step's
            if config.track_test:  # after the timing: the epoch's seconds are training only
                row["test_loss"] = float(eng.evaluate(h_test))
            run.metrics.append(row)
            if epoch in saved_epochs:
                run.recons[epoch] = np.asarray(eng.reconstruct(run.recon_orig), np.float32)
                run.recons_dirty = True
            run.keep(eng, epoch, rng.bit_generator.state, chunk)
            run.progress.epoch(row, "  (includes compiling the kernels)" if compiling else "")
            _COMPILED.add((device, config.optimizer))
            compiling = False
            position, loss_sum, seconds0 = 0, 0.0, 0.0
            # the signal flag is read once: a stop always saves this epoch first
            stop = sig.received is not None and epoch < config.epochs
            if stop or epoch == config.epochs or \
                    time.perf_counter() - run.t_saved >= checkpoint_every:
                run.save()
                run.summary("interrupted" if stop else "running", device)
            if on_epoch is not None:
                on_epoch(dict(row))
            if stop:
                raise TrainingInterrupted(
                    f"interrupted by {sig.received} after epoch {epoch}; checkpoint saved in "
                    f"{run_dir}", run_dir, epoch + 1, 0)

    test_trained, test_loss = eng.evaluate_losses(h_test)
    return run.summary("complete", device, test_loss, _trained(config, "test", test_trained))


def _add_losses(run, device, epoch, parts, loss_sum, pos, stop):
    """``loss_sum`` plus the chunks' training loss sums ``parts``, one by one; a NaN or inf
    one diverges (samples ``pos``-``stop``)."""
    for part in parts:
        if not math.isfinite(part):
            _diverged(run, device, epoch, "training", part, pos, stop)
        loss_sum += part
    return loss_sum


def _trained(config, where, value) -> dict:
    """{f"{where}_{loss}": value} for a run that trains a loss other than mse, else {}."""
    return {} if config.loss == "mse" else {f"{where}_{config.loss}": float(value)}


def _diverged(run, device, epoch, where, value, pos=None, stop=None):
    run.save()  # the last good epoch's state, kept in memory
    last = run.kept[2]["epoch"]
    what = "NaN" if math.isnan(value) else "inf"
    at = f" (samples {pos}-{stop} of {run.n})" if pos is not None else ""
    run.summary("diverged", device, extra={"diverged_epoch": epoch})
    raise DivergenceError(
        f"{where} loss became {what} in epoch {epoch}{at}; stopped. The last good checkpoint "
        f"(epoch {last}) is kept in {run.dir}; try a smaller --lr")
