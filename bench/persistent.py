"""GPU check and timing of the persistent multi-run kernel (kernels/cuda/persistent.py, issue #13)
against today's path (CudaEngine: five launches per step, replayed as a CUDA graph).

On a GPU, in this order (each printed, all written to ``--json``):

1. the kernel's registers and ``max_cooperative_grid_blocks`` for 256-thread blocks (vs the SMs);
2. checks: a grid of 1 block against the full grid, bitwise (a few steps of all runs); each run
   of the launch against the same run trained alone by a CudaEngine, parameters bitwise (the
   loss to 1e-12: today's per-block float64 atomics add in a varying order);
3. timing, batch ``--batch`` (64), Adam, ``--images`` random uint8 images per epoch: µs per step
   per run of the persistent kernel with all runs in one launch and with each run alone, and of
   the CUDA-graph path run after run; the study's 200 epochs extrapolated from it.

    python bench/persistent.py --json OUT/persistent.json          (~40 s with compilation)

The target (issue #13): <= 25 µs per step per run at batch 64, the study's training < 10 s.
Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) ``--images 80 --hidden 8,16 --batch 32 --steps
2 --no-time`` runs the checks on tiny shapes (tests cover that path; this is for a GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from numba import cuda  # noqa: E402

from aecore.engine_cuda import CudaEngine  # noqa: E402
from aecore.kernels import optim as ko  # noqa: E402
from aecore.kernels.cuda import NTHREADS, SIMULATOR  # noqa: E402
from aecore.kernels.cuda.config import FASTMATH  # noqa: E402
from aecore.kernels.cuda import persistent as P  # noqa: E402
from aecore.model import B1, B2, W1, W2, init_params  # noqa: E402
from aecore.optim import OptimConfig, buffers_of, init_state  # noqa: E402

OPTIM = OptimConfig("adam", lr=1e-3)


def spec(h, seed, n):
    params = init_params(h, seed, image_size=n)
    state = init_state(OPTIM, params)
    bufs = buffers_of(state, OPTIM, 1) + buffers_of(state, OPTIM, 2)
    return P.RunSpec(tuple(params[k] for k in (W1, B1, W2, B2)), bufs, OPTIM.name.kernel_code)


def hps(R, t0, steps):
    return np.stack([ko.pack_adam_steps(OPTIM.hyper_params(), t0, steps)] * R)


def launch(pr, X, perms, start, stop, t0, compiled=None):
    steps = -(-(stop - start) // pr.B)
    pr.train_chunk(X, perms, start, stop, hps(len(pr.runs), t0, steps), compiled)
    return steps


def capped(regs):
    """The uint8 kernel compiled with at most ``regs`` registers a thread (more blocks per SM,
    some spills: 320 B at 128 on sm_90 by ptxas)."""
    f, sig = P.VARIANTS["u8"]
    cap = {} if SIMULATOR else {"max_registers": regs}  # the simulator's jit has no such option
    return cuda.jit(sig, fastmath=FASTMATH, **cap)(f)


def kernel_facts():
    k = P.kernel["u8"]
    facts = {"simulator": SIMULATOR}
    if not SIMULATOR:
        dev = cuda.get_current_device()
        over = k.overloads[k.signatures[0]]
        facts.update(sms=dev.MULTIPROCESSOR_COUNT,
                     max_cooperative_grid_blocks=over.max_cooperative_grid_blocks(NTHREADS))
        try:
            facts["registers"] = k.get_regs_usage(k.signatures[0])
        except Exception as e:  # numba-cuda API drift: never lose the timing to it
            facts["registers"] = f"? ({type(e).__name__})"
    return facts


def dataset(seed, images, n, runs):
    """Random uint8 images (host and device), one permutation, and it per run on the device."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (images, n), dtype=np.uint8)
    perm = rng.permutation(images).astype(np.int64)
    return data, perm, cuda.to_device(data), cuda.to_device(np.stack([perm] * runs))


