"""Shared fixtures for the pytest-benchmark suite, and a ratio table at the end of the run.

Run: ``pytest bench --benchmark-only`` (add ``-k cpu`` / ``-k cuda`` / ``-k epoch`` to pick).
Every benchmark records ``extra_info["impl"]`` (aecore, numpy, torch, floor, cupy...) and joins a
group of implementations that do the same work; at the end this prints, per group, each
implementation's median time as a ratio to aecore's — ratios measured in the same run, which
are what our speed targets are stated in (machines here are noisy; absolute times are not).
The BLAS that ran (threadpoolctl: library, version, kernel, threads) goes into
pytest-benchmark's machine_info["blas"] (``--benchmark-json``, ``--benchmark-autosave``) and into a
line of the terminal summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Benchmarks run in this one process, never in pytest-xdist workers: pyproject's addopts
    asks for two workers (for tests/), and pytest-benchmark turns itself off under xdist
    (timings of two processes sharing the cores mean nothing). Runs before xdist's own hook
    (conftest hooks are called first), which then starts no workers."""
    if getattr(config.option, "numprocesses", None) is not None:
        config.option.numprocesses = 0
        config.option.dist = "no"


HIDDEN = (64, 128, 256, 512)
BATCHES = (64, 256)


@pytest.fixture(scope="session")
def train_images():
    """The 60,000 Fashion-MNIST training images (uint8, (60000, 784)) when AECORE_DATA or the
    usual places have them; otherwise random pixels of the same shape (the timing of dense
    float32 products does not depend on the values)."""
    try:
        from aecore.data import load_fashion_mnist

        ds = load_fashion_mnist(val_size=0, download=False, progress=False)
        return np.ascontiguousarray(ds.train.images)
    except Exception as e:  # noqa: BLE001 - fall back to synthetic data, say so
        print(f"\n[bench] real data not found ({e}); timing on random pixels")
        return np.random.default_rng(0).integers(0, 256, (60000, 784), dtype=np.uint8)


def pytest_benchmark_update_machine_info(config, machine_info):
    from aecore import blas_info

    machine_info["blas"] = blas_info.meta()


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    from aecore import blas_info

    terminalreporter.write_sep("=", "BLAS that ran (threadpoolctl)")
    for k, v in blas_info.summary_rows():
        terminalreporter.write_line(f"{k}: {v}")
    groups: dict[str, dict[str, float]] = {}
    for bench in session.benchmarks:
        d = bench.as_dict()
        impl = d.get("extra_info", {}).get("impl")
        if impl is None or d.get("stats") is None:
            continue
        groups.setdefault(d["group"] or "", {})[impl] = d["stats"]["median"]
    rows = []
    for group, times in sorted(groups.items()):
        base = times.get("aecore")
        if base is None:
            continue
        ratios = {k: base / v for k, v in times.items() if k != "aecore"}
        rows.append({"group": group, "aecore_s": base, "aecore_time_over": ratios})
    if not rows:
        return
    tr = terminalreporter
    tr.write_sep("=", "aecore time / other time, per group (lower is better for aecore; same run)")
    for r in rows:
        others = "  ".join(f"{k}: {v:.2f}" for k, v in sorted(r["aecore_time_over"].items()))
        tr.write_line(f"{r['group']:<40} aecore {r['aecore_s'] * 1e3:9.3f} ms   {others}")
    out = os.environ.get("AECORE_BENCH_RATIOS")
    if out:
        Path(out).write_text(json.dumps(rows, indent=2))
