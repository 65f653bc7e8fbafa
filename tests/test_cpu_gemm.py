"""kernels.cpu_gemm, aecore's own float32 GEMM: against the float64 definition
(kernels.reference.gemm) on fresh random operands of awkward shapes, every transpose case;
row ranges that add up to the whole; beta = 0 never reading C; the k-step's machine code."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from aecore.kernels import cpu_gemm as G
from aecore.kernels import reference as ref

# (m, n, k): edge tiles in every direction, k over one block and across several, 1s
# and every way of cutting C's columns into strips of 48, 32 and 16 (n = 16-112, 784)
SHAPES = [(1, 1, 1), (5, 7, 3), (8, 32, 16), (13, 49, 17), (9, 33, 50), (17, 100, 31),
          (40, 64, 300), (33, 70, 47), (64, 784, 64), (64, 64, 784), (3, 16, 600),
          (9, 16, 9), (11, 80, 20), (6, 112, 40), (10, 100, 200), (16, 784, 257),
          (7, 40, 0)]  # k = 0: C <- beta C (the own step's empty half of a narrow image)


def operands(rng, m, n, k, ta, tb):
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    return A, B


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-0.3, 1.0), (0.7, 0.5)])
def test_gemm_matches_the_float64_definition(m, n, k, ta, tb, alpha, beta):
    rng = np.random.default_rng([m, n, k, ta, tb])
    A, B = operands(rng, m, n, k, ta, tb)
    C = rng.standard_normal((m, n)).astype(np.float32)
    want = ref.gemm(ta, tb, alpha, A, B, beta, C)
    if beta == 0.0:
        C[:] = np.nan  # never read
    G.gemm(ta, tb, alpha, A, B, beta, C)
    # float32 sums over k terms: error ~ k * eps * (sum of |terms|)
    bound = 4 * k * np.finfo(np.float32).eps * (
        abs(alpha) * ref.gemm(ta, tb, 1.0, np.abs(A), np.abs(B), 0.0, None)
        + abs(beta) * np.abs(want - ref.gemm(ta, tb, alpha, A, B, 0.0, None)))
    assert np.all(np.abs(C - want) <= bound + 1e-30)


def test_gemm_on_row_slices_of_larger_arrays():
    rng = np.random.default_rng(7)
    big_a = rng.standard_normal((50, 300)).astype(np.float32)
    big_b = rng.standard_normal((90, 200)).astype(np.float32)
    big_c = np.zeros((40, 120), np.float32)
    A, B, C = big_a[3:23, 5:45], big_b[1:41, 7:77], big_c[2:22, 10:80]
    G.gemm(False, False, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, ref.gemm(False, False, 1.0, A, B, 0.0, None), rtol=1e-5,
                               atol=1e-4)
    assert not big_c[:2].any() and not big_c[:, :10].any() and not big_c[:, 80:].any()


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_row_ranges_give_the_whole_bit_for_bit(ta, tb):
    rng = np.random.default_rng(3)
    m, n, k = 37, 50, 70
    A, B = operands(rng, m, n, k, ta, tb)
    whole = np.empty((m, n), np.float32)
    G.gemm(ta, tb, 1.0, A, B, 0.0, whole)
    parts = np.full((m, n), np.nan, np.float32)
    for r0, r1 in [(0, 8), (8, 13), (13, 37)]:
        G.gemm_rows(ta, tb, 1.0, A, B, 0.0, parts, r0, r1)
    np.testing.assert_array_equal(parts, whole)


def test_the_same_bits_every_call():
    rng = np.random.default_rng(11)
    A, B = operands(rng, 64, 784, 64, False, True)
    C1 = np.empty((64, 784), np.float32)
    C2 = np.empty_like(C1)
    G.gemm(False, True, 1.0, A, B, 0.0, C1)
    G.gemm(False, True, 1.0, A, B, 0.0, C2)
    np.testing.assert_array_equal(C1, C2)


def tile_asm() -> str:
    """The machine code of one full tile (``_nn_full``) compiled on its own."""
    @njit(cache=False)
    def tile(a, b, c, k):
        G._nn_full(a, 784, 1, b, G.STRIP, c, 64, k, np.float32(1.0), np.float32(0.0), G.MR_NN)

    tile.compile("(int64, int64, int64, int64)")
    return tile.inspect_asm(tile.signatures[0])


def kstep_blocks(asm):
    """The basic blocks of ``asm`` that hold a whole k-step's FMAs."""
    return [body for body in re.split(r"\n\.LBB\d+_\d+:", asm)
            if len(re.findall(r"\bvfmadd\d+ps\b", body)) >= G.MR_NN * G.NV_NN]


