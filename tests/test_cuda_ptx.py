"""Every CUDA kernel compiles for real (not just in the simulator) to PTX for sm_80 and sm_90.

The simulator runs kernels as Python, so it accepts code the CUDA compiler rejects (Python
objects, unsupported calls, dynamic shared memory shapes). This test compiles each
``(kernel, signature)`` in ``kernels.cuda.KERNELS`` with numba-cuda's real NVVM pipeline, which
works without a GPU, in a subprocess where the simulator is off, and checks the PTX for what the
kernels are designed to be: tiled GEMMs staging operands in shared memory, register tiles that
stay in registers (no ``.local`` depot), fast-math exponentials in the Sigmoid epilogues, and a
main loop whose K step (the code between its two barriers) is BK x TM x TN multiply-adds and
their shared loads in straight-line code, with no 64-bit integer arithmetic (the loop Numba
left rolled before ran ~35 64-bit index instructions per 16 multiply-adds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


SCRIPT = r"""
import json, re, sys
from aecore.kernels import cuda as kc
from aecore.kernels.cuda import ptx as P
out = []
for func, sig in kc.KERNELS:
    for cc in ((8, 0), (9, 0)):
        ptx = kc.compile_ptx(func, sig, cc)
        out.append(dict(
            name=func.__name__, sig=sig, cc=list(cc),
            target=re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1),
            entries=len(re.findall(r"\.entry\s", ptx)),
            local=".local" in ptx,
            shared="ld.shared" in ptx and "st.shared" in ptx,
            bar="bar.sync" in ptx or "barrier.sync" in ptx,
            ex2="ex2.approx" in ptx,
            fma="fma.rn.f32" in ptx or "fma.rn.ftz.f32" in ptx,
            kstep=P.kstep(ptx) if P.segments(ptx) else None,
        ))
json.dump(out, sys.stdout)
"""


def test_every_kernel_compiles_to_ptx_as_designed():
    """One test, one compile of every kernel (~65 s): pytest-xdist would run a module fixture
    once in each worker that gets one of this module's tests."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    facts = json.loads(r.stdout)
    for check in (compiles_for_sm80_and_sm90, gemm_kernels_use_shared_memory_tiles_and_fma,
                  sigmoid_epilogues_use_fast_exp, gemm_main_loops_are_straight_line_32_bit):
        check(facts)


def compiles_for_sm80_and_sm90(ptx_facts):
    from aecore.kernels import cuda as kc

    assert len(ptx_facts) == 2 * len(kc.KERNELS) and len(kc.KERNELS) >= 10
    for f in ptx_facts:
        assert f["target"] == f"sm_{f['cc'][0]}{f['cc'][1]}", f
        assert f["entries"] == 1, f
        assert not f["local"], f"{f['name']} spills its register tile to local memory: {f}"


def gemm_kernels_use_shared_memory_tiles_and_fma(ptx_facts):
    from aecore.kernels import cuda as kc

    gemms = [f for f in ptx_facts if f["name"] in kc.GEMM_KERNELS]
    assert {f["name"] for f in gemms} == set(kc.GEMM_KERNELS)
    for f in gemms:
        assert f["shared"] and f["bar"] and f["fma"], f


def sigmoid_epilogues_use_fast_exp(ptx_facts):
    names = ("k_linear_sigmoid_mse", "k_linear_sigmoid_output")
    sigmoids = [f for f in ptx_facts if f["name"] in names]
    assert len(sigmoids) == 2 * 3  # mse (u8, f32) and the reconstructions, for sm_80 and sm_90
    for f in sigmoids:
        assert f["ex2"], f


def gemm_main_loops_are_straight_line_32_bit(ptx_facts):
    """Each GEMM kernel's K step: all BK*TM*TN multiply-adds (256 at the default 64 x 64 tile,
    BK 16) and BK*(TM+TN) shared loads between two barriers, with no branch and no 64-bit
    integer instruction among them (and no 32-bit one: the addresses are computed once)."""
    from aecore.kernels import cuda as kc

    fmas = kc.BK * kc.TM * kc.TN
    for f in ptx_facts:
        if f["name"] not in kc.GEMM_KERNELS:
            continue
        k = f["kstep"]
        assert k is not None and k["fma"] == fmas, f
        assert fmas >= 256 or kc.TILE < 64
        # + the weight steps' bias column sums, read from the staged dZ / dH tile
        colsum = kc.BK * kc.BM // kc.NTHREADS if "weight_step" in f["name"] else 0
        assert k["ld.shared"] == kc.BK * (kc.TM + kc.TN) + colsum, f
        assert k["int64"] == 0 and k["int32"] == 0 and k["bra"] == 0, f
