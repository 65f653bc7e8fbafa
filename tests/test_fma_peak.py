"""The peak-FP32 loop (kernels/fma_peak.py): it compiles to vector FMAs of the widest register,
computes what it says, and reports a rate; bench/fma_peak.py runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from aecore.kernels import fma_peak as F


def test_loop_is_vector_fma_on_the_widest_registers():
    F.fma_chains(3, 0.5, 0.25)
    asm = F.fma_chains.inspect_asm(F.fma_chains.signatures[0])
    reg = "zmm" if F.LANES == 16 else "ymm"
    fmas = re.findall(rf"\bvfmadd\w*ps\s+%{reg}", asm)
    assert len(fmas) >= F.CHAINS, asm
    # nothing but FMAs on vectors in the loop: no loads/stores of accumulators per iteration
    assert not re.search(r"\bvmovups\s+%[yz]mm\d+, -?\d*\(%r[sb]p\)", asm)


def test_result_is_the_recurrence():
    a, b, n = np.float32(0.75), np.float32(0.125), 37
    want = 0.0
    for c in range(F.CHAINS):
        x = np.float64(1.0 + c / 16)
        for _ in range(n):
            x = x * np.float64(a) + np.float64(b)
        want += F.LANES * x
    got = F.fma_chains(n, a, b)
    assert abs(got - want) <= 1e-5 * abs(want)
    assert F.fma_chains(0, a, b) == sum(F.LANES * np.float32(1.0 + c / 16) for c in range(F.CHAINS))


def test_rate_is_positive():
    assert F.flops_per_iter() == 2 * F.CHAINS * F.LANES
    assert F.peak_gflops(1, seconds=0.01, repeats=1) > 0
    assert F.peak_gflops(2, seconds=0.01, repeats=1) > 0


def test_script_runs():
    script = Path(__file__).resolve().parents[1] / "bench" / "fma_peak.py"
    r = subprocess.run([sys.executable, str(script), "--threads", "1,2", "--seconds", "0.01",
                        "--repeats", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "vfmadd" in r.stdout and "2 threads:" in r.stdout and "GFLOP/s" in r.stdout
