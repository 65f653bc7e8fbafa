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
On a GPU an epoch takes ~0.1 s, and writing the files (each fsync'ed) after every epoch was part
of the 14-31 ms per epoch spent outside training (H200 study). A hard crash (power, SIGKILL)
loses at most ``checkpoint_every`` seconds of training.
The test loss is computed once, at the end.

Resume is exact: on the CPU an interrupted-then-resumed run ends with the same weights, bit
for bit, as an uninterrupted run with the same configuration.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import IMAGE_SIZE, __version__
from . import devices, runs
from .checkpoint import load_checkpoint, save_checkpoint, save_model
from .errors import AecoreError, CheckpointError, DeviceError, DivergenceError, RunWriteError
from .optim import OPTIMIZERS, OptimConfig
from .model import init_params, param_count

DEFAULT_RECON_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200)
MAX_HIDDEN = 65536
CHUNK_SAMPLES = 8192  # about this many samples between progress updates / signal checks
CHECKPOINT_EVERY = 30.0  # seconds between saves of the run directory (0: every epoch)
N_RECON = 10  # one test image per class
_COMPILED = set()  # (device, optimizer) whose kernels this process has run: compiled by now


# Learning rate per optimizer when --lr is not given: the best of a scan at h=128, batch 64,
# 30 epochs (README, "Defaults"). The loss is the mean over the batch's B*784 pixels, so plain
# SGD's gradients are small and its best rate is large.
DEFAULT_LR = {"sgd": 20.0, "momentum": 3.0, "nesterov": 3.0, "adam": 1e-3}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. The defaults live here and nowhere else."""

    hidden: int = 256  # hidden units h of the 784 -> h -> 784 model
    epochs: int = 200  # passes over the training set
    batch_size: int = 64  # samples per optimizer step
    lr: float | None = None  # learning rate; None -> DEFAULT_LR[optimizer]
    optimizer: str = "adam"  # sgd | momentum | nesterov | adam
    momentum: float = 0.9  # for momentum / nesterov (Adam's beta1 stays 0.9)
    slope: float = 0.01  # LeakyReLU negative slope
    seed: int = 0  # initial weights and the shuffles
    val_size: int = 10000  # training images held out for validation
    device: str = "cpu"  # cpu | cuda (the CLI resolves "auto")
    recon_epochs: tuple = DEFAULT_RECON_EPOCHS  # epochs whose reconstructions are saved
    limit: int | None = None  # train on the first `limit` training images only (quick tests)
    cuda_graphs: bool = True  # CUDA: record each chunk's launches once, replay them after
    cpu_split: bool = False  # CPU: each step split between two aecore threads (cpu_pair.py)

    def __post_init__(self):
        if self.lr is None and self.optimizer in DEFAULT_LR:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])

    def optim(self) -> OptimConfig:
        return OptimConfig(name=self.optimizer, lr=self.lr, momentum=self.momentum)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["recon_epochs"] = list(self.recon_epochs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "recon_epochs" in kw:
            kw["recon_epochs"] = tuple(kw["recon_epochs"])
        return cls(**kw)

    def saved_epochs(self) -> list[int]:
        """The epochs whose reconstructions are saved: the chosen ones <= epochs, and the last."""
        return sorted({e for e in self.recon_epochs if 1 <= e <= self.epochs} | {self.epochs})


# Fields that a resumed run must share with the checkpoint (epochs and device may change).
RESUME_FIXED = ("hidden", "batch_size", "lr", "optimizer", "momentum", "slope", "seed",
                "val_size", "limit")


def config_problems(c: TrainConfig, n_train: int | None = None) -> list[tuple[str, str]]:
    """(field, message) for each invalid setting; ``n_train`` is the training set's size (after
    the validation split and --limit) when known."""
    out = []

    def bad(name, msg):
        out.append((name, msg))

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(c.hidden) or not 1 <= c.hidden <= MAX_HIDDEN:
        bad("hidden", f"must be an integer from 1 to {MAX_HIDDEN}, got {c.hidden!r}")
    if not is_int(c.epochs) or c.epochs < 1:
        bad("epochs", f"must be an integer >= 1, got {c.epochs!r}")
    if not is_int(c.batch_size) or c.batch_size < 1:
        bad("batch_size", f"must be an integer >= 1, got {c.batch_size!r}")
    elif n_train is not None and c.batch_size > n_train:
        bad("batch_size", f"{c.batch_size} is larger than the training set ({n_train} images)")
    for name in ("lr", "slope", "momentum"):
        v = getattr(c, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            bad(name, f"must be a finite number, got {v!r}")
    if isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr <= 0:
        bad("lr", f"must be > 0, got {c.lr!r}")
    if isinstance(c.momentum, (int, float)) and not 0 <= c.momentum < 1:
        bad("momentum", f"must be in [0, 1), got {c.momentum!r}")
    if c.optimizer not in OPTIMIZERS:
        bad("optimizer", f"unknown optimizer {c.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    for name in ("cuda_graphs", "cpu_split"):
        if not isinstance(getattr(c, name), bool):
            bad(name, f"must be true or false, got {getattr(c, name)!r}")
    if c.device not in ("cpu", "cuda"):
        bad("device", f"unknown device {c.device!r}; choose cpu or cuda")
    if not is_int(c.val_size) or c.val_size < 1:
        bad("val_size", f"must be an integer >= 1, got {c.val_size!r}")
    if c.limit is not None and (not is_int(c.limit) or c.limit < 1):
        bad("limit", f"must be an integer >= 1, got {c.limit!r}")
    if not is_int(c.seed) or c.seed < 0:
        bad("seed", f"must be an integer >= 0, got {c.seed!r}")
    return out


def _peak_rss_mib():
    """This process's peak resident memory so far (MiB), or None where it cannot be read."""
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return round(kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except (ImportError, OSError):
        return None


class TrainingInterrupted(AecoreError):
    """Ctrl-C / SIGTERM: a resumable checkpoint was written."""

    exit_code = 130

    def __init__(self, message, run_dir, epoch, position):
        super().__init__(message)
        self.run_dir, self.epoch, self.position = run_dir, epoch, position


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


def _is_oom(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".upper()
    return "OUT_OF_MEMORY" in text or "OUTOFMEMORY" in text or "OUT OF MEMORY" in text


class StopSignals:
    """Turns the first SIGINT / SIGTERM into a flag checked between chunks; a second one
    raises KeyboardInterrupt as usual (the last end-of-epoch checkpoint is still on disk).

    The handlers are installed (in ``with``) only from the main thread. Runs trained in other
    threads (``aecore study --jobs``) share the main thread's instance: each checks the flag
    between its chunks, and ``stop(reason)`` raises it from code (another run failed)."""

    def __init__(self):
        self.received = None
        self._old = {}

    def stop(self, reason: str):
        """Ask every run that checks this flag to save a checkpoint and stop."""
        if self.received is None:
            self.received = reason

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        sys.stderr.write(f"\n{self.received} received: saving a checkpoint after the current chunk"
                         " (send it again to stop at once)\n")
        sys.stderr.flush()

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Progress:
    """A one-line progress bar on stderr (only on a terminal, and only with ``bar``: runs
    trained side by side print their epoch lines alone) and one line per epoch on stdout."""

    def __init__(self, enabled: bool, epochs: int, n: int, label: str, bar: bool = True):
        self.enabled = enabled
        self.tty = enabled and bar and sys.stderr.isatty()
        self.epochs, self.n, self.label = epochs, n, label
        self.t_last = 0.0
        self.drawn = False  # a bar is on the terminal's current line

    def chunk(self, epoch, pos, loss, rate):
        if not self.tty:
            return
        now = time.perf_counter()
        if pos < self.n and now - self.t_last < 0.2:
            return
        self.t_last = now
        left_epoch = (self.n - pos) / rate if rate else 0.0
        left_all = left_epoch + (self.epochs - epoch) * self.n / rate if rate else 0.0
        frac = pos / self.n
        bar = "#" * int(frac * 24)
        sys.stderr.write(
            f"\r{self.label} epoch {epoch}/{self.epochs} [{bar:<24}] {frac:4.0%} "
            f"{rate:,.0f} samples/s loss {loss:.5f} ETA {_fmt_time(left_epoch)} "
            f"(run {_fmt_time(left_all)})\033[K")
        sys.stderr.flush()
        self.drawn = True

    def close(self):
        """Clear the bar, so that what is printed next (an error) starts a line of its own."""
        if self.drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.drawn = False

    def epoch(self, row, note=""):
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.drawn = False
        # one write per line: runs in other threads print theirs between, never inside
        sys.stdout.write(f"{self.label} epoch {row['epoch']:>4}/{self.epochs}  "
                         f"train {row['train_loss']:.6f}  val {row['val_loss']:.6f}  "
                         f"{row['seconds']:.2f}s  {row['samples_per_s']:,.0f} samples/s{note}\n")
        sys.stdout.flush()


def _abs(path) -> str:
    return str(Path(path).absolute()) if path else ""


def _crc(images) -> int:
    return zlib.crc32(np.ascontiguousarray(images).data) & 0xFFFFFFFF


# --- the run --------------------------------------------------------------------------------------

class _Run:
    def __init__(self, config: TrainConfig, run_dir: Path, data, progress: bool,
                 label: str | None = None, bar: bool = True):
        self.config, self.dir, self.data = config, run_dir, data
        train = data.train.images if config.limit is None else data.train.images[: config.limit]
        self.train_images = np.ascontiguousarray(train)
        self.n = int(self.train_images.shape[0])
        self.recon_idx, self.recon_orig, self.recon_labels = recon_images(data.test.images,
                                                                         data.test.labels)
        self.recons: dict[str, np.ndarray] = {}
        self.recons_dirty = False
        self.kept = self.kept_model = None
        self.t_saved = time.perf_counter()
        self.metrics: list[dict] = []
        self.progress = _Progress(progress, config.epochs, self.n,
                                  label or f"h{config.hidden}", bar)
        self.wall_before = 0.0
        self.t_start = time.perf_counter()

    # files ----------------------------------------------------------------------------------
    def write_config(self, device, resumed_from=None):
        c = self.config
        info = {"config": c.to_dict(), "aecore_version": __version__, "device": device,
                "params": param_count(c.hidden), "image_size": IMAGE_SIZE,
                "data": {"source": str(getattr(self.data, "source", "")),
                         "dir": _abs(getattr(self.data, "path", None)),  # found again by --resume
                         "train_images": self.n, "val_images": int(self.data.val.images.shape[0]),
                         "test_images": int(self.data.test.images.shape[0]),
                         "train_crc32": self.train_crc},
                "resumed_from": resumed_from}
        runs.write_json(self.dir / runs.CONFIG, info)

    def write_recons(self):
        arrays = {"originals": self.recon_orig, "labels": self.recon_labels,
                  "test_indices": self.recon_idx}
        arrays.update(self.recons)
        runs.write_npz(self.dir / runs.RECONSTRUCTIONS, arrays)
        self.recons_dirty = False

    def load_recons(self):
        path = self.dir / runs.RECONSTRUCTIONS
        try:
            with np.load(path) as z:
                self.recons = {k: z[k] for k in z.files if k.startswith("epoch_")}
        except (OSError, ValueError):
            self.recons = {}

    def summary(self, status, device, test_loss=None, extra=None):
        rows = self.metrics
        best = min(rows, key=lambda r: r["val_loss"]) if rows else None
        s = {
            "hidden": self.config.hidden, "params": param_count(self.config.hidden),
            "epochs": self.config.epochs, "epochs_done": len(rows), "status": status,
            "train_loss": rows[-1]["train_loss"] if rows else None,
            "val_loss": rows[-1]["val_loss"] if rows else None,
            "test_loss": test_loss,
            "best_epoch": best["epoch"] if best else None,
            "best_val_loss": best["val_loss"] if best else None,
            "wall_time_s": self.wall_before + time.perf_counter() - self.t_start,
            "device": device,
            "samples_per_s": float(np.mean([r["samples_per_s"] for r in rows])) if rows else None,
            "peak_rss_mib": _peak_rss_mib(),
            "optimizer": self.config.optimizer, "lr": self.config.lr,
            "batch_size": self.config.batch_size, "run_dir": str(self.dir),
        }
        s.update(extra or {})
        runs.write_json(self.dir / runs.SUMMARY, s)
        return s

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
        it (its weights are also the model file's), and a divergence falls back to it."""
        params = engine.get_params()
        self.kept = (params, engine.get_opt_state(),
                     self.state(engine, epoch_done, 0, rng_state, 0.0, 0.0, chunk))
        self.kept_model = params

    def save(self, checkpoint=None):
        """Write the run's files from the kept state; ``checkpoint`` (params, opt_state, state)
        replaces the kept checkpoint (an interrupt mid-epoch). Metrics are the kept epochs'."""
        params, opt_state, state = checkpoint or self.kept
        if self.recons_dirty:
            self.write_recons()
        runs.write_metrics(self.dir / runs.METRICS, self.kept[2]["metrics"])
        if self.kept_model is not None:
            save_model(self.dir / runs.MODEL, self.kept_model, self.config.slope)
        save_checkpoint(self.dir / runs.CHECKPOINT, params, opt_state, state)
        self.t_saved = time.perf_counter()


def _make_engine(config, params, opt_state, step, handles_for, fallback_cpu):
    """Build the engine and copy the data to it; CUDA out-of-memory -> DeviceError (or, with
    ``fallback_cpu``, a notice and the CPU engine)."""
    device = config.device
    while True:
        try:
            eng = devices.make_engine(device, params, config.optim(), config.batch_size,
                                      config.slope, opt_state, step, graphs=config.cuda_graphs,
                                      cpu_split=config.cpu_split)
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
          progress_bar: bool = True, on_epoch=None) -> dict:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns the summary dict.

    ``data``: an object with ``.train/.val/.test`` splits (``.images`` uint8 (n, 784),
    ``.labels``), as ``aecore.data.load_fashion_mnist`` returns. ``on_chunk(epoch, position)``
    is called after every chunk of about ``chunk_samples`` samples (tests use it);
    ``on_epoch(row)`` after every epoch, once its files are saved if they are saved that epoch
    (``row``: metrics.csv's columns; ``aecore sweep`` reports it to Ray Tune).
    ``checkpoint_every``: seconds between saves of the run's files (module docstring).
    ``signals``: a StopSignals installed by the caller (runs in threads share the main
    thread's); by default the run installs its own for its duration. ``label`` starts its
    progress lines (default ``h<hidden>``); ``progress_bar`` False keeps only the epoch lines.
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
                          on_epoch)
        except RunWriteError as e:
            raise RunWriteError(f"{e}; training stopped. {_resume_note(run_dir)}", e.path,
                                e.errno) from None


def _resume_note(run_dir: Path) -> str:
    """What a run stopped by a write failure left, and how to continue it."""
    try:
        st = load_checkpoint(run_dir / runs.CHECKPOINT).state
    except CheckpointError:
        return f"No checkpoint was saved in {run_dir}: start the run again once there is space"
    where = f"epoch {st['epoch']}" + (f" + {st['position']} samples" if st.get("position") else "")
    return (f"The checkpoint of {where} is intact: once there is space, continue with "
            f"aecore train --resume {run_dir}")


def _train(config, run_dir, data, resume, progress, overwrite, fallback_cpu, on_chunk,
           chunk_samples, checkpoint_every, signals, label, progress_bar, on_epoch) -> dict:
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / runs.CHECKPOINT, config.hidden, config.optim().state_names())
        saved = TrainConfig.from_dict(ckpt.state["config"])
        for name in RESUME_FIXED:
            if getattr(saved, name) != getattr(config, name):
                raise CheckpointError(f"{run_dir}: the run has {name}={getattr(saved, name)!r}, "
                                      f"not {getattr(config, name)!r}; cannot resume with a change")
        if ckpt.state["epoch"] >= config.epochs:
            raise CheckpointError(f"{run_dir}: the run already has {ckpt.state['epoch']} of "
                                  f"{config.epochs} epochs; pass a larger --epochs to continue it")
        runs.check_writable(run_dir)
    else:
        runs.prepare_run_dir(run_dir, overwrite)

    run = _Run(config, run_dir, data, progress, label, progress_bar)
    run.train_crc = _crc(run.train_images)
    n = run.n
    if n < 1 or config.batch_size > n:
        raise ValueError(f"batch_size {config.batch_size} does not fit a training set of {n} images")

    if ckpt is None:
        params, opt_state, step = init_params(config.hidden, config.seed, config.slope), None, 0
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
        run.metrics = list(st["metrics"])
        run.wall_before = st["wall_time_s"]
        run.load_recons()

    eng, (h_train, h_val, h_test) = _make_engine(
        config, params, opt_state, step,
        (run.train_images, data.val.images, data.test.images), fallback_cpu)
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
                    part = eng.take_loss_sum()
                except AecoreError:
                    raise
                except Exception as e:
                    if _is_oom(e):
                        raise DeviceError(f"{device} out of memory in epoch {epoch}") from None
                    raise
                if not math.isfinite(part):
                    _diverged(run, device, epoch, "training", part, pos, stop)
                loss_sum += part
                pos = stop
                elapsed = seconds0 + time.perf_counter() - t0
                run.progress.chunk(epoch, pos, loss_sum / (pos * IMAGE_SIZE),
                                   (pos - position) / max(time.perf_counter() - t0, 1e-9))
                if on_chunk is not None:
                    on_chunk(epoch, pos)
                if sig.received and pos < n:
                    run.save((eng.get_params(), eng.get_opt_state(),
                              run.state(eng, epoch - 1, pos, rng_state, loss_sum, elapsed, chunk)))
                    run.summary("interrupted", device)
                    raise TrainingInterrupted(
                        f"interrupted by {sig.received} in epoch {epoch} after {pos} of {n} "
                        f"samples; checkpoint saved in {run_dir}", run_dir, epoch, pos)
            seconds = seconds0 + time.perf_counter() - t0
            train_loss = loss_sum / (n * IMAGE_SIZE)
            val_loss = float(eng.evaluate(h_val))
            if not math.isfinite(val_loss):
                _diverged(run, device, epoch, "validation", val_loss)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "seconds": seconds, "samples_per_s": n / max(seconds, 1e-9)}
            run.metrics.append(row)
            if epoch in saved_epochs:
                run.recons[f"epoch_{epoch}"] = np.asarray(eng.reconstruct(run.recon_orig), np.float32)
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

    test_loss = float(eng.evaluate(h_test))
    return run.summary("complete", device, test_loss)


def _diverged(run, device, epoch, where, value, pos=None, stop=None):
    run.save()  # the last good epoch's state, kept in memory
    last = run.kept[2]["epoch"]
    what = "NaN" if math.isnan(value) else "inf"
    at = f" (samples {pos}-{stop} of {run.n})" if pos is not None else ""
    run.summary("diverged", device, extra={"diverged_epoch": epoch})
    raise DivergenceError(
        f"{where} loss became {what} in epoch {epoch}{at}; stopped. The last good checkpoint "
        f"(epoch {last}) is kept in {run.dir}; try a smaller --lr")


def load_run_config(run_dir) -> TrainConfig:
    """The configuration of the run in ``run_dir`` (from its checkpoint), for --resume."""
    ckpt = load_checkpoint(Path(run_dir) / runs.CHECKPOINT)
    try:
        return TrainConfig.from_dict(ckpt.state["config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{run_dir}: checkpoint has no usable config ({e})") from None
