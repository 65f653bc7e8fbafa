"""The CUDA kernels and engine for every hidden activation and loss (issue 18), in the simulator
(tiny shapes: it runs kernels as Python) and as PTX for sm_80 / sm_90.

Kernel 1 (``linear_activation``, rows gathered, uint8 pixels), kernel 4
(``backward_activation``) and kernels 2+3 (``linear_sigmoid_loss_grad``, both sums) against the
float64 references; a CudaEngine run against the CPU engine's for a few (activation, loss)
pairs, gelu + bce among them (the Zp buffer and the second sum); the new kernels compile to PTX.
The default's bit-for-bit checks: tests/test_cuda_golden.py, tests/test_golden_cuda_engine.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from epilogue_checks import fresh_rng

from conftest import cuda_or_skip

cuda_or_skip()

from numba import cuda  # noqa: E402

from aecore.devices import make_engine  # noqa: E402
from aecore.kernels import activations_reference as AR  # noqa: E402
from aecore.kernels import cuda as kc  # noqa: E402
from aecore.kernels import losses_reference as LR  # noqa: E402
from aecore.model import init_params  # noqa: E402
from aecore.optim import OptimConfig  # noqa: E402

SLOPE = np.float32(0.05)


@pytest.fixture
def rng(request):
    return fresh_rng(request)


def rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30)


def nan_device(shape):
    return cuda.to_device(np.full(shape, np.nan, np.float32))


@pytest.mark.parametrize("act", AR.ACTIVATIONS[1:])
def test_hidden_kernels_match_the_reference(rng, act):
    B, Kd, N = int(rng.integers(2, 9)), int(rng.integers(3, 20)), int(rng.integers(2, 11))
    X = rng.integers(0, 256, (B + 3, Kd)).astype(np.uint8)
    perm = rng.permutation(B + 3).astype(np.int64)
    W = (rng.standard_normal((N, Kd)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(N) * 0.5).astype(np.float32)
    H, Zp = nan_device((B, N)), nan_device((B, N))
    kc.linear_activation(cuda.to_device(X), cuda.to_device(W), cuda.to_device(b), H, SLOPE, act,
                         Zp, perm=cuda.to_device(perm), off=2)
    Z = (X[perm[2:2 + B]] / 255.0) @ W.T.astype(np.float64) + b
    Hh = H.copy_to_host()
    assert rel(Hh, AR.activation(act, Z, float(SLOPE))) < 1e-5
    Zh = Zp.copy_to_host()
    assert rel(Zh, Z) < 1e-5 if AR.needs_preactivation(act) else np.isnan(Zh).all()
    dZ = rng.standard_normal((B, 7)).astype(np.float32)
    W2 = rng.standard_normal((7, N)).astype(np.float32)
    dH = nan_device((B, N))
    kc.backward_activation(cuda.to_device(dZ), cuda.to_device(W2), H, dH, SLOPE, act, Zp)
    want = (dZ.astype(np.float64) @ W2) * AR.activation_grad(act, Hh, Zh, float(SLOPE))
    assert rel(dH.copy_to_host(), want) < 1e-5


@pytest.mark.parametrize("loss", LR.LOSSES[1:])
def test_output_kernel_matches_the_reference(rng, loss):
    B, Kd, N = int(rng.integers(2, 9)), int(rng.integers(3, 20)), int(rng.integers(2, 11))
    H = (rng.standard_normal((B, Kd)) * 2).astype(np.float32)
    W = rng.standard_normal((N, Kd)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    T = rng.integers(0, 256, (B + 2, N)).astype(np.uint8)
    dZ = nan_device((B, N))
    sums = cuda.to_device(np.zeros(2, np.float64))
    args = (cuda.to_device(H), cuda.to_device(W), cuda.to_device(b), cuda.to_device(T), dZ, sums,
            loss)
    kc.linear_sigmoid_loss_grad(*args, off=1)
    Z = H.astype(np.float64) @ W.T + b
    dZ_ref, loss_ref, sq_ref = LR.output_loss_grad(loss, Z, T[1:1 + B])
    assert rel(dZ.copy_to_host(), dZ_ref) < 1e-5
    np.testing.assert_allclose(sums.copy_to_host(), [loss_ref, sq_ref], rtol=1e-5)
    with pytest.raises(ValueError, match="mse only"):
        kc.linear_sigmoid_loss_grad(*args, Y=nan_device((B, N)))


@pytest.mark.parametrize("act,loss", [("gelu", "bce"), ("elu", "l1"), ("sigmoid", "mse"),
                                      ("leaky_relu", "bce")])
def test_engine_matches_the_cpu_engine(tiny_data, act, loss):
    """A tiny model (24 pixels: the simulator is slow), two chunks of Adam steps with a short
    batch, then evaluation, encoding and reconstruction, on both engines."""
    images = np.ascontiguousarray(tiny_data.train.images[:30, 300:324])
    out = {}
    for device in ("cpu", "cuda"):
        eng = make_engine(device, init_params(5, 3, 0.01, 24), OptimConfig("adam", lr=1e-2), 8,
                          activation=act, loss=loss, graphs=False)
        data = eng.put(images[:20])
        perm = np.random.default_rng(2).permutation(20).astype(np.int64)
        sums = []
        for start, stop in ((0, 16), (16, 20)):
            eng.train_steps(data, perm, start, stop)
            sums.append(eng.take_loss_sums())
        out[device] = (np.array(sums), np.array(eng.evaluate_losses(images[20:])),
                       eng.encode(images[20:24]), eng.reconstruct(images[20:24]),
                       eng.get_params())
    for a, b in zip(out["cuda"][:4], out["cpu"][:4]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    for k, v in out["cpu"][4].items():
        np.testing.assert_allclose(out["cuda"][4][k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    assert (out["cpu"][0][:, 0] == out["cpu"][0][:, 1]).all() == (loss == "mse")


PTX_SCRIPT = r"""
import json, sys
from aecore.kernels import cuda as kc
out = []
seen = set()
for func, sig in kc.activation_loss_kernels():
    kind = func.__name__.replace("_gather", "")
    if kind in seen:  # one variant per kernel: compiling is slow
        continue
    seen.add(kind)
    for cc in ((8, 0), (9, 0)):
        ptx = kc.compile_ptx(func, sig, cc)
        out.append(dict(name=func.__name__, cc=list(cc), local=".local" in ptx,
                        entries=ptx.count(".entry ")))
