"""CpuEngine(gemm="own") (kernels.own_step on kernels.cpu_gemm): the training step on aecore's
own GEMM, every phase in two halves. Trains as the default (OpenBLAS) path within float32
tolerance for every activation, loss and optimizer and both ways of splitting; matches the float64
reference for one step; the same bits run to run, chunk to chunk, and whether the halves run on
OpenBLAS's two threads or in turn on one; refuses what it does not do, in one line."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from aecore.config import TrainConfig, config_problems
from aecore.devices import make_engine
from aecore.kernels import own_step
from aecore.kernels import reference as ref
from aecore.kernels.activations_reference import ACTIVATIONS
from aecore.kernels.losses_reference import LOSSES
from aecore.model import B1, B2, W1, W2, init_params
from aecore.optim import OptimConfig


# An exception inside a half (a cfunc on OpenBLAS's thread) cannot propagate: Python reports it
# as unraisable and the step goes on with whatever the half left. Here that fails the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def run(images, hidden, batch, gemm, n_steps=6, chunk=None, by_rows=None, seed=3,
        activation="leaky_relu", loss="mse", lr=1.0):
    eng = make_engine("cpu", init_params(hidden, seed, image_size=images.shape[1]),
                      OptimConfig("sgd", lr=lr), batch, cpu_gemm=gemm, activation=activation,
                      loss=loss)
    if by_rows is not None:
        eng.own_by_rows = by_rows
    data = eng.put(images)
    n = min(len(images), batch * n_steps - batch // 3)  # ends on a short batch
    perm = np.random.default_rng(seed).permutation(len(images))[:n].astype(np.int64)
    chunk = chunk or n
    sums = np.zeros(2)
    for s in range(0, n, chunk):
        eng.train_steps(data, perm, s, min(s + chunk, n))
        sums += eng.take_loss_sums()
    return sums, eng.get_params(), eng.step


# (hidden, batch): tiles with edges both ways, a hidden layer under one 32-column half, one
# thread with no rows (batch 1) or no columns (h 3)
SHAPES = [(64, 64), (37, 19), (16, 50), (3, 1), (40, 24)]


@pytest.mark.parametrize("hidden,batch", SHAPES)
@pytest.mark.parametrize("by_rows", [0, 1])
def test_own_trains_as_the_default_path(tiny_data, hidden, batch, by_rows):
    x = tiny_data.train.images
    sums0, p0, step0 = run(x, hidden, batch, "blas")
    sums1, p1, step1 = run(x, hidden, batch, "own", by_rows=by_rows)
    assert step1 == step0
    np.testing.assert_allclose(sums1, sums0, rtol=1e-5)
    for k in p0:
        np.testing.assert_allclose(p1[k], p0[k], rtol=0, atol=2e-5 * float(np.abs(p0[k]).max()),
                                   err_msg=k)


@pytest.mark.parametrize("pixels,hidden,batch", [(24, 3, 4), (24, 40, 19), (49, 3, 4)])
@pytest.mark.parametrize("by_rows", [0, 1])
def test_narrow_images_train_as_the_default_path(tiny_data, pixels, hidden, batch, by_rows):
    """Under 32 pixels half 0 of the pixels is empty (a multiple of 32): its share of dZ W2 is
    a sum over no terms, zeros (it raised ZeroDivisionError inside the half, swallowed, and the
    share was left as it was until session 15)."""
    x = np.ascontiguousarray(tiny_data.train.images[:, 300:300 + pixels])
    sums0, p0, _ = run(x, hidden, batch, "blas")
    sums1, p1, _ = run(x, hidden, batch, "own", by_rows=by_rows)
    np.testing.assert_allclose(sums1, sums0, rtol=1e-5)
    for k in p0:
        np.testing.assert_allclose(p1[k], p0[k], rtol=0, atol=2e-5 * float(np.abs(p0[k]).max()),
                                   err_msg=k)


# every activation with mse and every loss with leaky_relu (each pair compiles its own step),
# the split alternating
PAIRS = ([(a, "mse", i % 2) for i, a in enumerate(ACTIVATIONS)]
         + [("leaky_relu", lo, i % 2) for i, lo in enumerate(LOSSES) if lo != "mse"])


@pytest.mark.parametrize("activation,loss,by_rows", PAIRS)
def test_every_activation_and_loss(tiny_data, activation, loss, by_rows):
    x = tiny_data.train.images
    sums0, p0, _ = run(x, 24, 16, "blas", activation=activation, loss=loss, lr=0.5)
    sums1, p1, _ = run(x, 24, 16, "own", activation=activation, loss=loss, lr=0.5,
                       by_rows=by_rows)
    np.testing.assert_allclose(sums1, sums0, rtol=1e-5)
    for k in p0:
        np.testing.assert_allclose(p1[k], p0[k], rtol=0, atol=2e-5 * float(np.abs(p0[k]).max()),
                                   err_msg=k)


@pytest.mark.parametrize("hidden,batch", [(40, 24), (24, 40)])
@pytest.mark.parametrize("by_rows", [0, 1])
def test_one_step_matches_the_float64_reference(tiny_data, hidden, batch, by_rows):
    x = tiny_data.train.images[:batch]
    params = init_params(hidden, 5)
    lr = 0.5
    eng = make_engine("cpu", params, OptimConfig("sgd", lr=lr), batch, cpu_gemm="own")
    eng.own_by_rows = by_rows
    eng.train_steps(eng.put(x), np.arange(batch), 0, batch)
    loss = eng.take_loss_sum()
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    loss_mean, *grads = ref.gradients(x, p64[W1], p64[B1], p64[W2], p64[B2])
    assert abs(loss - loss_mean * x.size) <= 1e-5 * loss_mean * x.size
    got = eng.get_params()
    for k, g in zip((W1, B1, W2, B2), grads):
        want = p64[k] - lr * g
        np.testing.assert_allclose(got[k], want, rtol=0, atol=1e-5 * np.abs(want).max(),
                                   err_msg=k)


@pytest.mark.parametrize("by_rows", [0, 1])
def test_the_same_bits_run_to_run_chunk_to_chunk_and_thread_to_thread(tiny_data, monkeypatch,
                                                                     by_rows):
    x = tiny_data.train.images
    with threadpool_limits(2, user_api="blas"):  # the halves on OpenBLAS's two threads
        a = run(x, 37, 19, "own", n_steps=12, by_rows=by_rows)
        b = run(x, 37, 19, "own", n_steps=12, by_rows=by_rows)
        c = run(x, 37, 19, "own", n_steps=12, chunk=19 * 5, by_rows=by_rows)
    # the halves in turn on the calling thread, as where BLAS has one thread
    monkeypatch.setattr(own_step, "in_pair", lambda: False)
    d = run(x, 37, 19, "own", n_steps=12, by_rows=by_rows)
    for other in (b, c, d):
        assert other[2] == a[2]
        np.testing.assert_array_equal(other[0], a[0])
        for k in a[1]:
            np.testing.assert_array_equal(other[1][k], a[1][k], err_msg=k)


def test_the_engine_keeps_its_weights_and_buffers_on_64_byte_lines():
    """The CPU engine copies the params and the optimizer's buffers it is given into arrays
    that start on a 64-byte line (``cpu_gemm.aligned_empty``), as its own buffers, and gives
    the same values back. The halves' shares of db1 and db2 are on pages of their own: no line
    holds both halves' (both write theirs at every batch row)."""
    params = init_params(37, 3)
    eng = make_engine("cpu", params, OptimConfig("adam", lr=1e-3), 19, cpu_gemm="own")
    for _ in range(2):  # as made, and after set_state
        arrays = [*eng.params.values(), *eng.state.values(), eng._Xb, eng._Xb_next, eng._H,
                  eng._dZ, eng._dH, eng._G1, eng._G2, *eng._own_scratch[1:]]
        assert [a.ctypes.data % 64 for a in arrays if a.size] == [0] * len(arrays)
        db1, db2 = eng._own_scratch[1:3]
        assert db1.shape == (2, 512) and db2.shape == (2 * 1024 + 512,)  # a spare page: placed
        got = eng.get_params()
        for k in params:
            np.testing.assert_array_equal(got[k], params[k], err_msg=k)
        params = {k: v + 1 for k, v in params.items()}
        eng.set_state(params, eng.get_opt_state())


