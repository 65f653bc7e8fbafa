"""aecore's own float32 GEMM for the CPU step: register tiles written as LLVM vector IR.

Why: at the study's small shapes (a batch of 64 against 64-512 hidden units) OpenBLAS's sgemm
runs at a third to a half of this CPU's FMA peak: it packs both operands on every call and splits
a 64-row product between two threads at a cost comparable to the product
(bench/RESULTS.md, session 13). These kernels read the operands where they lie, with no packing.

Two tile kernels, each an unrolled loop of ``llvm.fma.v16f32`` (LLVM keeps the accumulators in
registers: 16 zmm with AVX-512; with AVX2 each vector is two ymm):

- ``nn`` (C += A B, B's rows contiguous): ``MR_NN`` rows x ``NV_NN`` 16-float vectors of C.
  A k-step loads NV vectors of B's row k and broadcasts MR elements of A's column k, then
  MR x NV FMAs. A's element (i, k) is at ``a + i * a_is + k * a_ks``, so the same kernel does
  A B (a_is = lda, a_ks = 1) and A^T B (a_is = 1, a_ks = lda).
- ``nt`` (C += A B^T, both operands' rows contiguous along k): ``MR_NT`` x ``NR_NT`` dot
  products, each a 16-lane partial sum along k, added across lanes at the end.

Each k-step is straight-line FMAs and loads (tests/test_cpu_gemm.py reads the machine code).
Tiles at C's lower edge compute their missing rows from a copy of the last row and store only
the rows that exist; a column remainder of under 16 (nn) or a k remainder under 16 (nt) is a
plain loop after the tiles. Every C element is ``alpha * (sum over k) + beta * C`` with beta = 0
never reading C, and the sum order depends on the shape only, never on threads: run to run the
same bits.

The three faces: ``kernels.reference.gemm`` is the float64 definition, these the @njit face;
the CUDA path has its own tiles (``kernels/cuda_*``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16  # float32 lanes of one vector (a zmm register)
MR_NN, NV_NN = 8, 2  # nn tile: 8 rows x 32 columns, 16 accumulators
MR_NT, NR_NT = 4, 4  # nt tile: 4 x 4 dot products, 16 accumulators

_I64 = types.int64
_F32 = types.float32


def _ir_helpers(builder):
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vt = ir.VectorType(f32, LANES)
    zeros = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)

    def splat(x):
        v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, i32(0))
        return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), zeros)

    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt] * 3),
                                         "llvm.fma.v16f32")
    return f32, i64, vt, splat, fma


def _clamped_row(builder, i64, base, i, valid, stride):
    """base + min(i, valid - 1) * stride (element offsets): a missing row reads the last one."""
    row = builder.select(builder.icmp_signed("<", i64(i), valid), i64(i),
                         builder.sub(valid, i64(1)))
    return builder.gep(base, [builder.mul(row, stride)])


def _store_tile(builder, i64, vt, splat, fma, pc, ldc, rows, cols, acc, alpha, beta, valid):
    """C[i, v] <- alpha * acc[i][v] + beta * C[i, v] for the rows i < valid; C not read when
    beta == 0. ``acc[i][v]`` a float32 vector (cols == LANES per v) or scalar (cols == 1)."""
    is_vec = cols == LANES
    ty = vt if is_vec else ir.FloatType()
    va, vb = (splat(alpha), splat(beta)) if is_vec else (alpha, beta)
    mul_add = (lambda x, y, z: builder.call(fma, [x, y, z])) if is_vec else \
        (lambda x, y, z: builder.fadd(builder.fmul(x, y), z))
    beta_zero = builder.fcmp_ordered("==", beta, ir.Constant(ir.FloatType(), 0.0))
    for i in range(rows):
        with cgutils.if_likely(builder, builder.icmp_signed("<", i64(i), valid)):
            row = builder.gep(pc, [builder.mul(ldc, i64(i))])
            for v in range(len(acc[i])):
                q = builder.gep(row, [i64(v * cols)])
                if is_vec:
                    q = builder.bitcast(q, vt.as_pointer())
                a = builder.fmul(va, acc[i][v])
                with builder.if_else(beta_zero) as (then, otherwise):
                    with then:
                        builder.store(a, q, align=4)
                    with otherwise:
                        old = builder.load(q, align=4)
                        builder.store(mul_add(vb, old, a), q, align=4)


def _nn_tile(MR, NV):
    """Intrinsic: C[:MR, :16 NV] <- alpha A B + beta C over k < kc (see the module doc)."""
    @intrinsic
    def nn_tile(typingctx, a, a_is, a_ks, b, ldb, c, ldc, kc, alpha, beta, rows):
        sig = types.void(_I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _F32, _F32, _I64)

        def codegen(context, builder, sig, args):
            a, a_is, a_ks, b, ldb, c, ldc, kc, alpha, beta, rows = args
            f32, i64, vt, splat, fma = _ir_helpers(builder)
            fp = f32.as_pointer()
            pa, pb, pc = (builder.inttoptr(x, fp) for x in (a, b, c))
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vt, [0.0] * LANES))
                    for _ in range(NV)] for _ in range(MR)]
            arow = [_clamped_row(builder, i64, pa, i, rows, a_is) for i in range(MR)]
            with cgutils.for_range(builder, kc) as loop:
                k = loop.index
                bk = builder.gep(pb, [builder.mul(k, ldb)])
                ak = builder.mul(k, a_ks)
                bv = [builder.load(builder.bitcast(builder.gep(bk, [i64(LANES * v)]),
                                                   vt.as_pointer()), align=4)
                      for v in range(NV)]
                for i in range(MR):
                    av = splat(builder.load(builder.gep(arow[i], [ak])))
                    for v in range(NV):
                        p = acc[i][v]
                        builder.store(builder.call(fma, [av, bv[v], builder.load(p)]), p)
            sums = [[builder.load(p) for p in row] for row in acc]
            _store_tile(builder, i64, vt, splat, fma, pc, ldc, MR, LANES, sums, alpha, beta,
                        rows)
            return context.get_dummy_value()

        return sig, codegen

    return nn_tile


def _nt_tile(MR, NR):
    """Intrinsic: C[:MR, :NR] <- alpha A B^T + beta C over the first 16 * k16 of k; A's row i
    at a + i * lda, B's row j at b + j * ldb (both contiguous along k)."""
    @intrinsic
    def nt_tile(typingctx, a, lda, b, ldb, c, ldc, k16, alpha, beta, rows, cols):
        sig = types.void(_I64, _I64, _I64, _I64, _I64, _I64, _I64, _F32, _F32, _I64, _I64)

        def codegen(context, builder, sig, args):
            a, lda, b, ldb, c, ldc, k16, alpha, beta, rows, cols = args
            f32, i64, vt, splat, fma = _ir_helpers(builder)
            fp = f32.as_pointer()
            pa, pb, pc = (builder.inttoptr(x, fp) for x in (a, b, c))
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vt, [0.0] * LANES))
                    for _ in range(NR)] for _ in range(MR)]
            arow = [_clamped_row(builder, i64, pa, i, rows, lda) for i in range(MR)]
            brow = [_clamped_row(builder, i64, pb, j, cols, ldb) for j in range(NR)]
            with cgutils.for_range(builder, k16) as loop:
                k = builder.mul(loop.index, i64(LANES))

                def vload(row):
                    return builder.load(builder.bitcast(builder.gep(row, [k]),
                                                        vt.as_pointer()), align=4)

                bv = [vload(r) for r in brow]
                for i in range(MR):
                    av = vload(arow[i])
                    for j in range(NR):
                        p = acc[i][j]
                        builder.store(builder.call(fma, [av, bv[j], builder.load(p)]), p)
            # lane sums in a fixed tree order (no reassociation flags: the same bits anywhere)
            sums = []
            for i in range(MR):
                row = []
                for j in range(NR):
                    v = builder.load(acc[i][j])
                    width = LANES
                    while width > 1:
                        width //= 2
                        lo = builder.shuffle_vector(v, v, ir.Constant(
                            ir.VectorType(ir.IntType(32), width), list(range(width))))
                        hi = builder.shuffle_vector(v, v, ir.Constant(
                            ir.VectorType(ir.IntType(32), width), list(range(width, 2 * width))))
                        v = builder.fadd(lo, hi)
                    row.append(builder.extract_element(v, ir.IntType(32)(0)))
                sums.append(row)
            # C[i, j] for the columns j < cols: one scalar per (i, j)
            _store_scalar_tile(builder, i64, pc, ldc, sums, alpha, beta, rows, cols)
            return context.get_dummy_value()

        return sig, codegen

    return nt_tile


