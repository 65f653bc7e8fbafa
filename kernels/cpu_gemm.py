"""aecore's own float32 GEMM for the CPU step: a register tile written as LLVM vector IR.

Why: at the study's small shapes (a batch of 64 against 64-512 hidden units) OpenBLAS's sgemm
ran at 65-100 GFLOP/s here, a third to a half of this CPU's FMA peak; split in two halves on
its own threads these kernels ran the same products at 130-160 (bench/RESULTS.md, session 13).

The tile (``_nn_tile``): ``MR_NN`` rows x ``NV_NN`` 16-float vectors of C, accumulated over k
in registers (8 x 3: 24 zmm with AVX-512; with AVX2 6 x 1, each vector two ymm: 12 ymm). A
k-step loads NV vectors of B's row k and broadcasts MR elements of op(A)'s column k: MR x NV
``llvm.fma.v16f32``, no index arithmetic (tests/test_cpu_gemm.py reads the machine code).
Before its k-loop the tile asks for C's lines (a prefetch for writing), so that C's loads and
stores at the end do not wait on L3 (the weights' update, whose C is the weights); in it, for a
line of A two tiles on (``A_AHEAD``).
op(A)'s element (i, k) is at ``a + i * a_is + k * a_ks``, so the one tile does A B (a_is = lda,
a_ks = 1) and A^T B (a_is = 1, a_ks = lda).

``nn_rows`` drives it as GotoBLAS does, without packing A: k in blocks of KC_NN; in a block
each strip of B (48 columns, the last ones 32 or 16; AVX2: 16) is copied to a contiguous
buffer that stays in L1 while every row tile of that width (8 x 3, 8 x 2, 8 x 1) runs over
it. A tile at C's lower edge computes its missing rows from a copy of the last row and stores
only the rows that exist; columns past the last multiple of 16 are a plain loop. Every C
element is ``alpha * (its k-blocks' float32 sums, in order) + beta * C`` (beta = 0 never reads
C): the bits depend on the shape alone, never on threads or timing. The definition is
``kernels.reference.gemm`` (float64); tests/test_cpu_gemm.py holds these to it.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .blas_pair import _f32p
from .cpu import declare_prefetch


def compiles_for_avx512() -> bool:
    """Whether numba compiles for AVX-512: NUMBA_CPU_FEATURES where set, else this CPU's."""
    from numba.core import config

    if config.CPU_FEATURES:
        return "+avx512f" in config.CPU_FEATURES.split(",")
    return bool(llvm.get_host_cpu_features().get("avx512f"))


LANES = 16  # float32 lanes of one IR vector (a zmm register; two ymm with AVX2)
# The nn tile: MR_NN rows x NV_NN vectors. AVX-512: 8 x 48 columns in 24 of its 32 zmm
# registers (on L1-resident data, one thread of a 247 GFLOP/s core: 222 GFLOP/s, against 210
# for 8 x 32 in 16 zmm; bench/RESULTS.md, session 18). AVX2 has 16 ymm registers: 6 x 16 columns
# in 12 (8 x 32 would need 32; it spilled to the stack in every k-step, and the own step took
# 1.5-2x the default's time). Every C element is the same float32 sum in k order whatever the
# tile, so the bits do not depend on it.
MR_NN, NV_NN = (8, 3) if compiles_for_avx512() else (6, 1)
STRIP = LANES * NV_NN  # columns of B packed at a time

_I64 = types.int64
_F32 = types.float32


def vector_ir(builder, lanes=LANES):
    """(f32, i64, vt, splat, fma) for emitting float32 vector IR with ``builder``: the types,
    a broadcast of a float to all ``lanes`` lanes, and ``llvm.fma`` on the vector type."""
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vt = ir.VectorType(f32, lanes)
    zeros = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

    def splat(x):
        v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, i32(0))
        return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), zeros)

    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt] * 3),
                                         f"llvm.fma.v{lanes}f32")
    return f32, i64, vt, splat, fma


