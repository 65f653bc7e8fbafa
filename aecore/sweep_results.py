"""A sweep's results: one TrialResult per Tune trial (from what each reported), the table sorted
by validation loss, the CSV and the figure (validation loss against epoch, the best highlighted).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import tables
from .atomic import atomic_write_text

CSV_FIELDS = ("rank", "trial", "hidden", "optimizer", "lr", "batch_size", "seed", "epochs_done",
              "epochs", "val_loss", "best_val_loss", "best_epoch", "train_loss", "status", "node",
              "run_dir")


@dataclass
class TrialResult:
    name: str
    config: dict  # the TrainConfig of the trial (as a dict)
    status: str  # complete | stopped early | diverged | error | interrupted | not started
    epochs: list = field(default_factory=list)  # epoch numbers reported, in order
    val: list = field(default_factory=list)  # validation loss per reported epoch
    train: list = field(default_factory=list)
    node: str = ""
    run_dir: str = ""
    error: str = ""

    @property
    def val_loss(self) -> float:
        finite = [v for v in self.val if math.isfinite(v)]
        return self.val[-1] if self.val and finite else math.inf

    @property
    def best(self) -> tuple[int | None, float]:
        pairs = [(v, e) for e, v in zip(self.epochs, self.val) if math.isfinite(v)]
        if not pairs:
            return None, math.inf
        v, e = min(pairs)
        return e, v


def _history(df) -> tuple[list, list, list, str, str, bool]:
    """Per epoch (the last report of each, so a resumed trial's repeats count once)."""
    by_epoch, node, run_dir, diverged = {}, "", "", False
    if df is None or "epoch" not in getattr(df, "columns", ()):
        return [], [], [], node, run_dir, diverged
    for rec in df.to_dict("records"):
        e = rec.get("epoch")
        if e is None or (isinstance(e, float) and math.isnan(e)):
            continue
        if rec.get("diverged") in (True,):  # pandas: NaN where a row lacks the key
            diverged = True
            continue
        by_epoch[int(e)] = (float(rec["val_loss"]), float(rec.get("train_loss", math.nan)))
        node = rec.get("node") or node
        run_dir = rec.get("run_dir") or run_dir
    eps = sorted(by_epoch)
    return (eps, [by_epoch[e][0] for e in eps], [by_epoch[e][1] for e in eps], str(node),
            str(run_dir), diverged)


def collect(grid, epochs: int, describe, saved_status: dict) -> tuple[list[TrialResult], bool]:
    """TrialResults from Tune's ResultGrid, and whether the sweep was left unfinished
    (interrupted: some trials pending or running). ``describe(trial)``: (its run-dir name,
    its TrainConfig as a dict); ``saved_status``: trial id -> status in Tune's saved state
    (after Ctrl-C the trials in memory all read TERMINATED; the saved state says which ran on)."""
    results, unfinished = [], False
    for trial, res in zip(grid._experiment_analysis.trials, grid):
        eps, val, tr, node, run_dir, diverged = _history(res.metrics_dataframe)
        status = saved_status.get(trial.trial_id, trial.status)
        if status == "ERROR":
            status = "error"
        elif diverged:
            status = "diverged"
        elif eps and eps[-1] >= epochs:
            status = "complete"
        elif status == "TERMINATED":
            status = "stopped early"
        else:
            unfinished = True
            status = "not started" if status == "PENDING" and not eps else "interrupted"
        name, config = describe(trial)
        name = Path(run_dir).name if run_dir else name
        err = str(res.error).strip().splitlines()[-1] if res.error is not None else ""
        results.append(TrialResult(name, config, status,
                                   eps, val, tr, node, run_dir, err))
    results.sort(key=lambda r: (r.val_loss, r.name))
    return results, unfinished


def _g(v, spec):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def rows(results: list[TrialResult], epochs: int) -> list[dict]:
    out = []
    for i, r in enumerate(results, 1):
        c = r.config
        be, bv = r.best
        out.append({"rank": i, "trial": r.name, "hidden": c.get("hidden"),
                    "optimizer": c.get("optimizer"), "lr": c.get("lr"),
                    "batch_size": c.get("batch_size"), "seed": c.get("seed"),
                    "epochs_done": r.epochs[-1] if r.epochs else 0, "epochs": epochs,
                    "val_loss": r.val_loss if r.val else None, "best_val_loss": bv if be else None,
                    "best_epoch": be, "train_loss": r.train[-1] if r.train else None,
                    "status": r.status, "node": r.node, "run_dir": r.run_dir})
    return out


def format_table(results: list[TrialResult], epochs: int) -> str:
    head = ("#", "trial", "epochs", "val MSE", "best val", "best ep", "status")
    body = [(str(d["rank"]), d["trial"], f"{d['epochs_done']}/{epochs}", _g(d["val_loss"], ".6f"),
             _g(d["best_val_loss"], ".6f"), _g(d["best_epoch"], "d"), d["status"])
            for d in rows(results, epochs)]
    text = tables.format_table(head, body, left=("trial", "status"))
    return "\n".join(line.rstrip() for line in text.splitlines())


def best_line(results: list[TrialResult]) -> str:
    ok = [r for r in results if r.val and math.isfinite(r.val_loss)]
    if not ok:
        return "no trial reported a validation loss"
    b = ok[0]
    c = b.config
    return (f"best: {b.name} (hidden {c.get('hidden')}, {c.get('optimizer')} lr {c.get('lr'):g}, "
            f"batch {c.get('batch_size')}, seed {c.get('seed')}): val MSE {b.val_loss:.6f} "
            f"after {b.epochs[-1]} epochs; run directory {b.run_dir}")


def write_csv(results: list[TrialResult], epochs: int, path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for d in rows(results, epochs):
        w.writerow({k: ("" if v is None else v) for k, v in d.items()})
    atomic_write_text(path, buf.getvalue())


def write_figure(results: list[TrialResult], path: Path) -> None:
    """Validation loss against epoch for every trial (log y); the best trial drawn thick and
    named, the others thin and grey-blue; early-stopped trials end where they were stopped."""
    from .figures import _loss_axes, _save, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = [r for r in results if any(math.isfinite(v) for v in r.val)]
    best = drawn[0] if drawn else None
    for r in reversed(drawn):
        pts = [(e, v) for e, v in zip(r.epochs, r.val) if math.isfinite(v)]
        xs, ys = zip(*pts)
        if r is best:
            ax.plot(xs, ys, color="C3", lw=2.6, marker="o", ms=4, zorder=3,
                    label=f"best: {r.name} ({r.val_loss:.5f})")
        else:
            ax.plot(xs, ys, color="C0", lw=1, alpha=0.55, marker="." if len(xs) < 30 else None)
    if drawn:
        ax.plot([], [], color="C0", lw=1, alpha=0.55, label=f"the other {len(drawn) - 1} trials")
        ax.legend(loc="upper right", fontsize=8)
        _loss_axes(ax, "validation MSE per pixel", f"sweep: validation loss of {len(drawn)} trials")
    fig.tight_layout()
    _save(fig, path)
