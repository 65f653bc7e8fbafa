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


def torch_run(params, optim: OptimConfig, images, perms, slope=0.01):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(784, HIDDEN), torch.nn.LeakyReLU(slope),
                                torch.nn.Linear(HIDDEN, 784), torch.nn.Sigmoid())
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    if optim.name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2),
                               eps=optim.eps)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=optim.lr,
                              momentum=0.0 if optim.name == "sgd" else optim.momentum,
                              nesterov=optim.name == "nesterov")
    x_all = torch.from_numpy(images.astype(np.float32) / 255)
    losses = []
    for perm in perms:
        total = 0.0
        for s in range(0, len(perm), BATCH):
            xb = x_all[torch.from_numpy(perm[s:s + BATCH])]
            loss = torch.nn.functional.mse_loss(model(xb), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0] * 784
        losses.append(total / (len(perm) * 784))
    return losses, {k: v.detach().numpy() for k, v in model.state_dict().items()}


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
