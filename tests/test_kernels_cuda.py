"""Every CUDA kernel (kernels/cuda/) against its float64 definition in kernels/reference.py.

Fresh random inputs each run (the seed is printed; rerun one with AECORE_TEST_SEED=<seed>),
awkward shapes (B = 1, 5, 37; K = 13, 70, 784; N = 9, 67, 784: tails in every tile dimension),
uint8 and float32 pixel operands, rows gathered through a permutation. Outputs are poisoned
with NaN before each call, so an element a kernel forgets to write fails the check
``||out - ref|| / ||ref|| < 1e-4``.

Without a GPU these run in Numba's CUDA simulator (turned on here if the conftest did not;
shapes are kept small because the simulator runs each CUDA thread as a Python thread). With a
real GPU the same tests run on it, and the ``@pytest.mark.gpu`` ones add full-size shapes and
the NaN-propagation checks that only mean something on hardware (fast-math intrinsics).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import cuda_or_skip

cuda_or_skip()

from numba import cuda  # noqa: E402

from aecore.kernels import cuda as kc  # noqa: E402
from aecore.kernels import reference as R  # noqa: E402

SIM = kc.SIMULATOR
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(SIM, reason="needs a real GPU (running in the CUDA simulator)")
TOL = 1e-4


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("AECORE_TEST_SEED", np.random.SeedSequence().entropy % 2**63))
    print(f"{request.node.name}: seed {seed}")
    return np.random.default_rng(seed)


def rel_err(out, ref) -> float:
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    if not np.all(np.isfinite(out)):
        return float("inf")  # NaN poison left: an element was not written (or a NaN appeared)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


def poisoned(shape):
    return cuda.to_device(np.full(shape, np.nan, np.float32))


def pixels(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def operand(rng, shape, dtype):
    if dtype == "u8":
        return pixels(rng, shape)
    return rng.random(shape, dtype=np.float32)


def weights(rng, shape, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def source_rows(rng, X_full, B, gather):
    """(device source, perm device array or None, offset, the host rows they denote)."""
    if not gather:
        return cuda.to_device(X_full[:B]), None, 0, X_full[:B]
    n = X_full.shape[0]
    perm = rng.permutation(n).astype(np.int64)
    off = int(rng.integers(0, n - B + 1))
    return cuda.to_device(X_full), cuda.to_device(perm), off, X_full[perm[off:off + B]]


# (B, K, N, pixel dtype, gathered) for the forward products: C (B, N) = X (B, K) W (N, K)^T.
# Each dimension gets a tail (1, 5, 37 rows; K = 13, 70 not multiples of 16; N = 9, 67, 784 not
# multiples of 64) and each input form is covered; K = 784 only as in training (the simulator
# takes ~10 s for it).
LLR_CASES = [
    (1, 13, 9, "f32", False),
    (5, 70, 67, "u8", True),
    (37, 13, 67, "u8", False),
    (37, 70, 9, "f32", True),
    (5, 784, 9, "u8", True),
]


@pytest.mark.parametrize("B,K,N,dtype,gather", LLR_CASES)
def test_linear_leaky_relu(rng, B, K, N, dtype, gather):
    X_full = operand(rng, (B + 7, K), dtype)
    W = weights(rng, (N, K))
    b = weights(rng, (N,), 0.3)
    slope = float(rng.choice([0.01, 0.2]))
    X, perm, off, Xh = source_rows(rng, X_full, B, gather)
    H = poisoned((B, N))
    kc.linear_leaky_relu(X, cuda.to_device(W), cuda.to_device(b), H, slope, perm=perm, off=off)
    ref = R.linear_leaky_relu(Xh, W, b, slope)
    assert rel_err(H.copy_to_host(), ref) < TOL
    assert (ref < 0).any() and (ref > 0).any()  # both branches of the activation exercised


# (B, K, N, target dtype, gathered, write Y)
LSM_CASES = [
    (1, 9, 13, "f32", False, True),
    (5, 67, 70, "u8", True, False),
    (5, 67, 70, "f32", False, False),
    (37, 13, 9, "u8", False, True),
    (37, 13, 9, "f32", True, True),
    (5, 8, 784, "u8", True, True),
]


def test_sigmoid_mse_gradient_is_elementwise_accurate_when_saturated():
    """As on the CPU (tests/test_kernels_cpu.py): y (1 - y) = e r^2, not from a float32 y."""
    from test_kernels_cpu import saturated_case

    H, W, b, T = saturated_case()
    dZ = poisoned((1, 41))
    loss = cuda.to_device(np.zeros(1, np.float64))
    kc.linear_sigmoid_mse(cuda.to_device(H), cuda.to_device(W), cuda.to_device(b),
                          cuda.to_device(T), dZ, loss)
    dZ_ref = R.linear_sigmoid_mse(H, W, b, T)[1]
    got = dZ.copy_to_host()
    assert np.all(got != 0)
    np.testing.assert_allclose(got, dZ_ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("B,K,N,tdtype,gather,write_y", LSM_CASES)
def test_linear_sigmoid_mse(rng, B, K, N, tdtype, gather, write_y):
    Hh = (rng.standard_normal((B, K)) * 2).astype(np.float32)
    W = weights(rng, (N, K), 2.0 / np.sqrt(K))  # |z| up to ~8: both sides of the sigmoid
    b = weights(rng, (N,), 1.0)
    T_full = operand(rng, (B + 5, N), tdtype)
    T, perm, off, Th = source_rows(rng, T_full, B, gather)
    dZ = poisoned((B, N))
    Y = poisoned((B, N)) if write_y else None
    loss = cuda.to_device(np.array([1.25], np.float64))  # accumulates onto what is there
    kc.linear_sigmoid_mse(cuda.to_device(Hh), cuda.to_device(W), cuda.to_device(b), T, dZ, loss,
                          Y=Y, perm=perm, off=off)
    Yr, dZr, loss_r = R.linear_sigmoid_mse(Hh, W, b, Th)
    assert rel_err(dZ.copy_to_host(), dZr) < TOL
    if write_y:
        assert rel_err(Y.copy_to_host(), Yr) < TOL
    got = loss.copy_to_host()[0] - 1.25
    assert abs(got - loss_r) / loss_r < TOL


@pytest.mark.parametrize("B,K,N", [(1, 9, 13), (37, 67, 70)])
def test_linear_sigmoid(rng, B, K, N):
    Hh = (rng.standard_normal((B, K)) * 2).astype(np.float32)
    W = weights(rng, (N, K), 2.0 / np.sqrt(K))
    b = weights(rng, (N,), 1.0)
    Y = poisoned((B, N))
    kc.linear_sigmoid(cuda.to_device(Hh), cuda.to_device(W), cuda.to_device(b), Y)
    assert rel_err(Y.copy_to_host(), R.linear_sigmoid(Hh, W, b)) < TOL


def test_sigmoid_extremes():
    """|z| up to 1e4: the safe form gives 0 and 1, never NaN (no exp overflow)."""
    Hh = np.array([[1.0], [-1.0]], np.float32)
    W = np.array([[1e4], [-1e4], [50.0], [0.0]], np.float32)
    b = np.zeros(4, np.float32)
    Y = poisoned((2, 4))
    kc.linear_sigmoid(cuda.to_device(Hh), cuda.to_device(W), cuda.to_device(b), Y)
    assert rel_err(Y.copy_to_host(), R.linear_sigmoid(Hh, W, b)) < TOL


# (B, N, K) for backward_hidden: dH (B, K) = dZ (B, N) W2 (N, K), reduction over N
@pytest.mark.parametrize("B,N,K", [(1, 13, 9), (5, 70, 67), (37, 9, 13), (5, 784, 8)])
def test_backward_hidden(rng, B, N, K):
    dZ = rng.standard_normal((B, N)).astype(np.float32)
    W2 = weights(rng, (N, K))
    Hh = rng.standard_normal((B, K)).astype(np.float32)
    Hh[0, 0] = 0.0  # H == 0 takes the slope branch (H > 0 <=> Z1 > 0)
    slope = float(rng.choice([0.01, 0.2]))
    dH = poisoned((B, K))
    kc.backward_hidden(cuda.to_device(dZ), cuda.to_device(W2), cuda.to_device(Hh), dH, slope)
    assert rel_err(dH.copy_to_host(), R.backward_hidden(dZ, W2, Hh, slope)) < TOL


# --- split-K: the reduction of kernels 1-3 shared between blocks (kc.SplitK) ------------------
# Forced slice counts on shapes with tails in every dimension (K = 70, 200: slices of 16-wide
# steps that do not divide K; two tiles of N or B where the 64 tile allows). Each kernel runs
# twice on the same inputs: the per-tile counters must be back at 0 after a launch, and the
# result bitwise the same (the last block sums the partials in slice order, whichever it is).
@pytest.mark.parametrize("splits", [2, 3, 5])
@pytest.mark.parametrize("B,K,N", [(5, 70, 67), (37, 200, 9)])
def test_splitk_linear_leaky_relu(rng, splits, B, K, N):
    sk = kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=16)
    S, kchunk = sk.plan(B, N, K)
    assert S > 1 and (S - 1) * kchunk < K <= S * kchunk
    X_full = pixels(rng, (B + 7, K))
    W = weights(rng, (N, K))
    b = weights(rng, (N,), 0.3)
    X, perm, off, Xh = source_rows(rng, X_full, B, True)
    outs = []
    for _ in range(2):
        H = poisoned((B, N))
        kc.linear_leaky_relu(X, cuda.to_device(W), cuda.to_device(b), H, 0.2, perm=perm, off=off,
                             splitk=sk)
        outs.append(H.copy_to_host())
        assert not sk.cnt.copy_to_host().any()
    assert rel_err(outs[0], R.linear_leaky_relu(Xh, W, b, 0.2)) < TOL
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("splits", [2, 4])
def test_splitk_linear_sigmoid_mse(rng, splits):
    B, K, N = 5, 90, 70
    sk = kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=16)
    Hh = (rng.standard_normal((B, K)) * 2).astype(np.float32)
    W = weights(rng, (N, K), 2.0 / np.sqrt(K))
    b = weights(rng, (N,), 1.0)
    T_full = pixels(rng, (B + 5, N))
    T, perm, off, Th = source_rows(rng, T_full, B, True)
    Yr, dZr, loss_r = R.linear_sigmoid_mse(Hh, W, b, Th)
    for _ in range(2):
        dZ, Y = poisoned((B, N)), poisoned((B, N))
        loss = cuda.to_device(np.zeros(1, np.float64))
        kc.linear_sigmoid_mse(cuda.to_device(Hh), cuda.to_device(W), cuda.to_device(b), T, dZ,
                              loss, Y=Y, perm=perm, off=off, splitk=sk)
        assert rel_err(dZ.copy_to_host(), dZr) < TOL
        assert rel_err(Y.copy_to_host(), Yr) < TOL
        assert abs(loss.copy_to_host()[0] - loss_r) / loss_r < TOL  # added once per element
        assert not sk.cnt.copy_to_host().any()


@pytest.mark.parametrize("splits", [3, 7])
def test_splitk_backward_hidden(rng, splits):
    B, N, K = 37, 200, 67
    sk = kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=16)
    dZ = rng.standard_normal((B, N)).astype(np.float32)
    W2 = weights(rng, (N, K))
    Hh = rng.standard_normal((B, K)).astype(np.float32)
    dH = poisoned((B, K))
    kc.backward_hidden(cuda.to_device(dZ), cuda.to_device(W2), cuda.to_device(Hh), dH, 0.01,
                       splitk=sk)
    assert rel_err(dH.copy_to_host(), R.backward_hidden(dZ, W2, Hh, 0.01)) < TOL
    assert not sk.cnt.copy_to_host().any()


def test_splitk_plan():
    """The automatic plan: slices cover K with none empty, whole BK steps of at least
    MIN_SLICE_STEPS, roughly `blocks` blocks, never more partials than the workspace holds."""
    sk = kc.SplitK(blocks=264, capacity=1 << 20, max_tiles=64)
    tile = kc.BM * kc.BN
    for M, N, K in [(64, 64, 784), (64, 512, 784), (256, 512, 784), (64, 784, 512),
                    (64, 784, 64), (1024, 512, 784), (1, 1, 1), (5000, 5000, 784)]:
        S, kchunk = sk.plan(M, N, K)
        tiles = -(-M // kc.BM) * -(-N // kc.BN)
        assert S >= 1 and kchunk % kc.BK == 0
        assert (S - 1) * kchunk < K <= S * kchunk
        assert S == 1 or (S * tiles * tile <= sk.ws.shape[0] and tiles <= sk.cnt.shape[0])
        assert S == 1 or kchunk >= kc.MIN_SLICE_STEPS * kc.BK
        assert S * tiles <= max(264, tiles)
    assert sk.plan(64, 64, 784)[0] > 1  # the batch-64 forward product is split


# (B, N, K) for the weight gradients: G (N, K) = dZ (B, N)^T A (B, K), reduction over B
def _wg_inputs(rng, B, N, K, dtype, gather):
    dZ = (rng.standard_normal((B, N)) * 0.1).astype(np.float32)
    A_full = operand(rng, (B + 6, K), dtype)
    A, perm, off, Ah = source_rows(rng, A_full, B, gather)
    return dZ, A, perm, off, Ah


WG_CASES = [
    (1, 9, 13, "f32", False),
    (5, 67, 70, "u8", True),
    (5, 67, 70, "f32", False),
    (37, 9, 13, "u8", False),
    (37, 9, 13, "f32", True),
    (5, 8, 784, "u8", True),
]


@pytest.mark.parametrize("B,N,K,dtype,gather", WG_CASES)
def test_weight_grad(rng, B, N, K, dtype, gather):
    dZ, A, perm, off, Ah = _wg_inputs(rng, B, N, K, dtype, gather)
    G = poisoned((N, K))
    gb = poisoned((N,))
    kc.weight_grad(cuda.to_device(dZ), A, G, gb, perm=perm, off=off)
    Gr, gbr = R.weight_grad(dZ, Ah)
    assert rel_err(G.copy_to_host(), Gr) < TOL
    assert rel_err(gb.copy_to_host(), gbr) < TOL


def _params(rng, N, K):
    return weights(rng, (N, K)), weights(rng, (N,), 0.1)


def _check_update(W0, b0, Wd, bd, W_ref, b_ref):
    """Compare the *change* of each parameter, so that an error in the update cannot hide
    under the weights' size (the inputs keep the updates within ~10x of the weights, so float32
    storage of W adds < 1e-6 to this relative error)."""
    assert rel_err(Wd.copy_to_host() - W0, W_ref - W0) < TOL
    assert rel_err(bd.copy_to_host() - b0, b_ref - b0) < TOL


@pytest.mark.parametrize("B,N,K,dtype,gather", [(1, 9, 13, "f32", False),
                                                  (37, 67, 70, "f32", True),
                                                  (5, 8, 784, "u8", True)])
def test_sgd_weight_step(rng, B, N, K, dtype, gather):
    dZ, A, perm, off, Ah = _wg_inputs(rng, B, N, K, dtype, gather)
    W0, b0 = _params(rng, N, K)
    Wd, bd = cuda.to_device(W0), cuda.to_device(b0)
    lr = 0.5
    kc.sgd_weight_step(cuda.to_device(dZ), A, Wd, bd, lr, perm=perm, off=off)
    Gr, gbr = R.weight_grad(dZ, Ah)
    _check_update(W0, b0, Wd, bd, R.sgd_update(W0, Gr, lr)[0], R.sgd_update(b0, gbr, lr)[0])


@pytest.mark.parametrize("B,N,K", [(5, 67, 70), (37, 9, 13)])
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_weight_step(rng, B, N, K, nesterov):
    dZ, A, perm, off, Ah = _wg_inputs(rng, B, N, K, "u8", True)
    W0, b0 = _params(rng, N, K)
    VW0 = (rng.standard_normal((N, K)) * 0.01).astype(np.float32)
    Vb0 = (rng.standard_normal(N) * 0.01).astype(np.float32)
    Wd, bd = cuda.to_device(W0), cuda.to_device(b0)
    VWd, Vbd = cuda.to_device(VW0.reshape(-1)), cuda.to_device(Vb0)
    lr, mu = 0.3, 0.9
    kc.momentum_weight_step(cuda.to_device(dZ), A, Wd, bd, VWd, Vbd, lr, mu, nesterov,
                            perm=perm, off=off)
    Gr, gbr = R.weight_grad(dZ, Ah)
    W_ref, VW_ref = R.sgd_update(W0, Gr, lr, mu, nesterov, VW0)
    b_ref, Vb_ref = R.sgd_update(b0, gbr, lr, mu, nesterov, Vb0)
    _check_update(W0, b0, Wd, bd, W_ref, b_ref)
    assert rel_err(VWd.copy_to_host().reshape(N, K), VW_ref) < TOL
    assert rel_err(Vbd.copy_to_host(), Vb_ref) < TOL


@pytest.mark.parametrize("B,N,K", [(5, 67, 70), (37, 9, 13)])
@pytest.mark.parametrize("t", [1, 7])
def test_adam_weight_step(rng, B, N, K, t):
    dZ, A, perm, off, Ah = _wg_inputs(rng, B, N, K, "u8", True)
    W0, b0 = _params(rng, N, K)
    first = t == 1
    MW0 = np.zeros((N, K), np.float32) if first else (rng.standard_normal((N, K)) * 1e-2).astype(np.float32)
    VW0 = np.zeros((N, K), np.float32) if first else (rng.random((N, K)) * 1e-4).astype(np.float32)
    Mb0 = np.zeros(N, np.float32) if first else (rng.standard_normal(N) * 1e-2).astype(np.float32)
    Vb0 = np.zeros(N, np.float32) if first else (rng.random(N) * 1e-4).astype(np.float32)
    dev = [cuda.to_device(a.reshape(-1)) for a in (MW0, Mb0, VW0, Vb0)]
    Wd, bd = cuda.to_device(W0), cuda.to_device(b0)
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    hp = cuda.to_device(kc.adam_hparams(lr, t, b1, b2, eps))
    kc.adam_weight_step(cuda.to_device(dZ), A, Wd, bd, *dev, hp, perm=perm, off=off)
    Gr, gbr = R.weight_grad(dZ, Ah)
    W_ref, MW_ref, VW_ref = R.adam_update(W0, Gr, MW0, VW0, lr, t, b1, b2, eps)
    b_ref, Mb_ref, Vb_ref = R.adam_update(b0, gbr, Mb0, Vb0, lr, t, b1, b2, eps)
    _check_update(W0, b0, Wd, bd, W_ref, b_ref)
    for d, ref in zip(dev, (MW_ref, Mb_ref, VW_ref, Vb_ref)):
        assert rel_err(d.copy_to_host(), ref.reshape(-1)) < TOL


@pytest.mark.parametrize("lr,b1,b2,eps", [(1e-3, 0.9, 0.999, 1e-8), (0.3, 0.5, 0.9999, 1e-6)])
@pytest.mark.parametrize("t0,n", [(1, 128), (781, 3), (156000, 130)])
def test_adam_hparams_of_a_chunk_equal_step_by_step(lr, b1, b2, eps, t0, n):
    """The engine's one-array hyper-parameters of a chunk of steps are bitwise those of
    adam_hparams step by step (its per-step definition)."""
    one = np.stack([kc.adam_hparams(lr, t, b1, b2, eps) for t in range(t0, t0 + n)])
    np.testing.assert_array_equal(kc.adam_hparams_steps(lr, t0, n, b1, b2, eps), one)


def test_zero():
    x = cuda.to_device(np.array([3.0, np.nan, -1.0], np.float64))
    kc.zero_(x)
    assert np.array_equal(x.copy_to_host(), np.zeros(3))


def test_nan_reaches_the_loss():
    """Divergence detection relies on a NaN / inf in the weights reaching the loss sum."""
    X = np.full((3, 5), 100, np.uint8)
    W1 = np.ones((4, 5), np.float32)
    W1[1, 2] = np.nan
    b1 = np.zeros(4, np.float32)
    H = poisoned((3, 4))
    kc.linear_leaky_relu(cuda.to_device(X), cuda.to_device(W1), cuda.to_device(b1), H)
    assert np.isnan(H.copy_to_host()[:, 1]).all()
    W2 = np.ones((6, 4), np.float32)
    dZ = poisoned((3, 6))
    loss = cuda.to_device(np.zeros(1))
    T = np.zeros((3, 6), np.uint8)
    kc.linear_sigmoid_mse(H, cuda.to_device(W2), cuda.to_device(np.zeros(6, np.float32)),
                          cuda.to_device(T), dZ, loss)
    assert np.isnan(loss.copy_to_host()[0])
    W2[0, 0] = np.inf  # an inf weight times a zero activation: z = inf * 0 = NaN
    H2 = cuda.to_device(np.zeros((3, 4), np.float32))
    kc.linear_sigmoid_mse(H2, cuda.to_device(W2), cuda.to_device(np.zeros(6, np.float32)),
                          cuda.to_device(T), dZ, loss)
    assert np.isnan(loss.copy_to_host()[0])


# --- real GPU only ---------------------------------------------------------------------------
@gpu
@needs_gpu
@pytest.mark.parametrize("B,h", [(64, 64), (64, 512), (256, 256)])
def test_splitk_is_race_free(rng, B, h):
    """100 rounds of split-K forward and backward products (200 launches) give the first
    result bit for bit (a missing fence or a stale partial would show as a changed bit)."""
    sk = kc.SplitK()
    X = cuda.to_device(pixels(rng, (B, 784)))
    W1 = cuda.to_device(weights(rng, (h, 784)))
    b1 = cuda.to_device(weights(rng, (h,), 0.1))
    dZ = cuda.to_device(rng.standard_normal((B, 784)).astype(np.float32))
    W2 = cuda.to_device(weights(rng, (784, h)))
    H, dH = poisoned((B, h)), poisoned((B, h))
    assert sk.plan(B, h, 784)[0] > 1
    kc.linear_leaky_relu(X, W1, b1, H, 0.01, splitk=sk)
    kc.backward_hidden(dZ, W2, H, dH, 0.01, splitk=sk)
    H0, dH0 = H.copy_to_host(), dH.copy_to_host()
    H1, dH1 = poisoned((B, h)), poisoned((B, h))
    for _ in range(100):
        kc.linear_leaky_relu(X, W1, b1, H1, 0.01, splitk=sk)
        kc.backward_hidden(dZ, W2, H, dH1, 0.01, splitk=sk)
    np.testing.assert_array_equal(H1.copy_to_host(), H0)
    np.testing.assert_array_equal(dH1.copy_to_host(), dH0)
    assert not sk.cnt.copy_to_host().any()


@gpu
@needs_gpu
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("B,h", [(64, 64), (256, 512), (1000, 128)])
def test_full_size_step_kernels(rng, B, h, split):
    """The training shapes (K = 784, the output 784 wide) for every GEMM kernel on hardware,
    with and without split-K (the engine's automatic plan for this GPU)."""
    sk = kc.SplitK() if split else None
    n = 3 * B
    X_full = pixels(rng, (n, 784))
    perm = rng.permutation(n).astype(np.int64)
    off = B
    Xh = X_full[perm[off:off + B]]
    W1, b1 = weights(rng, (h, 784)), weights(rng, (h,), 0.1)
    W2, b2 = weights(rng, (784, h)), weights(rng, (784,), 0.1)
    dX, dperm = cuda.to_device(X_full), cuda.to_device(perm)
    dW1, db1, dW2, db2 = (cuda.to_device(a) for a in (W1, b1, W2, b2))
    H, dZ, Y, dH = poisoned((B, h)), poisoned((B, 784)), poisoned((B, 784)), poisoned((B, h))
    G1, gb1 = poisoned((h, 784)), poisoned((h,))
    loss = cuda.to_device(np.zeros(1))
    kc.linear_leaky_relu(dX, dW1, db1, H, 0.01, perm=dperm, off=off, splitk=sk)
    kc.linear_sigmoid_mse(H, dW2, db2, dX, dZ, loss, Y=Y, perm=dperm, off=off, splitk=sk)
    kc.backward_hidden(dZ, dW2, H, dH, 0.01, splitk=sk)
    kc.weight_grad(dH, dX, G1, gb1, perm=dperm, off=off)
    Hr = R.linear_leaky_relu(Xh, W1, b1)
    Yr, dZr, lr_ = R.linear_sigmoid_mse(H.copy_to_host(), W2, b2, Xh)
    assert rel_err(H.copy_to_host(), Hr) < TOL
    assert rel_err(Y.copy_to_host(), Yr) < TOL
    assert rel_err(dZ.copy_to_host(), dZr) < TOL
    assert abs(loss.copy_to_host()[0] - lr_) / lr_ < TOL
    dHr = R.backward_hidden(dZ.copy_to_host(), W2, H.copy_to_host())
    assert rel_err(dH.copy_to_host(), dHr) < TOL
    G1r, gb1r = R.weight_grad(dH.copy_to_host(), Xh)
    assert rel_err(G1.copy_to_host(), G1r) < TOL
    assert rel_err(gb1.copy_to_host(), gb1r) < TOL


@gpu
@needs_gpu
def test_foreign_arrays():
    """Kernels take any __cuda_array_interface__ array (CuPy here, when installed)."""
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng()
    X = pixels(rng, (33, 784))
    W = weights(rng, (70, 784))
    b = weights(rng, (70,), 0.1)
    H = cp.full((33, 70), cp.nan, cp.float32)
    kc.linear_leaky_relu(cp.asarray(X), cp.asarray(W), cp.asarray(b), H)
    assert rel_err(cp.asnumpy(H), R.linear_leaky_relu(X, W, b)) < TOL
