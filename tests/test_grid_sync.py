"""bench/grid_sync.py, the grid-barrier microbenchmark that decides the persistent kernel's design:
both barriers run (the simulator runs a cooperative grid as one block) with no stale reads, and
both compile to PTX for sm_80 / sm_90 (the cooperative one through the CG runtime's grid sync)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "bench" / "grid_sync.py"
_spec = importlib.util.spec_from_file_location("grid_sync", _path)
gs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gs)


@pytest.mark.parametrize("kind", ["coop", "atomic"])
def test_barrier_runs_with_no_stale_reads(kind):
    blocks = gs.grid_sizes()[0]
    row = gs.run(kind, blocks, rounds=3)
    assert row["errors"] == 0 and row["rounds"] == 3 and row["us_per_barrier"] > 0


PTX_SCRIPT = r"""
import importlib.util, json, sys
from aecore.kernels import cuda as kc
spec = importlib.util.spec_from_file_location("grid_sync", sys.argv[1])
gs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gs)
out = {}
for cc in ((8, 0), (9, 0)):
    for f, sig in gs.KERNELS:
        out[f"{f.__name__}@{cc[0]}{cc[1]}"] = kc.compile_ptx(f, sig, cc)
json.dump(out, sys.stdout)
"""


def test_barriers_compile_to_ptx():
    """The real compiler (a subprocess with the simulator off) for sm_80 and sm_90."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    r = subprocess.run([sys.executable, "-c", PTX_SCRIPT, str(_path)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ptx = json.loads(r.stdout)
    assert len(ptx) == 4
    for name, text in ptx.items():
        if name.startswith("coop"):
            assert "cudaCGSynchronize" in text, name  # the CG runtime's grid-wide barrier
        else:
            assert "atom.global.add" in text and "membar.gl" in text, name
