"""``aecore train``: train one model, or the paper's sweep of hidden sizes, into run directories.

The options and helpers it shares with the other commands are in cli/options.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from aecore import runs, tables
from aecore.comparisons import config_run_name
from aecore.config import TrainConfig
from aecore.errors import AecoreError, CheckpointError, DivergenceError, TrainingInterrupted
from aecore.optim import OPTIMIZERS
from aecore.side_by_side import PlannedRun, train_side_by_side
from aecore.trainer import CHECKPOINT_EVERY

from .options import (D, FASHION_TRAIN, OPTION_OF, HiddenList, _check, _finite, _finite_positive,
                      activation_option, check_team_jobs, checkpoint_every_option,
                      chosen_cuda_path, cpu_gemm_option, cpu_split_option, cpu_team_option,
                      cuda_path_option,
                      data_dir_option, device_option, echo_err, jobs_option, load_data,
                      loss_option, lr_default_help, resolve_device, run_settings,
                      schedule_options, track_test_option)


HELP = """Train the 784 -> h -> 784 autoencoder (LeakyReLU hidden layer, Sigmoid output, MSE loss)
on Fashion-MNIST, writing one run directory per hidden size under --out (named like
h256-adam, with what differs from the defaults: h256-sgd, h256-act-gelu, h256-sched-constant;
aecore study names them so too): config.json, metrics.csv (per-epoch train/val MSE, seconds,
samples/s, learning rate), summary.json, reconstructions.npz, model.safetensors (PyTorch
state_dict names) and checkpoint.safetensors.

