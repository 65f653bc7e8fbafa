"""Writing files safely: atomic writes, JSON that tolerates NaN, and whether a directory can be
written at all (``check_writable``).

A file is written to a temporary file in the same directory, flushed and fsync'ed, then renamed
over the target with ``os.replace``: a crash mid-write leaves the previous version intact (and at
worst a stray ``.<name>.*.tmp`` file). A write that fails (disk full, I/O error, read-only file
system, the directory removed) removes its temp file and raises RunWriteError naming the file
and the cause.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError, RunWriteError


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
