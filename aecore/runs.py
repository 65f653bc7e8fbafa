"""The run directory: its files, reading and writing them, who owns it, and whether a run can
be written or continued there. Every other module reaches a run's files through here.

One directory per training run (``runs/h256-adam`` with the defaults: ``run_name``)::

    config.json             the TrainConfig, aecore version, data source, device
    metrics.csv             epoch,train_loss,val_loss,seconds,samples_per_s  (one row per epoch)
                            (+ test_loss with track_test)
    summary.json            final losses, best epoch, status (complete / interrupted / diverged)
    reconstructions.npz     originals (10, w) uint8, labels, test indices, epoch_<e> (10, w) f32
                            (w: the image width, 784 for Fashion-MNIST; config.json's image_size)
    model.safetensors       "0.weight" "0.bias" "2.weight" "2.bias" (float32, PyTorch's names)
    checkpoint.safetensors  parameters + optimizer buffers + resume state (see aecore.checkpoint)

``RunDir(path)`` reads and writes these files; every write is atomic (``aecore.atomic``).
``RunDir.resume_checkpoint`` is the "must match to resume" check (RESUME_FIXED).

One run owns its directory: ``lock_run_dir`` / ``check_not_busy`` (``aecore.run_lock``,
re-exported here).
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_write_text, check_writable, read_json, write_json, write_npz
from .checkpoint import CHECKPOINT, MODEL, load_checkpoint, save_checkpoint, save_model
from .config import TrainConfig
from .devices import kernel_settings
from .errors import CheckpointError
from .model import param_count
from .run_lock import LOCK, check_not_busy, lock_run_dir  # noqa: F401 (re-exported)

CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
RECONSTRUCTIONS = "reconstructions.npz"
RUN_FILES = (CONFIG, METRICS, SUMMARY, RECONSTRUCTIONS, MODEL, CHECKPOINT)

METRICS_HEADER = ("epoch", "train_loss", "val_loss", "seconds", "samples_per_s", "lr")
METRICS_HEADER_V1 = METRICS_HEADER[:5]  # runs from before the learning-rate schedules
METRICS_EXTRA = ("val_", "test_")  # optional columns after the header (e.g. val_bce)

# Fields that a resumed run must share with the checkpoint (epochs and device may change;
# epochs not with a schedule other than constant: resume_checkpoint).
RESUME_FIXED = ("hidden", "batch_size", "lr", "optimizer", "momentum", "slope", "seed",
                "val_size", "limit", "lr_schedule", "warmup_epochs", "activation", "loss",
                "track_test")


def run_name(hidden: int, optimizer: str) -> str:
    """The directory name of a run with the defaults but for the optimizer, e.g. ``h256-adam``
    (``aecore.comparisons.config_run_name`` names any config)."""
    return f"h{hidden}-{optimizer}"


# --- metrics -------------------------------------------------------------------------------------

def write_metrics(path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    # a run trained with a loss other than mse has one more column, its validation value
    # (val_loss is always the MSE)
    extra = [k for k in (rows[0] if rows else {})
             if k.startswith(METRICS_EXTRA) and k not in METRICS_HEADER]
    w.writerow(METRICS_HEADER + tuple(extra))
    for r in rows:
        w.writerow([int(r["epoch"]), repr(float(r["train_loss"])), repr(float(r["val_loss"])),
                    f"{float(r['seconds']):.4f}", f"{float(r['samples_per_s']):.1f}",
                    repr(float(r["lr"])) if r.get("lr") is not None else ""]
                   + [repr(float(r[k])) for k in extra])
    atomic_write_text(path, buf.getvalue())


def read_metrics(path) -> list[dict]:
    """Rows of metrics.csv as dicts (epoch int, the rest float)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = tuple(reader.fieldnames or ())
        extra = names[len(METRICS_HEADER):]
        if names != METRICS_HEADER_V1 and (names[:len(METRICS_HEADER)] != METRICS_HEADER
                                           or not all(k.startswith(METRICS_EXTRA) for k in extra)):
            raise CheckpointError(f"{path}: unexpected header {reader.fieldnames}")
        # "lr" (the rate of the epoch's last step) is absent in older runs: no key
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v != ""}
                for r in reader]


# --- the directory itself ------------------------------------------------------------------------

def existing_run_files(run_dir) -> list[str]:
    d = Path(run_dir)
    return [n for n in RUN_FILES if (d / n).exists()]


