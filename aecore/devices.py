"""Which CUDA device (if any) aecore can use, found without side effects, and the engine for a
device (``make_engine``).

* ``real_gpu_present()`` asks the NVIDIA driver (``libcuda.so.1`` through ctypes: ``cuInit`` and
  ``cuDeviceGetCount``) whether there is a GPU, *without importing numba.cuda*: the test conftest
  uses it to decide whether to turn Numba's CUDA simulator on, which must happen before
  ``numba.cuda`` is first imported.
* ``cuda_usable()`` says whether ``--device cuda`` can run here, and why not: numba-cuda must
  import, and either the simulator is on (``NUMBA_ENABLE_CUDASIM=1``: correct but very slow; for
  tests) or a real GPU answers and numba-cuda compiles a kernel for it.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache


@lru_cache(maxsize=1)
def _driver_device_count() -> tuple[int, str]:
    """(number of CUDA devices, reason when 0), straight from the driver API."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return 0, "no NVIDIA driver (libcuda.so.1 not found)"
    try:
        rc = lib.cuInit(0)
        if rc != 0:
            return 0, f"the NVIDIA driver did not initialise (cuInit error {rc})"
        count = ctypes.c_int(0)
        rc = lib.cuDeviceGetCount(ctypes.byref(count))
        if rc != 0:
            return 0, f"cuDeviceGetCount failed (error {rc})"
    except AttributeError:
        return 0, "libcuda has no cuInit / cuDeviceGetCount"
    if count.value == 0:
        return 0, "the NVIDIA driver reports no CUDA device"
    return count.value, ""


def real_gpu_present() -> bool:
    """True if the NVIDIA driver reports at least one CUDA device (numba.cuda not imported)."""
    return _driver_device_count()[0] > 0


def cuda_usable() -> tuple[bool, str]:
    """(usable, reason): can the CUDA engine run in this process? ``reason`` is one line.

    Imports numba.cuda (so call it after deciding on the simulator). Under the simulator the
    answer is yes, with the reason saying so.
    """
    try:
        from numba import cuda
        from numba.cuda.core import config
    except Exception as exc:  # numba-cuda missing or broken
        return False, f"numba-cuda is not importable ({type(exc).__name__}: {exc})".split("\n")[0]
    if config.ENABLE_CUDASIM:
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct but very slow"
    n, why = _driver_device_count()
    if n == 0:
        return False, f"no usable CUDA GPU: {why}"
    try:
        if not cuda.is_available():
            return False, "numba-cuda cannot use the CUDA driver (cuda.is_available() is False)"
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        cc = dev.compute_capability
    except Exception as exc:
        return False, f"CUDA initialisation failed: {str(exc).strip().splitlines()[0]}"
    problem = _compile_problem()
    if problem:
        return False, problem
    return True, f"{name} (compute capability {cc[0]}.{cc[1]})"


@lru_cache(maxsize=1)
def _compile_problem() -> str:
    """'' if numba-cuda compiles a kernel here, else why not (one line).

    numba-cuda imports its lowering modules only at the first compilation, so a broken install
    (numba-cuda 0.30 under numpy 2.5, which removed ``np.row_stack``; bench/RESULTS.md) passes
    ``from numba import cuda`` and fails later. Compiling the engine's smallest kernel here
    turns that into a usage error instead of a traceback mid-run.
    """
    try:
        from .kernels import cuda as kc

        kc.zero_kernel["f64"]
    except Exception as exc:
        return compile_problem_message(exc)
    return ""


def compile_problem_message(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    hint = ""
    if "row_stack" in msg:
        hint = "; numba-cuda needs numpy < 2.5 (pip install 'numpy<2.5')"
    return f"numba-cuda cannot compile kernels here ({type(exc).__name__}: {msg}){hint}"


def make_engine(device: str, params, optim=None, batch_size: int | None = None,
                slope: float = 0.01, opt_state=None, step: int = 0, *, graphs: bool = True,
                cpu_split: bool = False, cpu_team: bool = False, lr_schedule=None,
                cuda_path: str | None = None, activation: str = "leaky_relu", loss: str = "mse",
                cpu_gemm: str = "auto"):
    """The ``aecore.engine.Engine`` for ``device`` ("cpu" or "cuda"), holding ``params``.

    ``optim`` (an ``aecore.optim.OptimConfig``) and ``batch_size`` for training; leave both
    out for an engine that only evaluates, reconstructs and encodes. ``graphs``: whether the
    CUDA engine may record and replay CUDA graphs (no effect on the CPU); ``cpu_split``: whether
    the CPU engine splits each step between two threads of its own; ``cpu_team``: whether it
    runs BLAS's jobs and the epilogues' halves on one team of two threads (neither has an
    effect on CUDA); ``cpu_gemm``: whose products the CPU step runs, "blas" (OpenBLAS's sgemm),
    "own" (aecore's, kernels/cpu_gemm.py) or "auto" (``config.resolve_cpu_gemm``: own on
    x86-64 where it was measured faster, else blas). ``lr_schedule``: an
    ``aecore.schedules.LRSchedule`` of ``optim.lr`` (None: constant). ``cuda_path``
    (persistent | graphs | eager, aecore/cuda_path.py; replaces ``graphs`` when given):
    "persistent" trains with the persistent kernel, this run alone in
    its launch (leaky_relu and mse only; any lr_schedule). ``activation`` / ``loss``: the hidden
    activation and the loss (compile-time). The engine modules are imported here, the CUDA ones
    only when asked for.
    """
    if device == "cpu":
        from .config import resolve_cpu_gemm
        from .engine_cpu import CpuEngine
        from .model import W1

        cpu_gemm = resolve_cpu_gemm(cpu_gemm, batch_size if optim is not None else None,
                                    params[W1].shape[0], cpu_split, cpu_team)
        return CpuEngine(params, optim, batch_size, slope, opt_state, step, split=cpu_split,
                         team=cpu_team, lr_schedule=lr_schedule, activation=activation,
                         loss=loss, gemm=cpu_gemm)
    if device == "cuda" and cuda_path == "persistent" and optim is not None:
        from .engine_persistent import RunGroup

        if (activation, loss) != ("leaky_relu", "mse"):
            raise ValueError(f"the persistent CUDA path trains leaky_relu with mse only, not "
                             f"{activation} with {loss}")
        return RunGroup.alone(make_engine).make_engine(
            device, params, optim, batch_size, slope, opt_state, step, lr_schedule=lr_schedule)
    if device == "cuda":
        from .engine_cuda import CudaEngine

        graphs = graphs if cuda_path is None else cuda_path != "eager"
        return CudaEngine(params, optim, batch_size, slope, opt_state, step, graphs=graphs,
                          lr_schedule=lr_schedule, activation=activation, loss=loss)
    raise ValueError(f"unknown device {device!r}; choose cpu or cuda")


def kernel_settings(device: str, config) -> dict:
    """The kernel settings a run of ``config`` on ``device`` was trained with, for its
    config.json: on CUDA the block tile and K depth (compile-time; validated where they are
    read, in ``kernels/cuda/config.py``), on the CPU whose products the step ran (``cpu_gemm``
    auto resolved)."""
    if device != "cuda":
        from .config import resolve_cpu_gemm

        return {"cpu_gemm": resolve_cpu_gemm(config.cpu_gemm, config.batch_size, config.hidden,
                                             config.cpu_split, config.cpu_team)}
    from .kernels.cuda import config as cc

    return {"cuda_tile": cc.TILE, "cuda_bk": cc.BK}
