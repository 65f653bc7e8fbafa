"""kernels/literal_call.py: an @njit function taking literal arguments, called from Python,
gives the dispatcher's results without numba re-typing it on every call."""

import numpy as np
import pytest
from numba import literally, njit

from aecore.kernels.literal_call import LiteralCall


@njit
def _scaled_sum(a, k):
    k = literally(k)
    return a.sum() * k


def _count_slow_calls(monkeypatch, dispatcher):
    """Counts the dispatcher's slow path (typing and compiling for new argument types)."""
    calls = []
    original = dispatcher._compile_for_args

    def spy(*args, **kws):
        calls.append(args)
        return original(*args, **kws)

    monkeypatch.setattr(dispatcher, "_compile_for_args", spy)
    return calls


def test_results_and_no_retyping_after_the_first_call(monkeypatch):
    call = LiteralCall(_scaled_sum, positions=(1,))
    a = np.random.default_rng(7).random(13)
    strided = np.random.default_rng(8).random((5, 3))[:, 1]  # layout 'A': its own overload
    ints = np.arange(11, dtype=np.int32)
    slow = _count_slow_calls(monkeypatch, _scaled_sum)
    expected = [(x, k, x.sum() * k) for x in (a, strided, ints) for k in (2, 3)]
    for x, k, want in expected:  # first calls: through the dispatcher
        assert call(x, k) == pytest.approx(want, rel=1e-12)
    first = len(slow)
    assert first >= len(expected)  # each new signature typed (literally: more than once)
    for _ in range(3):
        for x, k, want in expected:
            assert call(x, k) == pytest.approx(want, rel=1e-12)
    assert len(slow) == first  # later calls: the remembered entry points only
    # the plain dispatcher goes the slow way on every call
    _scaled_sum(a, 2)
    assert len(slow) > first


def test_the_cpu_engine_does_not_retype_its_loops(monkeypatch):
    from aecore import engine_cpu
    from aecore.devices import make_engine
    from aecore.model import init_params
    from aecore.optim import OptimConfig

    images = (np.random.default_rng(0).random((96, 784)) * 255).astype(np.uint8)
    eng = make_engine("cpu", init_params(5, seed=0), OptimConfig("sgd", lr=0.05), 32)
    data = eng.put(images)
    perm = np.arange(96, dtype=np.int64)
    eng.train_steps(data, perm, 0, 64)
    eng.loss_sums(data)
    slow = [_count_slow_calls(monkeypatch, fn) for fn in (engine_cpu._train_steps,
                                                         engine_cpu._forward)]
    eng.train_steps(data, perm, 64, 96)  # a shorter last batch: same argument types
    eng.loss_sums(data)
    assert slow == [[], []]
