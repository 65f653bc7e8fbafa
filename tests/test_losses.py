"""Output losses (mse, bce, l1 on the Sigmoid output): the float64 references
(kernels/losses_reference.py) against finite differences and PyTorch, the whole model's
reference gradients for every activation x loss against autograd, and the float32 @njit and
CUDA faces against the references on fresh random logits with awkward values."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from epilogue_checks import (assert_close, awkward_float32, cuda_face_or_skip, fast_exp_rtol,
                             float64_arithmetic, fresh_rng, launch, loss_kernel, ptx_arithmetic,
                             ptx_facts, vectorized)
from numba import njit

from aecore.kernels import cpu as kcpu
from aecore.kernels import losses_cpu as LC
from aecore.kernels import losses_reference as LR
from aecore.kernels import reference as R
from aecore.kernels import activations_reference as AR

NAMES = LR.LOSSES
EPS_Y = 3e-7  # error bound of a float32 sigmoid (exp to ~2e-7, one division)


@pytest.fixture
def rng(request):
    return fresh_rng(request)


def _targets(rng, n):
    """Pixels: exact 0 and 1, uint8 levels / 255 as the kernels read them, and uniform."""
    t = np.concatenate([[0.0, 1.0, 0.5], rng.integers(0, 256, n // 2) / 255.0,
                        rng.uniform(0, 1, n)])[:n]
    return t.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _njit_epilogue(name):
    """The fused output epilogue over (B, N) logits as kernels.cpu will run it (512-bit vectors
    where the CPU has them, float32 row sums, float64 totals, subnormal dZ flushed), compiled
    once, not disk-cached."""
    point = LC.loss_point(name)
    SQ = LR.needs_squared_error(name)  # a compile-time constant: mse sums one accumulator

    @njit(**dict(kcpu._FAST, cache=False))
    def epilogue(Z, b, T, scale):
        kcpu.wide_vectors()  # as the kernels do: the row sums' lanes add in their order
        s32 = np.float32(scale)
        total = 0.0
        total_sq = 0.0
        for i in range(Z.shape[0]):
            z = Z[i]
            t = T[i]
            rowf = np.float32(0.0)
            rows = np.float32(0.0)
            for j in range(z.shape[0]):
                loss, sq, g = point(z[j] + b[j], kcpu.unit(t[j]), s32)
                rowf += loss
                if SQ:
                    rows += sq
                z[j] = kcpu.flush_subnormal(g)
            total += np.float64(rowf)
            total_sq += np.float64(rows if SQ else rowf)
        return total, total_sq

    return epilogue


@functools.lru_cache(maxsize=None)
def _njit_terms(name):
    """(loss, sq, dZ) of each element into arrays: the point function alone, float32."""
    point = LC.loss_point(name)

    @njit(**dict(kcpu._FAST, cache=False))
    def terms(Z, T, scale, L, S, G):
        for i in range(Z.shape[0]):
            L[i], S[i], G[i] = point(Z[i], T[i], scale)

    return terms


def _elementwise(name, Z, T, face):
    """(loss, sq, dZ) per element from a face: 'cpu' or a CUDA module; scale = 1 / N."""
    n = Z.size
    scale = np.float32(LR.grad_scale(name, n))
    L, S, G = (np.full_like(Z, np.nan) for _ in range(3))
    if face == "cpu":
        _njit_terms(name)(Z, T, scale, L, S, G)
        out = Z.reshape(1, -1).copy()  # and dZ through the epilogue: the same, flushed
        _njit_epilogue(name)(out, np.zeros(n, np.float32), T.reshape(1, -1), scale)
        flushed = np.where(np.abs(G) < np.float32(1.1754944e-38), np.float32(0.0), G)
        assert np.array_equal(out.ravel(), flushed, equal_nan=True)
    else:
        launch(loss_kernel(face.loss_point(name)), n, Z, T, scale, L, S, G)
    return L, S, G, float(scale)


def _check_against_reference(name, Z, T, L, S, G, scale, eps_y=EPS_Y):
    """The face's (L, S, G) against the reference; eps_y bounds the float32 sigmoid's error
    (an array on a GPU, where exp is fast-math __expf)."""
    loss, sq, g = LR.loss_terms(name, Z.astype(np.float64), T.astype(np.float64))
    d = np.abs(np.sqrt(sq))
    assert_close(S, sq, rtol=1e-6, atol=2 * d * eps_y + eps_y**2, what=f"{name} squared error")
    assert_close(L, loss, rtol=1e-6, atol=(2 * d * eps_y + eps_y**2) if name == "mse" else eps_y,
                 what=f"{name} loss")
    tie = (d <= eps_y) if name == "l1" else np.zeros(d.shape, bool)  # sign(y - t) unresolved
    dz = scale * g
    flush = np.abs(dz) < np.float32(1.1754944e-38)  # the epilogue flushes subnormal dZ to 0
    atol = np.broadcast_to(scale * eps_y, d.shape)[~tie]
    assert_close(np.where(flush, 0.0, G)[~tie], np.where(flush, 0.0, dz)[~tie], rtol=1e-6,
                 atol=atol, what=f"{name} dZ")


@pytest.mark.parametrize("name", NAMES)
def test_cpu_face_matches_reference(rng, name):
    Z = awkward_float32(rng)
    T = _targets(rng, Z.size)
    _check_against_reference(name, Z, T, *_elementwise(name, Z, T, "cpu"))


@pytest.mark.parametrize("name", NAMES)
def test_cpu_face_stays_float32_vectorizes_and_keeps_nan(name):
    Z = np.array([np.nan, 0.5], np.float32)
    L, S, G = (np.empty_like(Z) for _ in range(3))
    _njit_terms(name)(Z, np.array([0.5, 0.5], np.float32), np.float32(1.0), L, S, G)
    assert np.isnan(L[0]) and np.isnan(S[0]) and np.isnan(G[0])
    assert float64_arithmetic(_njit_terms(name)) == [] and vectorized(_njit_terms(name))
    Z2 = Z.reshape(1, 2).copy()
    total, total_sq = _njit_epilogue(name)(Z2, np.zeros(2, np.float32),
                                           np.full((1, 2), 0.5, np.float32), 1.0)
    assert np.isnan(total) and np.isnan(total_sq)
    assert np.isnan(Z2[0, 0]) and not np.isnan(Z2[0, 1])  # dZ keeps the NaN, as on CUDA


@pytest.mark.parametrize("pixels", ["uint8", "float32"])
def test_mse_face_is_todays_epilogue(rng, pixels):
    """mse's point function in the epilogue above gives today's bias_sigmoid_mse_ bit for bit:
    dZ, and the loss sum (which is also the squared-error sum)."""
    B, N = 7, 784
    Z = (3 * rng.standard_normal((B, N))).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    T = rng.integers(0, 256, (B, N)).astype(np.uint8)
    T = T if pixels == "uint8" else (T / 255.0).astype(np.float32)
    scale = 2.0 / (B * N)
    today = Z.copy()
    loss_today = kcpu.bias_sigmoid_mse_(today, b, T, scale, np.empty((0, N), np.float32),
                                        np.empty(0, np.float64))
    ours = Z.copy()
    loss, sq = _njit_epilogue("mse")(ours, b, T, scale)
    assert np.array_equal(ours, today)
    assert loss == loss_today == sq


@pytest.mark.parametrize("name", NAMES)
def test_reference_gradient_matches_finite_differences(rng, name):
    """dZ of output_loss_grad is the gradient of the *mean* loss over the batch's pixels."""
    Z = rng.standard_normal((3, 11)) * 3
    T = rng.uniform(0, 1, Z.shape)
    dZ, loss_sum, _ = LR.output_loss_grad(name, Z, T)
    step = 1e-6
    fd = np.empty_like(Z)
    for idx in np.ndindex(Z.shape):
        hi, lo = Z.copy(), Z.copy()
        hi[idx] += step
        lo[idx] -= step
        fd[idx] = (LR.output_loss_grad(name, hi, T)[1] - LR.output_loss_grad(name, lo, T)[1]) / (
            2 * step * Z.size)
    assert_close(dZ, fd, rtol=1e-5, atol=1e-10, what=name)
    assert loss_sum == pytest.approx(float(np.sum(LR.loss_terms(name, Z, T)[0])))


