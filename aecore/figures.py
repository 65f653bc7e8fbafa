"""The report's figures, drawn with matplotlib (Agg) from report.Run objects alone.

    fig1_classes.png           one test image of each class, with its name
    fig5_loss.png              train (solid) and validation (dashed) MSE per epoch, every run
    fig6_reconstructions.png   per run: the 10 originals, then the reconstructions at each
                               saved epoch
    fig7_test_loss.png         test MSE per run (bars, values written on them)
    fig_optimizers.png         validation MSE per epoch, one line per optimizer (only when
                               several optimizers were run at the same hidden size)
    fig_optimizers_test.png    their test MSE (bars, as fig7)
    fig_<kind>.png, fig_<kind>_test.png   the same for activations, losses, schedules

Each ``fig_*(runs, path)`` writes its PNG atomically and returns True, or returns False when the
runs hold nothing to draw (``why_not_drawn`` says why, for report.md). ``FIGURES`` lists them
in report order with their captions, ``COMPARE_FIGURES`` the comparisons' per kind (runs at
one hidden size differing in that kind's choice alone, ``aecore.comparisons``). Losses are
MSE whatever a run trained (``Run.mse``). ``pyplot()`` is how every aecore plot gets
matplotlib.
"""

from __future__ import annotations

import io
import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_write_bytes
from .comparisons import KINDS, comparison_groups, variant_label
from .idx import CLASS_NAMES
from .tables import fmt_num

if TYPE_CHECKING:  # annotations only: report imports this module
    from .report import Run

FIG_CLASSES = "fig1_classes.png"
FIG_LOSS = "fig5_loss.png"
FIG_RECON = "fig6_reconstructions.png"
FIG_TEST = "fig7_test_loss.png"
FIG_OPT = "fig_optimizers.png"


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi=110):
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _log_y(ax):
    """Log y axis with plain decimal tick labels (0.05, not 5x10^-2); over a narrow range the
    minor ticks are labelled too, so the axis always has numbers on it."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    if decades <= 0.5:  # label every minor tick
        ax.yaxis.set_minor_formatter(plain)
    elif decades <= 2.5:  # label 2x and 5x
        def two_five(v, _):
            lead = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
            return f"{v:g}" if lead in (2, 5) else ""

        ax.yaxis.set_minor_formatter(FuncFormatter(two_five))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 4, 5, 6, 7, 8, 9), numticks=12))
    ax.tick_params(axis="y", which="minor", labelsize=8)


def _loss_axes(ax, ylabel: str, title: str):
    """A loss-per-epoch plot's axes: log y, whole epochs on x, labels, title and a grid."""
    from matplotlib.ticker import MaxNLocator

    _log_y(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def _colors(runs_):
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return {id(r): cmap(i % 10) for i, r in enumerate(runs_)}


def image_shape(width: int) -> tuple[int, int]:
    """How an image of ``width`` pixels is drawn: a square when the width is one (28 x 28 for
    Fashion-MNIST's 784), else one row of pixels (a model of another width: any data)."""
    side = math.isqrt(width)
    return (side, side) if side * side == width else (1, width)


def _img(ax, x, scale):
    x = np.asarray(x, np.float32).reshape(-1)
    shape = image_shape(x.size)
    ax.imshow(x.reshape(shape) / scale, cmap="gray", vmin=0, vmax=1, interpolation="nearest",
              aspect="equal" if shape[0] == shape[1] else "auto")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def fig_classes(runs_: list[Run], path: Path) -> bool:
    """One image per class (from the first run holding reconstructions.npz), with names."""
    per_class = {}
    for r in runs_:
        if r.originals is None or r.labels is None:
            continue
        for img, lab in zip(r.originals, r.labels):
            per_class.setdefault(int(lab), img)
    if not per_class:
        return False
    plt = pyplot()
    classes = sorted(per_class)
    ncol = 5
    nrow = math.ceil(len(classes) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.55 * ncol, 1.75 * nrow + 0.45), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, classes):
        ax.axis("on")
        _img(ax, per_class[c], 255.0)
        name = CLASS_NAMES[c] if 0 <= c < len(CLASS_NAMES) else f"class {c}"
        ax.set_title(f"{c}: {name}", fontsize=10)
    fig.suptitle("Fashion-MNIST: one test image per class", fontsize=11)
    _save(fig, path)
    return True


