"""Flush-to-zero for the CPU training loop: subnormal float32 results become 0 and subnormal
inputs are read as 0 (x86 MXCSR bits FTZ | DAZ), as the CUDA kernels do with ``-ftz``.

Why: once the autoencoder has learned, its output logits on the always-black border pixels go to
about -40, so the MSE gradient there is ~1e-35 and its products inside the backward sgemms are
subnormal; x86 handles subnormal operands in microcode, tens of times slower. PyTorch offers
the same switch (``torch.set_flush_denormal``). ``_train_steps`` sets the bits on entry and puts
the caller's MXCSR back on exit, so nothing outside the training loop sees the change. The
bits are per thread: BLAS worker threads (when OpenBLAS runs multithreaded) keep their own.
On other architectures these are no-ops.
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
FTZ_DAZ = 0x8040  # MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero)


def _mxcsr_call(builder, name, ptr):
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [builder.bitcast(ptr, ir.IntType(8).as_pointer())])


@intrinsic
def _get_mxcsr(typingctx):
    def codegen(context, builder, signature, args):
        ptr = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", ptr)
        return builder.load(ptr)

    return types.uint32(), codegen


@intrinsic
def _set_mxcsr(typingctx, value):
    def codegen(context, builder, signature, args):
        ptr = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(args[0], ptr)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", ptr)
        return context.get_dummy_value()

    return types.void(types.uint32), codegen


if X86:

    @njit(cache=True, nogil=True)
    def flush_denormals_on():
        """Set FTZ | DAZ for this thread; returns the previous MXCSR for ``restore``."""
        old = _get_mxcsr()
        _set_mxcsr(old | np.uint32(FTZ_DAZ))
        return old

    @njit(cache=True, nogil=True)
    def restore(old):
        _set_mxcsr(old)

else:

    @njit(cache=True, nogil=True)
    def flush_denormals_on():
        return np.uint32(0)

    @njit(cache=True, nogil=True)
    def restore(old):
        pass
