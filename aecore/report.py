"""The study report: a results table and report.md drawn from run directories alone.

``load_run(dir)`` reads one run directory (``aecore.runs`` layout: config.json, metrics.csv,
summary.json, reconstructions.npz; the model files are never opened and no dataset is needed);
``find_runs(paths)`` expands and checks the directories given on the command line;
``write_report(runs, out_dir)`` draws the figures (:mod:`aecore.figures`) and writes report.md:
the table, the figures, and whether the test MSE falls with h.

Every number in the table is the value in the run's files printed with 6 significant digits
(``fmt_num``), so it can be parsed back and compared. Runs that did not finish are kept, with
their status, never dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import runs as R
from .atomic import atomic_write_bytes, check_writable
from .optim import OPTIMIZERS
from .errors import CheckpointError
from .comparisons import shared, variant_of
from .config import saved_value
from .figures import COMPARE_FIGURES, FIGURES, why_not_drawn
from . import time_to_quality as T
from .report_compare import comparison_sections, time_to_quality_section
from .tables import fmt_num, markdown_table

REPORT_MD = "report.md"
CHOICE_FIELDS = ("activation", "loss", "lr_schedule", "warmup_epochs")  # listed under "Runs"

TABLE_COLUMNS = ("run", "hidden", "params", "optimizer", "lr", "epochs", "train MSE", "val MSE",
                 "test MSE", "best epoch", "best val MSE", "wall time (s)", "device", "samples/s",
                 "status")


class NotARunDirError(CheckpointError):
    """A path given as a run directory is not one (a usage error: exit 2)."""

    exit_code = 2


# --- reading --------------------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    info: dict  # config.json
    summary: dict | None  # summary.json (None: no epoch finished yet)
    metrics: list[dict]  # metrics.csv rows
    originals: np.ndarray | None = None  # (10, w) uint8, w the image width (784)
    labels: np.ndarray | None = None  # (10,)
    recons: dict[int, np.ndarray] = field(default_factory=dict)  # epoch -> (10, w) float32
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

    @property
    def loss(self) -> str:
        """The loss it trained (runs made before there was a choice: mse)."""
        return str(self._get("loss", "mse"))

    def mse(self, key):
        """``key`` (train_loss, val_loss, test_loss, best_val_loss) as an MSE, or None. The
        trainer records val_loss and test_loss as the MSE whatever loss a run trains (the
        trained loss goes beside them, as val_<loss> / test_<loss>), so runs compare on MSE;
        train_loss is the trained loss, an MSE for mse runs only."""
        return None if key == "train_loss" and self.loss != "mse" else self.s(key)

    def mse_series(self, split: str) -> list | None:
        """The per-epoch MSE of ``split`` (train, val, test) from metrics.csv, as ``mse``;
        None when the rows do not hold it (test: runs trained without track_test)."""
        key = f"{split}_loss"
        if not self.metrics or key not in self.metrics[0] or self.mse(key) is None:
            return None
        return [m.get(key) for m in self.metrics]

    def s(self, key):
        """A value from summary.json, else (for the losses) from the last metrics row."""
        if self.summary is not None and key in self.summary:
            return self.summary[key]
        if not self.metrics:
            return None
        if key in self.metrics[-1] and key not in ("epoch", "seconds", "samples_per_s"):
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
    return R.RunDir(path).is_run()


def load_run(path) -> Run:
    """Read one run directory (its own files only). Raises NotARunDirError when ``path`` is
    not a run directory and CheckpointError (one line, naming the file) when a file is bad."""
    p = Path(path)
    rd = R.RunDir(p)
    if not p.exists():
        raise NotARunDirError(f"{p}: no such directory")
    if not p.is_dir():
        raise NotARunDirError(f"{p}: not a directory (expected a run directory of aecore train)")
    if not rd.is_run():
        raise NotARunDirError(f"{p}: not a run directory (it has no {R.CONFIG} or {R.SUMMARY}; "
                              "expected a directory written by aecore train)")
    info = rd.info() or {}
    summary = rd.summary()
    if not info and summary is not None:  # config.json lost: the summary has the essentials
        info = {"config": {k: summary[k] for k in ("hidden", "epochs", "optimizer", "lr",
                                                   "batch_size") if k in summary},
                "params": summary.get("params"), "device": summary.get("device")}
    if "hidden" not in (info.get("config") or {}) and "hidden" not in (summary or {}):
        raise CheckpointError(f"{p / R.CONFIG}: has no config.hidden; not a config.json of aecore")
    run = Run(p, info, summary, rd.metrics())
    try:
        run.hidden, run.epochs_done, run.epochs
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: {R.CONFIG} / {R.SUMMARY} hold a bad value ({e})") from None
    recons = rd.reconstructions()
    if recons is not None:
        run.originals = recons.originals
        run.labels = None if recons.labels is None else recons.labels.astype(np.int64)
        run.recons = recons.by_epoch
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
            "train MSE": fmt_num(r.mse("train_loss")),
            "val MSE": fmt_num(r.mse("val_loss")),
            "test MSE": fmt_num(r.mse("test_loss")),
            "best epoch": "-" if r.s("best_epoch") is None else str(int(r.s("best_epoch"))),
            "best val MSE": fmt_num(r.mse("best_val_loss")),
            "wall time (s)": fmt_num(r.s("wall_time_s")),
            "device": str(r.device or "-"),
            "samples/s": fmt_num(r.median_samples_per_s),
            "status": r.status,
        })
    return rows


def format_table(runs_: list[Run]) -> str:
    """The results as a Markdown table with padded columns (it reads in a terminal too)."""
    rows = [[row[c] for c in TABLE_COLUMNS] for row in table_rows(runs_)]
    left = {"run", "optimizer", "device", "status", "epochs"}
    return markdown_table(TABLE_COLUMNS, rows, left=left)


# --- monotonicity ---------------------------------------------------------------------------------

def mse_trend(runs_: list[Run]) -> list[dict]:
    """Per optimizer (and schedule, where the runs have several) with complete runs at two or
    more hidden sizes: the (hidden, test MSE) points in order of h and whether the test MSE
    strictly decreases as h grows. Only the runs of the paper's model count (a comparison's
    other activations or losses are not it)."""
    runs_ = [r for r in runs_ if (variant_of(r.config, shared("optimizers")) or ("other",))[0]
             in (None, "optimizers")]
    several = len({saved_value(r.config, "lr_schedule") for r in runs_}) > 1

    def group(r):
        return f"{r.optimizer}, {saved_value(r.config, 'lr_schedule')}" if several else r.optimizer

    out = []
    for opt in dict.fromkeys(group(r) for r in runs_):
        pts = sorted((r.hidden, float(r.mse("test_loss"))) for r in runs_
                     if group(r) == opt and r.complete and r.mse("test_loss") is not None)
        hs = [h for h, _ in pts]
        if len(set(hs)) < 2:
            continue
        excluded = [r for r in runs_ if group(r) == opt and not (r.complete and
                                                                r.mse("test_loss") is not None)]
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


# --- the report -----------------------------------------------------------------------------------

def write_report(runs_: list[Run], out_dir, references: list[Run] | None = None) -> dict:
    """Draw the figures and write report.md into ``out_dir`` (created); ``references``: the
    runs that may set the time-to-quality targets (default: ``runs_``). Returns
    ``{"report": path, "figures": [paths], "skipped": [(file, why)]}``."""
    out = Path(out_dir)
    check_writable(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{out}: cannot create the report directory ({e.strerror})") from None
    made, skipped = [], []
    for name, fn, _ in (*FIGURES, *(f for figs in COMPARE_FIGURES.values() for f in figs)):
        p = out / name
        if fn(runs_, p):
            made.append(p)
        else:
            if p.exists():  # a figure from an earlier report that no longer applies
                p.unlink()
            skipped.append((name, why_not_drawn(name)))
    md = report_markdown(runs_, out, [p.name for p in made], skipped, references)
    atomic_write_bytes(out / REPORT_MD, md.encode("utf-8"))
    return {"report": out / REPORT_MD, "figures": made, "skipped": skipped}


def report_markdown(runs_: list[Run], out: Path, figures: list[str], skipped,
                    references: list[Run] | None = None) -> str:
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
    main_skipped = [(n, why) for n, why in skipped if n in {f[0] for f in FIGURES}]
    lines += [f"- {name} not drawn: {why}." for name, why in main_skipped]
    if main_skipped:
        lines.append("")
    lines += comparison_sections(runs_, figures)
    if references is not None or any(T.tracked(r) for r in runs_):
        lines += time_to_quality_section(runs_, runs_ if references is None else references)
    lines += ["## Runs", ""]
    for r in runs_:
        c = r.config
        rel = os.path.relpath(os.path.abspath(r.path), os.path.abspath(out))
        lines.append(f"- `{r.name}` ({rel}): hidden {r.hidden}, {r.optimizer} lr {fmt_num(r.lr)}, "
                     f"batch {c.get('batch_size', '-')}, {r.epochs} epochs, seed "
                     f"{c.get('seed', '-')}, slope {c.get('slope', '-')}, val size "
                     f"{c.get('val_size', '-')}"
                     + (f", first {c['limit']} training images" if c.get("limit") else "")
                     + "".join(f", {k.replace('_', ' ')} {c[k]}" for k in CHOICE_FIELDS if k in c)
                     + (", test MSE every epoch" if c.get("track_test") else "")
                     + f", device {r.device or '-'}")
    lines += ["", f"Generated by aecore {__version__} `aecore report` from the run directories' "
              "own files.", ""]
    return "\n".join(lines)
