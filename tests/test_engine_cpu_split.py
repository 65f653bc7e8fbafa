"""CpuEngine(split=True) (aecore.cpu_pair): each step split between two aecore threads with BLAS
on one thread each. Same training as the default path within float32 tolerance, against the
float64 reference for one step, the same bits run to run and chunk to chunk, and BLAS's thread
count put back."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from aecore.devices import make_engine
from aecore.kernels import reference as ref
from aecore.model import B1, B2, W1, W2, init_params
from aecore.optim import OPTIMIZERS, OptimConfig

LRS = {"sgd": 2.0, "momentum": 0.5, "nesterov": 0.5, "adam": 1e-2}


def run(images, name, hidden, batch, split, n_steps=6, chunk=None, seed=3):
    eng = make_engine("cpu", init_params(hidden, seed), OptimConfig(name, lr=LRS[name]), batch,
                      cpu_split=split, cpu_gemm="blas")
    data = eng.put(images)
    n = min(len(images), batch * n_steps - batch // 3)  # ends on a short batch
    perm = np.random.default_rng(seed).permutation(len(images))[:n].astype(np.int64)
    chunk = chunk or n
    losses = []
    for s in range(0, n, chunk):
        eng.train_steps(data, perm, s, min(s + chunk, n))
        losses.append(eng.take_loss_sum())
    return sum(losses), eng.get_params(), eng.get_opt_state(), eng.step


# (hidden, batch): h <= B splits the hidden-layer products by batch rows, h > B by columns;
# odd sizes leave one thread a different share; batch 1 leaves one thread no rows at all
SHAPES = [(16, 50), (37, 19), (64, 64), (3, 1), (1, 2)]


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("hidden,batch", SHAPES)
def test_split_trains_as_the_default_path(tiny_data, name, hidden, batch):
    x = tiny_data.train.images
    loss0, p0, s0, step0 = run(x, name, hidden, batch, False)
    loss1, p1, s1, step1 = run(x, name, hidden, batch, True)
    assert step1 == step0 and abs(loss1 - loss0) <= 1e-5 * loss0
    for k in p0:
        # Adam divides by sqrt(v): a gradient near 0 that differs in its last bits moves its
        # weight by up to ~lr, so its tolerance is a fraction of lr
        atol = 2e-3 * LRS[name] if name == "adam" else 2e-5 * float(np.abs(p0[k]).max())
        np.testing.assert_allclose(p1[k], p0[k], rtol=0, atol=atol, err_msg=k)
    assert sorted(s1) == sorted(s0)
    for k in s0:
        scale = max(float(np.abs(s0[k]).max()), 1e-12)
        np.testing.assert_allclose(s1[k], s0[k], rtol=0, atol=1e-4 * scale, err_msg=k)


@pytest.mark.parametrize("hidden,batch", [(40, 24), (24, 40)])
def test_one_sgd_step_matches_the_float64_reference(tiny_data, hidden, batch):
    x = tiny_data.train.images[:batch]
    params = init_params(hidden, 5)
    lr = 0.5
    eng = make_engine("cpu", params, OptimConfig("sgd", lr=lr), batch, cpu_split=True)
    eng.train_steps(eng.put(x), np.arange(batch), 0, batch)
    loss = eng.take_loss_sum()
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    loss_mean, *grads = ref.gradients(x, p64[W1], p64[B1], p64[W2], p64[B2])
    want_loss = loss_mean * x.size
    assert abs(loss - want_loss) <= 1e-5 * want_loss
    got = eng.get_params()
    for k, g in zip((W1, B1, W2, B2), grads):
        want = p64[k] - lr * g
        np.testing.assert_allclose(got[k], want, rtol=0, atol=1e-5 * np.abs(want).max(), err_msg=k)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_split_is_bitwise_reproducible_and_chunking_free(tiny_data, name):
    x = tiny_data.train.images
    a = run(x, name, 37, 19, True, n_steps=12)
    b = run(x, name, 37, 19, True, n_steps=12)
    c = run(x, name, 37, 19, True, n_steps=12, chunk=19 * 5)  # chunks of 5 batches
    for other in (b, c):
        assert other[3] == a[3]
        for k in a[1]:
            np.testing.assert_array_equal(other[1][k], a[1][k], err_msg=k)
        for k in a[2]:
            np.testing.assert_array_equal(other[2][k], a[2][k], err_msg=k)
    assert b[0] == a[0]


def test_blas_threads_are_put_back(tiny_data):
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    run(tiny_data.train.images, "sgd", 16, 32, True, n_steps=2)
    assert [lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas"] == before


def test_empty_range_is_a_no_op(tiny_data):
    p = init_params(8, 1)
    eng = make_engine("cpu", p, OptimConfig("adam"), 16, cpu_split=True)
    eng.train_steps(eng.put(tiny_data.train.images), np.arange(32), 32, 32)
    assert eng.take_loss_sum() == 0.0 and eng.step == 0
    for k, v in eng.get_params().items():
        np.testing.assert_array_equal(v, p[k])
