"""The persistent multi-run kernel (kernels/cuda/persistent.py) against today's engine step.

In the simulator (a cooperative grid runs as one block there): (a) one run, a chunk of steps
(batch 50 with a short last batch, h = 24, rows gathered through a permutation): parameters,
optimizer state and the loss sum bitwise those of today's CudaEngine (five launches per step,
split-K); (b) two runs of different h (so tiles, slices and offsets) in each launch, Adam in two
launches (state and step carried over), each bitwise equal to that run trained alone by
today's engine, and the validation pass of the last launch equal to today's evaluation; (c) the
kernel compiles to PTX for sm_80 and sm_90 as a cooperative kernel with no local-memory depot
(tests/test_cuda_ptx.py's method).

Sizes are small (n = 136 pixels: three 64-wide tiles, split-K 2 on the 136-long reductions;
two steps per run): the simulator runs 256 Python threads per block.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import cuda_or_skip

cuda_or_skip()

from numba import cuda  # noqa: E402

from aecore.engine_cuda import CudaEngine  # noqa: E402
from aecore.kernels import cuda as kc  # noqa: E402
from aecore.kernels import optim as ko  # noqa: E402
from aecore.kernels.cuda import persistent as P  # noqa: E402
from aecore.model import B1, B2, W1, W2, init_params  # noqa: E402
from aecore.optim import OptimConfig, buffers_of, init_state  # noqa: E402

N_PIX, N_IMG, BATCH = 72, 80, 50  # two steps: 50 rows, then a short batch of 30
SGD = OptimConfig("sgd", lr=2.0)
ADAM = OptimConfig("adam", lr=1e-2)
# (hidden, optimizer, seed, split-K slices forced on every product: the reductions are too
# short for the engine's default plan, SplitK(), to split; kernels/cuda/launch.py)
RUN_A_SGD = (24, SGD, 1, 3)  # F1 / F3: slices of 32, 32, 8 of K = 72; F2: 16, 8 of h = 24
RUN_A_ADAM = (24, ADAM, 2, 2)
RUN_B = (40, ADAM, 3, 2)  # F2: slices of 32, 8 of h = 40


@functools.lru_cache(maxsize=None)
def _data():
    rng = np.random.default_rng(13)
    images = rng.integers(0, 256, (N_IMG, N_PIX), dtype=np.uint8)
    return images, rng.permutation(N_IMG).astype(np.int64)


def _splitk(splits):
    return kc.SplitK(splits=splits, capacity=1 << 16, max_tiles=64)


@functools.lru_cache(maxsize=None)
def _alone(run):
    """Today's path: a CudaEngine trains the run on one chunk (every step of the data)."""
    h, optim, seed, splits = run
    images, perm = _data()
    eng = CudaEngine(init_params(h, seed, image_size=N_PIX), optim, BATCH)
    eng._splitk = _splitk(splits)  # the engine makes SplitK(); these shapes need a forced split
    data = eng.put(images)
    eng.train_steps(data, perm, 0, N_IMG)
    state = {k: v.reshape(-1) for k, v in eng.get_opt_state().items()}
    return eng.get_params(), state, eng.take_loss_sum()


def _spec(run):
    h, optim, seed, _ = run
    params = init_params(h, seed, image_size=N_PIX)
    state = init_state(optim, params)
    bufs = buffers_of(state, optim, 1) + buffers_of(state, optim, 2)
    return P.RunSpec(tuple(params[k] for k in (W1, B1, W2, B2)), bufs, optim.name.kernel_code)


def _hps(optim, steps):
    if optim.name.value == "adam":
        return ko.pack_adam_steps(optim.hyper_params(), 1, steps)
    return np.tile(ko.pack(optim.hyper_params()), (steps, 1))


