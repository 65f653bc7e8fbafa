"""``aecore train``: train one model, or the paper's sweep of hidden sizes, into run directories.

Also holds the helpers the other commands share (device resolution, data loading).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from aecore import runs, tables
from aecore.config import DEFAULT_LR, MAX_HIDDEN, TrainConfig, config_problems
from aecore.cuda_path import AUTO_PATH, CUDA_PATHS
from aecore.kernels.activations_reference import ACTIVATIONS
from aecore.kernels.losses_reference import LOSSES
from aecore.errors import AecoreError, CheckpointError, DivergenceError, TrainingInterrupted
from aecore.optim import OPTIMIZERS
from aecore.schedules import SCHEDULES
from aecore.side_by_side import PlannedRun, train_side_by_side
from aecore.trainer import CHECKPOINT_EVERY

D = TrainConfig()  # the defaults, defined once in aecore.config
FASHION_TRAIN = 60000  # images in the Fashion-MNIST training file (before the validation split)
OPTION_OF = {"hidden": "--hidden", "epochs": "--epochs", "batch_size": "--batch-size",
             "lr": "--lr", "optimizer": "--optimizer", "momentum": "--momentum",
             "slope": "--slope", "seed": "--seed", "val_size": "--val-size", "device": "--device",
             "limit": "--limit", "lr_schedule": "--lr-schedule",
             "warmup_epochs": "--warmup-epochs", "cuda_path": "--cuda-path",
             "activation": "--activation", "loss": "--loss", "cpu_split": "--cpu-split",
             "cpu_team": "--cpu-team", "track_test": "--track-test"}


# --- shared helpers ---------------------------------------------------------------------------

def resolve_device(choice: str, quiet: bool = False) -> str:
    """cpu | cuda | auto -> cpu | cuda. ``cuda`` without a usable GPU is a usage error (exit 2);
    ``auto`` picks CUDA only for a real GPU (never the simulator) and says so when it cannot."""
    if choice == "cpu":
        return "cpu"
    from aecore import devices

    if choice == "cuda":
        ok, why = devices.cuda_usable()
        if not ok:
            raise click.BadParameter(f"cuda is not available here: {why}", param_hint="'--device'")
        return "cuda"
    if devices.real_gpu_present():
        ok, why = devices.cuda_usable()
        if ok:
            return "cuda"
    else:
        why = "no CUDA GPU found"
    if not quiet:
        click.echo(f"notice: --device auto: {why}; using the CPU", err=True)
    return "cpu"


DEVICES = ("auto", "cpu", "cuda")  # the choices of every --device


def device_option(f):
    return click.option("--device", type=click.Choice(DEVICES), default="auto",
                        show_default=True,
                        help="cpu, cuda, or auto (CUDA if a GPU is usable, else the CPU).")(f)


def cuda_path_option(f):
    """--cuda-path, and the older --cuda-graphs / --no-cuda-graphs (hidden; the same as
    --cuda-path graphs / eager): the command resolves them with ``chosen_cuda_path``."""
    f = click.option("--cuda-graphs/--no-cuda-graphs", "cuda_graphs", default=None, hidden=True,
                     help="The same as --cuda-path graphs / eager.")(f)
    return click.option("--cuda-path", type=click.Choice(CUDA_PATHS), default=D.cuda_path,
                        show_default=True,
                        help="CUDA: how steps are launched (same results): persistent (one "
                        "launch of a persistent kernel per chunk for every run that can share "
                        "it: the runs of a --hidden list or a study), graphs (each chunk's "
                        "launches recorded once into a CUDA graph, replayed after), eager (five "
                        f"launches a step); auto: {AUTO_PATH} (the fastest measured so far).")(f)


def chosen_cuda_path(ctx, cuda_path: str, cuda_graphs) -> str:
    """--cuda-path, or what --[no-]cuda-graphs says; both, disagreeing: a usage error."""
    if cuda_graphs is None:
        return cuda_path
    legacy = "graphs" if cuda_graphs else "eager"
    if ctx.get_parameter_source("cuda_path") == ParameterSource.COMMANDLINE and cuda_path != legacy:
        raise click.UsageError(f"--{'' if cuda_graphs else 'no-'}cuda-graphs contradicts "
                               f"--cuda-path {cuda_path}; give only --cuda-path")
    return legacy


def cpu_split_option(f):
    return click.option("--cpu-split/--no-cpu-split", default=D.cpu_split, show_default=True,
                        help="CPU: split every step between two threads of aecore's own, BLAS "
                        "on one thread each (results differ from the default path in the last "
                        "bits, the same run to run). Measured slower than the default on a "
                        "2-core host (bench/RESULTS.md); try `aecore bench --cpu-split both`.")(f)


def schedule_options(f):
    """--lr-schedule and --warmup-epochs (aecore.schedules: as torch.optim.lr_scheduler)."""
    f = click.option("--warmup-epochs", type=click.IntRange(min=0), default=D.warmup_epochs,
                     show_default=True, help="Epochs of linear warm-up from lr/100 to --lr "
                     "(LinearLR) before the schedule; fewer than --epochs; not with onecycle.")(f)
    return click.option("--lr-schedule", type=click.Choice(SCHEDULES), default=D.lr_schedule,
                        show_default=True, help="Learning rate per step, as torch.optim."
                        "lr_scheduler stepped every batch: constant; cosine (CosineAnnealingLR "
                        "to 0 at the end); step (StepLR: /10 after each third of the steps); "
                        "onecycle (OneCycleLR, max_lr = --lr).")(f)


def activation_option(f):
    return click.option("--activation", type=click.Choice(ACTIVATIONS), default=D.activation,
                        show_default=True,
                        help="Hidden-layer activation (leaky_relu uses --slope; gelu is the tanh "
                        "approximation).")(f)


def loss_option(f):
    return click.option("--loss", type=click.Choice(LOSSES), default=D.loss, show_default=True,
                        help="Loss on the Sigmoid output: mse, bce (binary cross-entropy, from "
                        "the logits) or l1. Validation and test MSE are reported whatever the "
                        "loss.")(f)


def check_team_jobs(cpu_team: bool, jobs: int) -> None:
    """One OpenBLAS callback per process: a team's runs cannot share it with other runs'."""
    if cpu_team and jobs > 1:
        raise click.BadParameter("--cpu-team trains one run at a time per process (OpenBLAS "
                                 "has one thread callback); use --jobs 1", param_hint="'--jobs'")


def cpu_team_option(f):
    return click.option("--cpu-team/--no-cpu-team", default=D.cpu_team, show_default=True,
                        help="CPU: run OpenBLAS's two jobs of every product and the two halves "
                        "of every epilogue on one team of two aecore threads (OpenBLAS 0.3.27+'s "
                        "thread callback; the default path's results, bit for bit). Without the "
                        "callback it warns and runs the default path; "
                        "try `aecore bench --cpu-split off,team`.")(f)


def data_dir_option(f):
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, help="Directory with the Fashion-MNIST files (default: "
                        "$AECORE_DATA, the user cache, /usr/share/datasets; else downloaded).")(f)


def checkpoint_every_option(f):
    return click.option("--checkpoint-every", type=click.FloatRange(min=0), metavar="SECONDS",
                        default=CHECKPOINT_EVERY, show_default=True, callback=_finite,
                        help="Save the run directory (checkpoint, model, metrics) at the end of an "
                        "epoch when this long has passed since the last save; 0: every epoch. "
                        "It is always saved at the end, on Ctrl-C and on divergence.")(f)


def track_test_option(f):
    return click.option("--track-test", is_flag=True, default=D.track_test,
                        help="Also evaluate the test split after every epoch (metrics.csv gets "
                        "test_loss; for time to quality in aecore report). Costs one more "
                        "evaluation per epoch; not in the epoch's seconds.")(f)


def jobs_option(f):
    return click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Runs trained at the same time, each from its own thread (on a GPU "
                        "each on its own CUDA stream); their results are as when trained alone.")(f)


def run_settings(c: TrainConfig) -> str:
    """The line's part that says what a run trains with (the commands print it at its start)."""
    sched = "" if c.lr_schedule == "constant" else f" {c.lr_schedule}"
    warm = f" ({c.warmup_epochs} warm-up)" if c.warmup_epochs else ""
    return (f"hidden {c.hidden}, {c.epochs} epochs, batch {c.batch_size}, {c.optimizer} "
            f"lr {c.lr:g}{sched}{warm}, {c.device}"
            + (f", first {c.limit} images" if c.limit else "")
            + (", test MSE every epoch" if c.track_test else ""))


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def load_data(data_dir, val_size: int):
    from aecore.data import load_fashion_mnist

    return load_fashion_mnist(data_dir, val_size=val_size, download=True, progress=True)


