"""The CPU step with the output epilogue split over OpenBLAS's two threads, its halves also
gathering the next batch (kernels/blas_pair.py, the default), against the pair with the caller
gathering every batch (``engine.gather_ahead = False``), the step with the epilogue on the
calling thread (``CpuEngine(pair_epilogue=False)``) and the five products alone (the GEMM
floor): µs per step, timed in turn, round after round, in one process. SGD, as ``aecore
bench``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/pair_epilogue.py \
        --hidden 64,128,256,512 --batch 64,256 --samples 12800 --rounds 15
"""

from __future__ import annotations

import time

import click
import numpy as np


@click.command()
@click.option("--hidden", default="64,128,256,512", help="Comma list of hidden sizes.")
@click.option("--batch", default="64,256", help="Comma list of batch sizes.")
@click.option("--samples", default=12800, show_default=True, help="Samples per timed run.")
@click.option("--rounds", default=15, show_default=True, help="Timed rounds (median, min).")
@click.option("--data", "data_dir", default=None, help="Fashion-MNIST directory.")
def main(hidden, batch, samples, rounds, data_dir):
    from aecore.baselines import GemmFloor
    from aecore.bench import _engine_fn
    from aecore.blas_info import aecore_blas, describe
    from aecore.data import load_fashion_mnist
    from aecore.engine_cpu import CpuEngine
    from aecore.model import init_params
    from aecore.optim import OptimConfig

    images = load_fashion_mnist(data_dir, val_size=0, progress=False).train.images
    perm = np.random.default_rng(0).permutation(images.shape[0])[:samples].astype(np.int64)
    click.echo(f"BLAS: {describe(aecore_blas())}")
    click.echo("  h    B   default us/step  no ahead us/step  serial us/step   floor us/step"
               "   x floor: default / no ahead / serial")
    for h in (int(v) for v in hidden.split(",")):
        for B in (int(v) for v in batch.split(",")):
            fns = []
            for pair, ahead in ((True, True), (True, False), (False, False)):
                engine = CpuEngine(init_params(h, seed=0), OptimConfig("sgd", lr=0.05), B,
                                   pair_epilogue=pair)
                engine.gather_ahead = ahead
                fns.append(_engine_fn(engine, images, perm))
            floor = GemmFloor(h, B)
            fns.append(lambda: floor.run(samples))
            times = np.zeros((rounds, 4))
            for f in fns:
                f()  # compile or load, allocate
            for r in range(rounds):
                for i, f in enumerate(fns):
                    t0 = time.perf_counter()
                    f()
                    times[r, i] = time.perf_counter() - t0
            us = np.median(times, axis=0) / (samples / B) * 1e6
            lo = times.min(axis=0) / (samples / B) * 1e6
            # x floor: the median over the rounds of each round's ratio (the host's drift
            # cancels within a round)
            x = np.median(times[:, :3] / times[:, 3:], axis=0)
            click.echo(f"{h:4d} {B:4d}  " + "  ".join(f"{u:7.1f} ({m:7.1f})" for u, m in
                                                     zip(us, lo))
                       + "   " + " / ".join(f"{v:5.3f}" for v in x))
    click.echo("median (min) over the rounds")


if __name__ == "__main__":
    main()
