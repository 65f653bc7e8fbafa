"""Grid-wide barrier cost on a GPU: cooperative ``grid.sync()`` against an atomic-counter barrier.

Decides the design of the persistent training kernel (issue #13): a step there is about ten
dependent phases, each ending in a grid-wide barrier, so the barrier's cost times ten is the
step's floor before any work is done.

Both kernels run ``rounds`` barriers. Between barriers every block's thread 0 writes the round
number into its own slot, and after the barrier reads the slot of the next block: a barrier that
lets a block run ahead shows up as a stale slot, counted in ``errors`` (must be 0).

* ``coop``: ``cuda.cg.this_grid().sync()``, launched cooperatively (numba-cuda does that for any
  kernel that calls ``this_grid``); the grid must fit on the GPU at once.
* ``atomic``: thread 0 of each block does ``threadfence``, adds 1 to a global counter and spins
  (atomic reads) until the counter reaches ``blocks * (round + 1)``; ``syncthreads`` releases the
  block. Also needs every block resident, so it is run at the same grid sizes.

Run on a GPU (one line per kernel and grid size; ``--json`` writes the rows):

    python bench/grid_sync.py --rounds 20000 --json OUT/grid_sync.json

Grid sizes: 32, the SM count, and ``max_cooperative_grid_blocks`` for 256 threads. Under the
simulator (``NUMBA_ENABLE_CUDASIM=1``) a cooperative grid is one block; ``tests/test_grid_sync.py``
runs both barriers there at grid 1 and compiles both to PTX.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from numba import cuda
from numba.cuda.core import config

THREADS = 256
COOP_SIG = "void(int32, int32[::1], int32[::1])"
ATOMIC_SIG = "void(int32, int32[::1], int32[::1], int32[::1])"


def coop_barrier(rounds, slots, errors):
    """``rounds`` cooperative grid barriers; stale neighbour slots counted in ``errors[0]``."""
    grid = cuda.cg.this_grid()
    b = cuda.blockIdx.x
    nb = cuda.gridDim.x
    for r in range(rounds):
        if cuda.threadIdx.x == 0:
            slots[b] = r
        grid.sync()
        if cuda.threadIdx.x == 0 and slots[(b + 1) % nb] < r:
            cuda.atomic.add(errors, 0, 1)
        grid.sync()  # nobody writes round r + 1 before every block has read round r


def atomic_barrier(rounds, slots, errors, counter):
    """The same rounds with a hand-made barrier: one global arrival counter, never reset."""
    b = cuda.blockIdx.x
    nb = cuda.gridDim.x
    arrivals = 0
    for r in range(rounds):
        if cuda.threadIdx.x == 0:
            slots[b] = r
        for phase in range(2):  # the two barriers of a round, as in coop_barrier
            arrivals += nb
            if cuda.threadIdx.x == 0:
                cuda.threadfence()
                cuda.atomic.add(counter, 0, 1)
                while cuda.atomic.add(counter, 0, 0) < arrivals:
                    pass
                cuda.threadfence()
            cuda.syncthreads()
            if phase == 0 and cuda.threadIdx.x == 0 and slots[(b + 1) % nb] < r:
                cuda.atomic.add(errors, 0, 1)


KERNELS = ((coop_barrier, COOP_SIG), (atomic_barrier, ATOMIC_SIG))


def run(kind: str, blocks: int, rounds: int) -> dict:
    """Launch one barrier kernel; returns its errors and, on a GPU, microseconds per barrier."""
    slots = cuda.to_device(np.full(blocks, -1, np.int32))
    errors = cuda.to_device(np.zeros(1, np.int32))
    if kind == "coop":
        kernel = cuda.jit(COOP_SIG)(coop_barrier)
        args = (rounds, slots, errors)
    else:
        kernel = cuda.jit(ATOMIC_SIG)(atomic_barrier)
        args = (rounds, slots, errors, cuda.to_device(np.zeros(1, np.int32)))
    kernel[blocks, THREADS](1, *args[1:])  # warm-up: module load
    cuda.synchronize()
    if kind == "atomic":
        args[3].copy_to_device(np.zeros(1, np.int32))
    errors.copy_to_device(np.zeros(1, np.int32))
    t0 = time.perf_counter()
    kernel[blocks, THREADS](*args)
    cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"kind": kind, "blocks": blocks, "threads": THREADS, "rounds": rounds,
            "us_per_barrier": seconds * 1e6 / (2 * rounds), "errors": int(errors.copy_to_host()[0])}


def grid_sizes() -> list[int]:
    """32, the SM count and the cooperative maximum for THREADS-thread blocks (distinct, sorted)."""
    if config.ENABLE_CUDASIM:
        return [1]
    dev = cuda.get_current_device()
    coop = cuda.jit(COOP_SIG)(coop_barrier)
    most = coop.overloads[coop.signatures[0]].max_cooperative_grid_blocks(THREADS)
    return sorted({min(32, most), min(dev.MULTIPROCESSOR_COUNT, most), most})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--blocks", type=int, nargs="*", help="grid sizes (default: 32, SMs, max)")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    rows = []
    for blocks in a.blocks or grid_sizes():
        for kind in ("coop", "atomic"):
            row = run(kind, blocks, a.rounds)
            rows.append(row)
            print(f"{kind:6s} blocks {blocks:5d}: {row['us_per_barrier']:8.3f} us per barrier, "
                  f"errors {row['errors']}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