def fig_loss(runs_: list[Run], path: Path) -> bool:
    with_rows = [r for r in runs_ if r.mse_series("train") or r.mse_series("val")]
    if not with_rows:
        return False
    plt = pyplot()
    from matplotlib.lines import Line2D

    col = _colors(runs_)
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for r in with_rows:
        ep = [m["epoch"] for m in r.metrics]
        lab = r.label + ("" if r.complete else f" ({r.status})")
        for split, ls in (("train", "-"), ("val", "--")):
            y = r.mse_series(split)
            if y:
                ax.plot(ep, y, ls, color=col[id(r)], lw=1.6, label=lab if split == "train" or
                        not r.mse_series("train") else None)
    _loss_axes(ax, "MSE per pixel (log scale)", "Training (solid) and validation (dashed) loss")
    models = ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9,
                       borderaxespad=0)
    ax.add_artist(models)
    ax.legend(handles=[Line2D([], [], color="k", ls="-", label="train"),
                       Line2D([], [], color="k", ls="--", label="validation")],
              title="split", loc="lower left", bbox_to_anchor=(1.02, 0.0), fontsize=9,
              borderaxespad=0)
    _save(fig, path)
    return True


def fig_reconstructions(runs_: list[Run], path: Path) -> bool:
    """A panel per run: originals, then one row per saved epoch; panels two to a row."""
    shown = [r for r in runs_ if r.originals is not None and r.recons]
    if not shown:
        return False
    plt = pyplot()
    ncols = 1 if len(shown) == 1 else 2
    nrows = math.ceil(len(shown) / ncols)
    grid = [shown[i * ncols:(i + 1) * ncols] for i in range(nrows)]
    n_img = max(len(r.originals) for r in shown)
    cell = 0.62  # inches per image
    row_h = [1 + max(len(r.recons) for r in g) for g in grid]  # image rows per panel row
    heights = [cell * h + 0.55 for h in row_h]
    width = ncols * (cell * n_img + 0.9)
    fig = plt.figure(figsize=(width, sum(heights) + 0.5), layout="constrained")
    fig.suptitle("Test images (top row of each panel) and their reconstructions after N epochs",
                 fontsize=11)
    subfigs = fig.subfigures(nrows, ncols, height_ratios=heights, squeeze=False,
                             wspace=0.02, hspace=0.02)
    for i, g in enumerate(grid):
        for j in range(ncols):
            sf = subfigs[i][j]
            if j >= len(g):
                continue
            r = g[j]
            epochs = sorted(r.recons)
            rows = [("original", r.originals, 255.0)] + [(f"epoch {e}", r.recons[e], 1.0)
                                                        for e in epochs]
            axes = sf.subplots(row_h[i], n_img, squeeze=False,
                               gridspec_kw={"wspace": 0.04, "hspace": 0.04})
            for ax in axes.flat:
                ax.axis("off")
            for k, (name, imgs, scale) in enumerate(rows):
                for c in range(min(n_img, len(imgs))):
                    ax = axes[k][c]
                    ax.axis("on")
                    _img(ax, imgs[c], scale)
                axes[k][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            status = "" if r.complete else f" - {r.status}, {r.epochs_done}/{r.epochs} epochs"
            sf.suptitle(f"{r.label} ({r.name}){status}", fontsize=10)
    _save(fig, path, dpi=100)
    return True


def _bars(ax, values, labels, colors, notes):
    """Fig 7's bars: one per value on a linear axis from zero, each value written on its bar;
    a None value gets its ``notes`` entry written in its place instead."""
    have = [v for v in values if v is not None]
    top = max(have)
    for i, (v, c, note) in enumerate(zip(values, colors, notes)):
        if v is None:
            ax.text(i, 0.02 * top, note, ha="center", va="bottom", fontsize=8, color="0.35",
                    rotation=90)
            continue
        ax.bar(i, v, color=c, width=0.7)
        ax.text(i, v, fmt_num(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(values)), labels, fontsize=9)
    ax.set_ylim(0, top * 1.15)
    ax.grid(True, axis="y", alpha=0.3)


def fig_test_loss(runs_: list[Run], path: Path) -> bool:
    vals = [r.mse("test_loss") for r in runs_]
    if not any(v is not None for v in vals):
        return False
    plt = pyplot()
    col = _colors(runs_)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.15 * len(runs_) + 2), 4.5), layout="constrained")
    _bars(ax, vals, [r.label.replace(" ", "\n") for r in runs_], [col[id(r)] for r in runs_],
          [f"no test MSE\n({r.status})" for r in runs_])
    opts = {r.optimizer for r in runs_}
    ax.set_xlabel("model (hidden units h, optimizer)" if len(opts) > 1
                  else f"model (hidden units h; optimizer {next(iter(opts))})")
    ax.set_ylabel("test MSE per pixel")
    ax.set_title("Test-set reconstruction error")
    _save(fig, path)
    return True


