"""CPU kernels (``aecore.kernels.cpu``) against their float64 references, and the whole backward
pass against central finite differences.

Inputs are fresh random draws each run (the seed is printed on failure), shapes include awkward
ones (784 is no multiple of any tile, batches of 1 and 37), and every output is poisoned with NaN
before the call so an element the kernel forgets to write fails the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from aecore.kernels import cpu as K
from aecore.kernels import reference as ref

TOL = 1e-5  # ||out - ref|| / ||ref|| on the CPU (float32 data, float32/float64 accumulation)
SHAPES = [(1, 784, 64), (37, 784, 67), (64, 784, 512), (5, 13, 9), (130, 70, 128)]


@pytest.fixture
def rng(request):
    seed = np.random.SeedSequence().entropy % 2**32
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return np.random.default_rng(seed)


def rel(out, expected):
    out = np.asarray(out, np.float64)
    assert np.all(np.isfinite(out)), "output has NaN/inf (an element was not written?)"
    return np.linalg.norm(out - expected) / np.linalg.norm(expected)


def poisoned(*shape):
    return np.full(shape, np.nan, np.float32)


def layer(rng, n_out, n_in, scale=None):
    scale = scale or 1.0 / np.sqrt(n_in)
    W = (rng.standard_normal((n_out, n_in)) * scale).astype(np.float32)
    b = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
    return W, b


def pixels(rng, B, D):
    return rng.integers(0, 256, (B, D), dtype=np.uint8)


@pytest.mark.parametrize("B,D,h", SHAPES)
@pytest.mark.parametrize("input_dtype", ["uint8", "float32"])
def test_linear_leaky_relu(rng, B, D, h, input_dtype):
    X = pixels(rng, B, D)
    if input_dtype == "float32":
        X = rng.standard_normal((B, D)).astype(np.float32)
    W, b = layer(rng, h, D, scale=0.1)
    slope = float(rng.uniform(0.001, 0.3))
    H = poisoned(B, h)
    K.linear_leaky_relu(X, W, b, H, slope)
    assert rel(H, ref.linear_leaky_relu(X, W, b, slope)) < TOL


@pytest.mark.parametrize("B,D,h", SHAPES)
def test_linear_sigmoid(rng, B, D, h):
    H = rng.standard_normal((B, h)).astype(np.float32)
    W, b = layer(rng, D, h, scale=3.0)  # large |z|: exercises the safe sigmoid at both ends
    Y = poisoned(B, D)
    K.linear_sigmoid(H, W, b, Y)
    assert rel(Y, ref.linear_sigmoid(H, W, b)) < TOL


@pytest.mark.parametrize("B,D,h", SHAPES)
@pytest.mark.parametrize("write_y", [False, True])
def test_linear_sigmoid_mse(rng, B, D, h, write_y):
    H = rng.standard_normal((B, h)).astype(np.float32)
    W, b = layer(rng, D, h)
    T = pixels(rng, B, D)
    dZ = poisoned(B, D)
    Y = poisoned(B, D) if write_y else None
    loss = K.linear_sigmoid_mse(H, W, b, T, dZ, Y)
    Y_ref, dZ_ref, loss_ref = ref.linear_sigmoid_mse(H, W, b, T)
    assert rel(dZ, dZ_ref) < TOL
    assert abs(loss - loss_ref) / loss_ref < TOL
    if write_y:
        assert rel(Y, Y_ref) < TOL


def test_sigmoid_is_safe_for_huge_inputs_and_keeps_nan():
    Z = np.array([[-1e30, -800.0, -30.0, 0.0, 30.0, 800.0, 1e30, np.nan]], np.float32)
    Y = poisoned(*Z.shape)
    # H = ones and W = diag(Z): the pre-activations are exactly Z
    K.linear_sigmoid(np.ones((1, 8), np.float32), np.diag(Z[0]), np.zeros(8, np.float32), Y)
    expected = ref.sigmoid(Z[0, :7].astype(np.float64))
    assert np.allclose(Y[0, :7], expected, rtol=1e-6, atol=1e-30)
    assert np.isnan(Y[0, 7]), "a NaN pre-activation must give a NaN output (divergence detection)"


def saturated_case():
    """Pre-activations z = -20..20 (exact: H = 1, W = z, b = 0), targets on the far side (no
    cancellation in y - t): each element of dZ is then known to float32 precision."""
    z = np.linspace(-20.0, 20.0, 41).astype(np.float32)
    T = np.where(z >= 0, 0, 255).astype(np.uint8)[None, :]
    return np.ones((1, 1), np.float32), z[:, None].copy(), np.zeros(41, np.float32), T


def test_sigmoid_mse_gradient_is_elementwise_accurate_when_saturated():
    """y (1 - y) must not be computed from a float32 y: for z > ~17 that y rounds to 1 and the
    gradient would vanish, where the true one is ~1e-9."""
    H, W, b, T = saturated_case()
    dZ = poisoned(1, 41)
    K.linear_sigmoid_mse(H, W, b, T, dZ)
    dZ_ref = ref.linear_sigmoid_mse(H, W, b, T)[1]
    assert np.all(dZ != 0)
    np.testing.assert_allclose(dZ, dZ_ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("B,D,h", SHAPES)
def test_backward_hidden(rng, B, D, h):
    dZ = (rng.standard_normal((B, D)) * 1e-3).astype(np.float32)
    W2, _ = layer(rng, D, h)
    H = rng.standard_normal((B, h)).astype(np.float32)  # about half negative
    slope = float(rng.uniform(0.001, 0.3))
    dH = poisoned(B, h)
    K.backward_hidden(dZ, W2, H, dH, slope)
    assert rel(dH, ref.backward_hidden(dZ, W2, H, slope)) < TOL


@pytest.mark.parametrize("B,D,h", SHAPES)
@pytest.mark.parametrize("input_dtype", ["uint8", "float32"])
def test_weight_grad(rng, B, D, h, input_dtype):
    dZ = rng.standard_normal((B, h)).astype(np.float32)
    A = pixels(rng, B, D) if input_dtype == "uint8" else rng.standard_normal((B, D)).astype(np.float32)
    G = poisoned(h, D)
    gb = poisoned(h)
    K.weight_grad(dZ, A, G, gb)
    G_ref, gb_ref = ref.weight_grad(dZ, A)
    assert rel(G, G_ref) < TOL
    assert rel(gb, gb_ref) < TOL


@pytest.mark.parametrize("B,D,h", SHAPES)
def test_sgd_weight_step_is_sgd_on_the_gradient(rng, B, D, h):
    dZ = rng.standard_normal((B, h)).astype(np.float32)
    A = pixels(rng, B, D)
    W, b = layer(rng, h, D)
    lr = float(rng.uniform(0.01, 1.0))
    W_new, b_new = W.copy(), b.copy()
    K.sgd_weight_step(dZ, A, W_new, b_new, lr)
    G, gb = ref.weight_grad(dZ, A)
    # compare the *update*, which float32 weights would otherwise hide
    assert rel(W_new.astype(np.float64) - W, -lr * G) < 1e-4
    assert rel(b_new.astype(np.float64) - b, -lr * gb) < 1e-4
    assert rel(W_new, ref.sgd_update(W, G, lr)[0]) < TOL


@pytest.mark.parametrize("shape", [(67, 784), (784,), (5, 3)])
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_update(rng, shape, momentum, nesterov):
    W = rng.standard_normal(shape).astype(np.float32)
    G = rng.standard_normal(shape).astype(np.float32)
    V = rng.standard_normal(shape).astype(np.float32)
    W_ref, V_ref = ref.sgd_update(W, G, 0.1, momentum, nesterov, V)
    K.sgd_update(W, G, 0.1, momentum, nesterov, V)
    assert rel(W, W_ref) < TOL
    if momentum:
        assert rel(V, V_ref) < TOL


@pytest.mark.parametrize("shape", [(67, 784), (784,), (5, 3)])
@pytest.mark.parametrize("t", [1, 2, 1000])
def test_adam_update(rng, shape, t):
    W = rng.standard_normal(shape).astype(np.float32)
    G = rng.standard_normal(shape).astype(np.float32)
    M = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    V = rng.uniform(0, 0.1, shape).astype(np.float32)
    W_ref, M_ref, V_ref = ref.adam_update(W, G, M, V, 1e-3, t)
    K.adam_update(W, G, M, V, 1e-3, t, 0.9, 0.999, 1e-8)
    assert rel(M, M_ref) < TOL
    assert rel(V, V_ref) < TOL
    assert rel(W, W_ref) < TOL


def test_backward_pass_matches_central_finite_differences():
    """The kernels' composed gradient (reference.gradients, which the fast kernels are tested
    against above) equals d(loss)/d(param) by central differences, in float64."""
    rng = np.random.default_rng(0)
    B, D, h = 6, 20, 7
    X = rng.uniform(0, 1, (B, D))
    W1 = rng.standard_normal((h, D)) * 0.5
    b1 = rng.standard_normal(h) * 0.1
    W2 = rng.standard_normal((D, h)) * 0.5
    b2 = rng.standard_normal(D) * 0.1
    params = [W1, b1, W2, b2]
    _, *grads = ref.gradients(X, *params, slope=0.05)
    eps = 1e-6
    for p, g in zip(params, grads):
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = ref.forward_loss(X, *params, slope=0.05)
            p[idx] = old - eps
            down = ref.forward_loss(X, *params, slope=0.05)
            p[idx] = old
            num[idx] = (up - down) / (2 * eps)
        assert np.linalg.norm(num - g) / np.linalg.norm(g) < 1e-6


def test_cpu_step_gradients_match_finite_differences_in_float32_scale():
    """One fast float32 step (kernels.cpu composed as the engine does) gives the same parameter
    gradient as central differences of the float64 loss, to float32 accuracy."""
    rng = np.random.default_rng(1)
    B, D, h = 9, 784, 16
    X = pixels(rng, B, D)
    W1, b1 = layer(rng, h, D)
    W2, b2 = layer(rng, D, h)
    H = poisoned(B, h)
    dZ = poisoned(B, D)
    dH = poisoned(B, h)
    K.linear_leaky_relu(X, W1, b1, H, 0.01)
    K.linear_sigmoid_mse(H, W2, b2, X, dZ)
    K.backward_hidden(dZ, W2, H, dH, 0.01)
    G1, gb1 = poisoned(h, D), poisoned(h)
    K.weight_grad(dH, X, G1, gb1)
    P = [W1.astype(np.float64), b1.astype(np.float64), W2.astype(np.float64), b2.astype(np.float64)]
    eps = 1e-5
    for idx in [(0, 0), (3, 400), (15, 783), (7, 123)]:
        old = P[0][idx]
        P[0][idx] = old + eps
        up = ref.forward_loss(X, *P)
        P[0][idx] = old - eps
        down = ref.forward_loss(X, *P)
        P[0][idx] = old
        num = (up - down) / (2 * eps)
        assert abs(G1[idx] - num) <= 1e-4 * np.abs(G1).max() + 1e-7 * abs(num)


def test_prefetch_rows_is_only_a_hint():
    """Rows of any width (one not a multiple of the 64-byte line), the last row, no rows:
    nothing is written, nothing faults; the next gather gives the same batch."""
    X = np.arange(5 * 131, dtype=np.uint8).reshape(5, 131)
    before = X.copy()
    for idx in ([4, 0, 2], [4], []):
        K.prefetch_rows(X, np.array(idx, np.int64))
    np.testing.assert_array_equal(X, before)
    out = np.empty((2, 131), np.float32)
    K.gather_rows(X, np.array([4, 0], np.int64), out)
    np.testing.assert_allclose(out, X[[4, 0]] / np.float32(255), rtol=1e-7)


# --- numba's disk cache -------------------------------------------------------------------------
def test_every_cached_function_is_keyed_by_all_compiled_sources():
    """A change in any file that cached code compiles in must be a cache miss (jit_cache.py):
    every file with cache=True is in SOURCES, and those functions use the package locator."""
    import ast
    from pathlib import Path

    from aecore import engine_cpu
    from aecore.kernels import jit_cache

    assert jit_cache.INSTALLED
    roots = {p.parent for p in jit_cache.SOURCES}

    def caches(path):  # a call with the keyword cache=True anywhere in the module's code
        return any(isinstance(n, ast.keyword) and n.arg == "cache" and
                   getattr(n.value, "value", None) is True for n in ast.walk(ast.parse(path.read_text())))

    cached = {p.resolve() for r in roots for p in r.glob("*.py") if caches(p)}
    assert cached and cached <= set(jit_cache.SOURCES), cached - set(jit_cache.SOURCES)
    for fn in (engine_cpu._train_steps, K.bias_sigmoid_mse_):
        assert type(fn._cache._impl.locator).__name__ == "PackageStampLocator"
    assert Path(engine_cpu.__file__).resolve() in jit_cache.SOURCES


def test_package_digest_changes_with_any_source(tmp_path):
    from aecore.kernels import jit_cache

    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    d0 = jit_cache.digest.__wrapped__((a, b))
    b.write_text("y = 3\n")
    assert jit_cache.digest.__wrapped__((a, b)) != d0
