"""The run directory: its layout, atomic file writes, and the metrics files.

One directory per training run (``runs/h256-sgd`` by default)::

    config.json             the TrainConfig, aecore version, data source, device
    metrics.csv             epoch,train_loss,val_loss,seconds,samples_per_s  (one row per epoch)
    summary.json            final losses, best epoch, status (complete / interrupted / diverged)
    reconstructions.npz     originals (10, 784) uint8, labels, test indices, epoch_<e> (10, 784) f32
    model.safetensors       "0.weight" "0.bias" "2.weight" "2.bias" (float32, PyTorch's names)
    checkpoint.safetensors  parameters + optimizer buffers + resume state (see aecore.checkpoint)

Every file is written atomically: a temporary file in the same directory is written, flushed and
fsync'ed, then renamed over the target with ``os.replace``; a crash mid-write leaves the previous
version intact (and at worst a stray ``.<name>.*.tmp`` file). A write that fails (disk full,
I/O error, read-only file system, the directory removed) removes its temp file and raises
RunWriteError naming the file and the cause.

One run owns its directory: ``lock_run_dir`` holds an ``flock`` on ``.lock`` in it for the run's
whole life (the trainer takes it), so a second run into the same directory, from another process
or another thread, is refused at once with the holder's pid, host and command. The OS releases
the lock when its process dies, so a killed run's stale ``.lock`` blocks nothing.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import errno
import io
import json
import math
import os
import shlex
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .errors import CheckpointError, RunDirBusyError, RunWriteError

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
RECONSTRUCTIONS = "reconstructions.npz"
MODEL = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
RUN_FILES = (CONFIG, METRICS, SUMMARY, RECONSTRUCTIONS, MODEL, CHECKPOINT)
LOCK = ".lock"  # held while a run trains; not one of the run's files

METRICS_HEADER = ("epoch", "train_loss", "val_loss", "seconds", "samples_per_s")


def run_name(hidden: int, optimizer: str) -> str:
    """Default run directory name, e.g. ``h256-sgd``."""
    return f"h{hidden}-{optimizer}"


# --- atomic writes -------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_error(path, e: OSError) -> RunWriteError:
    """RunWriteError naming ``path`` and the cause of ``e``."""
    path = Path(path)
    cause = e.strerror or str(e)
    if e.errno == errno.ENOENT and not path.parent.is_dir():
        cause = f"the directory {path.parent} no longer exists"
    return RunWriteError(f"cannot write {path}: {cause}", path, e.errno)


def atomic_write(path, write) -> None:
    """Create ``path`` atomically: ``write(f)`` fills a binary temp file in the same directory,
    which is fsync'ed and renamed over ``path``. If anything fails, the old file is untouched,
    the temp file removed, and an OSError becomes RunWriteError."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(x):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def read_json(path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({e})") from None


def write_npz(path, arrays: dict) -> None:
    def write(f):
        np.savez(f, **arrays)

    atomic_write(path, write)


# --- metrics -------------------------------------------------------------------------------------

def metrics_csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRICS_HEADER)
    for r in rows:
        w.writerow([int(r["epoch"]), repr(float(r["train_loss"])), repr(float(r["val_loss"])),
                    f"{float(r['seconds']):.4f}", f"{float(r['samples_per_s']):.1f}"])
    return buf.getvalue()


def write_metrics(path, rows: list[dict]) -> None:
    atomic_write_text(path, metrics_csv_text(rows))


def read_metrics(path) -> list[dict]:
    """Rows of metrics.csv as dicts (epoch int, the rest float)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != METRICS_HEADER:
            raise CheckpointError(f"{path}: unexpected header {reader.fieldnames}")
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in reader]


# --- the directory itself ------------------------------------------------------------------------

def check_writable(directory) -> None:
    """Raise CheckpointError unless ``directory`` (or its nearest existing ancestor, where it
    would be created) is a directory we can create files in."""
    d = Path(directory).absolute()
    probe = d
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise CheckpointError(f"{probe}: exists and is not a directory; cannot write the run there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CheckpointError(f"{probe}: directory is not writable")
    if probe == d:  # really try: os.access is wrong for root, read-only mounts, ...
        try:
            fd, tmp = tempfile.mkstemp(prefix=".aecore-write-test.", dir=d)
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise CheckpointError(f"{d}: directory is not writable ({e.strerror})") from None


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


# --- one run per directory -----------------------------------------------------------------------

def _holder_text() -> str:
    cmd = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    started = datetime.datetime.now().isoformat(timespec="seconds")
    return (f"pid {os.getpid()} on {socket.gethostname()} (thread {threading.current_thread().name}, "
            f"since {started}): {shlex.join(cmd)}")


def _busy(d: Path, fd: int) -> RunDirBusyError:
    try:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        holder = ""
    if not holder:
        holder = "another process (it has not written its pid yet)"
    elif holder.startswith(f"pid {os.getpid()} on {socket.gethostname()} "):
        holder = f"another run in this process: {holder}"
    return RunDirBusyError(f"{d} is in use by {holder}; wait for that run to end, or choose "
                           "another directory")


def _try_flock(fd: int, mode: int):
    """Take the lock without waiting; False if another holds it, None if the file system has
    no locks. A few short retries: a ``check_not_busy`` probe holds it for microseconds."""
    for attempt in range(5):
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.01)
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
    return False


@contextlib.contextmanager
def lock_run_dir(run_dir, create: bool = True):
    """Own ``run_dir`` for the ``with`` block: an exclusive flock on ``run_dir/.lock`` that
    records who holds it. Raises RunDirBusyError (naming the holder) if another run, in any
    process or thread, holds it. ``create``: make the directory if missing (else a missing
    directory is a CheckpointError). Nothing else in the directory is touched."""
    d = Path(run_dir)
    if create:
        if d.exists() and not d.is_dir():
            raise CheckpointError(f"{d}: exists and is not a directory")
        check_writable(d)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"{d}: cannot create the run directory ({e.strerror})") from None
    elif not d.is_dir():
        raise CheckpointError(f"{d}: no such file or directory")
    if fcntl is None:
        yield d
        return
    path = d / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot create the run's lock file ({e.strerror})") from None
        try:
            got = _try_flock(fd, fcntl.LOCK_EX)
            if got is False:
                raise _busy(d, fd)
        except BaseException:
            os.close(fd)
            raise
        if got is None:  # no locks here (some network file systems): run, and say so
            os.close(fd)
            print(f"aecore: warning: {d}: this file system has no file locks; nothing stops "
                  "another run from writing into this directory meanwhile", file=sys.stderr)
            yield d
            return
        try:  # the holder before us may have removed the file we opened as it let go
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder_text() + "\n").encode("utf-8"), 0)
    except OSError:  # a full disk: the lock holds without the note
        pass
    try:
        yield d
    finally:
        try:
            os.unlink(path)  # while still holding it; see the samestat check above
        except OSError:
            pass
        os.close(fd)


def check_not_busy(run_dir) -> None:
    """Raise RunDirBusyError if a run holds ``run_dir`` now (commands check before they load
    data; the trainer's lock is what enforces it)."""
    path = Path(run_dir) / LOCK
    if fcntl is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        got = _try_flock(fd, fcntl.LOCK_SH)
        if got is False:
            raise _busy(Path(run_dir), fd)
        if got:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
