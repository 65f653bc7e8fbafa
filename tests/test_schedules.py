"""Learning-rate schedules (aecore/schedules.py) against torch.optim.lr_scheduler stepped once
per optimizer step, chunk invariance (a resumed or chunked run gets the same rates bit for
bit), the schedules' shapes and the errors for bad configurations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from epilogue_checks import fresh_rng

from aecore.schedules import SCHEDULES, STEP_GAMMA, WARMUP_START_FACTOR, LRSchedule

LR = 3e-3
# (name, epochs, steps per epoch, warm-up epochs): onecycle has its own warm-up
CASES = [(n, 5, 100, w) for n in SCHEDULES for w in (0, 1) if not (n == "onecycle" and w)]


@pytest.fixture
def rng(request):
    return fresh_rng(request)


def torch_rates(schedule: LRSchedule) -> np.ndarray:
    """The rate torch's optimizer holds at each step, stepping the scheduler after each."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=schedule.lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's own deprecation chatter
        sched = schedule.torch_scheduler(opt)
        out = np.empty(schedule.total_steps)
        for s in range(schedule.total_steps):
            out[s] = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
    return out


def max_rel(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-warmup{c[3]}")
def test_matches_torch_stepped_per_step(case):
    sch = LRSchedule(case[0], LR, *case[1:])
    ours, theirs = sch.lrs(0, sch.total_steps), torch_rates(sch)
    print(case, "max relative difference", max_rel(ours, theirs))
    assert max_rel(ours, theirs) <= 1e-12
    W = sch.warmup_steps
    if sch.name != "cosine":  # StepLR's recursion, OneCycleLR, constant: bit for bit
        assert np.array_equal(ours[W:], theirs[W:])


@pytest.mark.torch
def test_long_cosine_matches_torch():
    """A long run (30 epochs of 782 steps, 3 of them warm-up): torch's recursive cosine does not
    drift from the closed form. (200 x 782 steps, measured once: 4.5e-14.)"""
    sch = LRSchedule("cosine", LR, 30, 782, 3)
    ours, theirs = sch.lrs(0, sch.total_steps), torch_rates(sch)
    print("max relative difference", max_rel(ours, theirs))
    assert max_rel(ours, theirs) <= 1e-12


@pytest.mark.parametrize("case", CASES + [("cosine", 200, 782, 5)],
                         ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-warmup{c[3]}")
def test_any_chunking_gives_the_same_rates_bit_for_bit(rng, case):
    """lrs over random chunks == lrs over the whole run == lr_at step by step: the rates are a
    pure function of the global step (a resumed run, the GPU's chunks and the CPU's per-step
    calls all agree)."""
    sch = LRSchedule(case[0], LR, *case[1:])
    T = sch.total_steps
    whole = sch.lrs(0, T)
    cuts = np.unique(np.r_[0, rng.integers(0, T, 7), T])
    chunks = np.concatenate([sch.lrs(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])])
    assert chunks.dtype == np.float64 and np.array_equal(chunks, whole)
    for s in np.r_[0, T - 1, sch.warmup_steps, rng.integers(0, T, 20)]:
        assert sch.lr_at(int(s)) == whole[s]


def test_shapes():
    T = 900
    c = LRSchedule("cosine", LR, 9, 100).lrs(0, T)
    assert c[0] == LR and np.all(np.diff(c) < 0) and c[-1] < 1e-4 * LR
    s = LRSchedule("step", LR, 9, 100).lrs(0, T)
    levels = [LR, LR * STEP_GAMMA, LR * STEP_GAMMA * STEP_GAMMA]  # torch's running product
    assert np.array_equal(np.unique(s), sorted(levels))
    assert s[299] == levels[0] and s[300] == levels[1] and s[600] == levels[2]
    o = LRSchedule("onecycle", LR, 9, 100).lrs(0, T)
    peak = int(np.argmax(o))
    assert o[0] == pytest.approx(LR / 25) and abs(peak - 0.3 * T) <= 1
    assert o[peak] == pytest.approx(LR)
    assert o[-1] == pytest.approx(LR / 25e4)
    w = LRSchedule("cosine", LR, 9, 100, warmup_epochs=2).lrs(0, T)
    assert w[0] == LR * WARMUP_START_FACTOR and np.all(np.diff(w[:201]) > 0)
    assert w[200] == LR and w[-1] < 1e-4 * LR  # cosine over the 700 steps after it


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="linear"), "unknown learning-rate schedule 'linear'"),
    (dict(lr=0.0), "learning rate must be a positive number"),
    (dict(epochs=0), "epochs .* must be at least 1"),
    (dict(warmup_epochs=5), "warmup epochs must be from 0 to epochs - 1"),
    (dict(name="onecycle", warmup_epochs=1), "onecycle schedule has its own warm-up"),
    (dict(name="onecycle", epochs=1, steps_per_epoch=3), "needs at least 4 steps"),
])
def test_bad_configurations_name_what_is_wrong(kwargs, message):
    args = dict(name="cosine", lr=LR, epochs=5, steps_per_epoch=10, warmup_epochs=0) | kwargs
    with pytest.raises(ValueError, match=message):
        LRSchedule(**args)


def test_steps_outside_the_schedule_are_refused():
    sch = LRSchedule("cosine", LR, 2, 10)
    with pytest.raises(ValueError, match="outside this schedule's 0..19"):
        sch.lrs(15, 6)
    with pytest.raises(ValueError, match="outside"):
        sch.lr_at(-1)
    assert sch.lrs(20, 0).shape == (0,)
