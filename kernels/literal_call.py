"""Calling an ``@njit`` function that takes compile-time literal arguments from Python, at the
cost of an ordinary call.

numba's dispatcher types a Python int as ``int64``. A function that asks for a literal
(``numba.literally``, as the CPU engine's loops do for the activation and the loss) never gets an
``int64`` overload, so every call from Python took numba's slow path: type the whole function for
``int64``, meet ``literally``, type it again with the literal, find the compiled one. That was
2.8 ms a call for a one-line function and ~20-30 ms for the training loop (a one-step chunk:
21 ms against 0.28 ms before the activation became a choice; bench/RESULTS.md, 2026-12-02).

``LiteralCall`` does what the dispatcher's fast path does for ordinary arguments: it types each
argument (``numba.typeof``, the literal positions as ``types.literal``), looks that signature up
among the compiled overloads and calls its entry point. The first call of a signature goes
through the dispatcher, which compiles it or loads it from numba's disk cache.

``numba.typeof`` from Python costs ~12 us an array (330 us for the loop's 27 arguments), so the
entry point found is remembered under a cheap fingerprint of the arguments that determines their
numba types: an array's class, dtype, ndim, contiguity, writeability and alignment (its layout and
read-only flag), a scalar's Python type, a tuple's fingerprints, a literal's value.
"""

from __future__ import annotations

import numpy as np
from numba import typeof, types
from numba.core.typing.typeof import Purpose


def _fingerprint(a):
    if isinstance(a, np.ndarray):
        f = a.flags
        return (type(a), a.dtype.str, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
    if isinstance(a, tuple):
        return (type(a), *map(_fingerprint, a))
    if type(a) is int and not -2**63 <= a < 2**63:  # typeof picks uint64 / fails out there
        return (int, a)
    return type(a)


class LiteralCall:
    """``LiteralCall(fn, positions)(*args)`` is ``fn(*args)``, with ``args[i]`` for i in
    ``positions`` (Python ints) typed as literals when looking up the compiled overload."""

    def __init__(self, dispatcher, positions):
        self.dispatcher = dispatcher
        self.positions = frozenset(positions)
        self._entries = {}  # fingerprint -> compiled entry point

    def signature(self, args) -> tuple:
        """The numba argument types the overload for ``args`` is keyed by."""
        return tuple(types.literal(a) if i in self.positions else typeof(a, Purpose.argument)
                     for i, a in enumerate(args))

    def _key(self, args) -> tuple:
        return tuple(a if i in self.positions else _fingerprint(a) for i, a in enumerate(args))

    def __call__(self, *args):
        key = self._key(args)
        entry = self._entries.get(key)
        if entry is None:
            compiled = self.dispatcher.overloads.get(self.signature(args))
            if compiled is None:  # first call of this signature: compile (or load the cache)
                return self.dispatcher(*args)
            entry = self._entries[key] = compiled.entry_point
        return entry(*args)
