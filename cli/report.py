"""``aecore report``: figures and a results table from finished (or unfinished) run directories."""

from __future__ import annotations

from pathlib import Path

import click

from aecore import atomic
from aecore.errors import CheckpointError

HELP = """Draw the study's figures and write report.md from RUN_DIRs (directories written by
aecore train / aecore study). Only the runs' own files are read (config.json, metrics.csv,
summary.json, reconstructions.npz): no dataset and no GPU are needed.

A directory that holds run directories (like runs/) stands for all of them. Runs that did not
finish are reported with their status. Losses are mean squared errors per pixel.

\b
Writes into --out (default: report/ in the run directories' common parent):
  fig1_classes.png          one test image per class, with its name
  fig5_loss.png             train (solid) / validation (dashed) MSE per epoch, log scale
  fig6_reconstructions.png  test images and their reconstructions at the saved epochs
  fig7_test_loss.png        test MSE per model
  fig_optimizers.png        validation MSE per optimizer (when several were run at one h)
  fig_<kind>.png            the same per activation, loss, schedule (fig_activations.png ...)
  fig_<kind>_test.png       test MSE per optimizer / activation / loss / schedule
  report.md                 the results table, the figures, whether test MSE falls with h,
                            each comparison's table, and the time to quality: the epochs and
                            seconds runs trained with --track-test need to reach the test MSE
                            of constant-rate Adam, lr 0.001, at their h (--reference-runs)

\b
Examples:
  aecore report runs/h64-adam runs/h128-adam runs/h256-adam runs/h512-adam
  aecore report study --out paper/report
"""


def reference_runs_option(f):
    return click.option("--reference-runs", type=click.Path(path_type=Path), multiple=True,
                        metavar="DIR", help="Runs that set the time-to-quality targets (the test "
                        "MSE of constant-rate Adam, lr 0.001, at each h, e.g. the directory of a "
                        "200-epoch study with --lr-schedule constant); repeatable [default: the "
                        "reported runs].")(f)


def build(run_dirs, out=None, echo=click.echo, reference_runs=()):
    """Load ``run_dirs`` (and ``reference_runs``, for the time-to-quality targets) and write
    the report; a path that is not a run directory is a usage error naming it. Returns (runs,
    result of aecore.report.write_report)."""
    from aecore import report as rep

    try:
        found = rep.find_runs(run_dirs)
    except rep.NotARunDirError as e:
        raise click.BadParameter(str(e), param_hint="'RUN_DIR...'") from None
    references = None
    if reference_runs:
        try:
            references = rep.find_runs(reference_runs)
        except rep.NotARunDirError as e:
            raise click.BadParameter(str(e), param_hint="'--reference-runs'") from None
    if out is None:
        out = rep.common_parent([r.path for r in found]) / "report"
    try:
        atomic.check_writable(out)
    except CheckpointError as e:
        raise click.BadParameter(str(e), param_hint="'--out'") from None
    result = rep.write_report(found, out, references)
    echo(rep.format_table(found))
    for line in rep.trend_statement(found):
        echo(line)
    names = ", ".join(p.name for p in result["figures"])
    echo(f"wrote {result['report']} and {len(result['figures'])} figures in {Path(out)}: {names}")
    by_why: dict[str, list[str]] = {}
    for name, why in result["skipped"]:
        by_why.setdefault(why, []).append(name)
    for why, names in by_why.items():
        echo(f"not drawn: {', '.join(names)} ({why})")
    return found, result


@click.command(help=HELP)
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...",
                type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for report.md and the figures [default: <common parent>/report].")
@reference_runs_option
def report(run_dirs, out, reference_runs):
    build(run_dirs, out, reference_runs=reference_runs)
