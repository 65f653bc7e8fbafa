"""``aecore sweep``: a hyperparameter sweep on Ray Tune (grid, random search, ASHA, clusters)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aecore.config import TrainConfig
from aecore.errors import TrainingInterrupted

from .options import DEVICES, FASHION_TRAIN, _check, data_dir_option, load_data

D = TrainConfig()

HELP = """Sweep hyperparameters of the 784 -> h -> 784 autoencoder on Ray Tune. Every trial is an
ordinary aecore training run (run directory OUT/<trial>, e.g. OUT/h64-adam-lr0.001-b64-s0,
readable by aecore report) trained in a Ray worker, reporting its validation loss every epoch.

--hidden, --lr, --optimizer, --batch-size, --seed and --lr-schedule take a comma list (a grid:
every combination is a trial) or, except --optimizer and --lr-schedule, a range LO:HI drawn
--samples times (the learning rate, hidden and batch size on a log scale). --scheduler asha
stops bad trials early.
Without --address, Ray runs on this machine; with it, the sweep joins a running Ray cluster
(OUT must then be a directory every node can write, e.g. NFS).

The end prints the trials sorted by validation loss and writes OUT/sweep_results.csv and
OUT/sweep_val_loss.png. Ctrl-C stops the sweep (each running trial keeps its last finished
epoch); the same command again continues it.

\b
Examples:
  aecore sweep --hidden 64,128 --lr 1e-3,3e-3 --epochs 20 --out sweeps/a
  aecore sweep --lr 1e-4:1e-2 --hidden 32:512 --samples 16 --scheduler asha --out sweeps/b
  aecore sweep --address 10.0.0.1:6379 --gpus-per-trial 0.25 --device cuda --out /nfs/sweeps/c
"""


def _axis(name):
    def convert(ctx, param, value):
        if value is None:
            return None
        from aecore.sweep import parse_axis

        try:
            return parse_axis(name, value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return convert


def _axis_option(flag, name, help_):
    return click.option(flag, name, default=None, callback=_axis(name), metavar="LIST|LO:HI",
                        help=help_)


@click.command(help=HELP)
@_axis_option("--hidden", "hidden", f"Hidden sizes h.  [default: {D.hidden}]")
@_axis_option("--lr", "lr", "Learning rates.  [default: each optimizer's own for the trial's "
              "schedule, as aecore train's --lr]")
@_axis_option("--optimizer", "optimizer", f"Optimizers (a comma list).  [default: {D.optimizer}]")
@_axis_option("--batch-size", "batch_size", f"Batch sizes.  [default: {D.batch_size}]")
@_axis_option("--seed", "seed", f"Seeds.  [default: {D.seed}]")
@_axis_option("--lr-schedule", "lr_schedule", "Learning-rate schedules (a comma list of "
              f"constant, cosine, step, onecycle; no warm-up).  [default: {D.lr_schedule}]")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials drawn per grid point from the LO:HI ranges (random search).")
@click.option("--search-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random search's draws.")
@click.option("--scheduler", type=click.Choice(["fifo", "asha"]), default="fifo", show_default=True,
              help="fifo: every trial runs all epochs; asha: stop trials whose validation loss "
                   "is behind the others' at the same epoch (grace 1 epoch, halving).")
@click.option("--epochs", type=click.IntRange(min=1), default=D.epochs, show_default=True,
              help="Epochs per trial (at most).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on only the first N training images (quick checks).")
@click.option("--device", type=click.Choice(DEVICES), default="auto",
              show_default=True, help="Device of every trial; auto: CUDA where the trial got a GPU.")
@click.option("--address", default=None, metavar="HOST:PORT",
              help="Join this running Ray cluster (`ray start --head` prints it); default: a "
                   "local Ray instance.")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs the local Ray instance may use (default: all; not with --address).")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="CPUs reserved for each trial.")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs for each trial; a fraction shares one GPU (0.25: four trials).")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="SECONDS", help="Save each trial's run directory at most this often "
              "(0: every epoch, so Ctrl-C and early stops lose nothing).")
@data_dir_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("sweep"),
              show_default=True, help="Directory for the trials' run directories and results.")
def sweep(hidden, lr, optimizer, batch_size, seed, lr_schedule, samples, search_seed, scheduler,
          epochs, limit, device, address, num_cpus, cpus_per_trial, gpus_per_trial,
          checkpoint_every, data_dir, out):
    from aecore import sweep as S

    if not S.ray_available():
        click.echo(f"Error: {S.INSTALL_HINT}", err=True)
        sys.exit(2)
    if address and num_cpus:
        raise click.UsageError("--num-cpus sizes a local Ray instance; with --address the "
                               "cluster's nodes decide (ray start --num-cpus)")
    if device == "cuda" and gpus_per_trial <= 0:
        raise click.BadParameter("--device cuda needs --gpus-per-trial > 0 (Ray hides the GPUs "
                                 "from trials that reserve none)", param_hint="'--device'")
    axes = [a for a in (hidden, lr, optimizer, batch_size, seed, lr_schedule) if a is not None]
    if samples > 1 and not any(a.is_range for a in axes):
        raise click.BadParameter("repeats identical trials: give a range LO:HI to draw from "
                                 "(e.g. --lr 1e-4:1e-2)", param_hint="'--samples'")
    n_train = limit or FASHION_TRAIN - D.val_size
    if limit is not None and limit > FASHION_TRAIN - D.val_size:
        raise click.BadParameter(f"{limit} is more than the {n_train} training images left after "
                                 f"the {D.val_size} validation images", param_hint="'--limit'")
    base = TrainConfig(epochs=epochs, limit=limit, device=device)
    for a in axes:  # every listed value and range end must make a valid run
        for v in (a.values or (a.low, a.high)):
            _check(TrainConfig(**{**base.to_dict(), "device": "cpu", a.name: v}), n_train)
    if address:
        S.check_reachable(address)
    n = S.count_grid(axes) * samples
    click.echo(f"sweep in {out}: {n} trial{'s' * (n > 1)}, {epochs} epoch{'s' * (epochs > 1)} each"
               + (f", first {limit} training images" if limit else "")
               + (f", on the Ray cluster at {address}" if address else ", on a local Ray instance"))
    data = load_data(data_dir, D.val_size)
    results, unfinished = S.run_sweep(
        axes, base, out, data, samples=samples, scheduler=None if scheduler == "fifo" else scheduler,
        address=address, num_cpus=num_cpus, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, checkpoint_every=checkpoint_every, search_seed=search_seed)
    from aecore.sweep_results import best_line, format_table, write_csv, write_figure

    click.echo(format_table(results, epochs))
    click.echo(best_line(results))
    for r in results:
        if r.status == "error":
            click.echo(f"{r.name} failed: {r.error}", err=True)
    out = Path(out)
    write_csv(results, epochs, out / S.RESULTS_CSV)
    write_figure(results, out / S.FIGURE)
    click.echo(f"wrote {out / S.RESULTS_CSV} and {out / S.FIGURE}")
    if unfinished:
        click.echo("the sweep was interrupted; run the same command again to continue it", err=True)
        sys.exit(TrainingInterrupted.exit_code)
    if any(r.status == "error" for r in results):
        sys.exit(1)
