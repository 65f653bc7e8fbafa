"""Shared fixtures: a tiny synthetic Fashion-MNIST-shaped dataset, and the real data via
$AECORE_DATA (tests that need it are skipped when it is not set)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass
class Split:
    images: np.ndarray  # (n, pixels) uint8: 784 unless a test asks for smaller images
    labels: np.ndarray  # (n,) uint8


@dataclass
class SyntheticData:
    train: Split
    val: Split
    test: Split
    source: str = "synthetic"
    class_names: tuple = CLASS_NAMES


def make_split(n: int, rng, side: int = 28) -> Split:
    """Images with per-class structure (a class template plus noise), so a model can learn;
    ``side`` x ``side`` pixels (28: Fashion-MNIST's 784)."""
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1.0)
    templates = []
    for c in range(10):
        a, b = np.cos(c), np.sin(c)
        t = 0.5 + 0.5 * np.sin(6.0 * (a * xx + b * yy) + c)
        templates.append(t.reshape(-1))
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    imgs = np.stack([templates[c] for c in labels]) + 0.15 * rng.standard_normal((n, side * side))
    return Split(np.clip(imgs * 255, 0, 255).astype(np.uint8), labels)


def synthetic_data(n_train=384, n_val=96, n_test=64, seed=0, side=28) -> SyntheticData:
    """Fashion-MNIST-like splits of ``side`` x ``side`` images: 28 (784 pixels) by default;
    a smaller side (7: 49 pixels) keeps the CUDA simulator's steps short where the width
    does not matter to what a test checks."""
    rng = np.random.default_rng(seed)
    return SyntheticData(*(make_split(n, rng, side) for n in (n_train, n_val, n_test)))


@pytest.fixture(scope="session")
def tiny_data():
    return synthetic_data()


@pytest.fixture(scope="session")
def real_data_dir():
    d = os.environ.get("AECORE_DATA")
    if not d:
        pytest.skip("AECORE_DATA is not set (directory with the Fashion-MNIST files)")
    if not Path(d).exists():
        pytest.skip(f"AECORE_DATA={d} does not exist")
    return d


@pytest.fixture(scope="session")
def real_data(real_data_dir):
    from aecore.data import load_fashion_mnist

    return load_fashion_mnist(real_data_dir, download=False, progress=False)


REPO_ROOT = Path(__file__).resolve().parents[1]
TOOL_DIRS = {".hypothesis", ".pytest_cache", ".benchmarks"}  # the test tools' own, git-ignored


@pytest.fixture
def cwd_with_runs(tmp_path, monkeypatch):
    """Run the test in a temporary current directory that already holds runs/ and study/ with a
    run in each (as the README's first command leaves a clone), and check afterwards that the
    repository root gained nothing: tests name their own output paths under tmp_path."""
    cwd = tmp_path / "cwd"
    for run in (cwd / "runs" / "h256-adam", cwd / "study" / "h64-adam"):
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("epoch,train_loss,val_loss,seconds,samples_per_s\n")
        (run / "config.json").write_text('{"config": {"hidden": 0}}\n')
    before = set(os.listdir(REPO_ROOT))
    monkeypatch.chdir(cwd)
    yield cwd
    added = set(os.listdir(REPO_ROOT)) - before - TOOL_DIRS
    assert not added, f"the test wrote into the repository root: {sorted(added)}"


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot create files in: mode 0500, and for root (who ignores
    modes) also the immutable attribute (chattr +i), which root cannot write past either."""
    import shutil
    import subprocess

    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    immutable = False
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(d)], capture_output=True).returncode != 0:
            d.chmod(0o700)
            pytest.skip("running as root and chattr +i is not available here")
        immutable = True
    try:
        yield d
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(d)], capture_output=True)
        d.chmod(0o700)


def cuda_or_skip():
    """For test modules of the CUDA path: turn on Numba's simulator where no GPU answers (if
    the root conftest did not already decide), then skip the module if CUDA still cannot run."""
    from aecore.devices import cuda_usable, real_gpu_present

    if not real_gpu_present():
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    ok, why = cuda_usable()
    if not ok:
        pytest.skip(f"CUDA not usable: {why}", allow_module_level=True)
