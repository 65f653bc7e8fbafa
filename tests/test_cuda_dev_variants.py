"""The variants kept in dev/cuda to be measured on a GPU still give production's results bit for
bit (their own reference checks, here on small shapes; in the simulator without a GPU)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from conftest import cuda_or_skip

cuda_or_skip()

DEV = Path(__file__).resolve().parents[1] / "dev" / "cuda"


def _variant(name):
    if str(DEV) not in sys.path:
        sys.path.insert(0, str(DEV))
    return importlib.import_module(name)


def test_prefetch_main_loops_equal_production():
    assert _variant("prefetch").check(B=37, h=70, P=100, splits=3)


def test_paired_weight_updates_equal_two_launches():
    assert _variant("weight_step_pair").check(B=5, h=13, P=70)
