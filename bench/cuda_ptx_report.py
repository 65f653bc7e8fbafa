"""What each CUDA kernel compiles to, without a GPU: the instructions of its K step and the
registers ptxas gives it, as in bench/RESULTS.md.

    NUMBA_ENABLE_CUDASIM=0 python bench/cuda_ptx_report.py [--cc 80,90] [--kernels FILE]

For every (kernel, signature) in ``KERNELS``: the counts of the barrier-to-barrier segment
with the most multiply-adds (the main loop's multiply section: fma, ld.shared, 32- and 64-bit
integer instructions, branches, all) and of the rest of the K step (the next step's fetch, the
shared stores, the loop test: up to the loop's back edge), and ``ptxas -v``'s registers
per thread and spill bytes (the system ptxas; "-" without one). ``--kernels FILE`` reports
another kernel module with ``KERNELS`` and ``compile_ptx`` (the pre-rewrite one-file
kernels/cuda.py: ``git show effbbb7:kernels/cuda.py > /tmp/before.py``).
"""

from __future__ import annotations

import argparse
import json

from cuda_kernel_times import load_kernels

from aecore.kernels.cuda import ptx as P


def report(kc, ccs):
    rows = []
    for func, sig in kc.KERNELS:
        key = "u8" if "uint8" in sig else "f32"
        for cc in ccs:
            text = kc.compile_ptx(func, sig, cc)
            loop = bool(P.segments(text))
            rows.append(dict(kernel=func.__name__, operand=key, cc=f"sm_{cc[0]}{cc[1]}",
                             kstep=P.kstep(text) if loop else None,
                             after=P.kstep_rest(text) if loop else None,
                             ptxas=P.ptxas_registers(text, cc)))
            r = rows[-1]
            k, a, g = r["kstep"] or {}, r["after"] or {}, r["ptxas"] or {}
            print(f"{r['kernel']:<30} {key:<4} {r['cc']}  K step: {k.get('fma', '-'):>3} fma "
                  f"{k.get('ld.shared', '-'):>3} ld.shared {k.get('int32', '-'):>3} int32 "
                  f"{k.get('int64', '-'):>3} int64 {k.get('all', '-'):>4} all | rest: "
                  f"{a.get('int64', '-'):>4} int64 {a.get('all', '-'):>4} all | "
                  f"{g.get('registers', '-')} registers, spill {g.get('spill_stores', '-')}",
                  flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="80,90")
    ap.add_argument("--kernels", default=None, help="report this kernel module file instead")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    if a.kernels:
        kc = load_kernels(a.kernels)
    else:
        from aecore.kernels import cuda as kc
    ccs = [(int(c[:-1]), int(c[-1])) for c in a.cc.split(",")]
    rows = report(kc, ccs)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
