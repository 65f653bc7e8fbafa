"""Golden fixtures of the CPU engines, one file per host kind.

The CPU engines' bits depend on the machine code numba makes for the host CPU (the vector
width of the fast-math reductions: LLVM vectorises with 256-bit registers on the Intel cores it
tunes that way, 512-bit on AMD Zen 4 / 5; since session 11 the epilogue kernels ask for 512-bit
everywhere, ``kernels.cpu_math.wide_vectors``) and on the kernel OpenBLAS picks (its products'
sums run in another order on Haswell's and SkylakeX's kernels). So each CPU golden
fixture is kept per host kind, ``<name>.<host>.npz``, host = LLVM's name for the CPU and
OpenBLAS's kernel (``host_key``).

- On a host kind that has its file, a run must give those bits exactly: a change that moves one
  bit fails.
- On another host kind, the run is compared with every stored host's file to a tolerance
  (across hosts results differ in their last bits, and Adam amplifies that on parameters whose
  gradient is near zero: up to 1.4e-2 relative, 3.9e-6 absolute, measured between the two
  stored hosts), and the test says how to write this host's file: run the test file as a
  script there.

The first files were written on an AMD EPYC Zen 5 host with the host's
``OPENBLAS_CORETYPE=Haswell`` (``znver5-haswell``; the name was given in session 10, on another
host, from what that host reported in earlier sessions) and an Intel Xeon host that LLVM calls
``rocketlake``, with OpenBLAS's own SkylakeX kernel (``rocketlake-skylakex``; rewritten in
session 11 for the 512-bit epilogues, which moved only its loss sums).

The Zen 5 kind can be written on the Intel host: there ``NUMBA_CPU_NAME=znver5
OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512`` (with a numba cache directory of its own,
``NUMBA_CACHE_DIR``) reproduced both ``znver5-haswell`` files bit for bit (session 12): the bits
follow the CPU name numba gives LLVM and OpenBLAS's kernel and thread count, as far as tested,
not the silicon. So a change that moves bits can rewrite both kinds from that machine: first
check that the unchanged code passes under those variables, then run the writer script once as
it is and once with them. The reverse (``NUMBA_CPU_NAME=rocketlake
OPENBLAS_CORETYPE=SkylakeX`` on the Zen 5 host) should work the same way; it was not tried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def host_key() -> str:
    """``<LLVM cpu name>-<OpenBLAS kernel>`` of this process, lower case."""
    import llvmlite.binding as llvm
    import numba

    from aecore.blas_info import aecore_blas

    cpu = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    blas = aecore_blas() or {}
    return f"{cpu}-{blas.get('architecture') or 'unknown'}".lower()


def path_for(base: Path, host: str | None = None) -> Path:
    """The fixture file of ``base`` (``.../name.npz``) for ``host`` (this host by default)."""
    return base.with_name(f"{base.stem}.{host or host_key()}.npz")


def load(base: Path, prefix: str) -> tuple[dict, dict[str, dict]]:
    """(this host's arrays, or {}; {other host: its arrays}) whose keys start with prefix."""
    mine, others = {}, {}
    for f in sorted(base.parent.glob(f"{base.stem}.*.npz")):
        host = f.name[len(base.stem) + 1:-len(".npz")]
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files if k.startswith(prefix)}
        if host == host_key():
            mine = arrays
        else:
            others[host] = arrays
    return mine, others


def check(got: dict, base: Path, prefix: str, writer: str) -> None:
    """Assert ``got`` is this host's fixture bit for bit, or, on a host kind without one, every
    other host's to a tolerance (``writer``: the test file that writes the fixtures)."""
    mine, others = load(base, prefix)
    assert mine or others, f"no fixture {base.stem}.*.npz holds {prefix}"
    for host, want in ([("this host", mine)] if mine else list(others.items())):
        assert sorted(got) == sorted(want), host
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            if mine:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
            else:
                scale = float(np.max(np.abs(want[k]))) if want[k].size else 0.0
                np.testing.assert_allclose(
                    got[k], want[k], rtol=1e-3, atol=1e-4 * scale,
                    err_msg=f"{k} against {host}'s fixture ({host_key()} has none: run "
                            f"tests/{writer} as a script to write one)")


def write(base: Path, arrays: dict) -> Path:
    """Save ``arrays`` as this host's fixture of ``base``; returns its path."""
    path = path_for(base)
    path.parent.mkdir(exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
