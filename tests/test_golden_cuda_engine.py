"""Golden test: a few seeded CudaEngine steps (simulator) give bit for bit the results saved in
tests/data/golden_cuda_engine.npz, written by the engine before activations and losses became
compile-time choices (issue 18): the default (leaky_relu, mse) must stay today's kernels.

Saved per optimizer (adam, momentum): two chunks of training of a tiny model (24 pixels, hidden 5,
batch 8, a short last batch: the simulator is slow), the chunk loss sums, the validation loss, the
parameters, encodings and reconstructions.
Rewrite on purpose only:
``NUMBA_ENABLE_CUDASIM=1 .venv/bin/python tests/test_golden_cuda_engine.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

if __name__ != "__main__":
    from conftest import cuda_or_skip

    cuda_or_skip()

from aecore.devices import make_engine  # noqa: E402
from aecore.model import init_params  # noqa: E402
from aecore.optim import OptimConfig  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden_cuda_engine.npz"
OPTIMS = {"adam": OptimConfig("adam", lr=1e-2), "momentum": OptimConfig("momentum", lr=1.0)}
HIDDEN, BATCH, SLOPE, PIXELS = 5, 8, 0.02, 24


def golden_run(data, name: str, **engine_kw) -> dict[str, np.ndarray]:
    eng = make_engine("cuda", init_params(HIDDEN, 3, SLOPE, PIXELS), OPTIMS[name], BATCH, SLOPE,
                      graphs=False, **engine_kw)
    images = np.ascontiguousarray(data.train.images[:40, 300:300 + PIXELS])
    train = eng.put(images[:20])
    perm = np.random.default_rng([3, 1]).permutation(20).astype(np.int64)
    losses = []
    for start, stop in ((0, 16), (16, 20)):
        eng.train_steps(train, perm, start, stop)
        losses.append(eng.take_loss_sum())
    out = {"chunk_losses": np.array(losses), "val_loss": np.array(eng.evaluate(images[20:])),
           "encode": eng.encode(images[20:24]), "reconstruct": eng.reconstruct(images[20:24])}
    out.update({f"param/{k}": v for k, v in eng.get_params().items()})
    return {f"{name}/{k}": np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("name", list(OPTIMS))
def test_cuda_engine_default_is_bitwise_the_golden_one(tiny_data, name):
    with np.load(GOLDEN) as z:
        want = {k: z[k] for k in z.files if k.startswith(f"{name}/")}
    got = golden_run(tiny_data, name)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import synthetic_data

    saved = {}
    for opt in OPTIMS:
        saved.update(golden_run(synthetic_data(), opt))
    np.savez_compressed(GOLDEN, **saved)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(saved)} arrays)")