def _clamped_row(builder, i64, base, i, valid, stride):
    """base + min(i, valid - 1) * stride (element offsets): a missing row reads the last one."""
    row = builder.select(builder.icmp_signed("<", i64(i), valid), i64(i),
                         builder.sub(valid, i64(1)))
    return builder.gep(base, [builder.mul(row, stride)])


def _prefetch_tile(builder, i64, pc, ldc, MR, NV):
    """Hints to bring C's tile (MR rows of 16 NV floats, row stride ldc) into L1 for writing
    (``llvm.prefetch``: write, locality 3), issued before the k-loop so that its latency hides
    behind the FMAs. Without them a tile whose C is not in L2 stalls on its loads and stores at
    the end (bench/RESULTS.md, session 18). A hint never faults: rows past C's edge are fine."""
    fn, i8p, i32 = declare_prefetch(builder)
    for i in range(MR):
        row = builder.gep(pc, [builder.mul(ldc, i64(i))])
        for off in list(range(0, LANES * NV, LANES)) + [LANES * NV - 1]:  # every 64-byte line
            p = builder.bitcast(builder.gep(row, [i64(off)]), i8p)
            builder.call(fn, [p, i32(1), i32(3), i32(1)])


def _store_tile(builder, i64, vt, splat, fma, pc, ldc, acc, alpha, beta, valid):
    """C[i, 16 v:16 v + 16] <- alpha * acc[i][v] + beta * C[...] for the rows i < valid (acc: a
    float32 vector per row and vector); C not read when beta == 0."""
    va, vb = splat(alpha), splat(beta)
    beta_zero = builder.fcmp_ordered("==", beta, ir.Constant(ir.FloatType(), 0.0))
    for i, row_acc in enumerate(acc):
        with cgutils.if_likely(builder, builder.icmp_signed("<", i64(i), valid)):
            row = builder.gep(pc, [builder.mul(ldc, i64(i))])
            for v, sums in enumerate(row_acc):
                q = _vec(builder, vt, row, i64, LANES * v)
                a = builder.fmul(va, sums)
                with builder.if_else(beta_zero) as (then, otherwise):
                    with then:
                        builder.store(a, q, align=4)
                    with otherwise:
                        old = builder.load(q, align=4)
                        builder.store(builder.call(fma, [vb, old, a]), q, align=4)


# The tile's k-step also asks for op(A)'s line A_AHEAD rows below its own (one prefetch): in
# A^T B (the weights' updates, a_is = 1) the 16 elements of that line are the next tile but one's
# at the same k, and its k-steps walk A^T's rows 3136 bytes apart, a stride the hardware's
# prefetchers do not follow; where another core wrote them (split by the batch rows, the rows of
# dZ, dH and H the other half wrote) every line was a wait (bench/RESULTS.md, session 19).
A_AHEAD = 16


def _nn_tile(MR, NV):
    """Intrinsic: C[:MR, :16 NV] <- alpha A B + beta C over k < kc (see the module doc)."""
    @intrinsic
    def nn_tile(typingctx, a, a_is, a_ks, b, ldb, c, ldc, kc, alpha, beta, rows):
        sig = types.void(_I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _F32, _F32, _I64)

        def codegen(context, builder, sig, args):
            a, a_is, a_ks, b, ldb, c, ldc, kc, alpha, beta, rows = args
            f32, i64, vt, splat, fma = vector_ir(builder)
            fp = f32.as_pointer()
            pa, pb, pc = (builder.inttoptr(x, fp) for x in (a, b, c))
            _prefetch_tile(builder, i64, pc, ldc, MR, NV)
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vt, [0.0] * LANES))
                    for _ in range(NV)] for _ in range(MR)]
            arow = [_clamped_row(builder, i64, pa, i, rows, a_is) for i in range(MR)]
            # op(A)'s element (i + 16, k), asked for at every k-step (A_AHEAD)
            ahead = builder.gep(pa, [builder.mul(a_is, i64(A_AHEAD))])
            pf, i8p, i32 = declare_prefetch(builder)
            with cgutils.for_range(builder, kc) as loop:
                k = loop.index
                bk = builder.gep(pb, [builder.mul(k, ldb)])
                ak = builder.mul(k, a_ks)
                builder.call(pf, [builder.bitcast(builder.gep(ahead, [ak]), i8p), i32(0), i32(3),
                                  i32(1)])
                bv = [builder.load(_vec(builder, vt, bk, i64, LANES * v), align=4)
                      for v in range(NV)]
                for i in range(MR):
                    av = splat(builder.load(builder.gep(arow[i], [ak])))
                    for v in range(NV):
                        p = acc[i][v]
                        builder.store(builder.call(fma, [av, bv[v], builder.load(p)]), p)
            sums = [[builder.load(p) for p in row] for row in acc]
            _store_tile(builder, i64, vt, splat, fma, pc, ldc, sums, alpha, beta, rows)
            return context.get_dummy_value()

        return sig, codegen

    return nn_tile


