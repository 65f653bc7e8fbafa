"""Golden test of the engines' training loops: the split CPU engine and the CUDA engine (Numba's
simulator here) give, bit for bit, the results saved in tests/data/golden_engines.npz (CUDA) and
tests/data/golden_engines_cpu.<host>.npz for this host kind (the split CPU engine;
tests/golden_hosts.py: on a host kind with no file of its own, every stored host's to a
tolerance).

The fixture was written by the code before the learning-rate schedules were wired into the
engines (issue 18), to show that the constant schedule (the default, ``lr_schedule=None``)
changes no bit. The default CPU path has its own golden test (test_golden_cpu.py). Per optimizer,
2 epochs of a 24-pixel model with h = 3 (tiny, so the simulator takes seconds) on 10 images in
batches of 4 (every epoch ends on a short batch of 2), in two chunks per epoch. Saved: each
chunk's loss sum, the final parameters and optimizer state.

Rewrite the fixtures on purpose (a change meant to alter results), or write the CPU one for a
new host kind: ``NUMBA_ENABLE_CUDASIM=1 .venv/bin/python tests/test_golden_engines.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "data" / "golden_engines.npz"
GOLDEN_CPU = Path(__file__).parent / "data" / "golden_engines_cpu.npz"  # golden_hosts.path_for
PIXELS, HIDDEN, BATCH, N, EPOCHS, CHUNK = 24, 3, 4, 10, 2, 8
OPTIMS = {"sgd": dict(lr=3.0), "momentum": dict(lr=1.0), "nesterov": dict(lr=1.0, momentum=0.8),
          "adam": dict(lr=1e-2)}
ENGINES = ("cpu_split", "cuda")


def tiny_problem():
    """(params, images) of the golden runs: seeded, 24 pixels."""
    rng = np.random.default_rng(18)
    params = {"0.weight": rng.normal(0, 0.3, (HIDDEN, PIXELS)).astype(np.float32),
              "0.bias": rng.normal(0, 0.1, HIDDEN).astype(np.float32),
              "2.weight": rng.normal(0, 0.3, (PIXELS, HIDDEN)).astype(np.float32),
              "2.bias": rng.normal(0, 0.1, PIXELS).astype(np.float32)}
    images = rng.integers(0, 256, (N, PIXELS), dtype=np.uint8)
    return params, images


def golden_run(engine: str, name: str, **engine_kw) -> dict[str, np.ndarray]:
    """What the fixture records for ``engine`` and optimizer ``name`` (keys ``engine/name/``)."""
    from aecore.devices import make_engine
    from aecore.optim import OptimConfig

    params, images = tiny_problem()
    device = "cpu" if engine.startswith("cpu") else "cuda"
    eng = make_engine(device, params, OptimConfig(name, **OPTIMS[name]), BATCH, 0.02,
                      cpu_split=engine == "cpu_split", **engine_kw)
    data = eng.put(images)
    rng = np.random.default_rng([18, 1])
    losses = []
    for _ in range(EPOCHS):
        perm = rng.permutation(N).astype(np.int64)
        for start in range(0, N, CHUNK):
            eng.train_steps(data, perm, start, min(start + CHUNK, N))
            losses.append(eng.take_loss_sum())
    out = {"chunk_losses": np.array(losses), "step": np.array(eng.step)}
    out.update({f"param/{k}": v for k, v in eng.get_params().items()})
    out.update({f"state/{k}": v for k, v in eng.get_opt_state().items()})
    return {f"{engine}/{name}/{k}": np.asarray(v) for k, v in out.items()}


def _cuda_or_skip():
    from conftest import cuda_or_skip

    cuda_or_skip()


@pytest.mark.parametrize("name", list(OPTIMS))
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_run_is_bitwise_the_golden_one(engine, name):
    if engine == "cuda":
        _cuda_or_skip()
    prefix = f"{engine}/{name}/"
    got = golden_run(engine, name)
    assert got[prefix + "step"] == EPOCHS * 3
    if engine.startswith("cpu"):
        import golden_hosts

        golden_hosts.check(got, GOLDEN_CPU, prefix, Path(__file__).name)
        return
    with np.load(GOLDEN) as z:
        want = {k: z[k] for k in z.files if k.startswith(prefix)}
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    _cuda_or_skip()
    import golden_hosts

    cpu = {k: v for opt in OPTIMS for k, v in golden_run("cpu_split", opt).items()}
    path = golden_hosts.write(GOLDEN_CPU, cpu)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(cpu)} arrays)")
    cuda = {k: v for opt in OPTIMS for k, v in golden_run("cuda", opt).items()}
    np.savez_compressed(GOLDEN, **cuda)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(cuda)} arrays)")
