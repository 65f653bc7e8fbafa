"""Functions compiled once as C functions, and the intrinsics that call them by address.

The own step's half function (``own_step.run_half``) is compiled once for every (activation,
loss) pair. What it calls directly is linked into each pair's module, whose machine code is
then generated again for every pair (7 s a pair against 3-4 s, bench/RESULTS.md, session 17).
So the GEMM (``nn_rows_address``, ``nn_at``) and the optimizer are compiled once as C functions
(``c_function``: numba's ``cfunc``, cached on disk) and called through their addresses
(``call_at``: the codegen of an intrinsic that calls an address).
"""

from __future__ import annotations

from llvmlite import ir
from numba import cfunc, types
from numba.extending import intrinsic

from .cpu_gemm import nn_rows

I64, F32 = types.int64, types.float32
_c_functions: dict = {}


def c_function(py_func, sig) -> int:
    """Address of ``py_func`` compiled once as a C function of signature ``sig``."""
    if py_func not in _c_functions:
        _c_functions[py_func] = cfunc(sig, nopython=True, cache=True)(py_func)
    return _c_functions[py_func].address


def call_at(sig):
    """(signature, codegen) for an intrinsic (address, *args): call the C function of
    signature ``sig`` at ``address``, the arguments converted to ``sig``'s types."""
    def codegen(context, builder, signature, values):
        fnty = ir.FunctionType(ir.VoidType(), [context.get_value_type(t) for t in sig.args])
        builder.call(builder.inttoptr(values[0], fnty.as_pointer()), values[1:])
        return context.get_dummy_value()

    return types.void(I64, *sig.args), codegen


def _nn_rows(a, a_is, a_ks, b, b_ks, b_ns, c, ldc, r0, r1, n, k, alpha, beta):
    """``cpu_gemm.nn_rows`` as a C function."""
    nn_rows(a, a_is, a_ks, b, b_ks, b_ns, c, ldc, r0, r1, n, k, alpha, beta)


_NN_ROWS_SIG = types.void(*[I64] * 12, F32, F32)


def nn_rows_address() -> int:
    """Address of ``cpu_gemm.nn_rows`` compiled once as a C function, for ``nn_at``."""
    return c_function(_nn_rows, _NN_ROWS_SIG)


@intrinsic
def nn_at(typingctx, fn, a, a_is, a_ks, b, b_ks, b_ns, c, ldc, r0, r1, n, k, alpha, beta):
    """``nn_rows(a, ..., beta)`` through the C function at address ``fn``
    (``nn_rows_address``)."""
    return call_at(_NN_ROWS_SIG)