def prepare_run_dir(run_dir, overwrite: bool = False) -> Path:
    """Create ``run_dir`` for a new run. A directory holding a previous run is refused unless
    ``overwrite``; then only the run's own files are removed (nothing else in it is touched)."""
    d = Path(run_dir)
    if d.exists() and not d.is_dir():
        raise CheckpointError(f"{d}: exists and is not a directory")
    check_writable(d)
    found = existing_run_files(d) if d.exists() else []
    if found and not overwrite:
        raise CheckpointError(
            f"{d} already holds a run ({', '.join(found)}); pass --overwrite to replace it, "
            f"--resume {d} to continue it, or choose another --out")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{d}: cannot create the run directory ({e.strerror})") from None
    check_writable(d)
    for name in found:
        (d / name).unlink()
    return d


# --- the files -----------------------------------------------------------------------------------

@dataclass
class Reconstructions:
    """reconstructions.npz: the fixed test images and their reconstructions at saved epochs."""

    originals: np.ndarray | None  # (10, w) uint8, w the image width
    labels: np.ndarray | None  # (10,)
    by_epoch: dict[int, np.ndarray]  # epoch -> (10, w) float32


def peak_rss_mib():
    """This process's peak resident memory so far (MiB), or None where it cannot be read."""
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return round(kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except (ImportError, OSError):
        return None


class RunDir:
    """One run directory's files: their paths, their contents (read and written), and the
    check that a configuration may continue the run in it."""

    def __init__(self, path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def existing_files(self) -> list[str]:
        return existing_run_files(self.path)

    def is_run(self) -> bool:
        """A run directory: it has a config.json or a summary.json."""
        return self.path.is_dir() and (self.file(CONFIG).is_file() or self.file(SUMMARY).is_file())

    # reading ----------------------------------------------------------------------------------
    def _json(self, name: str) -> dict | None:
        path = self.file(name)
        if not path.is_file():
            return None
        d = read_json(path)
        if not isinstance(d, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        return d

    def info(self) -> dict | None:
        """config.json (None: not there)."""
        return self._json(CONFIG)

    def summary(self) -> dict | None:
        """summary.json (None: not there; it is written once the first epoch ends)."""
        return self._json(SUMMARY)

    def config(self) -> TrainConfig:
        """The TrainConfig in config.json."""
        info = self.info()
        if info is None:
            raise CheckpointError(f"{self.file(CONFIG)}: file not found")
        return _config_from(info, self.file(CONFIG), "no usable config")

    def status(self) -> str:
        """summary.json's status (complete, interrupted, running, diverged), else "started"."""
        return (self.summary() or {}).get("status", "started")

    def metrics(self) -> list[dict]:
        """metrics.csv's rows ([] when it is not there)."""
        path = self.file(METRICS)
        if not path.is_file():
            return []
        try:
            return read_metrics(path)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: unreadable ({e})") from None

    def reconstructions(self) -> Reconstructions | None:
        path = self.file(RECONSTRUCTIONS)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return Reconstructions(
                    np.asarray(z["originals"]) if "originals" in z.files else None,
                    np.asarray(z["labels"]) if "labels" in z.files else None,
                    {int(k[6:]): np.asarray(z[k], np.float32) for k in z.files
                     if k.startswith("epoch_") and k[6:].isdigit()})
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None

    def checkpoint(self):
        """checkpoint.safetensors (an aecore.checkpoint.Checkpoint)."""
        return load_checkpoint(self.file(CHECKPOINT))

    def checkpoint_config(self) -> TrainConfig:
        """The TrainConfig saved in the checkpoint (what --resume continues)."""
        return _config_from(self.checkpoint().state, self.path, "checkpoint has no usable config")

    def data_dir(self) -> Path | None:
        """The data directory config.json recorded, if it is still there."""
        try:
            data = (self.info() or {})["data"]
        except (CheckpointError, KeyError, TypeError):
            return None
        for key in ("dir", "source"):  # "source" alone in runs from before "dir" was recorded
            d = data.get(key) if isinstance(data, dict) else None
            if d and Path(d).is_dir():
                return Path(d)
        return None

    # the resume check -------------------------------------------------------------------------
    def check_same_settings(self, config: TrainConfig, saved: TrainConfig, why: str) -> None:
        """CheckpointError if ``saved`` (this run's) and ``config`` differ in a RESUME_FIXED
        field; ``why`` ends the message."""
        for name in RESUME_FIXED:
            have, want = getattr(saved, name), getattr(config, name)
            if have != want:
                raise CheckpointError(f"{self.path} holds a run with {name}={have!r}, not "
                                      f"{want!r}{why}")

    def resume_checkpoint(self, config: TrainConfig, image_size: int | None = None):
        """The checkpoint that ``config`` continues: same RESUME_FIXED settings, epochs left to
        train, and (when given) images of ``image_size`` pixels, the data's. Anything else is
        a one-line CheckpointError."""
        ckpt = load_checkpoint(self.file(CHECKPOINT), config.hidden, config.optim().state_names())
        if image_size is not None and ckpt.image_size != image_size:
            raise CheckpointError(
                f"{self.path}: the run was trained on images of {ckpt.image_size} pixels, the "
                f"data given has {image_size}; cannot resume it on other data")
        saved = _config_from(ckpt.state, self.path, "checkpoint has no usable config")
        self.check_same_settings(config, saved, "; cannot resume with a change")
        done = ckpt.state["epoch"]
        if saved.lr_schedule != "constant" and config.epochs != saved.epochs:
            raise CheckpointError(
                f"{self.path}: its {saved.lr_schedule} learning-rate schedule spans "
                f"{saved.epochs} epochs, and the rates it has trained with depend on that "
                f"length, so --epochs cannot change on resume; train a new run instead")
        if done >= config.epochs and saved.lr_schedule != "constant":
            raise CheckpointError(f"{self.path}: the run has finished its {saved.epochs} "
                                  f"epochs ({saved.lr_schedule} learning-rate schedule)")
        if done >= config.epochs:
            raise CheckpointError(f"{self.path}: the run already has {done} of {config.epochs} "
                                  "epochs; pass a larger --epochs to continue it")
        return ckpt

    # writing (each file atomically) -----------------------------------------------------------
    def write_config(self, config: TrainConfig, device: str, data, n_train: int, train_crc: int,
                     resumed_from=None, image_size: int | None = None) -> None:
        """config.json; ``image_size``: pixels per image (default: the training images')."""
        path = getattr(data, "path", None)
        if image_size is None:
            image_size = int(data.train.images.shape[1])
        write_json(self.file(CONFIG), {
            "config": config.to_dict(), "aecore_version": __version__, "device": device,
            "params": param_count(config.hidden, image_size), "image_size": image_size,
            "data": {"source": str(getattr(data, "source", "")),
                     "dir": str(Path(path).absolute()) if path else "",  # found by --resume
                     "train_images": n_train, "val_images": int(data.val.images.shape[0]),
                     "test_images": int(data.test.images.shape[0]), "train_crc32": train_crc},
            "kernels": kernel_settings(device, config), "resumed_from": resumed_from})

    def write_summary(self, config: TrainConfig, metrics: list[dict], status: str, device: str,
                      wall_time_s: float, test_loss=None, extra=None, *,
                      image_size: int) -> dict:
        """summary.json; ``image_size``: pixels per image (its params count)."""
        best = min(metrics, key=lambda r: r["val_loss"]) if metrics else None
        s = {
            "hidden": config.hidden, "params": param_count(config.hidden, image_size),
            "epochs": config.epochs, "epochs_done": len(metrics), "status": status,
            "train_loss": metrics[-1]["train_loss"] if metrics else None,
            "val_loss": metrics[-1]["val_loss"] if metrics else None,
            "test_loss": test_loss,
            "best_epoch": best["epoch"] if best else None,
            "best_val_loss": best["val_loss"] if best else None,
            "wall_time_s": wall_time_s, "device": device,
            "samples_per_s": float(np.mean([r["samples_per_s"] for r in metrics]))
            if metrics else None,
            "peak_rss_mib": peak_rss_mib(),
            "optimizer": config.optimizer, "lr": config.lr,
            "batch_size": config.batch_size, "run_dir": str(self.path),
        }
        s.update(extra or {})
        write_json(self.file(SUMMARY), s)
        return s

    def write_metrics(self, rows: list[dict]) -> None:
        write_metrics(self.file(METRICS), rows)

    def write_reconstructions(self, originals, labels, test_indices, by_epoch: dict) -> None:
        arrays = {"originals": originals, "labels": labels, "test_indices": test_indices}
        arrays.update({f"epoch_{e}": a for e, a in by_epoch.items()})
        write_npz(self.file(RECONSTRUCTIONS), arrays)

    def save_model(self, params, slope: float, activation: str = "leaky_relu",
                   loss: str = "mse") -> None:
        save_model(self.file(MODEL), params, slope, activation, loss)

    def save_checkpoint(self, params, opt_state, state: dict) -> None:
        save_checkpoint(self.file(CHECKPOINT), params, opt_state, state)


def _config_from(d: dict, where, what: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(d["config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: {what} ({e})") from None
