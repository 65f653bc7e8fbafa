"""Golden test: a seeded CPU run gives bit for bit the results saved in
tests/data/golden_cpu.<host>.npz for this host kind (tests/golden_hosts.py: on a host kind with
no file of its own, every stored host's to a tolerance).

The fixture was written by the code before the engine refactor of issue 14 (Engine base class,
kernels.cpu step): per optimizer, 3 epochs on the synthetic tiny dataset (384 images, batch 50,
so every epoch ends on a short batch of 34), driven as the trainer drives the engine (a seeded
permutation per epoch, chunks of 100 samples). Saved: the training loss sum of every chunk, the
validation loss of every epoch, the final parameters and optimizer state, and the encodings and
reconstructions of 7 test images. A change that moves any of them by one bit fails here.

Both CPU GEMMs have their runs: OpenBLAS's sgemm (keys ``<optimizer>/...``, the fixture since
issue 14) and aecore's own (``own-<optimizer>/...``, kernels/own_step.py, added when
``cpu_gemm`` auto made it the default at batches up to 128; issue 16).

To rewrite this host's fixture on purpose (a change meant to alter results; then every host
kind's), or to write one for a new host kind, run this file as a script:
``.venv/bin/python tests/test_golden_cpu.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import golden_hosts
from aecore.devices import make_engine
from aecore.optim import OptimConfig
from aecore.model import init_params

GOLDEN = Path(__file__).parent / "data" / "golden_cpu.npz"  # per host: golden_hosts.path_for
OPTIMS = {"sgd": OptimConfig("sgd", lr=5.0), "momentum": OptimConfig("momentum", lr=1.0),
          "nesterov": OptimConfig("nesterov", lr=1.0, momentum=0.8),
          "adam": OptimConfig("adam", lr=1e-2)}
HIDDEN, BATCH, EPOCHS, CHUNK, SLOPE = 5, 50, 3, 100, 0.02


GEMMS = {"blas": "", "own": "own-"}  # cpu_gemm -> the prefix of its runs' keys


def golden_run(data, name: str, gemm: str = "blas") -> dict[str, np.ndarray]:
    """Everything the golden fixture records for optimizer ``name`` on ``gemm``'s products (keys
    prefixed ``<GEMMS[gemm]><name>/``)."""
    eng = make_engine("cpu", init_params(HIDDEN, 7, SLOPE), OPTIMS[name], BATCH, SLOPE,
                      cpu_gemm=gemm)
    assert eng.gemm == gemm
    train, val = eng.put(data.train.images), eng.put(data.val.images)
    n = train.shape[0]
    rng = np.random.default_rng([7, 1])
    chunk_losses, val_losses = [], []
    for _ in range(EPOCHS):
        perm = rng.permutation(n).astype(np.int64)
        for start in range(0, n, CHUNK):
            eng.train_steps(train, perm, start, min(start + CHUNK, n))
            chunk_losses.append(eng.take_loss_sum())
        val_losses.append(eng.evaluate(val))
    images = data.test.images[:7]
    out = {"chunk_losses": np.array(chunk_losses), "val_losses": np.array(val_losses),
           "step": np.array(eng.step), "encode": eng.encode(images),
           "reconstruct": eng.reconstruct(images)}
    out.update({f"param/{k}": v for k, v in eng.get_params().items()})
    out.update({f"state/{k}": v for k, v in eng.get_opt_state().items()})
    return {f"{GEMMS[gemm]}{name}/{k}": np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("gemm", list(GEMMS))
@pytest.mark.parametrize("name", list(OPTIMS))
def test_cpu_run_is_bitwise_the_golden_one(tiny_data, name, gemm):
    got = golden_run(tiny_data, name, gemm)
    prefix = f"{GEMMS[gemm]}{name}/"
    assert got[f"{prefix}chunk_losses"].size == EPOCHS * 4
    golden_hosts.check(got, GOLDEN, prefix, Path(__file__).name)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import synthetic_data

    data = synthetic_data()
    saved = {}
    for opt in OPTIMS:
        for gemm in GEMMS:
            saved.update(golden_run(data, opt, gemm))
    path = golden_hosts.write(GOLDEN, saved)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(saved)} arrays)")