def _together(runs, splits, cuts=(0, N_IMG), val=None):
    """The persistent path: every run in one launch per chunk ``cuts[i]:cuts[i + 1]``; ``val``
    (images, eval batch): the last launch validates on them."""
    images, perm = _data()
    pr = P.PersistentRuns([_spec(r) for r in runs], BATCH, splitk=_splitk(splits))
    X = cuda.to_device(images)
    perms = cuda.to_device(np.stack([perm] * len(runs)))
    t = 0
    for start, stop in zip(cuts, cuts[1:]):
        steps = -(-(stop - start) // BATCH)
        hps = np.stack([_hps(r[1], t + steps)[t:] for r in runs])
        last = stop == cuts[-1] and val is not None
        pr.train_chunk(X, perms, start, stop, hps,
                       val=(cuda.to_device(val[0]), val[1]) if last else None)
        t += steps
    return pr, pr.take_loss_sums()


def _assert_same(pr, r, loss, run):
    params, state, loss_alone = _alone(run)
    got_p, got_s = pr.run(r)
    h, optim, _, _ = run
    for name, got in zip((W1, B1, W2, B2), got_p):
        np.testing.assert_array_equal(got, params[name], err_msg=f"run {r} {name}")
    want = {k: v for k, v in zip(("VW1", "Vb1", "MW1", "Mb1", "VW2", "Vb2", "MW2", "Mb2"),
                                 buffers_of(state, optim, 1) + buffers_of(state, optim, 2))}
    for (name, w), got in zip(want.items(), got_s):
        assert (w is None) == (got is None), name
        if w is not None:
            np.testing.assert_array_equal(got, w, err_msg=f"run {r} {name}")
    assert loss == loss_alone, (r, loss, loss_alone)
    assert not np.array_equal(got_p[0], _spec(run).params[0])  # it trained


def test_one_run_bitwise_equal_to_todays_engine():
    """SGD, split-K 3, both steps (the second short) in one launch."""
    pr, loss = _together([RUN_A_SGD], RUN_A_SGD[3])
    _assert_same(pr, 0, loss[0], RUN_A_SGD)


def test_bad_launch_arguments_are_refused_with_a_reason():
    run = _spec(RUN_A_SGD)
    other = _spec((24, SGD, 1, 2))._replace(params=tuple(
        np.zeros((24, 10) if i == 0 else a.shape, np.float32) for i, a in
        enumerate(run.params)))
    with pytest.raises(ValueError, match="pixels"):
        P.PersistentRuns([run, other], BATCH, splitk=_splitk(2))
    pr = P.PersistentRuns([run], BATCH, splitk=_splitk(2))
    with pytest.raises(ValueError, match="hps has shape"):
        pr.train_chunk(cuda.to_device(_data()[0]), cuda.to_device(_data()[1][None]), 0, N_IMG,
                       np.zeros((1, 1, 7), np.float32))


def test_two_runs_per_launch_each_equal_to_the_run_alone_and_validated_as_today(monkeypatch):
    """h = 24 and 40 (different shapes, so different tiles and K slices) in each of two
    launches of a step each (the split-K counters, the state and Adam's step carry over), each
    run bitwise as trained alone by the engine in one chunk. The last launch's validation phase
    (F1, F2 over the validation rows after the chunk's last step) gives each run the loss sum
    today's evaluation gives the trained run: the same batches (20 then a short 10 here),
    split-K plans and order of the tile sums."""
    import aecore.engine_cuda as ec

    runs, splits = [RUN_A_ADAM, RUN_B], 2
    val = np.random.default_rng(7).integers(0, 256, (30, N_PIX), dtype=np.uint8)
    pr, loss = _together(runs, splits, (0, BATCH, N_IMG), val=(val, 20))
    for r, run in enumerate(runs):
        _assert_same(pr, r, loss[r], run)
    got = pr.take_loss_sums("vloss")
    monkeypatch.setattr(ec, "EVAL_BATCH", 20)
    for r, run in enumerate(runs):
        eng = CudaEngine(_alone(run)[0], None)
        eng._splitk = _splitk(splits)
        want = eng.loss_sum(val)  # on a GPU: float64 atomics, added in arrival order
        assert got[r] == want if kc.SIMULATOR else abs(got[r] - want) <= 1e-12 * want
    assert np.array_equal(pr.take_loss_sums("vloss"), np.zeros(2))


PTX_SCRIPT = r"""
import json, sys
from aecore.kernels import cuda as kc
from aecore.kernels.cuda import persistent as P
from aecore.kernels.cuda.ptx import ptxas_registers
out = {}
for name, (f, sig), ccs in (("u8", P.VARIANTS["u8"], ((8, 0), (9, 0))),
                            ("validate-u8", P.VALIDATION_VARIANTS["u8"], ((9, 0),))):
    # u8: the engine's dataset; f32 is the same code (~20 s per compile)
    for cc in ccs:
        ptx = kc.compile_ptx(f, sig, cc)
        out[f"{name}@sm_{cc[0]}{cc[1]}"] = dict(
            grid_sync="cudaCGSynchronize" in ptx, local=".local" in ptx,
            entries=ptx.count(".entry "), ptxas=ptxas_registers(ptx, cc))
json.dump(out, sys.stdout)
"""


def test_persistent_kernel_compiles_to_ptx_with_grid_sync_and_no_spills():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    r = subprocess.run([sys.executable, "-c", PTX_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    facts = json.loads(r.stdout)
    print(json.dumps(facts, indent=1))
    assert len(facts) == 3
    for name, f in facts.items():
        assert f["entries"] == 1 and f["grid_sync"], (name, f)
        assert not f["local"], f"{name} has a local-memory depot: {f}"
    # ptxas (where installed): sm_90 (H100 / H200) keeps everything in registers; sm_80 spills
    # a few bytes at its 255-register cap (bench/RESULTS.md)
    for name in ("u8@sm_90", "validate-u8@sm_90"):
        sm90 = facts[name]["ptxas"]
        if sm90 is not None:
            assert sm90["registers"] and sm90["spill_stores"] == 0, (name, sm90)


def test_chunk_losses_double_buffered_and_read_a_launch_late():
    """Chunk c's loss sums land in slot c % 2 and are read (read_loss, pinned copy + event)
    after chunk c + 1 is queued: each chunk's sums bitwise those read at once (carry, one
    take per chunk: today's reads); the reads keep chunk order, and a chunk is not queued over
    an unread slot. A RunView hands the trainer each chunk's sum one launch late, the epoch's
    last at once (both, in order), so the trainer's epoch sum is today's. h = 8, batch 8, three
    one-step chunks of a 24-image epoch."""
    from aecore.engine_persistent import RunGroup

    run, images = (8, SGD, 4, 1), _data()[0]
    perm = np.random.default_rng(3).permutation(24).astype(np.int64)
    X, perms, hps = cuda.to_device(images), cuda.to_device(perm[None]), _hps(SGD, 1)[None]
    cuts = [(0, 8), (8, 16), (16, 24)]
    ref = P.PersistentRuns([_spec(run)], 8)
    once = []
    for a, b in cuts:
        ref.train_chunk(X, perms, a, b, hps)
        once.append(ref.take_loss_sums()[0])
    assert len(set(once)) == 3 and all(v > 0 for v in once)

    pr = P.PersistentRuns([_spec(run)], 8)
    pr.train_chunk(X, perms, *cuts[0], hps, carry=False)
    pr.train_chunk(X, perms, *cuts[1], hps, carry=False)
    assert pr.loss.copy_to_host()[:, 0].tolist() == once[:2]  # slots 0 and 1
    with pytest.raises(RuntimeError, match="not the next"):
        pr.read_loss(1)
    with pytest.raises(RuntimeError, match="chunk 0's loss is not read"):
        pr.train_chunk(X, perms, *cuts[2], hps, carry=False)
    assert pr.read_loss(0)[0] == once[0]
    pr.train_chunk(X, perms, *cuts[2], hps, carry=False)  # into slot 0, chunk 1 unread
    assert pr.loss.copy_to_host()[:, 0].tolist() == [once[2], once[1]]
    assert [pr.read_loss(1)[0], pr.read_loss(2)[0]] == once[1:]
    assert pr.take_loss_sums()[0] == 0.0

    h, optim, seed, _ = run
    view = RunGroup.alone().make_engine("cuda", init_params(h, seed, image_size=N_PIX), optim, 8)
    data = view.put(images)
    parts = []
    for a, b in cuts:
        view.train_steps(data, perm, a, b)
        parts.append(view.take_loss_parts())
    assert parts == [[], once[:1], once[1:]]
    for got, want in zip(view.get_params().values(), ref.run(0)[0]):
        np.testing.assert_array_equal(got, want)
