"""PTX of the kernels without a GPU, and what the GEMM tests and RESULTS.md read from it: the
instructions of the K step (between the main loop's barriers) and the registers ptxas gives."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

from numba import cuda

from .config import FASTMATH

_BAR = re.compile(r"^\s*(bar\.sync|barrier\.sync)\b")
_INSTR = re.compile(r"^\s*(@!?%\w+\s+)?([a-z][\w.]*)\s")
_INT = re.compile(r"\.(s|u|b)(16|32|64)\b")


def compile_ptx(pyfunc, signature, cc):
    """PTX text of one kernel for compute capability ``cc``, with no GPU needed.

    numba-cuda compiles the *device functions* a kernel calls for the current device's compute
    capability, which needs a driver; when there is none, this pretends the device is ``cc`` for
    the duration of the call (the device functions are compiled to NVVM IR, linked into the
    kernel and compiled for ``cc`` with it). Not usable under the simulator.
    """
    from numba.cuda import dispatcher as _dispatcher

    real = _dispatcher.get_current_device

    class _Pretend:
        compute_capability = tuple(cc)

    try:
        real()
        have_device = True
    except Exception:
        have_device = False
    if not have_device:
        _dispatcher.get_current_device = lambda: _Pretend()
    try:
        ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=tuple(cc), fastmath=FASTMATH)
    finally:
        _dispatcher.get_current_device = real
    return ptx


_LABEL = re.compile(r"^(\$\w+):")
_BRA = re.compile(r"\bbra(\.uni)?\s+(\$\w+);")


def segments(ptx, loop_only=False):
    """The instruction mnemonics between consecutive barriers, in program order (the text
    before the first barrier and after the last one left out). ``loop_only``: a segment ends
    at its first backward branch too (the main loop's back edge: what follows it runs once)."""
    out, cur, seen = [], None, set()
    for line in ptx.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            seen.add(label.group(1))
        if _BAR.match(line):
            if cur is not None:
                out.append(cur)
            cur = []
            continue
        m = _INSTR.match(line)
        if cur is not None and m and not line.lstrip().startswith("//"):
            cur.append(m.group(2))
            bra = _BRA.search(line)
            if loop_only and bra and bra.group(2) in seen:
                out.append(cur)
                cur = None
    return out


def counts(ops):
    """Instruction counts of one segment: multiply-adds, shared loads, integer arithmetic
    (32- and 64-bit), branches and everything."""
    def is_int(op, bits):
        return op.split(".")[0] in _INT_OPS and any(b == bits for _, b in _INT.findall(op))

    return {
        "fma": sum(op.startswith("fma.") and op.endswith(".f32") for op in ops),
        "ld.shared": sum(op.startswith("ld.shared") for op in ops),
        "ld.global": sum(op.startswith("ld.global") for op in ops),
        "int32": sum(is_int(op, "32") for op in ops),
        "int64": sum(is_int(op, "64") for op in ops),
        "bra": sum(op.startswith("bra") for op in ops),
        "all": len(ops),
    }


_INT_OPS = {"add", "sub", "mul", "mad", "shl", "shr", "and", "or", "xor", "not", "neg", "cvt",
            "setp", "selp", "min", "max", "div", "rem", "abs", "mul24", "mad24"}


def kstep(ptx):
    """Counts of the K step's multiply section: the barrier-to-barrier segment with the most
    multiply-adds (a kernel has one main loop)."""
    return max((counts(s) for s in segments(ptx)), key=lambda c: c["fma"])


def kstep_rest(ptx):
    """Counts of the rest of the K step: from the multiply section's closing barrier to the
    loop's back edge (the next step's fetch, the shared stores, the loop test)."""
    segs = [counts(s) for s in segments(ptx, loop_only=True)]
    at = max(range(len(segs)), key=lambda i: segs[i]["fma"])
    return segs[at + 1] if at + 1 < len(segs) else None


def ptxas_registers(ptx, cc, ptxas=None):
    """Registers per thread (and spill bytes) ptxas reports for this PTX: {"registers": r,
    "spill_stores": b, "spill_loads": b}; None without a ptxas."""
    ptxas = ptxas or shutil.which("ptxas") or "/usr/local/bin/ptxas"
    if not shutil.which(ptxas):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        # -c: a kernel that calls the CG runtime (grid sync) links it later; compile only
        extern = ["-c"] if ".extern .func" in ptx else []
        r = subprocess.run([ptxas, "-v", *extern, f"-arch=sm_{cc[0]}{cc[1]}", f.name, "-o",
                            "/dev/null"], capture_output=True, text=True)
    text = r.stdout + r.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return {"registers": int(regs.group(1)) if regs else None,
            "spill_stores": int(spill.group(1)) if spill else None,
            "spill_loads": int(spill.group(2)) if spill else None}
