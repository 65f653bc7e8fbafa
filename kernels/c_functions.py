"""numba functions compiled once as C functions, and called from other numba code by address.

Why: numba links a called ``@njit`` function's code into its caller's module and generates its
machine code again there. A caller compiled once per (activation, loss) pair, as
``own_step.run_half`` is, so regenerated the GEMM and the optimizer for every pair (6-7 s a
pair, against 3-4 s through addresses; bench/RESULTS.md, session 17). A C function (numba's
``cfunc``, cached on disk) is compiled once, and its callers hold only an indirect call.
"""

from __future__ import annotations

from llvmlite import ir
from numba import cfunc

_compiled: dict = {}


def c_function(py_func, sig) -> int:
    """Address of ``py_func`` (a module-level function, so numba can cache it on disk)
    compiled once in this process as a C function of signature ``sig`` (void return)."""
    if py_func not in _compiled:
        _compiled[py_func] = cfunc(sig, nopython=True, cache=True)(py_func)
    return _compiled[py_func].address


def compiled(py_func):
    """The numba ``CFunc`` ``c_function`` made of ``py_func`` (for its cache statistics)."""
    return _compiled[py_func]


def call_at(sig):
    """(signature, codegen) for an ``@intrinsic`` (address, *args) that calls the C function
    of signature ``sig`` at ``address``, its arguments converted to ``sig``'s types."""
    from numba import types

    def codegen(context, builder, signature, values):
        fnty = ir.FunctionType(ir.VoidType(), [context.get_value_type(t) for t in sig.args])
        builder.call(builder.inttoptr(values[0], fnty.as_pointer()), values[1:])
        return context.get_dummy_value()

    return types.void(types.int64, *sig.args), codegen