json.dump(out, sys.stdout)
"""


def test_new_kernels_compile_to_ptx_for_sm80_and_sm90():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    r = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    facts = json.loads(r.stdout)
    names = {f["name"] for f in facts}
    for act in AR.ACTIVATIONS[1:]:
        assert f"k_linear_{act}" in names and f"k_backward_{act}" in names, act
    for loss in LR.LOSSES[1:]:
        assert f"k_linear_sigmoid_{loss}" in names, loss
    assert {tuple(f["cc"]) for f in facts} == {(8, 0), (9, 0)}
    for f in facts:
        assert f["entries"] == 1 and not f["local"], f  # register tiles stay in registers


def test_every_fused_kernel_has_its_own_name():
    """Kernel 1 with the sigmoid activation and the reconstruction kernel were both named
    k_linear_sigmoid; PTX entries and kernel reports tell kernels apart by name."""
    from aecore.kernels.cuda import fused_linear_leaky_relu as k1
    from aecore.kernels.cuda import fused_linear_sigmoid as k2

    names = [k1.make(g, p, a).__name__ for a in AR.ACTIVATIONS for g in (False, True)
             for p in (False, True)]
    names += [k2.make_loss(loss, p).__name__ for loss in LR.LOSSES for p in (False, True)]
    names += [k2.make_sigmoid(p).__name__ for p in (False, True)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
