"""aecore's CPU engine against a plain PyTorch implementation of the same model and optimizer.

Same initial weights (aecore's init, loaded into ``nn.Sequential(Linear, LeakyReLU, Linear,
Sigmoid)``), same batches in the same order, ``nn.MSELoss()`` and ``torch.optim.SGD`` /
``torch.optim.Adam``: every epoch's mean training loss, and the weights at the end, must agree
within float32 tolerance. Runs when torch is installed (CI installs the CPU build).
"""

from __future__ import annotations

import numpy as np
import pytest

from aecore.devices import make_engine
from aecore.optim import OptimConfig
from aecore.model import B1, B2, W1, W2, init_params

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

HIDDEN, BATCH, N, EPOCHS = 32, 64, 1000, 2  # 1000 = 15 full batches + a short one of 40


def torch_run(params, optim: OptimConfig, images, perms, slope=0.01, schedule=None, val=None):
    """Per-epoch mean training losses and the final weights; ``schedule`` (an LRSchedule):
    its torch_scheduler stepped after every optimizer step; ``val`` images: the validation
    loss after each epoch is returned too."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    hidden = params[W1].shape[0]
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.LeakyReLU(slope),
                                torch.nn.Linear(hidden, 784), torch.nn.Sigmoid())
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    if optim.name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2),
                               eps=optim.eps)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=optim.lr,
                              momentum=0.0 if optim.name == "sgd" else optim.momentum,
                              nesterov=optim.name == "nesterov")
    sched = None if schedule is None else schedule.torch_scheduler(opt)
    x_all = torch.from_numpy(images.astype(np.float32) / 255)
    losses, val_losses = [], []
    for perm in perms:
        total = 0.0
        for s in range(0, len(perm), BATCH):
            xb = x_all[torch.from_numpy(perm[s:s + BATCH])]
            loss = torch.nn.functional.mse_loss(model(xb), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * xb.shape[0] * 784
        losses.append(total / (len(perm) * 784))
        if val is not None:
            with torch.no_grad():
                xv = torch.from_numpy(val.astype(np.float32) / 255)
                val_losses.append(torch.nn.functional.mse_loss(model(xv), xv).item())
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return (losses, weights) if val is None else (losses, val_losses, weights)


def aecore_run(params, optim, images, perms):
    eng = make_engine("cpu", params, optim, BATCH)
    data = eng.put(images)
    losses = []
    for perm in perms:
        eng.train_steps(data, perm, 0, len(perm))
        losses.append(eng.take_loss_sum() / (len(perm) * 784))
    return losses, eng.get_params()


@pytest.mark.parametrize("optim", [OptimConfig("sgd", lr=20.0), OptimConfig("momentum", lr=3.0),
                                   OptimConfig("nesterov", lr=3.0), OptimConfig("adam", lr=1e-3)],
                         ids=lambda o: o.name)
def test_same_losses_and_weights_as_pytorch(real_data, optim):
    images = real_data.train.images[:N]
    rng = np.random.default_rng(7)
    perms = [rng.permutation(N).astype(np.int64) for _ in range(EPOCHS)]
    params = init_params(HIDDEN, seed=3)
    ours, p_ours = aecore_run(params, optim, images, perms)
    theirs, p_theirs = torch_run(params, optim, images, perms)
    print(optim.name, "aecore", ours, "torch", theirs)
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        assert abs(a - b) <= 2e-5 * b, f"epoch {e}: aecore {a!r} torch {b!r}"
    assert ours[1] < ours[0]
    for k in (W1, B1, W2, B2):
        err = np.linalg.norm(p_ours[k] - p_theirs[k]) / np.linalg.norm(p_theirs[k])
        assert err < 1e-4, (k, err)


@pytest.mark.parametrize("optim", [OptimConfig("sgd", lr=20.0), OptimConfig("adam", lr=1e-2)],
                         ids=lambda o: o.name)
@pytest.mark.parametrize("name,warmup", [("constant", 1), ("cosine", 0), ("cosine", 1),
                                         ("step", 0), ("step", 1), ("onecycle", 0)])
def test_schedules_same_losses_as_torch_lr_scheduler(tiny_data, optim, name, warmup):
    """Every schedule, with and without warm-up: per-epoch training and validation losses of
    the CPU engine with ``lr_schedule`` against torch stepping ``torch_scheduler`` per batch."""
    from aecore.schedules import LRSchedule

    images, val = tiny_data.train.images, tiny_data.val.images  # 384: 6 batches per epoch
    epochs, n = 3, len(images)
    rng = np.random.default_rng(7)
    perms = [rng.permutation(n).astype(np.int64) for _ in range(epochs)]
    params = init_params(HIDDEN, seed=3)
    schedule = LRSchedule(name, optim.lr, epochs, -(-n // BATCH), warmup)
    eng = make_engine("cpu", params, optim, BATCH, lr_schedule=schedule)
    data, vdata = eng.put(images), eng.put(val)
    ours, ours_val = [], []
    for perm in perms:
        eng.train_steps(data, perm, 0, n)
        ours.append(eng.take_loss_sum() / (n * 784))
        ours_val.append(eng.evaluate(vdata))
    theirs, theirs_val, _ = torch_run(params, optim, images, perms, schedule=schedule, val=val)
    print(name, warmup, optim.name, "aecore", ours, ours_val, "torch", theirs, theirs_val)
    for e in range(epochs):
        for a, b in ((ours[e], theirs[e]), (ours_val[e], theirs_val[e])):
            assert abs(a - b) <= 2e-5 * b, f"epoch {e + 1}: aecore {a!r} torch {b!r}"
    const, const_val, _ = torch_run(params, optim, images, perms, val=val)
    assert abs(const_val[-1] - ours_val[-1]) > 1e-4 * const_val[-1]  # the schedule mattered
