"""The Engine interface (aecore.engine), the factory and the optimizer vocabulary, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from aecore.devices import make_engine
from aecore.engine import Engine
from aecore.kernels import optim as ko
from aecore.model import init_params
from aecore.optim import OPTIMIZERS, OptimConfig, Optimizer


def test_optimizer_vocabulary():
    assert OPTIMIZERS == ("sgd", "momentum", "nesterov", "adam")
    assert Optimizer("adam") is Optimizer.ADAM and Optimizer.ADAM == "adam"
    assert OptimConfig("nesterov").name is Optimizer.NESTEROV
    assert [o.kernel_code for o in Optimizer] == [ko.OPT_SGD, ko.OPT_MOMENTUM, ko.OPT_NESTEROV,
                                                  ko.OPT_ADAM]
    assert Optimizer.ADAM.state_names == ("exp_avg", "exp_avg_sq")  # torch.optim's names
    assert Optimizer.MOMENTUM.state_names == ("momentum_buffer",) and not Optimizer.SGD.state_names
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'; choose one of sgd, "):
        OptimConfig("lbfgs")
    hp = OptimConfig("adam", lr=0.5, beta1=0.8, beta2=0.9, eps=1e-6).hyper_params()
    assert hp == ko.HyperParams(lr=0.5, beta1=0.8, beta2=0.9, eps=1e-6)
    packed = ko.pack(hp, step_size=2.0, inv_bc2_sqrt=3.0)
    assert packed.dtype == np.float32 and list(packed) == [0.5, 0.0, 0.8, 0.9, np.float32(1e-6),
                                                           2.0, 3.0]
    steps = ko.pack_adam_steps(hp, 1, 2)
    np.testing.assert_allclose(steps[:, 5], [0.5 / (1 - 0.8), 0.5 / (1 - 0.8**2)], rtol=1e-6)
    np.testing.assert_allclose(steps[:, 6], [1 / np.sqrt(1 - 0.9), 1 / np.sqrt(1 - 0.81)],
                               rtol=1e-6)


def test_engine_is_an_interface():
    with pytest.raises(TypeError):
        Engine(init_params(4, 0))
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        make_engine("tpu", init_params(4, 0))
    with pytest.raises(ValueError, match="batch size"):
        make_engine("cpu", init_params(4, 0), OptimConfig())


def test_inference_engine_needs_no_optimizer(tiny_data):
    p = init_params(12, 3)
    infer = make_engine("cpu", p)
    train = make_engine("cpu", p, OptimConfig("adam"), 32)
    x = tiny_data.test.images
    np.testing.assert_array_equal(infer.reconstruct(x), train.reconstruct(x))
    np.testing.assert_array_equal(infer.encode(x), train.encode(x))
    assert infer.evaluate(x) == train.evaluate(x) > 0
    assert infer.get_opt_state() == {} and np.isnan(infer.evaluate(x[:0]))
    with pytest.raises(RuntimeError, match="inference"):
        infer.train_steps(infer.put(x), np.arange(len(x)), 0, len(x))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_put_back_continues_bit_for_bit(tiny_data, name):
    """get_params / get_opt_state / step put into a fresh engine (as a checkpoint does) train
    on exactly as the engine they came from."""
    optim = OptimConfig(name, lr=1e-2 if name == "adam" else 0.5)
    x = tiny_data.train.images
    perm = np.random.default_rng(0).permutation(len(x))
    a = make_engine("cpu", init_params(6, 1), optim, 32)
    a.train_steps(a.put(x), perm, 0, 96)
    b = make_engine("cpu", init_params(6, 9), optim, 32)
    b.set_state(a.get_params(), a.get_opt_state(), a.step)
    assert sorted(b.get_opt_state()) == sorted(f"{p}.{s}" for s in optim.state_names()
                                               for p in ("0.weight", "0.bias", "2.weight",
                                                         "2.bias"))
    for e in (a, b):
        e.train_steps(e.put(x), perm, 96, len(x))
    assert a.step == b.step == 12
    assert a.take_loss_sum() != b.take_loss_sum()  # a's includes its first 96 samples
    for got, want in ((b.get_params(), a.get_params()), (b.get_opt_state(), a.get_opt_state())):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    with pytest.raises(ValueError, match="shape"):
        b.set_state(init_params(7, 0))
