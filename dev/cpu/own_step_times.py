"""The own CPU step's time (µs a step) at given (h, B): ``CpuEngine(gemm='own').train_steps``
over half an epoch of random uint8 images, the median of five runs after a warm-up.

    python dev/cpu/own_step_times.py 512:64 128:256 [--by-rows 0|1]

Prints one line, ``h:B µs`` per shape. ``--by-rows`` forces how the halves split (default: the
engine's own choice, ``own_step.by_rows``). ``dev/cpu/ab.py`` runs this under several
interpreters in turn. Measurements: bench/RESULTS.md, "Session 18".
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aecore.devices import make_engine
from aecore.kernels import own_step
from aecore.model import init_params
from aecore.optim import OptimConfig


def step_us(h: int, batch: int, X: np.ndarray, perm: np.ndarray, runs: int = 5) -> float:
    """Median µs a step of plain SGD at (h, batch) over perm's first half epoch."""
    eng = make_engine("cpu", init_params(h, seed=1), OptimConfig("sgd", lr=1e-3), batch,
                      cpu_gemm="own")
    data = eng.put(X)
    n = len(perm) // 2 // batch * batch
    eng.train_steps(data, perm, 0, 4 * batch)  # compile or load, first touch
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        eng.train_steps(data, perm, 0, n)
        times.append((time.perf_counter() - t) / (n // batch))
    return float(np.median(times)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shapes", nargs="+", help="h:B pairs")
    ap.add_argument("--by-rows", type=int, choices=(0, 1), default=None)
    args = ap.parse_args()
    if args.by_rows is not None:
        own_step.by_rows = lambda batch: args.by_rows
    X = np.random.default_rng(0).integers(0, 256, (60000, 784), dtype=np.uint8)
    perm = np.random.default_rng(1).permutation(60000).astype(np.int64)
    out = []
    for shape in args.shapes:
        h, batch = map(int, shape.split(":"))
        out.append(f"{shape} {step_us(h, batch, X, perm):7.1f}")
    print("  ".join(out), flush=True)


if __name__ == "__main__":
    main()