def _panels(groups: dict, width: float, height: float = 4.6):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(width * len(groups), height),
                             squeeze=False, layout="constrained")
    return fig, axes[0]


def fig_compare_curves(runs_: list[Run], path: Path, kind: str) -> bool:
    """Fig 5's style for one comparison: validation MSE per epoch, one line per variant, a
    panel per hidden size where ``kind`` was compared. Runs without a recorded MSE are left
    out (report.md says so)."""
    groups = {h: [r for r in rs if r.mse_series("val")]
              for h, rs in comparison_groups(runs_, kind).items()}
    groups = {h: rs for h, rs in groups.items() if rs}
    if not groups:
        return False
    cmap = pyplot().get_cmap("tab10")
    k = KINDS[kind]
    fig, axes = _panels(groups, 6.5)
    for ax, (h, rs) in zip(axes, groups.items()):
        for i, r in enumerate(rs):
            st = "" if r.complete else f" ({r.status})"
            ax.plot([m["epoch"] for m in r.metrics], r.mse_series("val"), color=cmap(i % 10),
                    lw=1.6, label=variant_label(r, kind) + st)
        _loss_axes(ax, "validation MSE per pixel (log scale)", f"{k.name.capitalize()} at h={h}")
        ax.legend(title=k.noun, loc="best", fontsize=9)
    _save(fig, path)
    return True


def fig_compare_test(runs_: list[Run], path: Path, kind: str) -> bool:
    """Fig 7's style for one comparison: the test MSE of each variant, a panel per hidden
    size."""
    groups = {h: rs for h, rs in comparison_groups(runs_, kind).items()
              if any(r.mse("test_loss") is not None for r in rs)}
    if not groups:
        return False
    cmap = pyplot().get_cmap("tab10")
    fig, axes = _panels(groups, max(5.0, 1.1 * max(map(len, groups.values())) + 1.5), 4.5)
    for ax, (h, rs) in zip(axes, groups.items()):
        _bars(ax, [r.mse("test_loss") for r in rs],
              [variant_label(r, kind).replace(", ", "\n") for r in rs],
              [cmap(i % 10) for i in range(len(rs))],
              [f"no test MSE\n({r.status if not r.complete else r.loss})" for r in rs])
        ax.set_xlabel(KINDS[kind].noun)
        ax.set_ylabel("test MSE per pixel")
        ax.set_title(f"{kind.capitalize()} at h={h}: test MSE")
    _save(fig, path)
    return True


def compare_figure_names(kind: str) -> tuple[str, str]:
    """The curves' and the bars' file names of a comparison."""
    return (FIG_OPT if kind == "optimizers" else f"fig_{kind}.png"), f"fig_{kind}_test.png"


FIGURES = (
    (FIG_CLASSES, fig_classes, "Figure 1: one test image per class."),
    (FIG_LOSS, fig_loss, "Figure 5: training (solid) and validation (dashed) MSE per epoch."),
    (FIG_RECON, fig_reconstructions,
     "Figure 6: test images and their reconstructions at the saved epochs."),
    (FIG_TEST, fig_test_loss, "Figure 7: test MSE per model."),
)
# per comparison kind: (curves, bars), drawn only where the runs hold that comparison
COMPARE_FIGURES = {kind: (
    (compare_figure_names(kind)[0], partial(fig_compare_curves, kind=kind),
     f"{kind.capitalize()}: validation MSE per epoch, one line per {k.noun} (as Figure 5)."),
    (compare_figure_names(kind)[1], partial(fig_compare_test, kind=kind),
     f"{kind.capitalize()}: test MSE per {k.noun} (as Figure 7)."),
) for kind, k in KINDS.items()}


def why_not_drawn(name: str) -> str:
    """Why ``fig_*`` drew nothing (it returned False), for report.md."""
    for kind, figs in COMPARE_FIGURES.items():
        if name in (f[0] for f in figs):
            return f"no hidden size was run with more than one {KINDS[kind].noun}"
    return {FIG_CLASSES: "no run has reconstructions.npz",
            FIG_LOSS: "no run has finished an epoch",
            FIG_RECON: "no run has saved reconstructions",
            FIG_TEST: "no run has a test MSE (none is complete)"}[name]