@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_reference_matches_pytorch(rng, name):
    """Mean loss and its autograd gradient w.r.t. the logits, float64. For l1 some targets
    equal y exactly (torch's gradient is 0 there: sign(0) = 0); for bce both
    nn.BCEWithLogitsLoss and nn.BCELoss on the Sigmoid output (its log clamp at -100 is not
    reached here)."""
    torch = pytest.importorskip("torch")
    Z = rng.standard_normal((4, 50)) * 4
    T = rng.uniform(0, 1, Z.shape)
    Z[0, :10], T[0, :10] = 0.0, 0.5  # y == t exactly, in both
    z = torch.tensor(Z, requires_grad=True)
    t = torch.tensor(T)
    losses = [LR.torch_loss(name)] + ([torch.nn.BCEWithLogitsLoss()] if name == "bce" else [])
    dZ, loss_sum, sq_sum = LR.output_loss_grad(name, Z, T)
    for loss_fn in losses:
        z.grad = None
        arg = z if isinstance(loss_fn, torch.nn.BCEWithLogitsLoss) else torch.sigmoid(z)
        loss = loss_fn(arg, t)
        loss.backward()
        assert loss_sum / Z.size == pytest.approx(loss.item(), rel=1e-13)
        assert_close(dZ, z.grad.numpy(), rtol=1e-11, atol=1e-17, what=f"{name} {loss_fn}")
    assert sq_sum / Z.size == pytest.approx(
        torch.nn.functional.mse_loss(torch.sigmoid(z), t).item(), rel=1e-13)


