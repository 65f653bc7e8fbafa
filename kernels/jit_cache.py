"""Numba's on-disk cache, made to notice changes in the files a cached function calls into.

Numba keys a cached ``@njit(cache=True)`` function by the contents of its *own* source file
(numba >= 0.6x: a SHA-256 of that file). Our compiled functions call across files: the engine's
training loop (``aecore/engine_cpu.py``) compiles the epilogues of ``kernels/cpu.py`` and the
sgemm wrapper of ``kernels/blas.py`` into itself. When only ``kernels/cpu.py`` changed, numba
loaded the old engine from ``__pycache__``, old epilogue included: a faster Sigmoid+MSE
epilogue measured nothing in the engine until the cache was cleared (2026-11-27). A user who
upgrades aecore in place would run old kernels the same way.

``install()`` puts a locator in front of numba's own ones. For the functions in ``SOURCES``
it finds the cache directory exactly as numba would (it wraps numba's locator), and adds to
the source stamp a digest of *all* the files in ``SOURCES``: a change to any of them is a
cache miss for every aecore function. Other code's caching is untouched.

Where: under the user cache (``platformdirs.user_cache_dir("aecore")/numba``, one subdirectory
per source directory, as numba names them for ``NUMBA_CACHE_DIR``), never beside the sources:
numba's default, ``__pycache__`` inside an installed package, left site-packages/aecore/ holding
only ``*.nbi`` / ``*.nbc`` files after ``pip install -e .`` replaced the install, and Python then
imported that leftover directory as a namespace package ahead of the editable one (``aecore
--version``: ImportError). A ``NUMBA_CACHE_DIR`` the user sets (``numba.config.CACHE_DIR``) still
wins; where the user cache cannot be written, numba's own locators decide.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

_KERNELS = Path(__file__).resolve().parent
# aecore/ beside kernels/ in a source tree (editable install); kernels/ is aecore/kernels/ in
# an installed wheel.
_AECORE = _KERNELS.parent / "aecore" if (_KERNELS.parent / "aecore").is_dir() else _KERNELS.parent

# Every file with @njit(cache=True) code or code such functions compile in
# (tests/test_kernels_cpu.py checks that no file with cache=True is missing).
SOURCES = tuple(p.resolve() for p in (
    _KERNELS / "blas.py", _KERNELS / "cpu.py", _KERNELS / "cpu_math.py", _KERNELS / "cpu_hidden.py",
    _KERNELS / "cpu_output.py", _KERNELS / "ftz.py", _KERNELS / "optim.py",
    _KERNELS / "activations_cpu.py", _KERNELS / "losses_cpu.py", _KERNELS / "blas_pair.py",
    _KERNELS / "cpu_gemm.py", _KERNELS / "c_calls.py", _KERNELS / "own_step.py",
    _KERNELS / "own_addresses.py",
    _AECORE / "engine_cpu.py", _AECORE / "cpu_pair.py", _AECORE / "baselines.py",
    _AECORE / "cpu_team.py", _AECORE / "blas_callback.py",
))


@functools.lru_cache(maxsize=None)
def digest(paths: tuple = SOURCES) -> str:
    """SHA-256 over the contents of ``paths`` (computed once per process)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.name).encode())
        try:
            h.update(p.read_bytes())
        except OSError:  # never stop a compilation over this: an unreadable file is a marker
            h.update(b"<unreadable>")
    return h.hexdigest()


def cache_dir() -> Path:
    """Where aecore's compiled functions are cached (unless NUMBA_CACHE_DIR is set)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("aecore")) / "numba"


def install() -> bool:
    """Put the package-wide locator first in numba's list; False when this numba has no such
    list (then caching works as numba's own, file by file)."""
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    _CacheLocator = getattr(caching, "_CacheLocator", None)
    if impl is None or _CacheLocator is None:
        return False
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list):
        return False
    if any(getattr(c, "_aecore", False) for c in classes):
        return True
    numba_locators = tuple(classes)
    user_dir = (getattr(caching, "UserProvidedCacheLocator", None)
                or getattr(caching, "_UserProvidedCacheLocator", None))
    if user_dir is not None:
        class UserCacheLocator(user_dir):
            """numba's NUMBA_CACHE_DIR locator, pointed at cache_dir() when that is unset."""

            def __init__(self, py_func, py_file):
                self._py_file = py_file
                self._lineno = py_func.__code__.co_firstlineno
                self._cache_path = os.path.join(cache_dir(),
                                                self.get_suitable_cache_subpath(py_file))

            @classmethod
            def from_function(cls, py_func, py_file):
                from numba.core import config

                if config.CACHE_DIR:  # the user's choice: numba's own locator takes it
                    return None
                return super(user_dir, cls).from_function(py_func, py_file)

        numba_locators = (UserCacheLocator, *numba_locators)

    class PackageStampLocator(_CacheLocator):
        """numba's locator for the function, with the package digest in its stamp."""

        _aecore = True

        def __init__(self, inner):
            self.inner = inner

        def ensure_cache_path(self):
            return self.inner.ensure_cache_path()

        def get_cache_path(self):
            return self.inner.get_cache_path()

        def get_source_stamp(self):
            return (self.inner.get_source_stamp(), digest())

        def get_disambiguator(self):
            return self.inner.get_disambiguator()

        @classmethod
        def from_function(cls, py_func, py_file):
            if Path(py_file).resolve() not in SOURCES:
                return None
            for locator in numba_locators:
                inner = locator.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
            return None

    classes.insert(0, PackageStampLocator)
    _lock_index_files(caching)
    return True


def _lock_index_files(caching) -> None:
    """Make numba's index updates for aecore's functions safe between processes.

    numba's ``IndexDataCacheFile.save`` reads the index, names the new entry's data file after
    the first free number, writes the index, then the data. Two processes adding different
    signatures of one function at once (the test workers, a sweep's trials compiling different
    activations) both take the same number: the index keeps one key, and the data file may
    hold the other's code, which a later process then loads for the wrong signature. Seen
    once: a TypingError in a clean-clone run (bench/RESULTS.md, session 17). Here a save holds
    an exclusive ``flock`` on ``<index>.lock`` and a load a shared one, for aecore's entries
    only (their stamp carries ``digest()``); without ``fcntl`` (not POSIX) nothing changes."""
    try:
        import fcntl
    except ImportError:
        return
    cls = getattr(caching, "IndexDataCacheFile", None)
    if cls is None or getattr(cls, "_aecore_locked", False):
        return
    save, load = cls.save, cls.load

    def ours(cache_file):
        stamp = getattr(cache_file, "_source_stamp", None)
        return isinstance(stamp, tuple) and len(stamp) == 2 and stamp[1] == digest()

    def under_lock(method, mode):
        def locked(self, *args):
            if not ours(self):
                return method(self, *args)
            try:
                fd = os.open(self._index_path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # no cache directory (yet) or not writable: as numba does
                return method(self, *args)
            try:
                fcntl.flock(fd, mode)
                return method(self, *args)
            finally:
                os.close(fd)  # releases the lock

        return locked

    cls.save = under_lock(save, fcntl.LOCK_EX)
    cls.load = under_lock(load, fcntl.LOCK_SH)
    cls._aecore_locked = True


INSTALLED = install()