def check(hidden, B, images, steps, n):
    """Grid of 1 vs the full grid, and each run vs CudaEngine alone; returns the findings."""
    data, perm, X, perms = dataset(0, images, n, len(hidden))
    stop = min(images, steps * B)
    out = {}
    results = []
    for blocks in ((1, None) if not SIMULATOR else (None,)):
        pr = P.PersistentRuns([spec(h, i, n) for i, h in enumerate(hidden)], B, blocks=blocks)
        launch(pr, X, perms, 0, stop, 1)
        results.append(([pr.run(r)[0] for r in range(len(hidden))], pr.take_loss_sums()))
    if len(results) == 2:
        out["grid1_vs_full_bitwise"] = all(
            np.array_equal(a, b) for ra, rb in zip(results[0][0], results[1][0])
            for a, b in zip(ra, rb)) and np.array_equal(results[0][1], results[1][1])
    params, losses = results[-1]
    alone = []
    for r, h in enumerate(hidden):
        eng = CudaEngine(init_params(h, r, image_size=n), OPTIM, B)
        eng.train_steps(eng.put(data), perm, 0, stop)
        want = eng.get_params()
        same = all(np.array_equal(g, want[k]) for g, k in zip(params[r], (W1, B1, W2, B2)))
        loss = eng.take_loss_sum()
        alone.append(dict(hidden=h, params_bitwise=same,
                          loss_rel=abs(loss - losses[r]) / max(abs(loss), 1e-300)))
    out["each_run_vs_engine_alone"] = alone
    return out


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        cuda.synchronize()
        t = time.perf_counter()
        fn()
        cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def measure(hidden, B, images, n, repeats, max_registers=()):
    data, perm, X, perms = dataset(1, images, n, len(hidden))
    steps = -(-images // B)
    rows = {}
    together = P.PersistentRuns([spec(h, i, n) for i, h in enumerate(hidden)], B)
    launch(together, X, perms, 0, images, 1)  # compile + warm
    t = timed(lambda: launch(together, X, perms, 0, images, 1), repeats)
    rows["persistent_all"] = t / steps / len(hidden) * 1e6
    for regs in max_registers:
        k = capped(regs)
        launch(together, X, perms, 0, images, 1, k)
        rows[f"persistent_all_maxreg{regs}"] = timed(
            lambda: launch(together, X, perms, 0, images, 1, k), repeats) / steps \
            / len(hidden) * 1e6
        if not SIMULATOR:
            rows[f"coop_blocks_maxreg{regs}"] = k.overloads[k.signatures[0]] \
                .max_cooperative_grid_blocks(NTHREADS)
    for i, h in enumerate(hidden):
        one = P.PersistentRuns([spec(h, i, n)], B)
        p1 = cuda.to_device(perm[None])
        launch(one, X, p1, 0, images, 1)
        rows[f"persistent_alone_h{h}"] = timed(lambda: launch(one, X, p1, 0, images, 1),
                                               repeats) / steps * 1e6
        eng = CudaEngine(init_params(h, i, image_size=n), OPTIM, B)
        d = eng.put(data)
        for _ in range(2):  # eager, then recorded into a graph
            eng.train_steps(d, perm, 0, images)
        rows[f"graphs_alone_h{h}"] = timed(lambda: eng.train_steps(d, perm, 0, images),
                                           repeats) / steps * 1e6
        rows[f"graphs_used_h{h}"] = eng.uses_graphs  # False: that row is the eager path
    rows["graphs_sum_per_run"] = sum(rows[f"graphs_alone_h{h}"] for h in hidden) / len(hidden)
    # the study: 200 epochs of 60000 images, all runs together (training only)
    study_steps = 200 * -(-60000 // B)
    rows["study_train_s_persistent"] = rows["persistent_all"] * len(hidden) * study_steps / 1e6
    rows["study_train_s_graphs_serial"] = rows["graphs_sum_per_run"] * len(hidden) \
        * study_steps / 1e6
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", default="64,128,256,512")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=8192, help="images per timed epoch")
    ap.add_argument("--pixels", type=int, default=784)
    ap.add_argument("--steps", type=int, default=8, help="steps of the bitwise checks")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-time", action="store_true", help="the checks only")
    ap.add_argument("--max-registers", type=int, nargs="*", default=[],
                    help="also time the kernel compiled with these register caps (+~20 s each)")
    ap.add_argument("--json", help="write the findings here")
    a = ap.parse_args(argv)
    hidden = [int(h) for h in a.hidden.split(",")]
    t0 = time.perf_counter()
    report = {"hidden": hidden, "batch": a.batch, "images": a.images}

    def record(key, value):  # printed and written as each part is done (a stage may time out)
        report[key] = value
        report["wall_s"] = time.perf_counter() - t0
        print(key, json.dumps(value, indent=1), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=1))

    record("check", check(hidden, a.batch, a.images, a.steps, a.pixels))
    record("kernel", kernel_facts())
    if not a.no_time:
        record("us_per_step_per_run", measure(hidden, a.batch, a.images, a.pixels, a.repeats,
                                              a.max_registers))
    ok = report["check"].get("grid1_vs_full_bitwise", True) and all(
        r["params_bitwise"] for r in report["check"]["each_run_vs_engine_alone"])
    print("checks", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
