"""What every launcher shares: the lazily compiled kernel registry, grids, the split-K plan and
the cached placeholders for unused operands."""

from __future__ import annotations

import threading

import numpy as np
from numba import cuda

from .config import BK, BM, BN, FASTMATH, PIXEL_SCALE


class Kernel:
    """A kernel compiled lazily, once per variant: ``variants`` maps a key ("u8" / "f32" by the
    dtype of the pixel operand, "+gather" when its rows go through a permutation) to
    ``(pyfunc, signature)``. Each compiled dispatcher has a single signature, so numba-cuda
    launches it without any argument-type dispatch (the ~10 us launch path). Compilation needs
    a device (or the simulator), so it happens on first use or in ``compile_all()``.
    ``register=False``: not a production kernel (dev/cuda variants), left out of ``KERNELS``."""

    registry: list = []
    _lock = threading.Lock()  # engines in several threads (aecore study --jobs) compile once

    def __init__(self, variants: dict, register=True):
        self.variants = variants
        self._compiled = {}
        if register:
            Kernel.registry.append(self)

    def __getitem__(self, key):
        k = self._compiled.get(key)
        if k is None:
            with Kernel._lock:
                k = self._compiled.get(key)
                if k is None:
                    pyfunc, sig = self.variants[key]
                    k = self._compiled[key] = cuda.jit(sig, fastmath=FASTMATH)(pyfunc)
        return k


def named(fn, name):
    """fn under ``name`` (kernels made by a factory: their PTX entries and reports tell them
    apart)."""
    fn.__name__ = fn.__qualname__ = name
    return fn


def compile_all():
    """Compile every kernel for the current device now (a few seconds each on first use)."""
    for k in Kernel.registry:
        for key in k.variants:
            k[key]


def key(X, perm=None) -> str:
    return ("u8" if np.dtype(X.dtype) == np.uint8 else "f32") + ("+gather" if perm is not None
                                                                 else "")


def grid(M, N, S=1):
    return ((N + BN - 1) // BN, (M + BM - 1) // BM, S)


MIN_SLICE_STEPS = 4  # a split-K slice walks at least this many BK steps (64 of K at BK 16)


class SplitK:
    """Workspace, counters and the split-K plan of the kernels that reduce over a long K.

    ``plan(M, N, K)`` gives (S, K per slice): enough slices that the tiles times S fill about
    ``blocks`` blocks (default: two per multiprocessor), each slice at least
    ``MIN_SLICE_STEPS`` BK steps, and never more partials than the workspace holds (it is sized
    once, so CUDA graphs that point at it stay valid). ``splits`` forces S (tests). One per
    engine: launches that share a SplitK must not run concurrently (on two streams at once).
    """

    def __init__(self, blocks=None, splits=None, capacity=1 << 22, max_tiles=4096, stream=0):
        if blocks is None:
            dev = cuda.get_current_device()
            blocks = 2 * getattr(dev, "MULTIPROCESSOR_COUNT", 4)  # the simulator has no count
        self.blocks = int(blocks)
        self.splits = splits
        self.ws = cuda.device_array(int(capacity), np.float32)
        # the counters start at 0 and every split launch leaves them at 0 again
        self.cnt = cuda.to_device(np.zeros(int(max_tiles), np.int32), stream=stream)

    def plan(self, M, N, K):
        tiles = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
        steps = max((K + BK - 1) // BK, 1)
        if self.splits is not None:
            S = self.splits
        else:
            S = min(self.blocks // tiles, steps // MIN_SLICE_STEPS)
        S = max(1, min(S, steps, self.ws.shape[0] // (tiles * BM * BN)))
        if tiles > self.cnt.shape[0]:
            S = 1
        per = (steps + S - 1) // S  # BK steps per slice; then no slice is empty
        S = (steps + per - 1) // per
        return S, per * BK


def split_args(splitk, M, N, K):
    """(S, workspace, counters, K per slice) for a launch; S = 1 without a SplitK."""
    if splitk is None:
        return 1, empty(np.float32), empty(np.int32), max(K, 1)
    S, kchunk = splitk.plan(M, N, K)
    return S, splitk.ws, splitk.cnt, kchunk


_EMPTY = {}


def empty(dtype, ndim=1):
    """A cached zero-length device array (for the unused optional operands). The engine makes
    its placeholders before recording a CUDA graph (no allocation mid-capture)."""
    key_ = (np.dtype(dtype).str, ndim)
    if key_ not in _EMPTY:
        _EMPTY[key_] = cuda.to_device(np.zeros((0,) * ndim, dtype))
    return _EMPTY[key_]


def scale_of(X) -> float:
    return PIXEL_SCALE if np.dtype(X.dtype) == np.uint8 else 1.0


def perm_or_empty(perm):
    return empty(np.int64) if perm is None else perm


def f32_or_empty(x, ndim=1):
    """x, or the cached empty float32 array for an operand the launch does not use (None)."""
    return empty(np.float32, ndim) if x is None else x