def kstep():
    """(registers, count) of the FMAs in the tile's k-step, read from its machine code, which
    must hold no index multiplication and no stack access."""
    loops = kstep_blocks(tile_asm())
    assert loops, "no block holds the tile's FMAs"
    body = min(loops, key=len)
    body = body.split("\n\tj")[0]  # up to the loop's branch
    fmas = re.findall(r"\bvfmadd\d+ps\s[^\n]*%([xyz]mm)", body)
    assert len(fmas) >= G.MR_NN * G.NV_NN
    assert not re.search(r"\bimul", body), "index multiplications inside the k-step"
    assert "rsp" not in body, "the tile's registers spill to the stack in the k-step"
    return set(fmas), len(fmas)


def test_the_k_step_is_vector_fmas_without_index_arithmetic():
    """The tile's loop: MR_NN x NV_NN vector FMAs on broadcast A elements, NV_NN vector loads
    of the packed strip, and nothing but the loop counter beside them."""
    regs, _ = kstep()
    if G.compiles_for_avx512():  # one zmm per vector
        assert regs == {"zmm"}


def test_the_tile_prefetches_its_c_lines_before_the_k_loop_and_one_a_line_in_it():
    """One write prefetch per 64-byte line of C's tile (NV_NN + 1 a row: a row of the tile may
    straddle one more line than it fills), all before the k-loop; in a k-step one read
    prefetch, of op(A)'s element A_AHEAD rows on (lda = 784 floats here), its address folded
    into the instruction."""
    asm = tile_asm()
    loop = kstep_blocks(asm)[0]
    before = asm[:asm.index(loop)]
    assert len(re.findall(r"\bprefetch\w*", before)) == G.MR_NN * (G.NV_NN + 1)
    in_loop = re.findall(r"\bprefetch(\w*)\s+(-?\d+)\(", loop.split("\n\tj")[0])
    assert in_loop == [("t0", str(4 * 784 * G.A_AHEAD))]


@njit
def _buffer_addresses(counts):
    return np.array([G._aligned_buffer(c).ctypes.data for c in counts])


def test_the_packed_strip_and_the_engine_arrays_start_on_64_byte_lines():
    """The strip buffer nn_rows packs into (numba's np.empty starts 32 bytes into a line here)
    and ``aligned_empty``'s arrays (the CPU engine's weights and buffers) start on a line, so
    that a 16-float vector of a row never spans two."""
    counts = np.array([1, 16, G.KC_NN * G.STRIP, 1000, 12345] * 3)
    assert (_buffer_addresses(counts) % 64 == 0).all()
    for shape, dtype in [((784, 512), np.float32), ((0, 64), np.float32), ((3,), np.float64),
                         ((2, 7, 5), np.float32), ((), np.float32)]:
        a = G.aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.size == 0 or a.ctypes.data % 64 == 0  # (an empty array's address is no data's)
        a[...] = 1  # writable, its own memory
        assert a.size == 0 or a.sum() == a.size


# Numba compiling for an AVX2 CPU (a Haswell's features, AVX-512 off), on any x86 host that
# runs AVX2: the 6 x 16 tile, its k-step, and the bits of nn_rows's products
AVX2 = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,"
        "+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,-avx512f,-avx512bw,-avx512vl,"
        "-avx512dq,-avx512cd")
AVX2_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_cpu_gemm as T
from aecore.kernels import cpu_gemm as G
regs, fmas = T.kstep()
print(json.dumps(dict(mr=G.MR_NN, nv=G.NV_NN, regs=sorted(regs), fmas=fmas,
                      bits=T.product_bits())))
"""


def product_bits():
    """A digest of the four transpose cases' products on shapes with edges in every direction
    (the same on every CPU: the sums' order does not depend on the tile)."""
    import hashlib

    h = hashlib.sha256()
    for m, n, k in [(13, 49, 17), (33, 70, 300), (64, 784, 64)]:
        for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
            A, B = operands(np.random.default_rng([m, n, k]), m, n, k, ta, tb)
            C = np.ones((m, n), np.float32)
            G.gemm(ta, tb, 0.7, A, B, 0.5, C)
            h.update(C.tobytes())
    return h.hexdigest()


def test_avx2_tile_keeps_its_registers_and_the_bits(tmp_path):
    """Compiled for AVX2 (16 ymm registers) the tile is 6 x 16: 12 ymm FMAs a k-step and no
    spill (the 8 x 32 tile needed 32 registers and spilled in every k-step: the own step took
    1.5-2x the default's time there), and the products have the bits this CPU's tile gives."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2,
               NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", AVX2_SCRIPT, str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert (got["mr"], got["nv"], got["regs"], got["fmas"]) == (6, 1, ["ymm"], 12), got
    assert got["bits"] == product_bits()