# --- option parsing ---------------------------------------------------------------------------

class HiddenList(click.ParamType):
    name = "H[,H...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        sizes = []
        for part in str(value).split(","):
            part = part.strip()
            try:
                h = int(part)
            except ValueError:
                self.fail(f"{part!r} is not an integer (give e.g. 256 or 64,128,256,512)", param, ctx)
            if not 1 <= h <= MAX_HIDDEN:
                self.fail(f"{h} is out of range: hidden sizes go from 1 to {MAX_HIDDEN}", param, ctx)
            if h in sizes:
                self.fail(f"{h} is given twice", param, ctx)
            sizes.append(h)
        return tuple(sizes)


def _finite_positive(ctx, param, value):
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return value


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


HELP = """Train the 784 -> h -> 784 autoencoder (LeakyReLU hidden layer, Sigmoid output, MSE loss)
on Fashion-MNIST, writing one run directory per hidden size under --out (named like
h256-adam): config.json, metrics.csv (per-epoch train/val MSE, seconds, samples/s, learning
rate), summary.json, reconstructions.npz, model.safetensors (PyTorch state_dict names) and
checkpoint.safetensors.

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
              help="Learning rate (> 0).  [default: per optimizer: "
                   + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + "]")
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
          cpu_team, data_dir, out, resume, overwrite, checkpoint_every, jobs, track_test):
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
                           lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                           activation=activation, loss=loss, track_test=track_test)
                 for h in hidden]
    for c in configs:
        _check(c, n_train)
    dirs = [out / runs.run_name(c.hidden, c.optimizer) for c in configs]
    dev = resolve_device(device)  # a usage error: before what --out holds
    _check_outputs(out, dirs, overwrite)

    configs = [TrainConfig(**{**c.to_dict(), "device": dev}) for c in configs]
    data = load_data(data_dir, val_size)
    _run_all(configs, dirs, data, overwrite, fallback_cpu=(device == "auto"),
             checkpoint_every=checkpoint_every, jobs=jobs)


def _check(config, n_train):
    for name, msg in config_problems(config, n_train):
        raise click.BadParameter(msg, param_hint=f"'{OPTION_OF.get(name, name)}'")


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
    for name in ("cpu_split", "cpu_team"):
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
