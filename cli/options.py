"""The options and helpers that ``aecore train``, ``study``, ``sweep``, ``bench`` and ``use``
share: the click option decorators (defaults from aecore.config's TrainConfig), their value
checks, device resolution and data loading.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
from click.core import ParameterSource

from aecore.config import (CPU_GEMMS, DEFAULT_LR, MAX_HIDDEN, OWN_GEMM_AVX2, OWN_GEMM_MAX_BATCH,
                           TrainConfig, config_problems)
from aecore.cuda_path import AUTO_PATH, CUDA_PATHS
from aecore.kernels.activations_reference import ACTIVATIONS
from aecore.kernels.losses_reference import LOSSES
from aecore.schedules import SCHEDULES
from aecore.trainer import CHECKPOINT_EVERY

D = TrainConfig()  # the defaults, defined once in aecore.config
FASHION_TRAIN = 60000  # images in the Fashion-MNIST training file (before the validation split)
OPTION_OF = {"hidden": "--hidden", "epochs": "--epochs", "batch_size": "--batch-size",
             "lr": "--lr", "optimizer": "--optimizer", "momentum": "--momentum",
             "slope": "--slope", "seed": "--seed", "val_size": "--val-size", "device": "--device",
             "limit": "--limit", "lr_schedule": "--lr-schedule",
             "warmup_epochs": "--warmup-epochs", "cuda_path": "--cuda-path",
             "activation": "--activation", "loss": "--loss", "cpu_split": "--cpu-split",
             "cpu_team": "--cpu-team", "track_test": "--track-test", "cpu_gemm": "--cpu-gemm"}


# --- devices, data, messages  ---------------------------------------------------------------------------

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
                        "lr_scheduler stepped every batch: onecycle (OneCycleLR, max_lr = --lr; "
                        "the default since 2026-12-02, chosen by a scan: README, \"Defaults, and "
                        "why\"); constant (the default before: give it for the old behaviour); "
                        "cosine (CosineAnnealingLR to 0 at the end); step (StepLR: /10 after "
                        "each third of the steps). Each has its own default --lr.")(f)


def lr_default_help() -> str:
    """--lr's "[default: ...]": aecore.config.DEFAULT_LR, per schedule (the default's first)."""
    parts = []
    for sched in sorted(SCHEDULES, key=lambda s: s != D.lr_schedule):
        own = {o: r[sched] for o, r in DEFAULT_LR.items() if r[sched] is not None}
        rest = [o for o in DEFAULT_LR if o not in own]
        parts.append(f"{sched}: " + ", ".join(f"{o} {v:g}" for o, v in own.items())
                     + (f" ({', '.join(rest)}: their constant rates, not scanned)" if rest else ""))
    return "[default: per optimizer and --lr-schedule; " + "; ".join(parts) + "]"


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


def cpu_gemm_option(f):
    return click.option("--cpu-gemm", type=click.Choice(CPU_GEMMS), default=D.cpu_gemm,
                        show_default=True,
                        help="CPU: whose matrix products the training step runs: blas "
                        "(OpenBLAS's sgemm, the epilogues after each), own (aecore's own "
                        "GEMM, every phase of the step in two halves with its epilogue) or "
                        f"auto (own on x86-64 up to {OWN_GEMM_MAX_BATCH} rows a batch with "
                        f"AVX-512; without it up to {OWN_GEMM_AVX2[0]} rows, and "
                        f"{OWN_GEMM_MAX_BATCH} where h <= {OWN_GEMM_AVX2[1]}: where it was "
                        "measured faster; else blas). Compare them with `aecore bench "
                        "--cpu-split blas,own`.")(f)


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


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def run_settings(c: TrainConfig) -> str:
    """The line's part that says what a run trains with (the commands print it at its start)."""
    sched = "" if c.lr_schedule == "constant" else f" {c.lr_schedule}"
    warm = f" ({c.warmup_epochs} warm-up)" if c.warmup_epochs else ""
    return (f"hidden {c.hidden}, {c.epochs} epochs, batch {c.batch_size}, {c.optimizer} "
            f"lr {c.lr:g}{sched}{warm}, {c.device}"
            + (f", first {c.limit} images" if c.limit else "")
            + (", test MSE every epoch" if c.track_test else ""))


def load_data(data_dir, val_size: int):
    from aecore.data import load_fashion_mnist

    return load_fashion_mnist(data_dir, val_size=val_size, download=True, progress=True)


# --- option values ---------------------------------------------------------------------------

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


def _check(config, n_train):
    """The first problem of ``config`` (aecore.config.config_problems) as a usage error naming
    its option."""
    for name, msg in config_problems(config, n_train):
        raise click.BadParameter(msg, param_hint=f"'{OPTION_OF.get(name, name)}'")
