"""Which BLAS ran: library, version, kernel ("architecture") and threads, from threadpoolctl.

aecore's products call SciPy's BLAS (``scipy.linalg.cython_blas.sgemm``, kernels/blas.py).
NumPy wheels ship their own OpenBLAS, so a process often holds two BLAS libraries, which can
run different kernels; ``aecore_blas()`` is the one aecore's sgemm calls. OpenBLAS picks its
kernel for the CPU at load time unless ``OPENBLAS_CORETYPE`` forces one (some hosts set it
because old OpenBLAS builds crash on new CPUs): that variable changes every CPU number, so it
is recorded beside the library.
"""

from __future__ import annotations

import os
from pathlib import Path

# The environment variables that change which BLAS kernel runs, or on how many threads.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")
_FIELDS = ("internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer",
           "filepath")


def _package_dirs(module) -> tuple[Path, ...]:
    """The directories a wheel installs a package's code and bundled libraries into
    (``scipy/`` and ``scipy.libs/``)."""
    pkg = Path(module.__file__).resolve().parent
    return pkg, pkg.with_name(pkg.name + ".libs")


def blas_libraries() -> list[dict]:
    """Every BLAS library loaded in this process (after loading SciPy's), as threadpoolctl
    reports it, with ``used_by``: the packages that call it (``["scipy"]``, ``["numpy"]``, both
    when the process has a single BLAS, or ``[]`` when its path tells nothing)."""
    import numpy
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401 - loads the BLAS aecore's sgemm calls
    from threadpoolctl import threadpool_info

    libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    owners = {"scipy": _package_dirs(scipy), "numpy": _package_dirs(numpy)}
    out = []
    for lib in libs:
        d = {k: lib.get(k) for k in _FIELDS}
        path = Path(lib["filepath"]).resolve()
        if len(libs) == 1:
            d["used_by"] = ["numpy", "scipy"]
        else:
            d["used_by"] = [name for name, dirs in owners.items()
                            if any(path.is_relative_to(p) for p in dirs)]
        out.append(d)
    return out


def aecore_blas(libs: list[dict] | None = None) -> dict | None:
    """The BLAS library aecore's sgemm calls (SciPy's), or None when it cannot be told."""
    libs = blas_libraries() if libs is None else libs
    return next((d for d in libs if "scipy" in d["used_by"]), None)


def env_overrides() -> dict:
    """The variables of ``BLAS_ENV`` that are set in this process."""
    return {k: os.environ[k] for k in BLAS_ENV if k in os.environ}


def describe(lib: dict) -> str:
    """One line: 'openblas 0.3.30, kernel SkylakeX, 2 threads (pthreads), libscipy_...so'."""
    threads = lib.get("num_threads")
    layer = lib.get("threading_layer")
    return (f"{lib.get('internal_api')} {lib.get('version')}, kernel {lib.get('architecture')}, "
            f"{threads} thread{'' if threads == 1 else 's'}"
            + (f" ({layer})" if layer else "") + f", {Path(lib.get('filepath') or '?').name}")


def summary_rows() -> list[tuple[str, str]]:
    """(label, text) rows for ``aecore info`` and ``aecore bench``: the BLAS aecore's sgemm
    calls, any other BLAS loaded, and the variables that force a kernel or a thread count."""
    libs = blas_libraries()
    mine = aecore_blas(libs)
    rows = [("BLAS", "aecore's sgemm (scipy's): " + (describe(mine) if mine else
                                                     "not identified among the loaded BLAS"))]
    for lib in libs:
        if lib is not mine:
            rows.append((f"BLAS ({'/'.join(lib['used_by']) or 'other'})", describe(lib)))
    env = env_overrides()
    if env:
        rows.append(("BLAS env", " ".join(f"{k}={v}" for k, v in env.items())))
    rows.append(("CPU epilogue", cpu_epilogue()))
    return rows


def cpu_epilogue() -> str:
    """Where the CPU engine's output epilogue runs with BLAS as it is now (kernels/blas_pair.py)."""
    from .kernels import blas_pair

    return blas_pair.describe()


def summary() -> str:
    """``summary_rows()`` on one line."""
    return "; ".join(f"{k}: {v}" for k, v in summary_rows())


def meta() -> dict:
    """For bench.json and pytest-benchmark's machine_info."""
    libs = blas_libraries()
    return {"aecore_sgemm": aecore_blas(libs), "libraries": libs, "env": env_overrides(),
            "cpu_epilogue": cpu_epilogue()}
