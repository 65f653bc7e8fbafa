"""Peak FP32 rate of this CPU from an FMA loop (aecore.kernels.fma_peak), on 1..N threads.

    python bench/fma_peak.py [--threads 1,2] [--seconds 0.5] [--repeats 5]

Prints the vector width and the FMA instructions the loop compiled to (from numba's
``inspect_asm``), then GFLOP/s per thread count, best of ``repeats``. ``aecore bench`` measures
the same (shorter) to print the fraction of peak its best CPU row reaches. The peak needs a
quiet machine: on a shared host another process's work shows up as a lower "peak".
"""

from __future__ import annotations

import argparse
import collections
import os
import re

from aecore.kernels import fma_peak as F


def fma_instructions() -> collections.Counter:
    """Counts of the loop's FMA instructions by (mnemonic, register kind), e.g.
    ('vfmadd213ps', 'zmm'): 96."""
    F.fma_chains(10, 0.999999, 1e-6)
    asm = F.fma_chains.inspect_asm(F.fma_chains.signatures[0])
    found = re.findall(r"\b(vfn?m(?:add|sub)\w*ps)\s+%([xyz]mm)", asm)
    return collections.Counter(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}" if os.cpu_count() > 1 else "1")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{F.CHAINS} chains x {F.LANES} float32 lanes, {F.flops_per_iter()} flops / iteration")
    print("FMA instructions in the loop:",
          ", ".join(f"{n} x {m} {r}" for (m, r), n in fma_instructions().items()) or "none")
    for t in sorted({int(x) for x in args.threads.split(",")}):
        g = F.peak_gflops(t, args.seconds, args.repeats)
        print(f"{t} thread{'s' if t > 1 else ' '}: {g:8.1f} GFLOP/s  ({g / t:.1f} per thread)")


if __name__ == "__main__":
    main()
