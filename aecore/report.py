"""The study report: figures and a results table drawn from run directories alone.

``load_run(dir)`` reads one run directory (``aecore.runs`` layout: config.json, metrics.csv,
summary.json, reconstructions.npz; the model files are never opened and no dataset is needed);
``find_runs(paths)`` expands and checks the directories given on the command line;
``write_report(runs, out_dir)`` draws the figures (matplotlib, Agg) and writes report.md:

    fig1_classes.png           one test image of each class, with its name
    fig5_loss.png              train (solid) and validation (dashed) MSE per epoch, every run
    fig6_reconstructions.png   per run: the 10 originals, then the reconstructions at each
                               saved epoch
    fig7_test_loss.png         test MSE per run (bars, values written on them)
    fig_optimizers.png         validation MSE per epoch, one line per optimizer (only when
                               several optimizers were run at the same hidden size)
    report.md                  the table, the figures, and whether the test MSE falls with h

Every number in the table is the value in the run's files printed with 6 significant digits
(``fmt_num``), so it can be parsed back and compared. Runs that did not finish are kept, with
their status, never dropped.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import runs as R
from .data import CLASS_NAMES
from .optim import OPTIMIZERS
from .errors import CheckpointError


FIG_CLASSES = "fig1_classes.png"
FIG_LOSS = "fig5_loss.png"
FIG_RECON = "fig6_reconstructions.png"
FIG_TEST = "fig7_test_loss.png"
FIG_OPT = "fig_optimizers.png"
REPORT_MD = "report.md"

TABLE_COLUMNS = ("run", "hidden", "params", "optimizer", "lr", "epochs", "train MSE", "val MSE",
                 "test MSE", "best epoch", "best val MSE", "wall time (s)", "device", "samples/s",
                 "status")


class NotARunDirError(CheckpointError):
    """A path given as a run directory is not one (a usage error: exit 2)."""

    exit_code = 2


def fmt_num(v) -> str:
    """A float from the run files as the table prints it: 6 significant digits; '-' for none."""
    if v is None:
        return "-"
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return format(v, ".6g")


# --- reading --------------------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    info: dict  # config.json
    summary: dict | None  # summary.json (None: no epoch finished yet)
    metrics: list[dict]  # metrics.csv rows
    originals: np.ndarray | None = None  # (10, 784) uint8
    labels: np.ndarray | None = None  # (10,)
    recons: dict[int, np.ndarray] = field(default_factory=dict)  # epoch -> (10, 784) float32
    label: str = ""  # legend / axis label, set by label_runs

    @property
    def config(self) -> dict:
        c = self.info.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def hidden(self) -> int:
        return int(self._get("hidden"))

    @property
    def optimizer(self) -> str:
        return str(self._get("optimizer", "?"))

    @property
    def lr(self):
        return self._get("lr")

    @property
    def epochs(self) -> int | None:
        v = self._get("epochs")
        return None if v is None else int(v)

    @property
    def epochs_done(self) -> int:
        if self.summary and self.summary.get("epochs_done") is not None:
            return int(self.summary["epochs_done"])
        return len(self.metrics)

    @property
    def status(self) -> str:
        if self.summary is None:
            return "started"  # config written, no epoch finished (summary.json comes after one)
        return str(self.summary.get("status") or "unknown")

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def params(self):
        v = (self.summary or {}).get("params", self.info.get("params"))
        return None if v is None else int(v)

    @property
    def device(self):
        return (self.summary or {}).get("device") or self.info.get("device")

    def s(self, key):
        """A value from summary.json, else (for the losses) from the last metrics row."""
        if self.summary is not None and key in self.summary:
            return self.summary[key]
        if not self.metrics:
            return None
        if key in ("train_loss", "val_loss"):
            return self.metrics[-1][key]
        best = min(self.metrics, key=lambda r: r["val_loss"])
        return {"best_epoch": best["epoch"], "best_val_loss": best["val_loss"]}.get(key)

    @property
    def median_samples_per_s(self):
        vals = [r["samples_per_s"] for r in self.metrics]
        return float(np.median(vals)) if vals else None

    def _get(self, key, default=None):
        if key in self.config:
            return self.config[key]
        return (self.summary or {}).get(key, default)


def is_run_dir(path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / R.CONFIG).is_file() or (p / R.SUMMARY).is_file())


def _read_json(path: Path) -> dict:
    d = R.read_json(path)
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return d


def load_run(path) -> Run:
    """Read one run directory (its own files only). Raises NotARunDirError when ``path`` is
    not a run directory and CheckpointError (one line, naming the file) when a file is bad."""
    p = Path(path)
    if not p.exists():
        raise NotARunDirError(f"{p}: no such directory")
    if not p.is_dir():
        raise NotARunDirError(f"{p}: not a directory (expected a run directory of aecore train)")
    if not is_run_dir(p):
        raise NotARunDirError(f"{p}: not a run directory (it has no {R.CONFIG} or {R.SUMMARY}; "
                              "expected a directory written by aecore train)")
    info = _read_json(p / R.CONFIG) if (p / R.CONFIG).is_file() else {}
    summary = _read_json(p / R.SUMMARY) if (p / R.SUMMARY).is_file() else None
    if not info and summary is not None:  # config.json lost: the summary has the essentials
        info = {"config": {k: summary[k] for k in ("hidden", "epochs", "optimizer", "lr",
                                                   "batch_size") if k in summary},
                "params": summary.get("params"), "device": summary.get("device")}
    if "hidden" not in (info.get("config") or {}) and "hidden" not in (summary or {}):
        raise CheckpointError(f"{p / R.CONFIG}: has no config.hidden; not a config.json of aecore")
    try:
        metrics = R.read_metrics(p / R.METRICS) if (p / R.METRICS).is_file() else []
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{p / R.METRICS}: unreadable ({e})") from None
    run = Run(p, info, summary, metrics)
    try:
        run.hidden, run.epochs_done, run.epochs
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: {R.CONFIG} / {R.SUMMARY} hold a bad value ({e})") from None
    npz = p / R.RECONSTRUCTIONS
    if npz.is_file():
        try:
            with np.load(npz) as z:
                if "originals" in z.files:
                    run.originals = np.asarray(z["originals"])
                if "labels" in z.files:
                    run.labels = np.asarray(z["labels"]).astype(np.int64)
                for k in z.files:
                    if k.startswith("epoch_") and k[6:].isdigit():
                        run.recons[int(k[6:])] = np.asarray(z[k], np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{npz}: unreadable ({str(e).splitlines()[0]})") from None
    return run


def find_runs(paths) -> list[Run]:
    """Load the run directories ``paths``. A directory that is not a run itself but holds run
    directories (like ``runs/`` or a study's ``--out``) stands for all of them. Duplicates are
    dropped; the result is sorted by optimizer (the one with the most runs first), then hidden
    size."""
    seen, out = set(), []
    for path in paths:
        p = Path(path)
        if p.is_dir() and not is_run_dir(p):
            children = sorted(c for c in p.iterdir() if is_run_dir(c))
            if children:
                for c in children:
                    _add(c, seen, out)
                continue
        _add(p, seen, out)
    if not out:
        raise NotARunDirError("no run directories given")
    count = {o: sum(r.optimizer == o for r in out) for o in {r.optimizer for r in out}}
    rank = {o: i for i, o in enumerate(OPTIMIZERS)}
    out.sort(key=lambda r: (-count[r.optimizer], rank.get(r.optimizer, len(rank)), r.hidden,
                            str(r.path)))
    label_runs(out)
    return out


def _add(p: Path, seen: set, out: list):
    key = os.path.realpath(p)
    if key in seen:
        return
    seen.add(key)
    out.append(load_run(p))


def label_runs(runs_: list[Run]) -> None:
    """Short unique labels: ``h=256 sgd`` (``h=256`` when all runs share one optimizer); the
    directory name where two runs would get the same label."""
    one_opt = len({r.optimizer for r in runs_}) == 1
    base = [f"h={r.hidden}" if one_opt else f"h={r.hidden} {r.optimizer}" for r in runs_]
    for r, b in zip(runs_, base):
        if base.count(b) > 1:
            same = [x for x, y in zip(runs_, base) if y == b]
            names = [x.name for x in same]
            r.label = r.name if names.count(r.name) == 1 else f"{r.path.parent.name}/{r.name}"
        else:
            r.label = b


def common_parent(paths) -> Path:
    """The deepest directory holding all ``paths`` (the default place for ``report/``)."""
    parents = [os.path.abspath(Path(p).parent) for p in paths]
    return Path(os.path.commonpath(parents))


# --- the table ------------------------------------------------------------------------------------

def table_rows(runs_: list[Run]) -> list[dict]:
    rows = []
    for r in runs_:
        epochs = r.epochs
        rows.append({
            "run": r.name,
            "hidden": str(r.hidden),
            "params": "-" if r.params is None else str(r.params),
            "optimizer": r.optimizer,
            "lr": fmt_num(r.lr),
            "epochs": f"{r.epochs_done}/{epochs if epochs is not None else '?'}",
            "train MSE": fmt_num(r.s("train_loss")),
            "val MSE": fmt_num(r.s("val_loss")),
            "test MSE": fmt_num(r.s("test_loss")),
            "best epoch": "-" if r.s("best_epoch") is None else str(int(r.s("best_epoch"))),
            "best val MSE": fmt_num(r.s("best_val_loss")),
            "wall time (s)": fmt_num(r.s("wall_time_s")),
            "device": str(r.device or "-"),
            "samples/s": fmt_num(r.median_samples_per_s),
            "status": r.status,
        })
    return rows


def format_table(runs_: list[Run]) -> str:
    """The results as a Markdown table with padded columns (it reads in a terminal too)."""
    rows = [[row[c] for c in TABLE_COLUMNS] for row in table_rows(runs_)]
    head = list(TABLE_COLUMNS)
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    left = {"run", "optimizer", "device", "status", "epochs"}

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if h in left else c.rjust(w)
                                 for c, w, h in zip(cells, widths, head)) + " |"

    sep = "|" + "|".join(("-" * (w + 2)) if h in left else ("-" * (w + 1) + ":")
                         for w, h in zip(widths, head)) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def parse_table(text: str) -> list[dict]:
    """The rows of the first table in ``text`` (report.md) as dicts of cell strings."""
    lines = [ln.strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| run "))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    out = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        out.append(dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))))
    return out


# --- monotonicity ---------------------------------------------------------------------------------

def mse_trend(runs_: list[Run]) -> list[dict]:
    """Per optimizer with complete runs at two or more hidden sizes: the (hidden, test MSE)
    points in order of h and whether the test MSE strictly decreases as h grows."""
    out = []
    for opt in dict.fromkeys(r.optimizer for r in runs_):
        pts = sorted((r.hidden, float(r.s("test_loss"))) for r in runs_
                     if r.optimizer == opt and r.complete and r.s("test_loss") is not None)
        hs = [h for h, _ in pts]
        if len(set(hs)) < 2:
            continue
        excluded = [r for r in runs_ if r.optimizer == opt and not (r.complete and
                                                                   r.s("test_loss") is not None)]
        if len(set(hs)) != len(hs):
            out.append({"optimizer": opt, "points": pts, "decreasing": None,
                        "excluded": excluded, "why": "several runs share a hidden size"})
            continue
        rises = [(a, b) for a, b in zip(pts, pts[1:]) if not b[1] < a[1]]
        out.append({"optimizer": opt, "points": pts, "decreasing": not rises, "rises": rises,
                    "excluded": excluded})
    return out


def trend_statement(runs_: list[Run]) -> list[str]:
    """One line per optimizer: does the test MSE decrease monotonically with hidden size?"""
    trends = mse_trend(runs_)
    if not trends:
        return ["Monotonicity of the test MSE in the hidden size: not assessed (no optimizer "
                "has complete runs at two or more hidden sizes)."]
    lines = []
    for t in trends:
        chain = " > ".join(f"h={h}: {fmt_num(v)}" for h, v in t["points"])
        excl = ""
        if t["excluded"]:
            excl = " Not included: " + ", ".join(f"{r.name} ({r.status})"
                                                 for r in t["excluded"]) + "."
        if t["decreasing"] is None:
            lines.append(f"Test MSE vs hidden size ({t['optimizer']}): not assessed, "
                         f"{t['why']}.{excl}")
        elif t["decreasing"]:
            lines.append(f"Test MSE decreases monotonically with hidden size ({t['optimizer']}): "
                         f"{chain}.{excl}")
        else:
            bad = "; ".join(f"h={a[0]} {fmt_num(a[1])} -> h={b[0]} {fmt_num(b[1])}"
                            for a, b in t["rises"])
            chain = ", ".join(f"h={h}: {fmt_num(v)}" for h, v in t["points"])
            lines.append(f"Test MSE does NOT decrease monotonically with hidden size "
                         f"({t['optimizer']}): {chain}; it does not fall at {bad}.{excl}")
    return lines


# --- figures --------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi=110):
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    R.atomic_write_bytes(path, buf.getvalue())


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


def _int_x(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _colors(runs_):
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {id(r): cmap(i % 10) for i, r in enumerate(runs_)}


def _img(ax, x, scale):
    ax.imshow(np.asarray(x, np.float32).reshape(28, 28) / scale, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
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
    plt = _plt()
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
    with_rows = [r for r in runs_ if r.metrics]
    if not with_rows:
        return False
    plt = _plt()
    from matplotlib.lines import Line2D

    col = _colors(runs_)
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for r in with_rows:
        ep = [m["epoch"] for m in r.metrics]
        lab = r.label + ("" if r.complete else f" ({r.status})")
        ax.plot(ep, [m["train_loss"] for m in r.metrics], "-", color=col[id(r)], lw=1.6, label=lab)
        ax.plot(ep, [m["val_loss"] for m in r.metrics], "--", color=col[id(r)], lw=1.6)
    _log_y(ax)
    _int_x(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE per pixel (log scale)")
    ax.set_title("Training (solid) and validation (dashed) loss")
    ax.grid(True, which="both", alpha=0.3)
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
    plt = _plt()
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


def fig_test_loss(runs_: list[Run], path: Path) -> bool:
    if not runs_:
        return False
    plt = _plt()
    col = _colors(runs_)
    vals = [r.s("test_loss") for r in runs_]
    have = [v for v in vals if v is not None]
    if not have:
        return False
    fig, ax = plt.subplots(figsize=(max(5.5, 1.15 * len(runs_) + 2), 4.5), layout="constrained")
    x = np.arange(len(runs_))
    top = max(have)
    for i, (r, v) in enumerate(zip(runs_, vals)):
        if v is None:
            ax.text(i, 0.02 * top, f"no test MSE\n({r.status})", ha="center", va="bottom",
                    fontsize=8, color="0.35", rotation=90)
            continue
        ax.bar(i, v, color=col[id(r)], width=0.7)
        ax.text(i, v, fmt_num(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [r.label.replace(" ", "\n") for r in runs_], fontsize=9)
    ax.set_ylim(0, top * 1.15)
    opts = {r.optimizer for r in runs_}
    ax.set_xlabel("model (hidden units h, optimizer)" if len(opts) > 1
                  else f"model (hidden units h; optimizer {next(iter(opts))})")
    ax.set_ylabel("test MSE per pixel")
    ax.set_title("Test-set reconstruction error")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
    return True


def optimizer_groups(runs_: list[Run]) -> dict[int, list[Run]]:
    """Hidden sizes at which more than one optimizer was run -> those runs."""
    by_h: dict[int, list[Run]] = {}
    for r in runs_:
        if r.metrics:
            by_h.setdefault(r.hidden, []).append(r)
    return {h: rs for h, rs in sorted(by_h.items()) if len({r.optimizer for r in rs}) > 1}


def fig_optimizers(runs_: list[Run], path: Path) -> bool:
    groups = optimizer_groups(runs_)
    if not groups:
        return False
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    opts = list(dict.fromkeys(r.optimizer for rs in groups.values() for r in rs))
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.6), squeeze=False,
                             layout="constrained")
    for ax, (h, rs) in zip(axes[0], groups.items()):
        for r in rs:
            lr = f", lr {fmt_num(r.lr)}" if r.lr is not None else ""
            st = "" if r.complete else f" ({r.status})"
            ax.plot([m["epoch"] for m in r.metrics], [m["val_loss"] for m in r.metrics],
                    color=cmap(opts.index(r.optimizer) % 10), lw=1.6,
                    label=f"{r.optimizer}{lr}{st}")
        _log_y(ax)
        _int_x(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation MSE per pixel (log scale)")
        ax.set_title(f"Optimizers at h={h}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="optimizer", loc="best", fontsize=9)
    _save(fig, path)
    return True


# --- the report -----------------------------------------------------------------------------------

FIGURES = (
    (FIG_CLASSES, fig_classes, "Figure 1: one test image per class."),
    (FIG_LOSS, fig_loss, "Figure 5: training (solid) and validation (dashed) MSE per epoch."),
    (FIG_RECON, fig_reconstructions,
     "Figure 6: test images and their reconstructions at the saved epochs."),
    (FIG_TEST, fig_test_loss, "Figure 7: test MSE per model."),
    (FIG_OPT, fig_optimizers, "Optimizers: validation MSE per epoch at one hidden size."),
)


def write_report(runs_: list[Run], out_dir) -> dict:
    """Draw the figures and write report.md into ``out_dir`` (created). Returns
    ``{"report": path, "figures": [paths], "skipped": [(file, why)]}``."""
    out = Path(out_dir)
    R.check_writable(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{out}: cannot create the report directory ({e.strerror})") from None
    made, skipped = [], []
    for name, fn, _ in FIGURES:
        p = out / name
        if fn(runs_, p):
            made.append(p)
        else:
            if p.exists():  # a figure from an earlier report that no longer applies
                p.unlink()
            skipped.append((name, _why_not(name)))
    md = report_markdown(runs_, out, [p.name for p in made], skipped)
    R.atomic_write_bytes(out / REPORT_MD, md.encode("utf-8"))
    return {"report": out / REPORT_MD, "figures": made, "skipped": skipped}


def _why_not(name):
    return {FIG_CLASSES: "no run has reconstructions.npz",
            FIG_LOSS: "no run has finished an epoch",
            FIG_RECON: "no run has saved reconstructions",
            FIG_TEST: "no run has a test MSE (none is complete)",
            FIG_OPT: "no hidden size was run with more than one optimizer"}[name]


def report_markdown(runs_: list[Run], out: Path, figures: list[str], skipped) -> str:
    from . import __version__

    lines = ["# Fashion-MNIST autoencoder study", "",
             "784 -> h -> 784 autoencoder (LeakyReLU hidden layer, Sigmoid output), trained with "
             "MSE. Losses are mean squared errors per pixel (pixels in [0, 1]); numbers have 6 "
             "significant digits, as in the runs' metrics.csv / summary.json. Final train / val "
             "MSE are those of the last epoch; *best epoch* is the one with the lowest validation "
             "MSE; samples/s is the median over the epochs.", "",
             "## Results", "", format_table(runs_), ""]
    lines += trend_statement(runs_)
    lines.append("")
    incomplete = [r for r in runs_ if not r.complete]
    if incomplete:
        lines += ["**Runs that did not finish** (reported as they are):", ""]
        for r in incomplete:
            hint = {"interrupted": " - continue with `aecore train --resume "
                                   f"{os.path.abspath(r.path)}` (or rerun its aecore study)",
                    "diverged": " - the loss became NaN/inf; try a smaller learning rate"}
            lines.append(f"- `{r.name}`: {r.status}, {r.epochs_done}/{r.epochs} epochs"
                         + hint.get(r.status, ""))
        lines.append("")
    lines += ["## Figures", ""]
    for name, _, caption in FIGURES:
        if name in figures:
            lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    for name, why in skipped:
        if name != FIG_OPT:
            lines.append(f"- {name} not drawn: {why}.")
    if any(n != FIG_OPT for n, _ in skipped):
        lines.append("")
    lines += ["## Runs", ""]
    for r in runs_:
        c = r.config
        rel = os.path.relpath(os.path.abspath(r.path), os.path.abspath(out))
        lines.append(f"- `{r.name}` ({rel}): hidden {r.hidden}, {r.optimizer} lr {fmt_num(r.lr)}, "
                     f"batch {c.get('batch_size', '-')}, {r.epochs} epochs, seed "
                     f"{c.get('seed', '-')}, slope {c.get('slope', '-')}, val size "
                     f"{c.get('val_size', '-')}"
                     + (f", first {c['limit']} training images" if c.get("limit") else "")
                     + f", device {r.device or '-'}")
    lines += ["", f"Generated by aecore {__version__} `aecore report` from the run directories' "
              "own files.", ""]
    return "\n".join(lines)