@pytest.mark.torch
def test_model_gradients_match_pytorch_for_every_activation_and_loss(rng):
    """losses_reference.gradients (the whole 784 -> h -> 784 step) against autograd through
    nn.Sequential(Linear, activation, Linear, Sigmoid) in float64, for all 18 combinations."""
    torch = pytest.importorskip("torch")
    from test_activations import SLOPE

    B, K, H = 5, 784, 7
    X = rng.integers(0, 256, (B, K)).astype(np.uint8)
    W1, b1 = rng.standard_normal((H, K)) * 0.05, rng.standard_normal(H) * 0.1
    W2, b2 = rng.standard_normal((K, H)) * 0.5, rng.standard_normal(K) * 0.1
    x = torch.tensor(X / 255.0)
    for act in AR.ACTIVATIONS:
        for loss in NAMES:
            model = torch.nn.Sequential(torch.nn.Linear(K, H),
                                        AR.torch_activation(act, float(SLOPE)),
                                        torch.nn.Linear(H, K), torch.nn.Sigmoid()).double()
            model.load_state_dict({k: torch.tensor(v) for k, v in
                                   zip(("0.weight", "0.bias", "2.weight", "2.bias"),
                                       (W1, b1, W2, b2))})
            y = model(x)
            fn = LR.torch_loss(loss)
            fn(y, x).backward()
            ours = LR.gradients(X, W1, b1, W2, b2, act, loss, float(SLOPE))
            assert ours[0] == pytest.approx(fn(y, x).item(), rel=1e-12), (act, loss)
            assert ours[1] == pytest.approx(torch.nn.functional.mse_loss(y, x).item(), rel=1e-12)
            for g, p in zip(ours[2:], model.parameters()):
                assert_close(g, p.grad.numpy(), rtol=1e-9, atol=1e-14, what=f"{act} {loss}")
    ours, today = LR.gradients(X, W1, b1, W2, b2), R.gradients(X, W1, b1, W2, b2)
    assert ours[0] == ours[1] == pytest.approx(today[0], rel=1e-14)  # leaky_relu + mse
    for a, b in zip(ours[2:], today[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-16)


def test_names_and_scales():
    assert [LR.needs_squared_error(n) for n in NAMES] == [False, True, True]
    assert LR.grad_scale("mse", 64 * 784) == 2.0 / (64 * 784)
    assert LR.grad_scale("bce", 40 * 784) == 1.0 / (40 * 784)
    with pytest.raises(ValueError, match="unknown loss 'huber': choose one of mse, bce, l1"):
        LC.loss_point("huber")


# --- CUDA: the device functions in the simulator, and compiled for real to PTX ---------------
@pytest.fixture(scope="module")
def cuda_faces():
    return cuda_face_or_skip("losses_cuda")


@pytest.mark.parametrize("name", NAMES)
def test_cuda_face_matches_reference(rng, cuda_faces, name):
    Z = awkward_float32(rng, 200)
    T = _targets(rng, Z.size)
    eps_y = EPS_Y * (1 + fast_exp_rtol(Z) / 1.2e-7)
    _check_against_reference(name, Z, T, *_elementwise(name, Z, T, cuda_faces), eps_y=eps_y)


def test_cuda_faces_compile_to_float32_ptx(cuda_faces):
    facts = ptx_facts("loss")
    assert len(facts) == 2 * len(NAMES)
    for f in facts:
        assert f["target"] == f"sm_{f['cc'][0]}{f['cc'][1]}", f
        assert f["f64"] == [] and not f["local"], f
    today = [f for f in ptx_facts("today") if f["name"] == "mse"]
    ours = [f for f in facts if f["name"] == "mse"]
    assert len(today) == len(ours) == 2
    for a, b in zip(ours, today):  # today's configuration: today's arithmetic, in its order
        assert a["cc"] == b["cc"]
        assert ptx_arithmetic(a["body"]) == ptx_arithmetic(b["body"]), (a["body"], b["body"])