def test_by_the_weights_rows_each_half_gathers_the_whole_batch_into_its_own_copy(tiny_data):
    """Split by the weights' rows, the second half reads a copy of the batch of its own (no row
    the other core wrote), and each half gathers the next batch over its copy: after the steps
    both copies hold the last batch, and the engine's next-batch buffer was never written.
    Split by the batch rows the halves share one copy and gather into the next-batch buffer."""
    x = tiny_data.train.images
    perm = np.arange(40)
    for by_rows in (0, 1):
        eng = make_engine("cpu", init_params(16, 3), OptimConfig("sgd"), 8, cpu_gemm="own")
        eng.own_by_rows = by_rows
        xb1 = eng._own_scratch[4]
        xb1[...] = eng._Xb_next[...] = -1.0
        eng.train_steps(eng.put(x), perm, 0, 36)  # 4 batches of 8, then 4 rows
        last = x[32:36].astype(np.float32) / np.float32(255.0)
        if by_rows:
            assert (xb1 == -1).all()
            np.testing.assert_allclose(eng._Xb[:4], last, rtol=1e-6)  # (4 swaps: back in Xb)
        else:
            assert (eng._Xb_next == -1).all()
            for copy in (eng._Xb, xb1):
                np.testing.assert_array_equal(copy[:4], eng._Xb[:4])
                np.testing.assert_allclose(copy[:4], last, rtol=1e-6)


