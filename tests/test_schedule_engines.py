"""Learning-rate schedules in the engines (issue 18): each optimizer step uses the schedule's
rate of that step, on the CPU (OpenBLAS's and aecore's own GEMM, the split path) and in CUDA
(the simulator here).

The check is exact: a run with ``lr_schedule`` equals, bit for bit, the same steps taken one at
a time by engines with a constant rate, each built with that step's rate and the state the
previous one left (what a schedule means, independent of how the engine carries the rates).
"""

from __future__ import annotations

import numpy as np
import pytest

from aecore.devices import make_engine
from aecore.kernels import optim as ko
from aecore.optim import OPTIMIZERS, OptimConfig
from aecore.schedules import LRSchedule

from test_golden_engines import BATCH, N, tiny_problem

LRS = {"sgd": 3.0, "momentum": 1.0, "nesterov": 1.0, "adam": 1e-2}
EPOCHS = 2
STEPS = -(-N // BATCH)  # 3 per epoch, the last one short


def _perms():
    rng = np.random.default_rng(5)
    return [rng.permutation(N).astype(np.int64) for _ in range(EPOCHS)]


def scheduled(device, name, schedule, **kw):
    """Chunks of 2 and 1 steps per epoch through one engine with ``schedule``."""
    params, images = tiny_problem()
    eng = make_engine(device, params, OptimConfig(name, lr=LRS[name]), BATCH, 0.02,
                      lr_schedule=schedule, **kw)
    data = eng.put(images)
    losses = []
    for perm in _perms():
        for start, stop in ((0, 2 * BATCH), (2 * BATCH, N)):
            eng.train_steps(data, perm, start, stop)
            losses.append(eng.take_loss_sum())
    return losses, eng.get_params(), eng.get_opt_state(), eng.step


def step_by_step(device, name, schedule, **kw):
    """The same steps, each by a fresh constant-rate engine at the schedule's rate."""
    params, images = tiny_problem()
    state, step, losses = None, 0, []
    for perm in _perms():
        for start, stop in ((0, 2 * BATCH), (2 * BATCH, N)):
            total = 0.0
            for s in range(start, stop, BATCH):
                optim = OptimConfig(name, lr=schedule.lr_at(step))
                eng = make_engine(device, params, optim, BATCH, 0.02, state, step, **kw)
                eng.train_steps(eng.put(images), perm, s, min(s + BATCH, stop))
                total += eng.take_loss_sum()
                params, state, step = eng.get_params(), eng.get_opt_state(), eng.step
            losses.append(total)
    return losses, params, state, step


def assert_same(a, b):
    assert a[0] == b[0] and a[3] == b[3] == EPOCHS * STEPS
    for got, want in ((a[1], b[1]), (a[2], b[2])):
        assert sorted(got) == sorted(want)
        for k in got:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


SCHEDULES = [("cosine", 1), ("onecycle", 0), ("step", 0)]


CPU_PATHS = {"blas": dict(cpu_gemm="blas"), "own": dict(cpu_gemm="own"),
             "split": dict(cpu_split=True)}


@pytest.mark.parametrize("path", list(CPU_PATHS))
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_cpu_steps_use_the_schedules_rate_of_each_step(name, path):
    kw = CPU_PATHS[path]
    for sched, warm in SCHEDULES:
        s = LRSchedule(sched, LRS[name], EPOCHS, STEPS, warm)
        a = scheduled("cpu", name, s, **kw)
        assert_same(a, step_by_step("cpu", name, s, **kw))
        # and it is not the constant rate's run
        assert a[0] != scheduled("cpu", name, None, **kw)[0]


def test_a_constant_schedule_is_the_constant_rate_bit_for_bit():
    for name in OPTIMIZERS:
        for gemm in ("blas", "own"):
            s = LRSchedule("constant", LRS[name], EPOCHS, STEPS)
            assert_same(scheduled("cpu", name, s, cpu_gemm=gemm),
                        scheduled("cpu", name, None, cpu_gemm=gemm))


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_cuda_steps_use_the_schedules_rate_of_each_step(name):
    from conftest import cuda_or_skip

    cuda_or_skip()
    s = LRSchedule("onecycle", LRS[name], EPOCHS, STEPS)
    a = scheduled("cuda", name, s)
    assert_same(a, step_by_step("cuda", name, s))
    cpu = scheduled("cpu", name, s)
    np.testing.assert_allclose(a[0], cpu[0], rtol=1e-5)


def test_engine_refuses_a_schedule_of_another_rate_and_steps_past_its_end():
    params, images = tiny_problem()
    with pytest.raises(ValueError, match=r"schedule's lr \(0.5\) must be the optimizer's \(3.0\)"):
        make_engine("cpu", params, OptimConfig("sgd", lr=3.0), BATCH,
                    lr_schedule=LRSchedule("cosine", 0.5, 2, 3))
    eng = make_engine("cpu", params, OptimConfig("sgd", lr=3.0), BATCH,
                      lr_schedule=LRSchedule("cosine", 3.0, 1, 2))
    data = eng.put(images)
    eng.train_steps(data, np.arange(N), 0, 2 * BATCH)
    with pytest.raises(ValueError, match="outside this schedule's 0..1"):
        eng.train_steps(data, np.arange(N), 2 * BATCH, N)


def test_packed_per_step_hyper_parameters_carry_the_rates():
    adam = OptimConfig("adam", lr=1e-2).hyper_params()
    sgd = OptimConfig("momentum", lr=0.5).hyper_params()
    lrs = np.array([1e-3, 2e-3, 5e-3])
    # without rates (or the constant ones) exactly as before: persistent.py's layout
    np.testing.assert_array_equal(ko.pack_adam_steps(adam, 4, 3, np.full(3, 1e-2)),
                                  ko.pack_adam_steps(adam, 4, 3))
    np.testing.assert_array_equal(ko.pack_steps(sgd, 3), np.tile(ko.pack(sgd), (3, 1)))
    np.testing.assert_array_equal(ko.pack_steps(sgd, 3, np.full(3, 0.5)), ko.pack_steps(sgd, 3))
    a = ko.pack_adam_steps(adam, 4, 3, lrs)
    t = np.arange(4, 7)
    np.testing.assert_array_equal(a[:, 0], lrs.astype(np.float32))
    np.testing.assert_array_equal(a[:, 5], (lrs / (1 - 0.9 ** t)).astype(np.float32))
    np.testing.assert_array_equal(a[:, 6], ko.pack_adam_steps(adam, 4, 3)[:, 6])
    m = ko.pack_chunk(sgd, False, 1, 3, lrs)
    np.testing.assert_array_equal(m[:, 0], lrs.astype(np.float32))
    np.testing.assert_array_equal(m[:, 1:], np.tile(ko.pack(sgd)[1:], (3, 1)))
    with pytest.raises(ValueError, match="expected 3 learning rates"):
        ko.pack_steps(sgd, 3, lrs[:2])
