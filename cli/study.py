"""``aecore study``: train the paper's models and the optimizer comparison, then the report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from click.core import ParameterSource

from aecore import HIDDEN_SIZES, runs
from aecore.comparisons import KINDS, variant_of
from aecore.config import MAX_HIDDEN, TrainConfig
from aecore.errors import CheckpointError, DivergenceError, TrainingInterrupted
from aecore.optim import OPTIMIZERS
from aecore.side_by_side import train_side_by_side

from .report import build as build_report, reference_runs_option
from .options import (FASHION_TRAIN, HiddenList, _check, activation_option, check_team_jobs,
                      checkpoint_every_option, chosen_cuda_path, cpu_gemm_option,
                      cpu_split_option, cpu_team_option, cuda_path_option, data_dir_option,
                      device_option, echo_err, jobs_option, load_data, loss_option,
                      resolve_device, run_settings, schedule_options, track_test_option)

D = TrainConfig()  # the defaults, defined once in aecore.config
DEFAULT_OPTIMIZERS = KINDS["optimizers"].variants
DEFAULT_COMPARE_HIDDEN = 128


def _compare(ctx, param, value):
    from aecore.comparisons import parse_compare

    try:
        return parse_compare(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def comparisons(ctx, compare: dict, optimizers: tuple) -> dict:
    """What the study compares: --compare's kinds; --optimizers (today's option) is the
    optimizer comparison, run by default when --compare is not given, and with --compare only
    when given on the command line (--compare optimizers=... says the same)."""
    given = ctx.get_parameter_source("optimizers") == ParameterSource.COMMANDLINE
    if "optimizers" in compare and given:
        raise click.UsageError("give the optimizers to compare either with --optimizers or with "
                               "--compare optimizers=..., not both")
    if compare and not given:
        return compare
    return {"optimizers": optimizers, **compare}


def _optimizers(ctx, param, value):
    if isinstance(value, tuple):
        return value
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise click.BadParameter(f"expected a comma list of {', '.join(OPTIMIZERS)}, got {value!r}")
    if len(set(names)) != len(names):
        raise click.BadParameter(f"an optimizer is given twice in {value!r}")
    return tuple(names)


HELP = f"""Run the whole study: train the 784 -> h -> 784 autoencoder at each --hidden size with
the default settings of aecore train (now: {D.optimizer} with the {D.lr_schedule} schedule, peak lr
{D.lr:g}, batch {D.batch_size}; --lr-schedule constant: as before 2026-12-02), plus
the comparisons at --compare-hidden: one run per variant, everything else at the defaults (the
default run at that size is shared, not trained twice); then write the report (aecore report)
into OUT/report, with each comparison's validation curves, test-MSE bars and table.

\b
--compare optimizers    sgd, momentum, adam (each with its default learning rate; the
                        default, or --optimizers A,B)
