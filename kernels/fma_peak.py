"""The CPU's peak FP32 rate, measured: a loop of independent vector fused multiply-adds.

``fma_chains(iters, a, b)`` runs ``CHAINS`` independent accumulators of ``LANES`` float32
lanes (one zmm register each with AVX-512, ymm with AVX2) through ``acc <- acc * a + b``,
``iters`` times: ``2 * CHAINS * LANES`` flops an iteration, nothing but FMAs and a loop counter.
Enough chains hide the FMA latency (4 cycles on Zen 4/5, 2 FMA pipes: 8 in flight), so the
loop runs at the FMA units' throughput, the rate a GEMM kernel is measured against.

The vectors are written as LLVM IR (``llvm.fma.v16f32``), not left to the auto-vectorizer:
numba keeps arrays in memory, and a vectorized loop over one would load and store every
accumulator each iteration. ``tests/test_fma_peak.py`` checks the machine code holds vfmadd.
"""

from __future__ import annotations

import threading
import time

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cpu_gemm import compiles_for_avx512, vector_ir

LANES = 16 if compiles_for_avx512() else 8  # float32 lanes of the widest vector register
CHAINS = 12  # independent accumulators: fits 16 (AVX2) or 32 (AVX-512) registers with a and b


@intrinsic
def _fma_loop(typingctx, iters, a, b):
    """float32 sum of every lane of every chain after ``iters`` rounds of acc <- acc * a + b
    (each chain starts at 1 + its index / 16)."""
    def codegen(context, builder, sig, args):
        n, av, bv = args
        _, _, vt, splat, fma = vector_ir(builder, LANES)
        i32 = ir.IntType(32)
        va, vb = splat(av), splat(bv)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(vt, [1.0 + c / 16] * LANES))
                for c in range(CHAINS)]
        with cgutils.for_range(builder, n):
            for p in accs:
                builder.store(builder.call(fma, [builder.load(p), va, vb]), p)
        total = builder.load(accs[0])
        for p in accs[1:]:
            total = builder.fadd(total, builder.load(p))
        s = builder.extract_element(total, i32(0))
        for k in range(1, LANES):
            s = builder.fadd(s, builder.extract_element(total, i32(k)))
        return s

    return types.float32(types.int64, types.float32, types.float32), codegen


@njit(nogil=True)
def fma_chains(iters, a, b):
    """See the module docstring; returns the sum of all lanes (so the work is not dead)."""
    return _fma_loop(iters, a, b)


def flops_per_iter() -> int:
    return 2 * CHAINS * LANES


def _run(iters: int, threads: int) -> float:
    """Seconds from the first thread's start to the last one's end, each running the loop."""
    barrier = threading.Barrier(threads)
    spans = [None] * threads

    def work(i):
        barrier.wait()
        t = time.perf_counter()
        fma_chains(iters, 0.999999, 1e-6)
        spans[i] = (t, time.perf_counter())

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return max(e for _, e in spans) - min(s for s, _ in spans)


def peak_gflops(threads: int = 1, seconds: float = 0.2, repeats: int = 3) -> float:
    """GFLOP/s of ``threads`` threads (Python threads; the loop releases the GIL) each running
    the FMA loop for about ``seconds``; the best of ``repeats`` runs."""
    fma_chains(1000, 0.999999, 1e-6)  # compile
    iters = 100_000
    while (t := _run(iters, 1)) < 0.02:  # size the loop to ~seconds on one thread
        iters *= 4
    iters = max(int(iters * seconds / t), 1)
    best = min(_run(iters, threads) for _ in range(repeats))
    return threads * iters * flops_per_iter() / best / 1e9
