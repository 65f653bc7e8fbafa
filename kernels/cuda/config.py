"""Tiling constants, compile options and signature fragments shared by every CUDA kernel.

The block tile is ``BM x BN`` outputs computed by ``TY x TX = 16 x 16`` threads, each owning a
``TM x TN`` register tile at rows ``ty + TY i`` and columns ``tx + TX j`` (strided, so a warp's
shared-memory reads are broadcasts / conflict-free); ``BK`` is the depth of K staged in shared
memory per step. ``TILE = 64`` (4 x 4 outputs per thread) and ``BK = 16`` are the defaults and the
shape the tests check; ``AECORE_CUDA_TILE=16|32|64`` and ``AECORE_CUDA_BK``, read at import, are
tuning knobs for a GPU session (bench/gpu_session.sh).

The compile options (``FASTMATH``) and the ``device`` decorator are ``kernels.cuda_math``'s,
re-exported here.
"""

from __future__ import annotations

import os
import warnings

from .. import PIXEL_SCALE  # noqa: F401  (re-exported: the launchers scale uint8 with it)
from ..cuda_math import FASTMATH, SIMULATOR, dcuda, device  # noqa: F401  (re-exported)

TILE = int(os.environ.get("AECORE_CUDA_TILE", "64"))
if TILE not in (16, 32, 64):
    raise ValueError(f"AECORE_CUDA_TILE must be 16, 32 or 64, not {TILE}")
BM = TILE  # block tile rows (output rows per block)
BN = TILE  # block tile columns
BK = int(os.environ.get("AECORE_CUDA_BK", "16"))  # reduction depth staged per shared-memory step
if BK not in (8, 16, 32, 64) or (BK * BM) % 256 or 256 // BM > BK:
    raise ValueError(f"AECORE_CUDA_BK={BK} does not fit a {TILE}-wide tile (8..64, BK*TILE >= 256)")
TM = BM // 16  # register tile rows per thread
TN = BN // 16  # register tile columns per thread
TY = BM // TM  # 16 thread rows
TX = BN // TN  # 16 thread columns
NTHREADS = TX * TY  # 256
PAD = BM + 1  # shared tile row length (one column of padding against bank conflicts)
LOADS = (BK * BM) // NTHREADS  # elements each thread loads per operand tile and K step
BLOCK = (TX, TY)

# numba-cuda warns on every launch of fewer than 128 blocks; small grids are this engine's normal
# case at batch 64 (split-K is how it fills the GPU), so the warning is only noise here.
warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU under")

# Signature fragments.
F2 = "float32[:, ::1]"
U2 = "uint8[:, ::1]"
F1 = "float32[::1]"
I1 = "int64[::1]"
D1 = "float64[::1]"
C1 = "int32[::1]"
SPLIT = f"{F1}, {C1}, int64"  # split-K workspace, per-tile counters, K per slice