def test_the_halves_run_on_two_threads_where_blas_has_two(tiny_data):
    with threadpool_limits(2, user_api="blas"):
        if not own_step.in_pair():
            pytest.skip("scipy's BLAS is not OpenBLAS here")
        eng = make_engine("cpu", init_params(16, 1), OptimConfig("sgd", lr=0.1), 32,
                          cpu_gemm="own")
        eng.train_steps(eng.put(tiny_data.train.images), np.arange(64), 0, 64)
    blocks = eng._own_scratch[0]
    assert blocks[0, own_step.K_THREAD] != blocks[1, own_step.K_THREAD]


LOAD_HALVES = r"""
import json
from aecore.kernels import activations_cpu as A, blas_pair, c_calls, losses_cpu as L, own_step
pairs = [("leaky_relu", "mse"), ("relu", "mse")]
for a, l in pairs:
    own_step.half_function(A.code(a), L.code(l))
blas_pair.pair_function(L.code("mse"))  # 0 where BLAS has one thread: then not compiled
own_step.scratch(8, 8, 32)  # the C functions the halves call: nn_rows, the optimizer
print(json.dumps({"own": [own_step._halves[A.code(a), L.code(l)].cache_hits for a, l in pairs],
                  "c": [f.cache_hits for f in c_calls._c_functions.values()],
                  "pair": [f.cache_hits for f in blas_pair._halves.values()],
                  "in_pair": own_step.in_pair()}))
"""


