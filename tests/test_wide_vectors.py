"""kernels.cpu_math.wide_vectors: the epilogue kernels ask LLVM for 512-bit vectors, and that
changes no element's bits, only the order of a fast-math sum across lanes."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import njit

from aecore.kernels import cpu as K
from aecore.kernels.cpu_output import sigmoid_loss_row_
from aecore.kernels.cpu_math import _FAST, _WIDE, _sigmoid32_and_slope, wide_vectors

AVX512 = bool(llvm.get_host_cpu_features().get("avx512f"))


_UNCACHED = {**_FAST, "cache": False}  # numba cannot inspect code loaded from its cache


@njit(inline="always", **_UNCACHED)  # its loops become the caller's own
def _sigmoid_rows(Z, Y):
    total = np.float32(0.0)
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            y = _sigmoid32_and_slope(Z[i, j])[0]
            Y[i, j] = y
            total += y
    return total


@njit(**_UNCACHED)
def narrow(Z, Y):
    return _sigmoid_rows(Z, Y)


@njit(**_UNCACHED)
def wide(Z, Y):
    wide_vectors()
    return _sigmoid_rows(Z, Y)


def _asm(fn):
    return "\n".join(fn.inspect_asm().values())


@pytest.mark.parametrize("name,args", [
    ("bias_sigmoid_", lambda Z, b, T: (Z, b)),
    ("bias_sigmoid_mse_", lambda Z, b, T: (Z, b, T, 0.1, np.zeros((0, 37), np.float32),
                                           np.zeros(37))),
    ("bias_sigmoid_loss", lambda Z, b, T: (Z, b, T)),
    ("bias_leaky_relu_", lambda Z, b, T: (Z, b, np.float32(0.01))),
    ("leaky_relu_grad_", lambda Z, b, T: (Z, Z, np.float32(0.01), np.zeros(37))),
    ("gather_rows", lambda Z, b, T: (T, np.arange(2), Z[:2])),
    ("to_float", lambda Z, b, T: (T, Z)),
    ("column_sums", lambda Z, b, T: (Z, np.zeros(37, np.float32), 1.0, 0.0)),
])
def test_the_epilogues_carry_the_attribute(name, args):
    """Each epilogue kernel's LLVM IR, compiled afresh, carries the attribute (the loops they
    call with a loss or an activation are compiled within them)."""
    Z, b, T = np.zeros((3, 37), np.float32), np.zeros(37, np.float32), np.zeros((3, 37), np.uint8)
    fn = njit(**_UNCACHED)(getattr(K, name).py_func)
    fn(*args(Z, b, T))
    assert _WIDE in "\n".join(fn.inspect_llvm().values()), name


def test_the_sigmoid_row_kernel_carries_the_attribute():
    """The one-row kernel that both the serial and the paired output epilogue call (its loss
    number is a literal: called from @njit code)."""
    fresh = njit(**_UNCACHED)(sigmoid_loss_row_.py_func)

    @njit(**_UNCACHED)
    def call(z, b, t, colsum):
        return fresh(z, b, t, np.float32(0.1), b[:0], colsum, 0)

    call(np.zeros(37, np.float32), np.zeros(37, np.float32), np.zeros(37, np.uint8), np.zeros(37))
    assert _WIDE in "\n".join(fresh.inspect_llvm().values())


def test_lanes_keep_their_bits_and_only_the_sum_moves():
    rng = np.random.default_rng()
    Z = (rng.standard_normal((5, 1237)) * 6).astype(np.float32)  # awkward: no multiple of 16
    Yw, Yn = np.empty_like(Z), np.empty_like(Z)
    sw, sn = wide(Z, Yw), narrow(Z, Yn)
    np.testing.assert_array_equal(Yw, Yn)
    assert sw == pytest.approx(sn, rel=1e-5)
    assert sw == pytest.approx(float(np.sum(Yn, dtype=np.float64)), rel=1e-5)
    assert _WIDE in "\n".join(wide.inspect_llvm().values())
    assert _WIDE not in "\n".join(narrow.inspect_llvm().values())


@pytest.mark.skipif(not AVX512, reason="this CPU has no AVX-512: the widest vectors are 256-bit")
def test_wide_code_uses_512_bit_registers():
    Z = np.zeros((2, 64), np.float32)
    wide(Z, np.empty_like(Z))
    assert "zmm" in _asm(wide)
