"""Learning-rate schedules and warm-up on the persistent CUDA path (aecore/engine_persistent.py),
engine level: a RunView's steps take the schedule's rate of each step, as the eager CudaEngine
does, bit for bit, also when the run is stopped mid-epoch and resumed from its host state (a
new engine at the saved step: what ``aecore train --resume`` builds).

Every schedule (constant, cosine, step, onecycle), with and without warm-up, across the four
optimizers the persistent kernel trains. The model is the golden tests' tiny one (24 pixels,
h = 3) on 6 of its images, batches of 4 with a short last one, a chunk per step, 2 epochs: 4
steps, the fewest onecycle takes (a simulated step still costs about a second). The
trainer-level runs (checkpoints, metrics, Ctrl-C, onecycle and cosine) are in
tests/test_engine_persistent.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cuda_or_skip

from aecore.optim import OptimConfig
from aecore.schedules import LRSchedule

from test_golden_engines import BATCH, tiny_problem

N_IMG = 6
EPOCHS, STEPS = 2, -(-N_IMG // BATCH)  # 2 steps an epoch, the last one short
CUTS = ((0, BATCH), (BATCH, N_IMG))  # a chunk per step
LRS = {"sgd": 3.0, "momentum": 1.0, "nesterov": 1.0, "adam": 1e-2}
# (optimizer, schedule, warm-up epochs, chunks trained before the stop): every schedule and
# optimizer (Adam's rate is folded into its step size, the others' is read as it is), warm-up
# with two schedules, stops mid-epoch in either epoch and at an epoch's end
CASES = [("adam", "onecycle", 0, 1), ("sgd", "cosine", 1, 3), ("momentum", "step", 0, 2),
         ("nesterov", "constant", 1, 1)]


def _perms():
    rng = np.random.default_rng(5)
    return [rng.permutation(N_IMG).astype(np.int64) for _ in range(EPOCHS)]


def _train(path, name, schedule, stop_after=None):
    """Every chunk of EPOCHS epochs on ``path`` (eager or persistent); ``stop_after``: after
    that many chunks the run's host state (parameters, optimizer state, step) goes to a new
    engine that trains the rest. Returns (per-epoch loss sums, params, opt_state, step)."""
    from aecore.devices import make_engine
    from aecore.engine_persistent import RunGroup

    params, images = tiny_problem()
    images = images[:N_IMG]
    optim = OptimConfig(name, lr=LRS[name])
    groups = []

    def engine(params, state, step):
        if path == "eager":
            return make_engine("cuda", params, optim, BATCH, 0.02, state, step,
                               lr_schedule=schedule, cuda_path="eager")
        groups.append(RunGroup.alone())
        return groups[-1].make_engine("cuda", params, optim, BATCH, 0.02, state, step,
                                      lr_schedule=schedule)

    eng = engine(params, None, 0)
    data, chunks, sums = eng.put(images), 0, []
    for perm in _perms():
        total = 0.0
        for start, stop in CUTS:
            eng.train_steps(data, perm, start, stop)
            chunks += 1
            if chunks == stop_after:
                if groups:
                    groups[-1].drain()  # what a stop does: the pending loss, read now
                total += eng.take_loss_sum()
                state = (eng.get_params(), eng.get_opt_state(), eng.step)
                if groups:
                    groups[-1].leave(0)
                eng = engine(*state)
                data = eng.put(images)
            else:
                total += eng.take_loss_sum()
        sums.append(total)
    out = (sums, eng.get_params(), eng.get_opt_state(), eng.step)
    if groups:
        groups[-1].leave(0)
    return out


def _assert_same(got, want, what):
    from aecore.kernels.cuda import SIMULATOR

    assert got[3] == want[3] == EPOCHS * STEPS, what
    if SIMULATOR:  # on a GPU the eager loss sums are float64 atomics in arrival order
        assert got[0] == want[0], what
    else:
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, err_msg=what)
    for g, w in ((got[1], want[1]), (got[2], want[2])):
        assert sorted(g) == sorted(w), what
        for k in g:
            np.testing.assert_array_equal(g[k], w[k], err_msg=f"{what} {k}")


@pytest.mark.parametrize("name, sched, warm, stop", CASES,
                         ids=[f"{o}-{s}-warmup{w}-stop{c}" for o, s, w, c in CASES])
def test_a_scheduled_run_stopped_and_resumed_on_the_persistent_path_equals_eager(name, sched,
                                                                              warm, stop):
    """The persistent run, stopped after ``stop`` chunks and resumed by a new engine, ends
    (parameters, optimizer state, step, every epoch's loss sum) bitwise where the eager run
    trained without a stop ends. (The eager path's rates are checked against the schedule step
    by step in tests/test_schedule_engines.py.)"""
    cuda_or_skip()
    schedule = LRSchedule(sched, LRS[name], EPOCHS, STEPS, warm)
    assert len(set(schedule.lrs(0, EPOCHS * STEPS))) > 1  # a rate that changes
    eager = _train("eager", name, schedule)
    _assert_same(_train("persistent", name, schedule, stop), eager, f"{name} {sched}")
