"""Loading Fashion-MNIST from its four .gz files (decompression, IDX parsing, the seeded
train/validation split): the time a first ``aecore train`` spends before its first step.

Was a ``< 5 s`` assertion in tests/test_data.py; speed targets live here, not in unit tests.
Needs AECORE_DATA (the directory with the real files); skipped without it.
"""

from __future__ import annotations

import os

import pytest

from aecore.data import load_fashion_mnist


def test_load_fashion_mnist(benchmark):
    data_dir = os.environ.get("AECORE_DATA")
    if not data_dir or not os.path.isdir(data_dir):
        pytest.skip("AECORE_DATA is not a directory with the Fashion-MNIST files")
    benchmark.group = "data load_fashion_mnist"
    benchmark.extra_info["impl"] = "aecore"
    ds = benchmark.pedantic(load_fashion_mnist, args=(data_dir,), kwargs={"progress": False},
                            rounds=3, iterations=1)
    assert len(ds.train) + len(ds.val) == 60000
    benchmark.extra_info["images_per_s"] = 70000 / benchmark.stats.stats.median
