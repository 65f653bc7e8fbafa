"""Helpers for test_activations.py and test_losses.py: fresh seeded inputs with awkward values,
a float32-discipline check of compiled @njit code, and small elementwise CUDA kernels that call
the epilogue device functions (run in the simulator, and compiled to PTX in a subprocess with
the simulator off, as tests/test_cuda_ptx.py does for the real kernels)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from numba import cuda, float32

# zeros, tiny and huge magnitudes, and the break points of the float32 forms (expm1's -0.7,
# the exp clamp at -87, sigmoid saturation near 17, gelu's tail at |u| = 44)
AWKWARD = [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1e-3, -1e-3, 0.35, -0.35, 0.7, -0.7, 1.0,
           -1.0, 9.0, -9.0, 17.0, -17.0, 44.0, -44.0, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4,
           1e20, -1e20]


def fresh_rng(request) -> np.random.Generator:
    """A new seed each run, printed; AECORE_TEST_SEED=<seed> reruns one."""
    seed = int(os.environ.get("AECORE_TEST_SEED", np.random.SeedSequence().entropy % 2**63))
    print(f"{request.node.name}: seed {seed}")
    return np.random.default_rng(seed)


def awkward_float32(rng, n=2000) -> np.ndarray:
    """AWKWARD plus normal, wide uniform and log-uniform (1e-38 .. 1e3) values, both signs."""
    logs = 10.0 ** rng.uniform(-38, 3, n // 4) * rng.choice([-1.0, 1.0], n // 4)
    parts = [AWKWARD, 3.0 * rng.standard_normal(n // 2), rng.uniform(-30, 30, n // 4), logs]
    return np.concatenate(parts).astype(np.float32)


def assert_close(actual, ref, rtol, atol, what=""):
    """|actual - ref| <= rtol |ref| + atol elementwise, naming the worst element if not."""
    actual = np.asarray(actual, np.float64)
    ref = np.asarray(ref, np.float64)
    excess = np.abs(actual - ref) - (rtol * np.abs(ref) + atol)
    bad = ~(excess <= 0)
    if bad.any():
        i = int(np.nanargmax(np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf)))
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} off; worst at {i}: "
                             f"{actual.flat[i]!r} vs {ref.flat[i]!r}")


_F64_MATH = re.compile(r"\b(fadd|fsub|fmul|fdiv|frem|fneg|sitofp|uitofp|fpext)\b.*\bdouble\b"
                       r"|<\d+ x double>")


def float64_arithmetic(dispatcher) -> list:
    """The lines of a compiled @njit function's LLVM IR that compute in float64. A float32
    epilogue must have none (unboxing a float argument, a call and a truncation, is not
    arithmetic): ``math.floor`` returning an int64 once turned a whole epilogue float64."""
    ir = dispatcher.inspect_llvm(dispatcher.signatures[0])
    return [line.strip() for line in ir.splitlines() if _F64_MATH.search(line)]


def vectorized(dispatcher) -> bool:
    """Whether LLVM vectorized a compiled @njit loop (float32 SIMD lanes in its IR): the
    epilogues' exponentials are written so it can (kernels/cpu.py's _exp_neg32)."""
    ir = dispatcher.inspect_llvm(dispatcher.signatures[0])
    return re.search(r"<\d+ x float>", ir) is not None


# --- elementwise CUDA kernels over the device functions ---------------------------------------
ACT_SIG = "void(float32[::1], float32[::1], float32, float32[::1], float32[::1])"
LOSS_SIG = ("void(float32[::1], float32[::1], float32, float32[::1], float32[::1], "
            "float32[::1])")


def activation_kernel(forward, backward):
    """H[i] <- forward(Z[i]), D[i] <- backward(G[i], H[i], Z[i]) (a kernel factory, as the
    fused epilogues will be: the pair is closed over; G = 1 gives the derivative)."""
    def k(Z, G, slope, H, D):
        i = cuda.grid(1)
        if i < Z.shape[0]:
            H[i] = forward(Z[i], slope)
            D[i] = backward(G[i], H[i], Z[i], slope)
    return k


def todays_leaky_relu_kernel(Z, G, slope, H, D):
    """activation_kernel with today's inline LeakyReLU code (kernels/cuda.py's epilogues)."""
    i = cuda.grid(1)
    if i < Z.shape[0]:
        z = Z[i]
        H[i] = z if z > float32(0.0) else z * slope
        g = G[i]
        if not H[i] > float32(0.0):
            g *= slope
        D[i] = g


def loss_kernel(point):
    """(L, S, G)[i] <- point(Z[i], T[i], scale)."""
    def k(Z, T, scale, L, S, G):
        i = cuda.grid(1)
        if i < Z.shape[0]:
            loss, sq, g = point(Z[i], T[i], scale)
            L[i] = loss
            S[i] = sq
            G[i] = g
    return k


def cuda_face_or_skip(module: str):
    """``aecore.kernels.<module>`` (a CUDA face), or skip the test where CUDA cannot run."""
    import importlib

    import pytest

    from aecore.devices import cuda_usable

    ok, why = cuda_usable()
    if not ok:
        pytest.skip(f"CUDA not usable: {why}")
    return importlib.import_module(f"aecore.kernels.{module}")


def fast_exp_rtol(arg) -> np.ndarray:
    """Extra relative tolerance of a result carrying exp(arg) on a real GPU: fast-math's
    ``__expf`` is within 2 + floor(1.173 |arg|) ulp (CUDA guide); 0 in the simulator, which
    evaluates ``math.exp`` in float64. (Not yet run on hardware: no GPU in this session.)"""
    from aecore.kernels.cuda import SIMULATOR

    arg = np.abs(np.asarray(arg, np.float64))
    return np.zeros_like(arg) if SIMULATOR else 6e-8 * (3 + 1.2 * np.minimum(arg, 100.0))


def todays_mse_kernel():
    """loss_kernel with today's inline Sigmoid + MSE epilogue code (kernels/cuda.py's
    ``d = y - T[src, n] * tscale``, ``part += float64(d * d)``, ``dZ = dscale * d * slope``)."""
    from aecore.kernels.cuda.fused_linear_sigmoid import sigmoid_and_slope as _sigmoid_and_slope

    def k(Z, T, scale, L, S, G):
        i = cuda.grid(1)
        if i < Z.shape[0]:
            y, slope = _sigmoid_and_slope(Z[i])
            d = y - T[i]
            L[i] = d * d
            S[i] = d * d
            G[i] = scale * d * slope
    return k


def launch(kernel, n, *args):
    """Compile (lazily) and run an elementwise kernel over n elements (simulated without a GPU)."""
    threads = 64
    cuda.jit(kernel)[(n + threads - 1) // threads, threads](*args)


_PTX_SCRIPT = r"""
import json, re, sys
sys.path.insert(0, sys.argv[1])
import epilogue_checks as h
from numba import cuda, float32
from aecore.kernels import cuda as kc, activations_cuda as acu, losses_cuda as lcu
out = []
for kind, name in json.loads(sys.argv[2]):
    if kind == "activation":
        fn, sig = h.activation_kernel(*acu.activation(name)), h.ACT_SIG
    elif kind == "today":
        fn, sig = (h.todays_leaky_relu_kernel, h.ACT_SIG) if name == "leaky_relu" else (
            h.todays_mse_kernel(), h.LOSS_SIG)
    else:
        fn, sig = h.loss_kernel(lcu.loss_point(name)), h.LOSS_SIG
    for cc in ((8, 0), (9, 0)):
        ptx = kc.compile_ptx(fn, sig, cc)
        out.append(dict(kind=kind, name=name, cc=list(cc),
                        target=re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1),
                        f64=[l.strip() for l in ptx.splitlines() if ".f64" in l],
                        local=".local" in ptx, body=h.ptx_body(ptx),
                        tanh_approx="tanh.approx" in ptx))
