"""``aecore bench``: throughput table (CPU vs GPU, vs PyTorch, vs the GEMM floor), JSON and chart."""

from __future__ import annotations

import datetime
import os
import platform
import sys

import click

from aecore import HIDDEN_SIZES
from aecore.cuda_path import AUTO_PATH

from .options import DEVICES, cuda_path_option


def _int_list(ctx, param, value):
    try:
        items = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not items or any(v <= 0 or v > 65536 for v in items):
        raise click.BadParameter(f"each value must be an integer in 1..65536, got {value!r}")
    return items


class DeviceList(click.ParamType):
    """A --device choice, or a comma list of them (each checked against the same choices)."""

    name = "[" + "|".join(DEVICES) + "][,...]"

    def get_metavar(self, param, ctx=None):  # as click.Choice shows its choices
        return self.name

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        devs = [d.strip() for d in str(value).split(",")]
        for d in devs:
            if d not in DEVICES:
                self.fail(f"{d!r} is not one of {', '.join(map(repr, DEVICES))} (give one, or a "
                          "comma list such as cpu,cuda)", param, ctx)
        if len(set(devs)) != len(devs):
            self.fail(f"a device is given twice in {value!r}", param, ctx)
        return devs


# --cpu-split -> BenchRow.variant
CPU_VARIANTS = {"off": "", "on": "split", "team": "team", "blas": "blas", "own": "own"}


def _variants(value):
    """--cpu-split's names: its comma list, ``both`` = off,on."""
    return ["off", "on"] if value == "both" else [v.strip() for v in value.split(",")]


def _cpu_variants(ctx, param, value):
    """--cpu-split, checked; returned as given (bench.json records it so)."""
    names = _variants(value)
    bad = [v for v in names if v not in CPU_VARIANTS]
    if bad or not names or len(set(names)) != len(names):
        raise click.BadParameter(f"{value!r}: give a comma list of distinct "
                                 f"{', '.join(CPU_VARIANTS)} (or both)")
    return value


@click.command()
@click.option("--device", "devices", type=DeviceList(), default="cpu", show_default=True,
              help="Device to measure: auto, cpu or cuda, or a comma list (cpu,cuda).")
@click.option("--hidden", default=",".join(map(str, HIDDEN_SIZES)), callback=_int_list,
              show_default=True, help="Hidden sizes h (comma-separated).")
@click.option("--batch", "batches", default="64", callback=_int_list, show_default=True,
              help="Batch sizes (comma-separated).")
@click.option("--samples", default=60000, type=click.IntRange(1, 60000), show_default=True,
              help="Training samples per timed run (60000 = one epoch of the full training set).")
@click.option("--repeats", default=3, type=click.IntRange(1, 100), show_default=True,
              help="Timed runs per measurement (the median is reported), after one warm-up.")
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True,
              help="Also time PyTorch eager on each device (when torch is installed).")
@click.option("--cpu-split", default="off", show_default=True, callback=_cpu_variants,
              help="CPU engine variants to time in turn, one row each, a comma list of: off "
                   "(the default path: --cpu-gemm auto, its row labelled with the products it "
                   "ran), on (each step split between two threads of aecore's "
                   "own, BLAS on one thread each; CpuEngine(split=True)), team (OpenBLAS's "
                   "jobs and the epilogues' halves on one team of two threads; "
                   "CpuEngine(team=True)), blas (OpenBLAS's sgemm; CpuEngine(gemm='blas')), "
                   "own (aecore's own GEMM, each phase in two halves; CpuEngine(gemm='own')); "
                   "both = off,on.")
@cuda_path_option
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Fashion-MNIST directory (else $AECORE_DATA, the cache, Debian's package).")
@click.option("--out", type=click.Path(file_okay=False, writable=True), default="bench-results",
              show_default=True, help="Directory for bench.json and bench.png.")
@click.pass_context
def bench(ctx, devices, hidden, batches, samples, repeats, with_torch, cpu_split, cuda_path,
          cuda_graphs, data_dir, out):
    """Measure training throughput: aecore vs PyTorch vs the GEMM floor, per device.

    Times plain-SGD training of SAMPLES images for every (device, hidden, batch), in this one
    process, and prints one table: samples/s, GFLOP/s of the five matrix products, the ratio to
    the GEMM floor (the five products alone, same BLAS / cuBLAS) and to PyTorch eager on the
    same device. Writes OUT/bench.json and a CPU-vs-GPU chart OUT/bench.png.
    """
    from aecore import bench as B
    from aecore import blas_info
    from aecore.data import load_fashion_mnist

    from .options import chosen_cuda_path, resolve_device

    cuda_path = chosen_cuda_path(ctx, cuda_path, cuda_graphs)
    cuda_path = AUTO_PATH if cuda_path == "auto" else cuda_path

    devices = list(dict.fromkeys(resolve_device(d) for d in devices))  # auto -> cpu or cuda
    os.makedirs(out, exist_ok=True)
    images = load_fashion_mnist(data_dir=data_dir, val_size=0).train.images
    blas = blas_info.meta()
    if "cpu" in devices:
        for k, v in blas_info.summary_rows():
            click.echo(f"{k}: {v}")
        if "OPENBLAS_CORETYPE" in blas["env"]:
            click.echo("note: OPENBLAS_CORETYPE forces that OpenBLAS kernel; to measure the one "
                       "OpenBLAS picks for this CPU, run: env -u OPENBLAS_CORETYPE -u "
                       "OPENBLAS_L2_SIZE aecore bench ...")
    rows = []
    jobs = [(d, h, b) for d in devices for b in batches for h in hidden]
    with click.progressbar(jobs, label="benchmarking", file=sys.stderr,
                           item_show_func=lambda j: j and f"{j[0]} h={j[1]} B={j[2]}") as bar:
        for d, h, b in bar:
            rows += B.bench_one(d, h, b, images, samples, repeats, with_torch,
                                cpu_variants=[CPU_VARIANTS[v] for v in _variants(cpu_split)],
                                cuda_path=cuda_path)
    click.echo(B.format_table(rows))
    peaks, frac = {}, None
    if "cpu" in devices:
        threads = (blas["aecore_sgemm"] or {}).get("num_threads") or 1
        peaks = B.cpu_peaks(threads)
        line, frac = B.peak_line(rows, peaks, threads)
        click.echo(line)
    stolen = B.steal_line(rows)
    if stolen:
        click.echo(stolen)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus",
            "samples": samples, "repeats": repeats, "cpu_slices": B.CPU_SLICES,
            "cpu_split": cpu_split,
            "cuda_path": cuda_path,
            "blas": blas,  # threadpoolctl: library, version, kernel, threads, and BLAS_ENV
            "fma_peak_gflops": {str(t): g for t, g in peaks.items()},
            "best_cpu_fraction_of_peak": frac,
            # the settings that change what the CUDA or CPU rows measure, when set
            "env": {k: os.environ[k] for k in ("AECORE_CUDA_TILE", "AECORE_CUDA_BK",
                                                *blas_info.BLAS_ENV)
                    if k in os.environ}}
    B.write_json(rows, os.path.join(out, "bench.json"), meta)
    B.plot(rows, os.path.join(out, "bench.png"))
    click.echo(f"wrote {os.path.join(out, 'bench.json')} and {os.path.join(out, 'bench.png')}")
