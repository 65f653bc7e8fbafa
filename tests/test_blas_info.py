"""Which BLAS ran (aecore.blas_info, threadpoolctl): the library aecore's sgemm calls, its
kernel and threads as OpenBLAS reports them live, and `aecore info` / pytest-benchmark showing
them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import scipy
from threadpoolctl import threadpool_limits

from aecore import blas_info

AECORE = [sys.executable, "-c", "from aecore.cli.main import main; main()"]


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in blas_info.BLAS_ENV}
    env.update(overrides)
    return env


def test_aecore_blas_is_scipys_and_has_every_field():
    libs = blas_info.blas_libraries()
    mine = blas_info.aecore_blas(libs)
    assert mine is not None and [d for d in libs if "scipy" in d["used_by"]] == [mine]
    for k in ("internal_api", "version", "architecture", "num_threads", "filepath"):
        assert mine[k], k
    scipy_dir = Path(scipy.__file__).resolve().parent
    path = Path(mine["filepath"]).resolve()
    assert len(libs) == 1 or path.is_relative_to(scipy_dir) or path.is_relative_to(
        scipy_dir.with_name("scipy.libs"))


def test_thread_count_is_read_live():
    with threadpool_limits(1, user_api="blas"):
        assert blas_info.aecore_blas()["num_threads"] == 1


def test_aecore_info_names_the_kernel_that_runs(tmp_path):
    """Force OpenBLAS's Sandybridge kernel: `aecore info` must say so (read from OpenBLAS via
    threadpoolctl, not guessed from build metadata) and name the variable that forced it."""
    r = subprocess.run([*AECORE, "info", "--data-dir", str(tmp_path)], capture_output=True,
                       text=True, env=_env(OPENBLAS_CORETYPE="Sandybridge"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    blas = [line for line in r.stdout.splitlines() if line.startswith("BLAS ")]
    assert "aecore's sgemm (scipy's): openblas" in blas[0] and "kernel Sandybridge" in blas[0]
    assert any("OPENBLAS_CORETYPE=Sandybridge" in line for line in blas), blas


def test_summary_without_forcing_variables(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from aecore import blas_info as b; "
                        "print(b.summary()); print(b.aecore_blas()['architecture'])"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary, arch = r.stdout.splitlines()
    assert f"kernel {arch}" in summary and "BLAS env" not in summary


def test_pytest_benchmark_machine_info_hook():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "conftest.py"
    spec = importlib.util.spec_from_file_location("bench_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    info = {}
    mod.pytest_benchmark_update_machine_info(None, info)
    assert info["blas"]["aecore_sgemm"]["architecture"] == blas_info.aecore_blas()["architecture"]
    assert info["blas"]["env"] == blas_info.env_overrides()
