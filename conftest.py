"""Repo-wide pytest setup, loaded before any test module imports numba.

Numba's CUDA simulator must be chosen before ``numba.cuda`` is first imported. Where no real
GPU answers (CI, laptops) we turn it on, so the CUDA kernels and the CUDA training path run,
slowly but for real, through the same tests that run on a GPU; where a GPU is present the tests
run on it. Set NUMBA_ENABLE_CUDASIM yourself to override either way.
"""

import os
import sys

from aecore.devices import real_gpu_present

# Unit tests use tiny shapes, where BLAS threads only add overhead, and spin-waiting OpenBLAS
# pools collapse when several test processes share two cores. Benchmarks (pytest bench ...)
# keep every core. Must be set before numpy / scipy load OpenBLAS.
if not any("bench" in a for a in sys.argv[1:]):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

if "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0" if real_gpu_present() else "1"

if os.environ["NUMBA_ENABLE_CUDASIM"] not in ("", "0"):
    # The simulator runs each CUDA thread as a Python thread and its block manager polls them
    # while holding the GIL; a 1 ms switch interval (default 5 ms) made a 64x64-tile kernel
    # launch 2.4x faster here (8.3 s -> 3.6 s).
    sys.setswitchinterval(1e-3)

    def _lock_simulator_shared_arrays():
        """numba-cuda's simulator (0.30) makes a block's ``cuda.shared.array`` on first use with
        an unlocked get-then-set on a dict: two of the block's threads that both find it missing
        each make one, and the first loser computes on an array no other thread writes. Seen
        as rare wrong tiles (tests/test_cuda_activation_loss.py, tests/test_cuda_golden.py)
        under load. The same logic under a lock; the caller is found as the simulator finds
        it (file and line of the ``cuda.shared.array`` call)."""
        import threading
        import traceback

        import numpy as np
        from numba.core import types
        from numba.cuda.simulator import kernelapi
        from numba.np import numpy_support

        cls = kernelapi.FakeCUDAShared
        unlocked = cls.array
        lock = threading.Lock()

        def array(self, shape, dtype, alignment=None):
            if alignment is not None or shape == 0:  # errors / dynamic memory: no dict
                return unlocked(self, shape, dtype, alignment)
            if isinstance(dtype, types.Type):
                dtype = numpy_support.as_dtype(dtype)
            caller = tuple(traceback.extract_stack(sys._getframe(1), limit=1)[0])[0:2]
            with lock:
                res = self._allocations.get(caller)
                if res is None:
                    res = self._allocations[caller] = np.empty(shape, dtype)
            return res

        cls.array = array

    _lock_simulator_shared_arrays()
