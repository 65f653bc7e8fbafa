"""The report's comparison and time-to-quality sections (report.md), from report.Run objects.

``comparison_sections`` writes, per compared kind (``aecore.comparisons``), its figures and a
table of its variants at each hidden size; ``time_to_quality_section`` the epochs and seconds
each run with a per-epoch test MSE needs to reach the test MSE of constant-rate Adam's full run
at its hidden size (``aecore.time_to_quality``). Every number is the run files' own, 6
significant digits (``fmt_num``); runs with another loss than MSE compare on the validation and
test MSE they record beside it.
"""

from __future__ import annotations

from . import time_to_quality as T
from .comparisons import KINDS, comparison_groups, is_default_run, variant_label
from .figures import COMPARE_FIGURES
from .tables import fmt_num, markdown_table

COMPARE_COLUMNS = ("run", "variant", "epochs", "val MSE", "best val MSE", "best epoch",
                   "test MSE", "vs default", "wall time (s)", "status")
TTQ_COLUMNS = ("hidden", "target test MSE", "reference", "run", "epochs to target",
               "seconds to target", "reference seconds", "test MSE at end", "device")


def _best(series):
    pts = [(v, i) for i, v in enumerate(series or []) if v is not None]
    return min(pts) if pts else (None, None)


def compare_rows(rs, kind: str) -> list[list[str]]:
    """One row per variant: its last and best validation MSE, its test MSE and the ratio of
    that to the default run's (every compared choice and the learning rate at the defaults)."""
    default = next((r for r in rs if is_default_run(r.config, kind)), None)
    base = default.mse("test_loss") if default is not None else None
    out = []
    for r in rs:
        val = r.mse_series("val")
        best, at = _best(val)
        test = r.mse("test_loss")
        ratio = f"{test / base:.3f}x" if test is not None and base else "-"
        out.append([r.name, variant_label(r, kind), f"{r.epochs_done}/{r.epochs}",
                    fmt_num(val[-1] if val else None), fmt_num(best),
                    "-" if at is None else str(r.metrics[at]["epoch"]), fmt_num(test), ratio,
                    fmt_num(r.s("wall_time_s")), r.status])
    return out


def comparison_sections(runs_, figures: list[str]) -> list[str]:
    """report.md's "Comparisons": per kind with a comparison, its figures (those in
    ``figures``, the files drawn) and a table per hidden size."""
    lines = []
    for kind, k in KINDS.items():
        groups = comparison_groups(runs_, kind)
        if not groups:
            continue
        if not lines:
            lines += ["## Comparisons", "",
                      "Each comparison varies one choice (the model's activation, the loss it "
                      "trains, the optimizer, the learning-rate schedule) at one hidden size, "
                      "everything else at the defaults; all are compared on the validation and "
                      "test MSE, which every run records whatever loss it trains. *vs default*: "
                      "test MSE over that of the default run (every choice at its default).", ""]
        lines += [f"### {kind.capitalize()}", ""]
        for name, _, caption in COMPARE_FIGURES[kind]:
            if name in figures:
                lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        for h, rs in groups.items():
            lines += [f"At h={h}:", "",
                      markdown_table(COMPARE_COLUMNS, compare_rows(rs, kind),
                                     left={"run", "variant", "epochs", "status"}), ""]
    return lines


def time_to_quality_section(runs_, references) -> list[str]:
    """report.md's "Time to quality" (``references``: the runs that may set the targets)."""
    refs = T.reference_targets(references)
    lines = ["## Time to quality", "",
             "Epochs and training seconds a run needs to first reach the test MSE that "
             "constant-rate Adam (lr 0.001) reaches at the end of its run (the *reference*, "
             "200 epochs in the paper's study) at the same hidden size. It needs the test MSE "
             "after every epoch: runs trained with `--track-test`. Seconds are the epochs' "
             "training time (metrics.csv `seconds`, evaluations excluded), on the run's own "
             "device and host load: compare seconds only between runs of one machine.", ""]
    if not refs:
        return lines + ["Not assessed: no reference run (a complete run of LeakyReLU / MSE "
                        "with Adam at the constant rate 0.001, no warm-up: "
                        "`--lr-schedule constant --lr 0.001`; a study's `--compare schedules` "
                        "trains one at --compare-hidden; give others with "
                        "`--reference-runs DIR`).", ""]
    rows = T.rows(runs_, references)
    if not rows:
        tracked = [r.name for r in runs_ if T.tracked(r)]
        why = ("no run has a test MSE per epoch (train with --track-test)" if not tracked else
               "the runs with a test MSE per epoch ({}) are at no hidden size with a reference "
               "({})".format(", ".join(tracked), ", ".join(f"h={h}" for h in refs)))
        return lines + [f"Not assessed: {why}.", ""]
    table = []
    for x in rows:
        ref, reach = x["reference"], x["reach"]
        table.append([str(x["hidden"]), fmt_num(x["target"]),
                      f"{ref.name} ({x['reference_epochs']} epochs)", x["run"].name,
                      "not reached" if reach is None else str(reach.epoch),
                      "-" if reach is None else fmt_num(round(reach.seconds, 2)),
                      fmt_num(None if x["reference_seconds"] is None
                              else round(x["reference_seconds"], 2)),
                      f"{fmt_num(x['final'])} ({x['epochs']} epochs)",
                      f"{x['run'].device or '-'} / {ref.device or '-'}"])
    return lines + [markdown_table(TTQ_COLUMNS, table, left={"reference", "run", "epochs to target",
                                                             "test MSE at end", "device"}), ""]
