"""kernels/blas_pair.py: the output epilogue's two halves of the batch rows on OpenBLAS's own
two threads (gotoblas_pthread). Against the serial kernel on fresh random inputs with awkward
shapes, for every loss: the same dZ and bias sums, the loss sums to float32 rounding, and the two
halves really on two threads; no pair where BLAS runs on one thread; the CPU engine with and
without it, and run to run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_data
from threadpoolctl import threadpool_limits

from aecore.engine_cpu import CpuEngine
from aecore.kernels import blas_pair as BP
from aecore.kernels.cpu import gather_rows
from aecore.kernels.cpu_output import linear_sigmoid_loss_grad
from aecore.kernels.losses_reference import LOSSES
from aecore.kernels.losses_cpu import code
from aecore.model import init_params
from aecore.optim import OptimConfig

pytestmark = pytest.mark.skipif(not BP._HAS_PAIR,
                                reason="scipy's BLAS has no gotoblas_pthread (not OpenBLAS)")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("rows, hidden, cols, next_rows", [
    (64, 64, 784, 64), (7, 5, 33, 3), (1, 3, 17, 0), (2, 9, 1, 1), (37, 16, 129, 37),
    (5, 4, 70, 0), (6, 4, 70, 11)])
def test_pair_equals_the_serial_epilogue_on_two_threads(loss, rows, hidden, cols, next_rows):
    """... and the next batch's rows (next_rows of them, from a uint8 dataset) come out as
    gather_rows gives them, whatever their number against this batch's."""
    rng = np.random.default_rng([rows, hidden, cols, next_rows])
    H = rng.random((rows, hidden), dtype=np.float32)
    W = rng.standard_normal((cols, hidden), dtype=np.float32)
    b = rng.standard_normal(cols, dtype=np.float32)
    T = rng.random((rows, cols), dtype=np.float32)
    X = rng.integers(0, 256, (50, cols), dtype=np.uint8)
    next_idx = rng.integers(0, 50, next_rows)
    expect_next = np.empty((next_rows, cols), np.float32)
    gather_rows(X, next_idx, expect_next)
    next_out = np.full((next_rows + 2, cols), np.nan, np.float32)
    with threadpool_limits(2, user_api="blas"):
        dz1, cs1 = np.empty((rows, cols), np.float32), np.full(cols, 7.0)
        serial = linear_sigmoid_loss_grad(H, W, b, T, dz1, T[:0], cs1, code(loss))
        fn = BP.pair_function(code(loss))
        assert fn != 0
        blocks, half_sums, outs = BP.scratch(cols)
        dz2, cs2 = np.empty((rows, cols), np.float32), np.full(cols, 7.0)
        paired = BP.linear_sigmoid_loss_grad_pair(H, W, b, T, dz2, cs2, fn, blocks, half_sums,
                                                  outs, X, next_idx, next_out)
    np.testing.assert_array_equal(dz2, dz1)
    np.testing.assert_array_equal(next_out[:next_rows], expect_next)
    assert np.isnan(next_out[next_rows:]).all()  # nothing written past the next batch
    np.testing.assert_allclose(cs2, cs1, rtol=1e-12, atol=1e-300)
    # the loss sums: each row's float32 sums are fast-math reductions in the same row kernel,
    # but LLVM may inline and vectorize it differently in the half's cfunc and in the serial
    # pass (l1: 1.4e-9 relative in session 11's CI, 2.9e-9 in session 12's, where a local
    # run had them equal)
    np.testing.assert_allclose(paired, serial, rtol=1e-6)
    threads = blocks[:, BP.THREAD]
    assert threads[0] != 0 and threads[1] != 0 and threads[0] != threads[1]


def test_no_pair_where_blas_runs_on_one_thread():
    with threadpool_limits(1, user_api="blas"):
        assert BP.blas_threads() == 1
        assert BP.pair_function(code("mse")) == 0
    with threadpool_limits(2, user_api="blas"):
        assert BP.blas_threads() == 2


def _train(pair, images, name="adam", hidden=24, batch=48, steps=12, seed=5):
    eng = CpuEngine(init_params(hidden, seed), OptimConfig(name, lr=1e-2), batch,
                    pair_epilogue=pair)
    data = eng.put(images)
    n = batch * steps - batch // 3  # ends on a short batch
    perm = np.random.default_rng(seed).permutation(len(images))[:n].astype(np.int64)
    with threadpool_limits(2, user_api="blas"):
        eng.train_steps(data, perm, 0, n)
    return eng.take_loss_sum(), eng.get_params(), eng._pair_scratch[0][:, BP.THREAD].copy()


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_engine_with_the_pair_trains_as_without_and_the_same_run_to_run(name):
    images = synthetic_data(n_train=600, n_val=8, n_test=8).train.images
    loss_a, params_a, threads = _train(True, images, name)
    loss_b, params_b, _ = _train(True, images, name)
    loss_s, params_s, unused = _train(False, images, name)
    assert threads[0] != threads[1] and (unused == 0).all()  # the pair ran, or did not
    assert loss_a == loss_b
    for k in params_a:
        np.testing.assert_array_equal(params_a[k], params_b[k], err_msg=k)
        np.testing.assert_allclose(params_a[k], params_s[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert loss_a == pytest.approx(loss_s, rel=1e-6)


def test_the_next_batch_gathered_in_the_halves_changes_no_bit():
    """Within one train_steps call the halves gather each next batch (kernels/blas_pair.py);
    called one batch at a time, the caller gathers every batch. Same losses and parameters bit
    for bit, and in uneven chunks too (each chunk's first batch is the caller's to gather)."""
    images = synthetic_data(n_train=300, n_val=8, n_test=8).train.images
    batch, n = 32, 300 - 7
    perm = np.random.default_rng(3).permutation(len(images))[:n].astype(np.int64)
    results = []
    for cuts in ([0, n], [*range(0, n, batch), n], [0, 96, 160, 288, n]):
        eng = CpuEngine(init_params(24, 5), OptimConfig("adam", lr=1e-2), batch)
        with threadpool_limits(2, user_api="blas"):
            for a, b in zip(cuts, cuts[1:]):
                eng.train_steps(images, perm, a, b)
        results.append((eng.take_loss_sums(), eng.get_params()))
    (sums, params), others = results[0], results[1:]
    for other_sums, other_params in others:
        assert other_sums == sums
        for k in params:
            np.testing.assert_array_equal(other_params[k], params[k], err_msg=k)


def test_info_says_where_the_epilogue_runs():
    from aecore import blas_info

    with threadpool_limits(1, user_api="blas"):
        assert dict(blas_info.summary_rows())["CPU epilogue"].startswith("on the calling thread")
    with threadpool_limits(2, user_api="blas"):
        said = blas_info.meta()["cpu_epilogue"]
        assert "second thread (2 BLAS threads)" in said and "next batch" in said
