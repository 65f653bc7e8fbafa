"""``aecore bench``: training throughput per device, hidden size and batch, with its yardsticks.

For each (device, hidden, batch) it times, in this one process, on the same images and batch
order, plain SGD:

* the aecore engine (``make_engine``), an epoch's worth of samples;
* the GEMM floor: the step's five matrix products alone (CPU: the same sgemm the engine calls;
  CUDA: cuBLAS through CuPy, when CuPy is installed);
* PyTorch eager on the same device, when torch is installed (and has that device).

Each time is the median of ``repeats`` runs after one warm-up run (compilation, caches and
allocation stay out of it). aecore and the floor are timed in turn, round after round (on the
CPU a round is cut into slices of whole batches, and they take turns slice by slice), and
"x floor" is the median of the rounds' own ratios, so that a slow or fast phase of a shared host
falls on both sides of each ratio; PyTorch is timed after them, on its own: its OpenMP threads
keep spinning for a while after each call and slow the aecore run that follows
(bench/RESULTS.md, "how `aecore bench` times"). GFLOP/s counts the five products only
(``baselines.step_flops``).

On a virtual machine the hypervisor may run other guests on this one's cores ("steal" time);
each row records the share of its CPU time that was stolen (Linux's /proc/stat), so a reader can
tell a noisy row from a slow engine.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import tables
from .baselines import GemmFloor, TorchEngine, step_flops
from .devices import make_engine
from .optim import OptimConfig
from .model import init_params


@dataclass
class BenchRow:
    device: str
    hidden: int
    batch: int
    samples: int
    seconds: float  # median time for `samples` training samples
    samples_per_s: float
    gflops: float
    floor_seconds: float | None  # the five products alone, same samples
    torch_seconds: float | None  # PyTorch eager, same device, same samples
    # engine creation + the first run, minus a timed run: compilation (or loading it from
    # numba's disk cache), first-touch allocation (a CUDA graph is recorded later, on the 2nd)
    first_run_extra_s: float | None = None
    variant: str = ""  # CPU: "split" / "team" / "blas" / "own" for CpuEngine(split / team=True,
    # gemm="blas" / "own"), "" the default (TrainConfig's: cpu_gemm auto)
    gemm: str = ""  # CPU: whose products the row's step ran, "blas" | "own" ("" on CUDA)
    # aecore time / GEMM-floor time (1.0 = no cost beyond the products): the median of the
    # rounds' own ratios; None: seconds / floor_seconds
    floor_ratio: float | None = None
    # the share of the CPU time stolen by the hypervisor while the row was timed (None: unknown)
    steal: float | None = None
    # the x torch this row would have if the five products ran at the CPU's FMA peak (the
    # lowest any CPU engine can reach here); set by ``peak_line``
    torch_ratio_at_peak: float | None = None

    def __post_init__(self):
        if self.floor_ratio is None and self.floor_seconds:
            self.floor_ratio = self.seconds / self.floor_seconds

    @property
    def torch_ratio(self):
        """aecore time / PyTorch time (< 1: aecore is faster)."""
        return self.seconds / self.torch_seconds if self.torch_seconds else None

    def to_dict(self):
        return {**asdict(self), "torch_ratio": self.torch_ratio}


def cpu_times() -> list[int] | None:
    """The whole machine's CPU time counters (Linux /proc/stat's "cpu" line: user, nice,
    system, idle, iowait, irq, softirq, steal, ...), or None where there is no such file."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_share(before, after) -> float | None:
    """The share of the CPU time between two ``cpu_times()`` readings that the hypervisor gave
    to other guests (steal), or None without both readings."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    d = [b - a for a, b in zip(before, after)]
    total = sum(d[:8])  # guest time (fields 9, 10) is already counted in user and nice
    return d[7] / total if total > 0 else None


def _round_times(fns, repeats: int, warmups, slices: int = 1) -> list:
    """Seconds of each of ``repeats`` rounds for each function in ``fns`` (None: not timed),
    timed in turn after ``warmups[i]`` untimed rounds of each (compilation, first-touch
    allocation, cuBLAS handles, graph recording). A function takes a slice number: a round is
    ``slices`` slices, and the functions take turns slice by slice, so a slow or fast phase of
    the host shorter than a round still falls on all of them."""
    live = [i for i, fn in enumerate(fns) if fn is not None]
    for i in live:
        for _ in range(warmups[i]):
            for k in range(slices):
                fns[i](k)
    times = {i: [] for i in live}
    for _ in range(repeats):
        spent = dict.fromkeys(live, 0.0)
        for k in range(slices):
            for i in live:
                t = time.perf_counter()
                fns[i](k)
                spent[i] += time.perf_counter() - t
        for i in live:
            times[i].append(spent[i])
    return [times.get(i) for i in range(len(fns))]


def slice_bounds(samples: int, batch: int, slices: int) -> list[int]:
    """``slices`` + 1 sample offsets cutting ``samples`` at batch boundaries into at most
    ``slices`` near-equal parts (every part the same batches as the whole run)."""
    steps = -(-samples // batch)
    return sorted({min(round(steps * k / slices) * batch, samples) for k in range(slices + 1)})


def _median(ts):
    return statistics.median(ts) if ts else None


def _round_ratio(ts, base):
    """The median over rounds of ts[r] / base[r] (None without a base)."""
    return statistics.median(t / b for t, b in zip(ts, base)) if base else None


# CPU rounds are cut into this many slices, aecore's and the floor's taking turns (a round of
# 60,000 samples takes 0.2-3 s here; a shared host's phases are often shorter)
CPU_SLICES = 10


def _engine_fn(engine, images, perm, bounds=None):
    """A function of a slice number k (default 0): train on perm[bounds[k]:bounds[k + 1]];
    ``bounds`` None: one slice, the whole of perm (bench/pair_epilogue.py and
    bench/test_bench_cuda.py call it so)."""
    data = engine.put(images)
    bounds = [0, len(perm)] if bounds is None else bounds

    def fn(k=0):
        engine.train_steps(data, perm, bounds[k], bounds[k + 1])
        engine.take_loss_sum()  # one device->host read: the work is finished when it returns

    return fn


def _cuda_floor_fn(hidden, batch, n):
    """The five products with cuBLAS (CuPy), synchronised at the end; None without CuPy."""
    try:
        import cupy as cp
    except ImportError:
        return None
    rng = cp.random.default_rng(0)
    X = rng.random((batch, 784), dtype=cp.float32)
    W1 = rng.standard_normal((hidden, 784), dtype=cp.float32) * 0.05
    W2 = rng.standard_normal((784, hidden), dtype=cp.float32) * 0.05
    H = cp.empty((batch, hidden), cp.float32)
    Z = cp.empty((batch, 784), cp.float32)
    dH = cp.empty((batch, hidden), cp.float32)
    G1 = cp.empty((hidden, 784), cp.float32)
    G2 = cp.empty((784, hidden), cp.float32)

    def fn(k=0):
        for _ in range(0, n, batch):
            cp.matmul(X, W1.T, out=H)
            cp.matmul(H, W2.T, out=Z)
            cp.matmul(Z, W2, out=dH)
            cp.matmul(Z.T, H, out=G2)
            cp.matmul(dH.T, X, out=G1)
        cp.cuda.Device().synchronize()

    return fn


def _torch_fn(device, params, opt, batch, images, perm):  # one slice: the whole run
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    eng = TorchEngine(params, opt, batch, device=device)
    return _engine_fn(eng, images, perm)


def bench_one(device, hidden, batch, images, samples, repeats, with_torch=True,
              cpu_variants=("",), cuda_path="graphs") -> list[BenchRow]:
    """One row per engine variant (CPU: each of ``cpu_variants``, "" the default path, "split",
    "team"; CUDA: one, launched the ``cuda_path`` way: persistent | graphs | eager), the
    variants and the floor timed in turn, round after round (on the CPU slice by slice,
    ``CPU_SLICES`` a round); PyTorch after them."""
    params = init_params(hidden, seed=0)
    opt = OptimConfig("sgd", lr=0.05)
    perm = np.random.default_rng(0).permutation(images.shape[0])[:samples].astype(np.int64)
    variants = tuple(cpu_variants) if device == "cpu" else ("",)
    bounds = slice_bounds(samples, batch, CPU_SLICES if device == "cpu" else 1)
    fns, firsts, gemms = [], [], []
    for var in variants:
        t0 = time.perf_counter()
        eng = make_engine(device, params, opt, batch, cpu_split=var == "split",
                          cpu_team=var == "team", cuda_path=cuda_path,
                          cpu_gemm=var if var in ("blas", "own") else "auto")
        gemms.append(getattr(eng, "gemm", "") if device == "cpu" else "")
        fn = _engine_fn(eng, images, perm, bounds)
        for k in range(len(bounds) - 1):  # the first run: compilation (or numba's disk
            fn(k)                         # cache), allocation
        fns.append(fn)
        firsts.append(time.perf_counter() - t0)
    if device == "cpu":
        floor = GemmFloor(hidden, batch)
        floor_fn = lambda k: floor.run(bounds[k + 1] - bounds[k])  # noqa: E731
    else:
        floor_fn = _cuda_floor_fn(hidden, batch, samples)
    torch_fn = _torch_fn(device, params, opt, batch, images, perm) if with_torch else None
    before = cpu_times()
    # CUDA: the engine records its CUDA graph on the second run of the same samples
    *r_ae, r_floor = _round_times([*fns, floor_fn], repeats,
                                  [1 if device == "cuda" else 0] * len(fns) + [1],
                                  len(bounds) - 1)
    t_torch = _median(_round_times([torch_fn], repeats, [1])[0])
    steal = steal_share(before, cpu_times())
    rows = []
    for var, ts, first, gemm in zip(variants, r_ae, firsts, gemms):
        t = _median(ts)
        rows.append(BenchRow(
            device, hidden, batch, samples, t, samples / t, step_flops(samples, hidden) / t / 1e9,
            _median(r_floor), t_torch, max(first - t, 0.0),
            var or (cuda_path if device == "cuda" and cuda_path != "graphs" else ""),
            gemm=gemm, floor_ratio=_round_ratio(ts, r_floor), steal=steal))
    return rows


def row_label(r) -> str:
    """The table's and the chart's name of a row's engine: the device, then the variant, or
    (the default CPU path) whose products it ran: ``cpu (own)``, ``cpu team``."""
    if r.variant:
        return f"{r.device} {r.variant}"
    return f"{r.device} ({r.gemm})" if r.gemm else r.device


def format_table(rows) -> str:
    head = ("device", "hidden", "batch", "samples/s", "GFLOP/s", "x floor", "x torch")
    cells = [(row_label(r), str(r.hidden), str(r.batch), f"{r.samples_per_s:,.0f}",
              f"{r.gflops:.1f}",
              f"{r.floor_ratio:.2f}" if r.floor_ratio else "-",
              f"{r.torch_ratio:.2f}" if r.torch_ratio else "-") for r in rows]
    lines = [tables.format_table(head, cells, left={"device"}, gap=" ",
                                 minimum=(6, 6, 5, 11, 8, 8, 8), full_rule=True)]
    lines.append("x floor: aecore time / the five products alone (same BLAS); "
                 "x torch: aecore time / PyTorch eager time (same device). Lower is better.")
    first = {}
    for r in rows:  # the first row of a device is where its kernels compile (or load)
        if r.first_run_extra_s is not None:
            first.setdefault(r.device, r.first_run_extra_s)
    if first:
        lines.append("first run's extra time (compilation or numba's disk cache, allocation): "
                     + ", ".join(f"{d} {t:.1f} s" for d, t in first.items()))
    return "\n".join(lines)


def cpu_peaks(threads: int, seconds: float = 0.2, repeats: int = 7) -> dict[int, float]:
    """The FMA loop's GFLOP/s (``kernels.fma_peak``) on 1 and on ``threads`` threads: the best
    of ``repeats`` runs of about ``seconds`` each (on a shared host a run can lose a core's
    time to other guests; the peak is what the cores do when they have it)."""
    from .kernels.fma_peak import peak_gflops

    return {t: peak_gflops(t, seconds, repeats) for t in sorted({1, max(threads, 1)})}


def peak_line(rows, peaks: dict[int, float], threads: int) -> tuple[str, float | None]:
    """The sentences about the CPU rows against the FMA peak on ``threads`` threads (the threads
    BLAS ran on): the best row's fraction of it, which that function also returns (None without
    CPU rows), and, where PyTorch was timed, the lowest x torch the peak allows, which it also
    sets on each row (``torch_ratio_at_peak``)."""
    cpu = [r for r in rows if r.device == "cpu"]
    line = "CPU FMA peak (kernels/fma_peak.py): " + ", ".join(
        f"{t} thread{'s' if t > 1 else ''} {g:,.0f} GFLOP/s" for t, g in peaks.items())
    if not cpu or threads not in peaks:
        return line, None
    best = max(cpu, key=lambda r: r.gflops)
    frac = best.gflops / peaks[threads]
    var = f", {best.variant or best.gemm}" if best.variant or best.gemm else ""
    line += (f"; best row (h={best.hidden}, B={best.batch}{var}) {best.gflops:,.0f} GFLOP/s = "
             f"{frac:.0%} of the {threads}-thread peak")
    timed = [r for r in cpu if r.torch_seconds and not r.variant]
    for r in timed:  # the five products alone at the peak, over PyTorch's time
        r.torch_ratio_at_peak = step_flops(r.samples, r.hidden) / (peaks[threads] * 1e9) \
            / r.torch_seconds
    if timed:
        line += ("\nlowest x torch at that peak (the five products alone at "
                 f"{peaks[threads]:,.0f} GFLOP/s): " + ", ".join(
                     f"h={r.hidden} B={r.batch} {r.torch_ratio_at_peak:.2f}" for r in timed))
    return line, frac


def steal_line(rows) -> str | None:
    """A warning when the hypervisor took more than 2% of the CPU time during some row."""
    stolen = [r.steal for r in rows if r.steal is not None]
    if not stolen or max(stolen) <= 0.02:
        return None
    lo, hi = f"{min(stolen):.0%}", f"{max(stolen):.0%}"
    return (f"note: the hypervisor took {lo if lo == hi else lo + '-' + hi} of this machine's "
            "CPU time during the rows (steal, /proc/stat; per row in bench.json): other guests "
            "share these cores, so the rows vary from run to run")


def write_json(rows, path, meta):
    Path(path).write_text(json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]}, indent=2))


def _si(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"


def _ratio_lines(rows) -> list[str]:
    """The comparisons the chart is for, in words: aecore vs PyTorch per device, and CUDA vs
    CPU, each at every hidden size (x = how many times the throughput)."""
    lines = []
    # the default variant's row where a CPU size has two
    by = {(r.device, r.batch, r.hidden): r for r in sorted(rows, key=lambda r: not r.variant)}
    for dev, var in sorted({(r.device, r.variant) for r in rows}):
        rs = [r for r in rows if (r.device, r.variant) == (dev, var) and r.torch_seconds]
        if rs:
            lines.append(f"aecore {dev}{' ' + var if var else ''} vs PyTorch {dev}: " + ", ".join(
                f"h={r.hidden} {r.torch_seconds / r.seconds:.2f}x" for r in rs))
    gpu = [(by[("cpu", b, h)], r) for (d, b, h), r in by.items() if d == "cuda"
           and ("cpu", b, h) in by]
    if gpu:
        lines.append("aecore cuda vs cpu: " + ", ".join(
            f"h={c.hidden} {g.samples_per_s / c.samples_per_s:.2f}x" for c, g in gpu))
    return lines


def plot(rows, path):
    """Samples/s per hidden size: one bar group per hidden size, one bar per device (+ torch),
    on a linear axis from zero with each bar's value on it; the ratios are in the title."""
    from .figures import pyplot

    plt = pyplot()

    hiddens = sorted({r.hidden for r in rows})
    series = {}
    for r in rows:
        name = f"aecore {row_label(r)} (B={r.batch})"
        series.setdefault(name, {})[r.hidden] = r.samples_per_s
        if r.torch_seconds and not r.variant:
            series.setdefault(f"PyTorch {r.device} (B={r.batch})", {})[r.hidden] = r.samples / r.torch_seconds
    ratios = _ratio_lines(rows)
    fig, ax = plt.subplots(figsize=(9, 4.8 + 0.25 * len(ratios)), layout="constrained")
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(hiddens))
    for i, (name, vals) in enumerate(sorted(series.items())):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, [vals.get(h, 0) for h in hiddens],
                      width, label=name)
        ax.bar_label(bars, labels=[_si(vals[h]) if h in vals else "" for h in hiddens],
                     fontsize=7, padding=2)
    ax.set_xticks(x, [f"h={h}" for h in hiddens])
    ax.set_yscale("linear")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # from zero, room for the labels
    ax.set_ylabel("training samples / s")
    ax.set_xlabel("hidden units")
    ax.set_title("\n".join(["Training throughput, plain SGD (higher is better)", *ratios]),
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