--compare activations   {", ".join(KINDS["activations"].variants)}
--compare losses        {", ".join(KINDS["losses"].variants)} (compared on the test MSE)
--compare schedules     {", ".join(KINDS["schedules"].variants)} (each with its default
                        learning rate; constant: Adam at 0.001, time to quality's reference)

Before training it times a short warm-up of each model on the chosen device and prints how long
the study should take. Runs go to OUT/h<H>-<optimizer> (a compared variant: OUT/h<H>-act-gelu,
-loss-bce, -sched-cosine), exactly as aecore train writes them. --track-test records the test
MSE after every epoch, for the report's time to quality, whose targets are set by constant-rate
Adam 0.001 runs: --compare schedules trains one at --compare-hidden; --reference-runs DIR gives
others (e.g. a study run with --lr-schedule constant).

Rerunning the same command continues the study: complete runs are skipped, interrupted ones
are resumed from their checkpoints (and a diverged run is reported, not retried). Ctrl-C saves
a checkpoint and exits 130.

--jobs N trains N runs at once, each in its own thread (on a GPU, on its own CUDA stream): at
the paper's sizes one run leaves most of a GPU idle. --cuda-path persistent trains all the runs
together, one launch of a persistent kernel per chunk (--jobs does not apply). Each run's
results are the same as when it trains alone. Ctrl-C, or an error in one run, makes every run
in progress save and stop.

\b
Examples:
  aecore study --device cuda --jobs 4
  aecore study --device cpu --hidden 64,128 --epochs 20 --limit 10000
  aecore study --hidden 128 --compare activations,schedules
  aecore study --hidden 128 --compare activations --compare losses=mse,bce
"""


@click.command(help=HELP)
@device_option
@cuda_path_option
@cpu_split_option
@activation_option
@loss_option
@cpu_team_option
@cpu_gemm_option
@click.option("--hidden", type=HiddenList(), default=",".join(map(str, HIDDEN_SIZES)),
              show_default=True, help="Hidden sizes h to train with the default optimizer.")
@click.option("--epochs", type=click.IntRange(min=1), default=D.epochs, show_default=True,
              help="Passes over the training set, for every run.")
@click.option("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), callback=_optimizers,
              show_default=True, help=f"Optimizers to compare at --compare-hidden "
              f"({', '.join(OPTIMIZERS)}).")
@click.option("--compare", multiple=True, callback=_compare, metavar="KIND[,KIND...]",
              help="Compare at --compare-hidden: optimizers, activations, losses, schedules "
              "(a comma list, or the option again); KIND=A,B for some of its choices only, e.g. "
              "losses=mse,bce. Without it: the optimizer comparison (--optimizers).")
@click.option("--compare-hidden", type=click.IntRange(1, MAX_HIDDEN),
              default=DEFAULT_COMPARE_HIDDEN, show_default=True,
              help="Hidden size of the comparisons.")
@schedule_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("study"),
              show_default=True, help="Directory for the run directories and report/.")
@data_dir_option
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on only the first N training images (quick checks).")
@click.option("--yes", "-y", is_flag=True,
              help="Start without asking (it asks only on a terminal).")
@checkpoint_every_option
@jobs_option
@track_test_option
@reference_runs_option
@click.pass_context
def study(ctx, device, cuda_path, cuda_graphs, cpu_split, cpu_team, cpu_gemm, activation, loss,
          hidden, epochs, optimizers, compare, compare_hidden, lr_schedule, warmup_epochs, out,
          data_dir, limit, yes, checkpoint_every, jobs, track_test, reference_runs):
    from aecore import study as S

    cuda_path = chosen_cuda_path(ctx, cuda_path, cuda_graphs)
    compare = comparisons(ctx, compare, optimizers)

    # Everything that can be checked without the data is checked before loading it.
    check_team_jobs(cpu_team, jobs)
    n_avail = FASHION_TRAIN - D.val_size
    if limit is not None and limit > n_avail:
        raise click.BadParameter(f"{limit} is more than the {n_avail} training images left after "
                                 f"the {D.val_size} validation images", param_hint="'--limit'")
    # --activation / --loss / --lr-schedule set every run; a compared kind's variants override
    plan = S.plan_study(hidden, compare, compare_hidden, out, epochs, "cpu", limit,
                        activation=activation, loss=loss, lr_schedule=lr_schedule,
                        warmup_epochs=warmup_epochs, track_test=track_test)
    for p in plan:
        p.config = TrainConfig(**{**p.config.to_dict(), "cuda_path": cuda_path,
                                  "cpu_split": cpu_split, "cpu_team": cpu_team,
                                  "cpu_gemm": cpu_gemm})
        _check(p.config, limit or n_avail)
    try:
        runs.check_writable(out)
        for p in plan:
            runs.check_writable(p.dir)
    except CheckpointError as e:
        raise click.BadParameter(str(e), param_hint="'--out'") from None
    for p in plan:
        S.inspect_run(p)

    todo = [p for p in plan if p.action != "skip"]
    click.echo(f"study in {out}: {len(plan)} runs, {epochs} epochs each"
               + (f", first {limit} training images" if limit else ""))
    for p in plan:
        c = p.config
        what = {"train": "to train",
                "resume": f"to resume ({p.status}, {p.epochs_done}/{c.epochs} epochs done)",
                "skip": f"{p.status}, skipped"}[p.action]
        v = variant_of(c.to_dict())
        var = f", {KINDS[v[0]].field} {v[1]}" if v and v[0] and v[0] != "optimizers" else ""
        click.echo(f"  {p.dir.name:<18} hidden {c.hidden:<5} {c.optimizer} lr {c.lr:g}{var}: "
                   f"{what}")

    started = time.perf_counter()
    diverged = False
    try:
        if todo:
            dev = resolve_device(device)
            for p in plan:
                p.config = TrainConfig(**{**p.config.to_dict(), "device": dev})
            data = load_data(data_dir, D.val_size)
            click.echo(f"timing a warm-up of each model on {dev} ...")
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise click.BadParameter(f"{out}: cannot create it ({e.strerror})",
                                         param_hint="'--out'") from None
            per_run = S.estimate(plan, data, dev, scratch_dir=out, checkpoint_every=checkpoint_every)
            total = sum(per_run.values())
            jobs = min(jobs, len(todo))
            click.echo(f"estimated {S.fmt_duration(total)} on {dev}"
                       + (f" one run at a time (with --jobs {jobs}, less)" if jobs > 1 else "")
                       + " (" + ", ".join(f"{d.name} {S.fmt_duration(t)}"
                                          for d, t in per_run.items()) + ")")
            if not yes and sys.stdin.isatty() and not click.confirm("Start?", default=True):
                click.echo("not started")
                return

            def on_start(p, n):
                click.echo(f"{'resuming' if p.action == 'resume' else 'training'} {p.dir} "
                           f"({n}/{len(todo)}): {run_settings(p.config)}", err=True)

            outcomes = train_side_by_side(todo, data, jobs, on_start=on_start, echo=echo_err,
                                          fallback_cpu=(device == "auto"),
                                          checkpoint_every=checkpoint_every)
            for o in outcomes:
                if o.status == "diverged":
                    click.echo(f"Error: {o.run.dir.name}: {o.error}", err=True)
                    diverged = True
                elif o.status == "interrupted":
                    click.echo(f"{o.run.dir.name}: {o.error}", err=True)
            if any(o.status in ("interrupted", "not started") for o in outcomes):
                click.echo("Run the same aecore study command again to continue: complete runs "
                           "are skipped and the others resume.", err=True)
                sys.exit(TrainingInterrupted.exit_code)
            own = sum(o.summary["wall_time_s"] for o in outcomes if o.status == "complete")
            click.echo(f"training took {S.fmt_duration(time.perf_counter() - started)} "
                       f"(estimated {S.fmt_duration(total)}"
                       + (f" one run at a time; {jobs} at once, the runs' own wall times add up "
                          f"to {S.fmt_duration(own)}" if jobs > 1 else "") + ")")
    except KeyboardInterrupt:
        click.echo("\ninterrupted; run the same aecore study command again to continue", err=True)
        sys.exit(TrainingInterrupted.exit_code)

    build_report([p.dir for p in plan], out / "report", reference_runs=reference_runs)
    if diverged:
        sys.exit(DivergenceError.exit_code)