The default schedule is onecycle (since 2026-12-02; the best of a scan, README "Defaults, and
why"), each optimizer at its own scanned peak rate; --lr-schedule constant trains as before
(Adam at 0.001 unless --lr).

Losses are mean squared errors per pixel (pixels scaled to [0, 1]). Ctrl-C or SIGTERM saves a
checkpoint and exits 130; continue with --resume RUN_DIR. With several hidden sizes, --jobs N
trains N of them at once (on a GPU, side by side on their own CUDA streams);
--cuda-path persistent trains them together, one kernel launch per chunk for all of them.

\b
Examples:
  aecore train --device cpu --hidden 256
  aecore train --hidden 64,128,256,512 --epochs 200
  aecore train --device cuda --hidden 64,128,256,512 --jobs 4
  aecore train --device cuda --hidden 64,128,256,512 --cuda-path persistent
  aecore train --hidden 256 --epochs 1 --limit 2000      quick check
  aecore train --hidden 256 --lr-schedule constant       the constant rate (the old default)
  aecore train --hidden 256 --epochs 60 --lr 3e-3 --lr-schedule cosine --warmup-epochs 2
  aecore train --resume runs/h256-adam
"""


@click.command(help=HELP)
@click.option("--hidden", type=HiddenList(), default=str(D.hidden), show_default=True,
              help="Hidden units h, or a comma list (64,128,256,512) to train each and compare.")
@click.option("--epochs", type=click.IntRange(min=1), default=D.epochs, show_default=True,
              help="Passes over the training set.")
@click.option("--batch-size", type=click.IntRange(min=1), default=D.batch_size, show_default=True,
              help="Samples per optimizer step (at most the training-set size).")
@click.option("--lr", type=float, default=None, callback=_finite_positive,
              help="Learning rate (> 0; with onecycle its peak, max_lr).  " + lr_default_help())
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=D.optimizer, show_default=True,
              help="sgd (the paper's), momentum / nesterov (torch.optim.SGD), adam (torch.optim.Adam).")
@click.option("--momentum", type=click.FloatRange(min=0, max=1, max_open=True),
              default=D.momentum, show_default=True, help="Momentum for momentum / nesterov.")
@click.option("--slope", type=float, default=D.slope, show_default=True, callback=_finite,
              help="LeakyReLU negative slope.")
@click.option("--seed", type=click.IntRange(min=0), default=D.seed, show_default=True,
              help="Seed for the initial weights and the per-epoch shuffles.")
@click.option("--val-size", type=click.IntRange(min=1), default=D.val_size, show_default=True,
              help=f"Training images held out for validation (of the {FASHION_TRAIN}).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on only the first N training images (quick tests).")
@schedule_options
@activation_option
@loss_option
@device_option
@cuda_path_option
@cpu_split_option
@cpu_team_option
@cpu_gemm_option
@data_dir_option
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Directory that holds the run directories.")
@click.option("--resume", type=click.Path(path_type=Path), default=None, metavar="RUN_DIR",
              help="Continue the interrupted run in RUN_DIR (its settings are reused; --epochs "
                   "may be raised, except with an --lr-schedule other than constant).")
@click.option("--overwrite", is_flag=True, help="Replace existing run directories' files.")
@checkpoint_every_option
@jobs_option
@track_test_option
@click.pass_context
def train(ctx, hidden, epochs, batch_size, lr, optimizer, momentum, slope, seed, val_size, limit,
          lr_schedule, warmup_epochs, activation, loss, device, cuda_path, cuda_graphs, cpu_split,
          cpu_team, cpu_gemm, data_dir, out, resume, overwrite, checkpoint_every, jobs, track_test):
    cuda_path = chosen_cuda_path(ctx, cuda_path, cuda_graphs)
    if resume is not None:
        return _resume(ctx, resume, device, data_dir, epochs, checkpoint_every, cuda_path)

    # Everything that can be checked without the data is checked before loading it.
    check_team_jobs(cpu_team, jobs)
    if val_size >= FASHION_TRAIN:
        raise click.BadParameter(f"{val_size} leaves no training images (the training file has "
                                 f"{FASHION_TRAIN})", param_hint="'--val-size'")
    n_avail = FASHION_TRAIN - val_size
    if limit is not None and limit > n_avail:
        raise click.BadParameter(f"{limit} is more than the {n_avail} training images left after "
                                 f"--val-size {val_size}", param_hint="'--limit'")
    n_train = limit or n_avail
    if batch_size > n_train:
        raise click.BadParameter(f"{batch_size} is larger than the training set ({n_train} images)",
                                 param_hint="'--batch-size'")
    configs = [TrainConfig(hidden=h, epochs=epochs, batch_size=batch_size, lr=lr,
                           optimizer=optimizer, momentum=momentum, slope=slope, seed=seed,
                           val_size=val_size, device="cpu", limit=limit,
                           cuda_path=cuda_path, cpu_split=cpu_split, cpu_team=cpu_team,
                           cpu_gemm=cpu_gemm, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                           activation=activation, loss=loss, track_test=track_test)
                 for h in hidden]
    for c in configs:
        _check(c, n_train)
    dirs = [out / config_run_name(c) for c in configs]  # by what differs from the defaults
    dev = resolve_device(device)  # a usage error: before what --out holds
    _check_outputs(out, dirs, overwrite)

    configs = [TrainConfig(**{**c.to_dict(), "device": dev}) for c in configs]
    data = load_data(data_dir, val_size)
    _run_all(configs, dirs, data, overwrite, fallback_cpu=(device == "auto"),
             checkpoint_every=checkpoint_every, jobs=jobs)



def _check_outputs(out: Path, dirs, overwrite):
    try:
        runs.check_writable(out)
        for d in dirs:
            runs.check_writable(d)
    except CheckpointError as e:
        raise click.BadParameter(str(e), param_hint="'--out'") from None
    for d in dirs:
        runs.check_not_busy(d)
    if not overwrite:
        taken = [d for d in dirs if d.exists() and runs.existing_run_files(d)]
        if taken:
            raise CheckpointError(
                f"{', '.join(map(str, taken))} already hold{'s' if len(taken) == 1 else ''} a run; "
                f"pass --overwrite to replace, --resume {taken[0]} to continue, or another --out")


def _resume(ctx, run_dir: Path, device, data_dir, epochs, checkpoint_every, cuda_path):
    fixed = [OPTION_OF[n] for n in (*runs.RESUME_FIXED, "hidden") if n in OPTION_OF
             and ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    for name in ("out", "overwrite", "jobs"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            fixed.append(f"--{name}")
    if fixed:
        raise click.UsageError(f"{', '.join(sorted(set(fixed)))} cannot be combined with --resume: "
                               "a resumed run keeps its settings (only --epochs, --device, "
                               "--cuda-path, --[no-]cpu-split and --data-dir may be given)")
    if not run_dir.is_dir():
        raise click.BadParameter(f"{run_dir} is not a directory", param_hint="'--resume'")
    rd = runs.RunDir(run_dir)
    if not rd.file(runs.CHECKPOINT).exists():
        try:
            held = sorted(d.name for d in run_dir.iterdir() if (d / runs.CHECKPOINT).is_file())
        except OSError:
            held = []
        if held:
            raise click.BadParameter(
                f"{run_dir} holds runs ({', '.join(held)}), it is not one; give one of them, "
                f"e.g. --resume {run_dir / held[0]}", param_hint="'--resume'")
    runs.check_not_busy(run_dir)
    config = rd.checkpoint_config()
    changes = {}
    if ctx.get_parameter_source("epochs") == ParameterSource.COMMANDLINE:
        changes["epochs"] = epochs
    if ctx.get_parameter_source("device") == ParameterSource.COMMANDLINE:
        changes["device"] = resolve_device(device)
    for name in ("cpu_split", "cpu_team", "cpu_gemm"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            changes[name] = ctx.params[name]
    if ParameterSource.COMMANDLINE in (ctx.get_parameter_source("cuda_path"),
                                       ctx.get_parameter_source("cuda_graphs")):
        changes["cuda_path"] = cuda_path
    config = TrainConfig(**{**config.to_dict(), **changes})
    _check(config, None)
    rd.resume_checkpoint(config)  # the trainer's checks, before the data is loaded
    data = load_data(data_dir or rd.data_dir(), config.val_size)
    _run_all([config], [run_dir], data, False, fallback_cpu=(device == "auto"), resume=True,
             checkpoint_every=checkpoint_every)


def _run_all(configs, dirs, data, overwrite, fallback_cpu, resume=False,
             checkpoint_every=CHECKPOINT_EVERY, jobs=1):
    def on_start(p, n):
        click.echo(f"{'resuming' if resume else 'training'} {p.dir}: {run_settings(p.config)}",
                   err=True)

    planned = [PlannedRun(c, d, "resume" if resume else "train") for c, d in zip(configs, dirs)]
    outcomes = train_side_by_side(planned, data, jobs, on_start=on_start, echo=echo_err,
                                  overwrite=overwrite, fallback_cpu=fallback_cpu,
                                  checkpoint_every=checkpoint_every)
    results, diverged, stopped = [], None, False
    for o in outcomes:
        if o.status == "complete":
            results.append(o.summary)
        elif o.status == "diverged":
            if len(configs) == 1:
                raise o.error
            click.echo(f"Error: h{o.run.config.hidden}: {o.error}", err=True)
            diverged = o.error
            results.append(runs.RunDir(o.run.dir).summary())
        elif o.status == "interrupted":
            click.echo(f"{o.error}", err=True)
            click.echo(f"Resume with: aecore train --resume {o.run.dir}", err=True)
            stopped = True
    if stopped:
        left = [str(o.run.config.hidden) for o in outcomes if o.status == "not started"]
        if left:
            click.echo(f"Not started: hidden {','.join(left)}", err=True)
        sys.exit(TrainingInterrupted.exit_code)
    click.echo(format_table(results))
    if diverged is not None:
        sys.exit(DivergenceError.exit_code)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _trained_loss(s) -> str:
    """The loss a run trained (its summary holds test_<loss> besides test_loss unless mse)."""
    return next((k[5:] for k in s if k.startswith("test_") and k != "test_loss"), "mse")


def format_table(summaries) -> str:
    trained = {_trained_loss(s) for s in summaries}
    train_head = f"train {trained.pop().upper()}" if len(trained) == 1 else "train loss"
    head = ("hidden", "params", "epochs", train_head, "val MSE", "test MSE", "best ep",
            "time", "samples/s", "status")
    rows = [(str(s["hidden"]), f"{s['params']:,}", f"{s['epochs_done']}/{s['epochs']}",
             _fmt(s.get("train_loss"), ".6f"), _fmt(s.get("val_loss"), ".6f"),
             _fmt(s.get("test_loss"), ".6f"), _fmt(s.get("best_epoch"), "d"),
             _fmt(s.get("wall_time_s"), ".1f") + ("s" if s.get("wall_time_s") is not None else ""),
             _fmt(s.get("samples_per_s"), ",.0f"), s["status"]) for s in summaries]
    return tables.format_table(head, rows)


__all__ = ["train", "resolve_device", "device_option", "schedule_options", "data_dir_option",
           "load_data", "format_table", "AecoreError"]