def _copy_intrinsic(emit):
    """An intrinsic (dst, src, x, y), all int64 (dst and src addresses of float32 data) whose
    body ``emit(builder, i64, vt, pd, ps, x, y)`` writes, pd / ps the float pointers."""
    @intrinsic
    def copy(typingctx, dst, src, x, y):
        sig = types.void(_I64, _I64, _I64, _I64)

        def codegen(context, builder, sig, args):
            f32, i64, vt, _, _ = vector_ir(builder)
            pd, ps = (builder.inttoptr(a, f32.as_pointer()) for a in args[:2])
            emit(builder, i64, vt, pd, ps, args[2], args[3])
            return context.get_dummy_value()

        return sig, codegen

    return copy


def _vec(builder, vt, base, i64, offset):
    """The <16 x float> pointer at element ``offset`` (an i64 value or int) of ``base``."""
    off = i64(offset) if isinstance(offset, int) else offset
    return builder.bitcast(builder.gep(base, [off]), vt.as_pointer())


def _pack_strip(NV):
    """Intrinsic (dst, src, ldb, kc): copy rows [0, kc) of a strip of 16 NV floats, row stride
    ldb, from src to dst packed (row kk at dst + 4 * 16 NV kk): vector loads and stores."""
    def emit(builder, i64, vt, pd, ps, ldb, kc):
        with cgutils.for_range(builder, kc) as loop:
            s_row = builder.gep(ps, [builder.mul(loop.index, ldb)])
            d_row = builder.gep(pd, [builder.mul(loop.index, i64(LANES * NV))])
            for v in range(NV):
                x = builder.load(_vec(builder, vt, s_row, i64, LANES * v), align=4)
                builder.store(x, _vec(builder, vt, d_row, i64, LANES * v), align=4)

    return _copy_intrinsic(emit)