json.dump(out, sys.stdout)
"""


def ptx_body(ptx: str) -> list:
    """The instructions of a PTX kernel, without comments and with its mangled name blanked:
    two kernels of the same code compare equal."""
    body = re.sub(r"_Z\w+", "KERNEL", ptx[ptx.index(".entry"):])
    return [line.strip() for line in body.splitlines()
            if line.strip() and not line.strip().startswith("//")]


def ptx_arithmetic(body: list) -> list:
    """The floating-point arithmetic of a PTX body in order, registers renamed by first use
    (so where the compiler placed the loads, stores and address computations does not count)."""
    names: dict = {}

    def rename(m):
        return names.setdefault(m.group(0), f"%v{len(names)}")

    ops = [line for line in body if re.match(r"[a-z0-9.]+\.f(32|64)\b", line)
           and not line.startswith(("ld.", "st.", "cvta"))]
    return [re.sub(r"%f\d+", rename, line) for line in ops]


@functools.lru_cache(maxsize=None)
def _all_ptx_facts() -> tuple:
    from aecore.kernels.activations_reference import ACTIVATIONS
    from aecore.kernels.losses_reference import LOSSES

    items = ([("activation", n) for n in ACTIVATIONS] + [("loss", n) for n in LOSSES]
             + [("today", "leaky_relu"), ("today", "mse")])
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    r = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, str(Path(__file__).parent),
                        json.dumps(items)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return tuple(json.loads(r.stdout))


def ptx_facts(kind: str) -> list:
    """Facts about the PTX of the elementwise kernel over each activation or loss (``kind``)
    for sm_80 and sm_90, compiled for real in a subprocess with the simulator off (one
    subprocess for both test files)."""
    return [f for f in _all_ptx_facts() if f["kind"] == kind]
