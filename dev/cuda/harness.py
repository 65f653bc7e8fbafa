"""What the dev/cuda variants share: the repository on sys.path, random step operands, a
bitwise comparison and the per-kernel GPU timing of bench/cuda_kernel_times.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from numba import cuda  # noqa: E402

from bench.cuda_kernel_times import gpu_us, step_kernels  # noqa: E402,F401


def step_operands(rng, B, h, P, n_images=None):
    """Device operands of one training step (784 -> P pixels, h hidden units, batch B), the
    batch gathered from a larger uint8 X through a permutation at an offset."""
    n = n_images or 2 * B + 3
    X = rng.integers(0, 256, (n, P), dtype=np.uint8)
    f = {"W1": (h, P, 1 / np.sqrt(P)), "W2": (P, h, 1 / np.sqrt(h)), "b1": (h,), "b2": (P,),
         "H": (B, h), "dZ": (B, P), "dH": (B, h)}
    out = {k: cuda.to_device((rng.standard_normal(s[:2] if len(s) == 3 else s)
                              * (s[2] if len(s) == 3 else 0.1)).astype(np.float32))
           for k, s in f.items()}
    out["X"] = cuda.to_device(X)
    out["perm"] = cuda.to_device(rng.permutation(n).astype(np.int64))
    out["off"] = int(rng.integers(0, n - B + 1))
    return out


def same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    moved = int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))
    if moved:
        raise AssertionError(f"{what}: {moved} of {a.size} elements differ")


def main(doc, check, measure, done):
    """The command line of a variant: ``--check`` (default) runs its reference check and prints
    ``done``; ``--time`` runs ``measure`` (a GPU)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="bit-for-bit check (default)")
    ap.add_argument("--time", action="store_true", help="GPU times against production")
    a = ap.parse_args()
    if a.check or not a.time:
        check()
        print(done)
    if a.time:
        measure()
