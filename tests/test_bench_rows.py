"""aecore.bench's row arithmetic: x floor as the median of the rounds' own ratios, the steal
share from /proc/stat's counters, and the lowest x torch the FMA peak allows."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from aecore import bench as B
from aecore.baselines import step_flops
from aecore.config import resolve_cpu_gemm


def test_floor_ratio_is_the_median_of_the_rounds_ratios():
    # ratios 1, 2, 3 -> 2; the ratio of the medians would be 3 / 1 = 3
    assert B._round_ratio([1.0, 10.0, 3.0], [1.0, 5.0, 1.0]) == 2.0
    assert B._round_ratio([1.0], None) is None
    row = B.BenchRow("cpu", 8, 16, 64, 2.0, 32.0, 1.0, 1.0, None, floor_ratio=1.5)
    assert row.floor_ratio == 1.5  # as measured, not seconds / floor_seconds
    assert B.BenchRow("cpu", 8, 16, 64, 2.0, 32.0, 1.0, 0.5, None).floor_ratio == 4.0
    assert B.BenchRow("cuda", 8, 16, 64, 2.0, 32.0, 1.0, None, None).floor_ratio is None


def test_steal_share_from_cpu_counters():
    before = [100, 0, 50, 800, 0, 0, 0, 50, 0, 0]
    after = [400, 0, 100, 1200, 0, 0, 0, 150, 7, 0]  # +300 user, +50 sys, +400 idle, +100 steal
    assert B.steal_share(before, after) == pytest.approx(100 / 850)
    assert B.steal_share(None, after) is None
    assert B.steal_share(before[:4], after[:4]) is None  # a kernel without the steal field
    assert B.steal_share(before, before) is None  # no time passed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_cpu_times_reads_this_machine():
    t = B.cpu_times()
    assert len(t) >= 8 and all(v >= 0 for v in t)


def test_steal_line_only_when_the_host_took_time():
    rows = [B.BenchRow("cpu", 8, 16, 64, 1.0, 64.0, 1.0, 1.0, None, steal=s) for s in (0.0, 0.01)]
    assert B.steal_line(rows) is None
    rows.append(B.BenchRow("cpu", 16, 16, 64, 1.0, 64.0, 1.0, 1.0, None, steal=0.23))
    line = B.steal_line(rows)
    assert "0%-23%" in line and "steal" in line
    assert B.steal_line([B.BenchRow("cpu", 8, 16, 64, 1.0, 64.0, 1.0, 1.0, None)]) is None


def test_peak_line_gives_the_lowest_x_torch_the_peak_allows():
    fast = B.BenchRow("cpu", 64, 64, 6400, 0.5, 12800.0, step_flops(6400, 64) / 0.5e9, 0.45, 1.0)
    split = B.BenchRow("cpu", 64, 64, 6400, 0.6, 1e4, 1.0, 0.45, 1.0, variant="split")
    no_torch = B.BenchRow("cpu", 128, 64, 6400, 0.5, 12800.0, 1.0, 0.45, None)
    line, frac = B.peak_line([fast, split, no_torch], {1: 50.0, 2: 100.0}, 2)
    expect = step_flops(6400, 64) / 100e9 / 1.0
    assert fast.torch_ratio_at_peak == pytest.approx(expect)
    assert split.torch_ratio_at_peak is None and no_torch.torch_ratio_at_peak is None
    assert f"h=64 B=64 {expect:.2f}" in line and "lowest x torch" in line
    assert frac == pytest.approx(fast.gflops / 100.0)
    assert fast.to_dict()["torch_ratio_at_peak"] == pytest.approx(expect)
    # no CPU rows: the peaks alone
    line, frac = B.peak_line([], {1: 50.0}, 1)
    assert frac is None and "lowest" not in line


def test_row_labels_name_the_variant_or_the_default_rows_products():
    def row(**kw):
        return B.BenchRow(kw.pop("device", "cpu"), 8, 16, 64, 1.0, 64.0, 1.0, 1.0, None, **kw)

    assert B.row_label(row(gemm="own")) == "cpu (own)"
    assert B.row_label(row(gemm="blas")) == "cpu (blas)"
    assert B.row_label(row(variant="split", gemm="blas")) == "cpu split"
    assert B.row_label(row(variant="own", gemm="own")) == "cpu own"
    assert B.row_label(row(device="cuda")) == "cuda"
    assert B.row_label(row(device="cuda", variant="persistent")) == "cuda persistent"


def test_bench_one_records_round_ratio_and_steal(real_data_dir):
    from aecore.data import load_fashion_mnist

    images = load_fashion_mnist(real_data_dir, val_size=0, progress=False).train.images[:256]
    row, = B.bench_one("cpu", 8, 16, images, 64, 3, with_torch=False)
    assert row.floor_ratio > 0 and row.torch_ratio is None
    assert row.gemm == resolve_cpu_gemm("auto", 16, 8)  # the default row: cpu_gemm auto
    assert B.format_table([row]).splitlines()[2].startswith(f"cpu ({row.gemm})")
    if sys.platform.startswith("linux"):
        assert 0.0 <= row.steal < 1.0
    assert np.isfinite(row.to_dict()["floor_ratio"])


def test_slices_cut_at_batch_boundaries():
    assert B.slice_bounds(64, 16, 10) == [0, 16, 32, 48, 64]  # never more slices than batches
    assert B.slice_bounds(100, 16, 3) == [0, 32, 80, 100]  # the last batch is the short one
    assert B.slice_bounds(60000, 64, 10)[-1] == 60000
    for samples, batch in ((60000, 64), (1000, 7)):
        bounds = B.slice_bounds(samples, batch, 10)
        assert len(bounds) == 11 and all(b % batch == 0 for b in bounds[:-1])


def test_rounds_take_turns_slice_by_slice():
    calls = []
    fns = [lambda k: calls.append(("a", k)), None, lambda k: calls.append(("f", k))]
    times = B._round_times(fns, 2, [1, 0, 0], slices=3)
    warm = [("a", 0), ("a", 1), ("a", 2)]
    turn = [("a", 0), ("f", 0), ("a", 1), ("f", 1), ("a", 2), ("f", 2)]
    assert calls == warm + turn + turn
    assert times[1] is None and len(times[0]) == len(times[2]) == 2
    assert all(t >= 0 for t in times[0] + times[2])


def test_engine_fn_runs_whole_or_by_slice(real_data_dir):
    """bench/pair_epilogue.py and bench/test_bench_cuda.py call these functions without a slice
    number: one slice, the whole permutation."""
    from aecore.data import load_fashion_mnist
    from aecore.devices import make_engine
    from aecore.model import init_params
    from aecore.optim import OptimConfig

    images = load_fashion_mnist(real_data_dir, val_size=0, progress=False).train.images[:96]
    perm = np.arange(96, dtype=np.int64)
    params, opt = init_params(8, seed=0), OptimConfig("sgd", lr=0.05)
    whole = make_engine("cpu", params, opt, 16)
    B._engine_fn(whole, images, perm)()
    sliced = make_engine("cpu", params, opt, 16)
    fn = B._engine_fn(sliced, images, perm, B.slice_bounds(96, 16, 4))
    for k in range(4):
        fn(k)
    assert whole.step == sliced.step == 6
    for k, v in whole.get_params().items():  # the same batches in the same order
        np.testing.assert_array_equal(v, sliced.get_params()[k])
    torch_fn = B._torch_fn("cpu", params, opt, 16, images, perm)
    if torch_fn is not None:
        torch_fn()
