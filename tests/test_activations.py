"""Hidden activations: the float64 references (kernels/activations_reference.py) against
finite differences and PyTorch, and the float32 @njit and CUDA faces against the references on
fresh random inputs with awkward values (0, tiny, huge, the forms' break points)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from epilogue_checks import (activation_kernel, assert_close, awkward_float32, cuda_face_or_skip,
                             fast_exp_rtol, float64_arithmetic, fresh_rng, launch, ptx_facts,
                             vectorized)
from numba import njit

from aecore.kernels import activations_cpu as AC
from aecore.kernels import activations_reference as AR
from aecore.kernels import cpu as kcpu

NAMES = AR.ACTIVATIONS
SLOPE = np.float32(0.01)
# float32 faces against float64: a few float32 ulps relative, plus an absolute floor where the
# value is ~0 (exp clamped at 1.6e-38) or, for derivatives read off a rounded float32 H, where
# 1 - h^2 / h + 1 cancel (|error| <= ~2 ulp of 1)
FWD_TOL = dict(rtol=1e-6, atol=1e-35)
GRAD_TOL = dict(rtol=1e-6, atol=2.5e-7)


@pytest.fixture
def rng(request):
    return fresh_rng(request)


@functools.lru_cache(maxsize=None)
def _njit_faces(name):
    """An elementwise @njit loop over the CPU face (not disk-cached, so its IR can be
    inspected; compiled once per test session)."""
    fwd, bwd = AC.activation(name)
    flags = dict(kcpu._FAST, cache=False)

    @njit(**flags)
    def apply(Z, G, slope, H, D):
        for i in range(Z.shape[0]):
            H[i] = fwd(Z[i], slope)
            D[i] = bwd(G[i], H[i], Z[i], slope)

    return apply


def _run_cpu(name, Z, G=None):
    """(H, backward(G) (the derivative for G = 1), the compiled loop)."""
    H = np.empty_like(Z)
    D = np.empty_like(Z)
    apply = _njit_faces(name)
    apply(Z, np.ones_like(Z) if G is None else G, SLOPE, H, D)
    return H, D, apply


def _reference(name, Z, H):
    """Reference forward at Z, and the derivative the face computes: from the face's own
    float32 H (and Z), so the comparison tests the formula, not H's rounding twice."""
    Z64 = Z.astype(np.float64)
    return (AR.activation(name, Z64, float(SLOPE)),
            AR.activation_grad(name, H.astype(np.float64), Z64, float(SLOPE)))


def _fwd_tol(name, Z):
    """FWD_TOL; for gelu plus the conditioning of exp(2u) on u, which is computed (rounded)
    in float32: a relative error of ~|2u| ulps where gelu(z) = z sigmoid(2u) is tiny."""
    if name != "gelu":
        return FWD_TOL
    z = np.abs(Z.astype(np.float64))
    two_u = 2 * np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)
    return dict(FWD_TOL, rtol=FWD_TOL["rtol"] + 2e-7 * two_u)


@pytest.mark.parametrize("name", NAMES)
def test_cpu_face_matches_reference(rng, name):
    Z = awkward_float32(rng)
    H, D, _ = _run_cpu(name, Z)
    ref_h, ref_d = _reference(name, Z, H)
    assert_close(H, ref_h, what=f"{name} forward", **_fwd_tol(name, Z))
    assert_close(D, ref_d, what=f"{name} derivative", **GRAD_TOL)
    # and the derivative at the true H: within the float32 rounding of H
    true_d = AR.activation_grad(name, ref_h, Z.astype(np.float64), float(SLOPE))
    assert_close(D, true_d, rtol=1e-6, atol=5e-7, what=f"{name} derivative at exact H")


@pytest.mark.parametrize("name", NAMES)
def test_cpu_face_stays_float32_and_vectorizes(name):
    _, _, apply = _run_cpu(name, np.linspace(-5, 5, 64, dtype=np.float32))
    assert float64_arithmetic(apply) == []
    assert vectorized(apply)


def test_float32_check_catches_a_promotion():
    """The check above fails on the bug it is for: math.floor returns an int64 in numba."""
    @njit(cache=False)
    def promoted(Z, out):
        for i in range(Z.shape[0]):
            out[i] = Z[i] - math.floor(Z[i]) * np.float32(0.5)

    Z = np.linspace(-5, 5, 64, dtype=np.float32)
    promoted(Z, np.empty_like(Z))
    assert float64_arithmetic(promoted)


@pytest.mark.parametrize("name", NAMES)
def test_nan_stays_nan(name):
    H, D, _ = _run_cpu(name, np.array([np.nan], np.float32))
    assert np.isnan(H[0]), name


def test_only_gelu_needs_the_preactivation(rng):
    """The backward of every other activation ignores Z (a NaN there changes nothing): the
    engine keeps a Z buffer only where needs_preactivation says so."""
    Z = awkward_float32(rng, 400)
    G = rng.standard_normal(Z.size).astype(np.float32)
    for name in NAMES:
        H, _, _ = _run_cpu(name, Z)
        _, bwd = AC.activation(name)

        @njit(cache=False)
        def backward(G, H, Z, slope, out):
            for i in range(H.shape[0]):
                out[i] = bwd(G[i], H[i], Z[i], slope)

        D, D_nan = np.empty_like(H), np.empty_like(H)
        backward(G, H, Z, SLOPE, D)
        backward(G, H, np.full_like(Z, np.nan), SLOPE, D_nan)
        uses_z = not np.array_equal(D, D_nan, equal_nan=True)
        assert uses_z == AR.needs_preactivation(name), name
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        AR.needs_preactivation("swish")