def _store_scalar_tile(builder, i64, pc, ldc, sums, alpha, beta, rows, cols):
    beta_zero = builder.fcmp_ordered("==", beta, ir.Constant(ir.FloatType(), 0.0))
    for i, row in enumerate(sums):
        with cgutils.if_likely(builder, builder.icmp_signed("<", i64(i), rows)):
            base = builder.gep(pc, [builder.mul(ldc, i64(i))])
            for j, s in enumerate(row):
                with cgutils.if_likely(builder, builder.icmp_signed("<", i64(j), cols)):
                    q = builder.gep(base, [i64(j)])
                    a = builder.fmul(alpha, s)
                    with builder.if_else(beta_zero) as (then, otherwise):
                        with then:
                            builder.store(a, q, align=4)
                        with otherwise:
                            builder.store(builder.fadd(builder.fmul(beta, builder.load(q)), a), q,
                                          align=4)


_nn_full = _nn_tile(MR_NN, NV_NN)
_nn_one = _nn_tile(MR_NN, 1)
_nt = _nt_tile(MR_NT, NR_NT)


@njit(cache=True, nogil=True)
def nn_rows(a, a_is, a_ks, b, ldb, c, ldc, r0, r1, n, k, alpha, beta):
    """Rows [r0, r1) of C (m x n, row stride ldc) <- alpha op(A) B + beta C, pointers as int64
    addresses of float32 data: op(A)'s element (i, k) at a + 4 (i a_is + k a_ks), B (k x n)
    rows at b + 4 k ldb. Tiles of MR_NN rows x 32 columns, then 16, then a column loop."""
    alpha = np.float32(alpha)
    beta = np.float32(beta)
    n32 = n // 32 * 32
    n16 = n // 16 * 16
    for i in range(r0, r1, MR_NN):
        rows = min(MR_NN, r1 - i)
        ai = a + 4 * i * a_is
        ci = c + 4 * i * ldc
        for j in range(0, n32, 32):
            _nn_full(ai, a_is, a_ks, b + 4 * j, ldb, ci + 4 * j, ldc, k, alpha, beta, rows)
        if n16 > n32:
            _nn_one(ai, a_is, a_ks, b + 4 * n32, ldb, ci + 4 * n32, ldc, k, alpha, beta, rows)
    if n16 < n:
        _nn_columns(a, a_is, a_ks, b, ldb, c, ldc, r0, r1, n16, n, k, alpha, beta)


