"""One run per directory: ``lock_run_dir`` holds an ``flock`` on ``RUN_DIR/.lock`` for a run's
whole life (the trainer takes it), so a second run into the same directory, from another
process or another thread, is refused at once with the holder's pid, host and command. The OS
releases the lock when its process dies, so a killed run's stale ``.lock`` blocks nothing.
``check_not_busy`` is the quick probe commands make before they load data.

(Split out of ``aecore.runs``, which re-exports these names.)
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

from .atomic import check_writable
from .errors import CheckpointError, RunDirBusyError

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

LOCK = ".lock"  # held while a run trains; not one of the run's files


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