def test_a_new_process_loads_the_half_functions_from_the_disk_cache():
    """The half functions (closures over their pair's numbers) are cached on disk, one entry
    per pair: the second process compiles none of them (the first may, on a cold cache)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    runs = [subprocess.run([sys.executable, "-c", LOAD_HALVES], capture_output=True, text=True,
                           env=env, timeout=600) for _ in range(2)]
    assert runs[1].returncode == 0, runs[1].stderr[-3000:]
    hits = json.loads(runs[1].stdout)
    assert hits["own"] == [1, 1] and hits["c"] == [1, 1], hits
    assert hits["pair"] == ([1] if hits["in_pair"] else []), hits


def test_each_pairs_half_calls_the_gemm_and_the_optimizer_compiled_once(tiny_data):
    """run_half, compiled for each (activation, loss), calls nn_rows and the optimizer through
    their C functions' addresses: its module defines neither (linked in, their machine code
    was generated again for every pair: 7 s a pair against 3-4 s, bench/RESULTS.md)."""
    from numba import njit, types

    eng = make_engine("cpu", init_params(8, 1), OptimConfig("adam"), 16, cpu_gemm="own",
                      activation="tanh")
    eng.train_steps(eng.put(tiny_data.train.images), np.arange(32), 0, 32)
    # compiled afresh, uncached: run_half's own dispatcher has no IR to show where it was
    # loaded from numba's disk cache (a second run of the suite)
    fresh = njit(nogil=True)(own_step.run_half.py_func)
    fresh.compile((types.int64[::1], types.IntegerLiteral(eng._act),
                   types.IntegerLiteral(eng._loss_code)))
    modules = fresh.inspect_llvm()
    assert modules
    for ir_text in modules.values():
        defined = [line for line in ir_text.splitlines() if line.startswith("define")]
        assert any("run_half" in d for d in defined)
        assert not [d for d in defined if "nn_rows" in d or "optimizer_rows" in d], defined


def test_empty_range_is_a_no_op(tiny_data):
    p = init_params(8, 1)
    eng = make_engine("cpu", p, OptimConfig("sgd"), 16, cpu_gemm="own")
    eng.train_steps(eng.put(tiny_data.train.images), np.arange(32), 32, 32)
    assert eng.take_loss_sum() == 0.0 and eng.step == 0
    for k, v in eng.get_params().items():
        np.testing.assert_array_equal(v, p[k])


def test_split_follows_the_batch_size():
    assert [own_step.by_rows(b) for b in (1, 64, 128, 256)] == [0, 0, 0, 0]
    assert [own_step.by_rows(b) for b in (257, 512, 1024)] == [1, 1, 1]


@pytest.mark.parametrize("kwargs,words", [
    ({"gemm": "mkl"}, "gemm must be one of blas, own"),
    ({"gemm": "own", "split": True}, "cannot be combined with split"),
    ({"gemm": "own", "team": True}, "cannot be combined with team"),
])
def test_engine_refuses_bad_choices(kwargs, words):
    from aecore.engine_cpu import CpuEngine

    with pytest.raises(ValueError, match=words):
        CpuEngine(init_params(8, 0), OptimConfig("sgd"), 16, **kwargs)


LRS = {"sgd": 1.0, "momentum": 0.5, "nesterov": 0.5, "adam": 1e-2}


@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam"])
@pytest.mark.parametrize("hidden,batch,by_rows", [(37, 19, 0), (24, 40, 1)])
def test_every_optimizer_trains_as_the_default_path(tiny_data, name, hidden, batch, by_rows):
    """The optimizer's update runs per half on the half's weight rows (G from the own GEMM,
    then kernels.cpu.optimizer_update): the default path's weights and state within float32
    tolerance (Adam's a fraction of lr: a gradient near 0 that differs in its last bits moves
    its weight by up to ~lr)."""
    x = tiny_data.train.images
    out = []
    for gemm in ("blas", "own"):
        eng = make_engine("cpu", init_params(hidden, 3), OptimConfig(name, lr=LRS[name]), batch,
                          cpu_gemm=gemm)
        eng.own_by_rows = by_rows
        data = eng.put(x)
        perm = np.random.default_rng(3).permutation(len(x))[:batch * 6 - 5].astype(np.int64)
        eng.train_steps(data, perm, 0, batch * 3)
        eng.train_steps(data, perm, batch * 3, len(perm))
        out.append((eng.take_loss_sums(), eng.get_params(), eng.get_opt_state(), eng.step))
    (s0, p0, o0, t0), (s1, p1, o1, t1) = out
    assert t1 == t0
    np.testing.assert_allclose(s1, s0, rtol=1e-5)
    for k in p0:
        if name == "adam":  # Adam moves a weight by at most ~lr a step, whatever its gradient
            diff = np.abs(p1[k] - p0[k])
            assert np.mean(diff <= 2e-3 * LRS[name]) >= 0.999, k
            assert diff.max() <= t0 * LRS[name], k
        else:
            np.testing.assert_allclose(p1[k], p0[k], rtol=0,
                                       atol=2e-5 * float(np.abs(p0[k]).max()), err_msg=k)
    assert sorted(o1) == sorted(o0)
    for k in o0:
        scale = max(float(np.abs(o0[k]).max()), 1e-12)
        np.testing.assert_allclose(o1[k], o0[k], rtol=0, atol=1e-4 * scale, err_msg=k)


def test_config_check():
    names = lambda c: [f for f, _ in config_problems(c)]  # noqa: E731
    assert names(TrainConfig(optimizer="sgd", cpu_gemm="own")) == []
    assert names(TrainConfig(optimizer="adam", cpu_gemm="own")) == []
    assert names(TrainConfig(optimizer="sgd", cpu_gemm="cublas")) == ["cpu_gemm"]
    assert "cpu_gemm" in names(TrainConfig(optimizer="sgd", cpu_gemm="own", cpu_team=True))
    assert TrainConfig.from_dict({"hidden": 8}).cpu_gemm == "blas"  # runs saved before it