@njit(cache=True, nogil=True)
def _nn_columns(a, a_is, a_ks, b, ldb, c, ldc, r0, r1, j0, j1, k, alpha, beta):
    """The last n % 16 columns of nn_rows, element by element (float32 sums in k order)."""
    A = _view(a)
    B = _view(b)
    C = _view(c)
    for i in range(r0, r1):
        for j in range(j0, j1):
            s = np.float32(0.0)
            for kk in range(k):
                s += A[i * a_is + kk * a_ks] * B[kk * ldb + j]
            C[i * ldc + j] = alpha * s if beta == 0 else beta * C[i * ldc + j] + alpha * s


@njit(cache=True, nogil=True)
def nt_rows(a, lda, b, ldb, c, ldc, r0, r1, n, k, alpha, beta):
    """Rows [r0, r1) of C <- alpha A B^T + beta C: A (m x k) rows at a + 4 i lda, B (n x k)
    rows at b + 4 j ldb, C rows at c + 4 i ldc. Tiles of MR_NT x NR_NT over the first
    16 (k // 16) of k, then the remaining k % 16 terms added per element."""
    alpha = np.float32(alpha)
    beta = np.float32(beta)
    k16 = k // 16
    for i in range(r0, r1, MR_NT):
        rows = min(MR_NT, r1 - i)
        for j in range(0, n, NR_NT):
            _nt(a + 4 * i * lda, lda, b + 4 * j * ldb, ldb, c + 4 * (i * ldc + j), ldc, k16,
                alpha, beta, rows, min(NR_NT, n - j))
    if k16 * 16 < k:
        A = _view(a)
        B = _view(b)
        C = _view(c)
        for i in range(r0, r1):
            for j in range(n):
                s = np.float32(0.0)
                for kk in range(k16 * 16, k):
                    s += A[i * lda + kk] * B[j * ldb + kk]
                C[i * ldc + j] += alpha * s  # the tiles applied beta already


@intrinsic
def _ptr(typingctx, addr):
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.FloatType().as_pointer())

    return types.CPointer(types.float32)(types.int64), codegen


@njit(inline="always")
def _view(addr):
    """The float32 memory at ``addr`` as a 1-D array long enough for any index used."""
    return carray(_ptr(addr), (1 << 40,))


@njit(cache=True, nogil=True)
def gemm_rows(trans_a, trans_b, alpha, A, B, beta, C, r0, r1):
    """Rows [r0, r1) of C <- alpha op(A) op(B) + beta C (float32, rows contiguous), as
    ``kernels.blas.gemm`` without BLAS; op(X) = X.T when trans_x. op(A) op(B^T)... Of the four
    cases A^T B^T is not provided (no step needs it)."""
    lda, ldb, ldc = A.strides[0] // 4, B.strides[0] // 4, C.strides[0] // 4
    n = C.shape[1]
    if trans_b:
        if trans_a:
            raise ValueError("gemm_rows: A^T B^T is not implemented")
        nt_rows(A.ctypes.data, lda, B.ctypes.data, ldb, C.ctypes.data, ldc, r0, r1, n,
                A.shape[1], alpha, beta)
    elif trans_a:
        nn_rows(A.ctypes.data, 1, lda, B.ctypes.data, ldb, C.ctypes.data, ldc, r0, r1, n,
                A.shape[0], alpha, beta)
    else:
        nn_rows(A.ctypes.data, lda, 1, B.ctypes.data, ldb, C.ctypes.data, ldc, r0, r1, n,
                A.shape[1], alpha, beta)


@njit(cache=True, nogil=True)
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """C <- alpha op(A) op(B) + beta C on the calling thread (see gemm_rows)."""
    if C.shape[0] > 0 and C.shape[1] > 0:
        gemm_rows(trans_a, trans_b, alpha, A, B, beta, C, 0, C.shape[0])
