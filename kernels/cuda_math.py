"""What every CUDA kernel and epilogue device function is declared with: the compile options,
the ``device`` decorator, and the float32 Sigmoid.

(Split out of ``kernels.cuda``, whose ``config`` and ``fused_linear_sigmoid`` re-export these
names, as ``cpu_math`` is for the @njit face: the activation and loss faces need them, and
``kernels.cuda`` builds its default kernels from those faces when it is imported, so they
must import without importing ``kernels.cuda``.)

fastmath: numba-cuda 0.30 maps any fastmath request to NVVM's ``-ftz=1 -fma=1 -prec-div=0
-prec-sqrt=0`` plus the fast float32 intrinsics (``__expf``, ``__fdividef``); it puts no
``nnan``/``ninf`` flags on the LLVM instructions (checked on the LLVM IR of these kernels), so a
NaN or inf in the data still reaches the loss, which is how divergence is detected.
"""

from __future__ import annotations

import math

from numba import cuda, float32
from numba.cuda.core import config as _config

FASTMATH = {"contract", "arcp", "afn"}
SIMULATOR = bool(_config.ENABLE_CUDASIM)

# forceinline: device functions are inlined into each kernel, so the register tiles they touch
# stay in registers (the PTX test checks for no local-memory depot). Under the simulator they are
# plain Python functions: its device-function wrapper swaps module globals under a lock on every
# call, which made a call per loaded element the simulator's main cost.
# The simulator swaps ``cuda`` for its fake module only in the launched kernel's own module, so
# device functions defined elsewhere (gemm.py, the generated main loops) use ``dcuda``: there,
# a view of the running kernel's fake module.
if SIMULATOR:
    from numba.cuda.simulator.kernel import _get_kernel_context

    def device(fn):
        return fn

    class _RunningKernelCuda:
        def __getattr__(self, name):
            return getattr(_get_kernel_context(), name)

    dcuda = _RunningKernelCuda()
else:
    device = cuda.jit(device=True, forceinline=True, fastmath=FASTMATH)
    dcuda = cuda


@device
def sigmoid(z):
    """Safe logistic in float32: exp is only taken of -|z|; NaN stays NaN."""
    e = math.exp(-abs(z))
    if z >= float32(0.0):
        return float32(1.0) / (float32(1.0) + e)
    return e / (float32(1.0) + e)


@device
def sigmoid_and_slope(z):
    """(y, y (1 - y)) for y = sigmoid(z), accurate in float32: with e = exp(-|z|) and
    r = 1 / (1 + e), y is r or e r and y (1 - y) = e r^2 (1 - y from a float32 y is 0 for
    z > ~17, where the true slope is still ~e). The CPU kernel computes the same."""
    e = math.exp(-abs(z))
    r = float32(1.0) / (float32(1.0) + e)
    er = e * r
    if z >= float32(0.0):
        return r, er * r
    return er, er * r