def _transpose16():
    """Intrinsic (dst, src, ldd, lds): dst[j, i] <- src[i, j] for a 16 x 16 block (row strides
    ldd, lds in floats): 16 vector loads, 4 rounds of 16 two-vector shuffles (a perfect
    shuffle: interleaving rows p and p + 8, four times, transposes), 16 vector stores."""
    i32v = ir.VectorType(ir.IntType(32), LANES)
    lo = ir.Constant(i32v, [x // 2 + (LANES if x % 2 else 0) for x in range(LANES)])
    hi = ir.Constant(i32v, [LANES // 2 + x // 2 + (LANES if x % 2 else 0) for x in range(LANES)])

    def emit(builder, i64, vt, pd, ps, ldd, lds):
        rows = [builder.load(_vec(builder, vt, ps, i64, builder.mul(lds, i64(i))), align=4)
                for i in range(LANES)]
        for _ in range(4):
            pairs = [(rows[p], rows[p + LANES // 2]) for p in range(LANES // 2)]
            rows = [builder.shuffle_vector(a, b, m) for a, b in pairs for m in (lo, hi)]
        for j in range(LANES):
            builder.store(rows[j], _vec(builder, vt, pd, i64, builder.mul(ldd, i64(j))),
                          align=4)

    return _copy_intrinsic(emit)


_nn_full = _nn_tile(MR_NN, NV_NN)
_nn_two = _nn_tile(MR_NN, 2)
_nn_one = _nn_tile(MR_NN, 1)
_pack_three = _pack_strip(3)
_pack_two = _pack_strip(2)
_pack_one = _pack_strip(1)
_transpose = _transpose16()


# k-block of nn_rows: a packed 128 x 48 strip of B (24 KB) stays in L1 for its tiles, with
# room for the lines of A they read (the A^T B products of the weights' update read 128 lines a
# tile). The block, not the tile, decides the sums' order: it is the same on every CPU. With 256
# (a 32 KB strip of 32 columns) the own step took 4-5% longer at B=256 (h = 64 and 128), as long
# at h=512 B=64; 160 and 96 were slower than 128 (bench/RESULTS.md, session 18).
KC_NN = 128


@njit(cache=True, nogil=True)
def nn_rows(a, a_is, a_ks, b, b_ks, b_ns, c, ldc, r0, r1, n, k, alpha, beta):
    """Rows [r0, r1) of C (m x n, row stride ldc) <- alpha op(A) op(B) + beta C, pointers as
    int64 addresses of float32 data: op(A)'s element (i, k) at a + 4 (i a_is + k a_ks),
    op(B)'s (k, j) at b + 4 (k b_ks + j b_ns): b_ns = 1 for B, b_ks = 1 for B^T.

    Loops: k in blocks of at most KC_NN (as even as multiples of 16 allow); in a block, each
    strip of op(B)'s columns (``_strip_width``) is packed into a contiguous buffer (copied, or
    transposed in 16 x 16 register blocks from B^T's rows; a strided strip with a power-of-two
    row stride would also fight over a few L1 sets) and every tile of MR_NN rows runs over it;
    a column remainder under 16 is a plain loop. C takes the k-blocks' partial sums in order
    (beta on the first); with k = 0, C <- beta C. The own step's halves get k = 0 where a half
    of a narrow image's pixels is empty (under 32 pixels: half 0 takes a multiple of 32)."""
    alpha = np.float32(alpha)
    beta = np.float32(beta)
    if k <= 0:  # an empty sum: C <- beta C (BLAS's rule; beta = 0 never reads C)
        _nn_columns(a, a_is, a_ks, b, b_ks, b_ns, c, ldc, r0, r1, 0, n, 0, alpha, beta)
        return
    n16 = n // 16 * 16
    buf = _aligned_buffer(KC_NN * STRIP)
    pb = buf.ctypes.data
    blocks = (k + KC_NN - 1) // KC_NN
    step = min(KC_NN, ((k + blocks - 1) // blocks + 15) // 16 * 16)  # even blocks, 16s
    for k0 in range(0, k, step):
        kc = min(step, k - k0)
        bt = beta if k0 == 0 else np.float32(1.0)
        j = 0
        while j < n16:
            width = _strip_width(n16 - j)
            _pack(buf, b + 4 * (k0 * b_ks + j * b_ns), b_ks, b_ns, kc, width)
            for i in range(r0, r1, MR_NN):
                rows = min(MR_NN, r1 - i)
                ai = a + 4 * (i * a_is + k0 * a_ks)
                ci = c + 4 * (i * ldc + j)
                if width == STRIP:
                    _nn_full(ai, a_is, a_ks, pb, STRIP, ci, ldc, kc, alpha, bt, rows)
                elif width == 32:
                    _nn_two(ai, a_is, a_ks, pb, 32, ci, ldc, kc, alpha, bt, rows)
                else:
                    _nn_one(ai, a_is, a_ks, pb, 16, ci, ldc, kc, alpha, bt, rows)
            j += width
    if n16 < n:
        _nn_columns(a, a_is, a_ks, b, b_ks, b_ns, c, ldc, r0, r1, n16, n, k, alpha, beta)


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte line (NumPy gives
    16): the tiles' 16-float loads and stores of rows that start on a line (row lengths that
    are multiples of 16 floats) then never span two lines. The CPU engine's weights and
    buffers are these."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + 64, np.uint8)
    skip = (-raw.ctypes.data) % 64
    return raw[skip:skip + count * dtype.itemsize].view(dtype).reshape(shape)


@njit(cache=True, nogil=True, inline="always")
def _aligned_buffer(count):
    """An uninitialised float32 array of ``count`` elements that starts on a 64-byte line.
    numba's np.empty starts 32 bytes into one here, so every 16-float load of a packed strip
    (three a k-step) would span two lines: a split load, twice the cost of one."""
    raw = np.empty(count + 16, np.float32)
    skip = (-raw.ctypes.data) % 64 // 4
    return raw[skip:skip + count]


@njit(cache=True, nogil=True, inline="always")
def _strip_width(left):
    """Columns of B's next strip with ``left`` columns (a multiple of 16) still to do: 48, but
    the last 64 as two strips of 32 and the last 32 as one (no 16-column tile after a 48); 16
    for the last 16. AVX2: always 16."""
    if NV_NN == 1 or left == 16:
        return 16
    if left == 32 or left == 64:
        return 32
    return 48


@njit(cache=True, nogil=True, inline="always")
def _pack(buf, b, b_ks, b_ns, kc, width):
    """buf[kk * width + t] <- op(B)[kk, t] for kk < kc, t < width (16, 32 or 48), op(B)'s element
    (kk, t) at b + 4 (kk b_ks + t b_ns)."""
    pb = buf.ctypes.data
    if b_ns == 1:
        if width == 48:
            _pack_three(pb, b, b_ks, kc)
        elif width == 32:
            _pack_two(pb, b, b_ks, kc)
        else:
            _pack_one(pb, b, b_ks, kc)
        return
    k16 = kc // 16 * 16
    for kk in range(0, k16, 16):
        for v in range(0, width, 16):
            _transpose(pb + 4 * (kk * width + v), b + 4 * (v * b_ns + kk * b_ks), width, b_ns)
    B = _view(b)
    for kk in range(k16, kc):
        for t in range(width):
            buf[kk * width + t] = B[kk * b_ks + t * b_ns]


@njit(cache=True, nogil=True)
def _nn_columns(a, a_is, a_ks, b, b_ks, b_ns, c, ldc, r0, r1, j0, j1, k, alpha, beta):
    """The last n % 16 columns of nn_rows (and every column when k = 0), element by element
    (float32 sums in k order)."""
    A = _view(a)
    B = _view(b)
    C = _view(c)
    for i in range(r0, r1):
        for j in range(j0, j1):
            s = np.float32(0.0)
            for kk in range(k):
                s += A[i * a_is + kk * a_ks] * B[kk * b_ks + j * b_ns]
            C[i * ldc + j] = alpha * s if beta == 0 else beta * C[i * ldc + j] + alpha * s


@njit(inline="always")
def _view(addr):
    """The float32 memory at ``addr`` as a 1-D array long enough for any index used."""
    return carray(_f32p(addr), (1 << 40,))


@njit(cache=True, nogil=True)
def gemm_rows(trans_a, trans_b, alpha, A, B, beta, C, r0, r1):
    """Rows [r0, r1) of C <- alpha op(A) op(B) + beta C (float32, rows contiguous; op(X) =
    X.T when trans_x), as ``kernels.blas.gemm`` computes all of C, without BLAS."""
    lda, ldb, ldc = A.strides[0] // 4, B.strides[0] // 4, C.strides[0] // 4
    k = A.shape[0] if trans_a else A.shape[1]
    nn_rows(A.ctypes.data, 1 if trans_a else lda, lda if trans_a else 1, B.ctypes.data,
            1 if trans_b else ldb, ldb if trans_b else 1, C.ctypes.data, ldc, r0, r1,
            C.shape[1], k, alpha, beta)


@njit(cache=True, nogil=True)
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """C <- alpha op(A) op(B) + beta C on the calling thread (see gemm_rows)."""
    if C.shape[0] > 0 and C.shape[1] > 0:
        gemm_rows(trans_a, trans_b, alpha, A, B, beta, C, 0, C.shape[0])