def test_leaky_relu_face_is_todays_epilogue(rng):
    """leaky_relu's pair gives today's kernels.cpu epilogues bit for bit (NaN and subnormal
    gradients included)."""
    Z = awkward_float32(rng, 1000)[:1000].reshape(20, 50)
    b = rng.standard_normal(50).astype(np.float32)
    G = rng.standard_normal(Z.shape).astype(np.float32)
    G.flat[:3] = np.nan, 1e-40, -1e-40
    today = Z.copy()
    kcpu.bias_leaky_relu_(today, b, SLOPE)
    today_g = G.copy()
    kcpu.leaky_relu_grad_(today_g, today, SLOPE, np.empty(0, np.float64))
    H, D, _ = _run_cpu("leaky_relu", (Z + b).ravel(), G.ravel())
    assert np.array_equal(H.reshape(Z.shape), today)
    assert np.array_equal(D.reshape(Z.shape), today_g, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_reference_derivative_matches_finite_differences(rng, name):
    Z = np.concatenate([rng.standard_normal(300) * 3, rng.uniform(-12, 12, 100)])
    Z = Z[np.abs(Z) > 1e-3]  # off the kink of relu / leaky_relu / elu
    step = 1e-6 * np.maximum(1.0, np.abs(Z))
    fd = (AR.activation(name, Z + step) - AR.activation(name, Z - step)) / (2 * step)
    assert_close(AR.activation_grad(name, AR.activation(name, Z), Z), fd, rtol=1e-6, atol=1e-8,
                 what=name)




@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_reference_matches_pytorch(rng, name):
    """Forward and autograd derivative, float64, elementwise; 0 included (kink conventions)."""
    torch = pytest.importorskip("torch")
    Z = np.concatenate([[0.0, -0.0, 1e-300, -1e-300, 30.0, -30.0],
                        rng.standard_normal(500) * 4])
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    y = AR.torch_activation(name, float(SLOPE))(z)
    y.backward(torch.ones_like(y))
    H = AR.activation(name, Z, float(SLOPE))
    # atol: torch's gelu forms 1 + tanh(u) and 1 - tanh(u)^2, which cancel (ours do not)
    assert_close(H, y.detach().numpy(), rtol=1e-13, atol=1e-14, what=f"{name} forward")
    assert_close(AR.activation_grad(name, H, Z, float(SLOPE)), z.grad.numpy(), rtol=1e-12,
                 atol=1e-13, what=f"{name} derivative")


# --- CUDA: the device functions in the simulator, and compiled for real to PTX ---------------
@pytest.fixture(scope="module")
def cuda_faces():
    return cuda_face_or_skip("activations_cuda")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy scalars
@pytest.mark.parametrize("name", NAMES)
def test_cuda_face_matches_reference(rng, cuda_faces, name):
    Z = awkward_float32(rng, 200)
    H = np.full_like(Z, np.nan)
    D = np.full_like(Z, np.nan)
    launch(activation_kernel(*cuda_faces.activation(name)), Z.size, Z, np.ones_like(Z), SLOPE,
           H, D)
    ref_h, ref_d = _reference(name, Z, H)
    fwd_tol, grad_tol = _fwd_tol(name, Z), dict(GRAD_TOL)
    if name in ("sigmoid", "gelu"):  # their exp is fast-math __expf on a GPU
        z = np.abs(Z.astype(np.float64))
        arg = z if name == "sigmoid" else 2 * np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)
        fwd_tol = dict(fwd_tol, rtol=fwd_tol["rtol"] + fast_exp_rtol(arg))
        grad_tol["rtol"] = grad_tol["rtol"] + fast_exp_rtol(arg)
    assert_close(H, ref_h, what=f"{name} forward (CUDA)", **fwd_tol)
    assert_close(D, ref_d, what=f"{name} derivative (CUDA)", **grad_tol)


def test_cuda_faces_compile_to_float32_ptx(cuda_faces):
    facts = ptx_facts("activation")
    assert len(facts) == 2 * len(NAMES)
    for f in facts:
        assert f["target"] == f"sm_{f['cc'][0]}{f['cc'][1]}", f
        assert f["f64"] == [], f  # float32 throughout: no promoted constant or libm double
        assert not f["local"] and not f["tanh_approx"], f  # tanh.approx is ~5e-4 off
    today = [f for f in ptx_facts("today") if f["name"] == "leaky_relu"]
    ours = [f for f in facts if f["name"] == "leaky_relu"]
    assert len(today) == len(ours) == 2
    for a, b in zip(ours, today):  # today's configuration compiles to today's code
        assert a["cc"] == b["cc"] and a["body"] == b["body"], (a["body"], b["body"])
