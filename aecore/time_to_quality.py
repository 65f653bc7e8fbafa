"""Time to quality: how many epochs and seconds of training a run needs to first reach a target
test MSE, the one constant-rate Adam reaches in its full run (the paper's 200 epochs).

``first_reach(history, target)`` reads a run's per-epoch history (metrics.csv rows, which hold
``test_loss`` per epoch when the run was trained with ``track_test``): the first epoch whose
test MSE is at or below ``target``, and the training seconds up to and including it (the sum of
the rows' ``seconds``: the epochs' training time, without the evaluations). ``is_reference``
picks the runs that set the targets (complete, ``REFERENCE``: the paper's model trained by Adam
at the constant rate 1e-3 without warm-up; stated here, not read from the defaults, which since
2026-12-02 are the onecycle schedule); ``reference_targets`` takes, per hidden size, the one
with the most epochs; ``rows`` sets every run with a per-epoch test MSE against its hidden
size's target.

Works on ``report.Run`` objects (``hidden``, ``config``, ``metrics``, ``complete``,
``mse(key)``, ``mse_series(split)``), so it needs no dataset and no model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import saved_value

# The reference's settings (config fields; absent ones read as config.saved_value says).
REFERENCE = {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant", "warmup_epochs": 0,
             "activation": "leaky_relu", "loss": "mse"}


@dataclass(frozen=True)
class Reach:
    epoch: int  # the first epoch at or below the target
    seconds: float  # training seconds of epochs 1 .. epoch
    value: float  # the test MSE at that epoch


def first_reach(history: list[dict], target: float, key: str = "test_loss") -> Reach | None:
    """The first row of ``history`` (in epoch order) whose ``key`` is <= ``target``, with the
    cumulated ``seconds`` up to it; None when no row reaches it (or none holds ``key``)."""
    seconds = 0.0
    for row in sorted(history, key=lambda r: r["epoch"]):
        seconds += float(row["seconds"])
        v = row.get(key)
        if v is not None and float(v) <= target:
            return Reach(int(row["epoch"]), seconds, float(v))
    return None


def is_reference(run) -> bool:
    """A complete run with ``REFERENCE``'s settings (LeakyReLU, MSE, Adam at the constant rate
    1e-3, no warm-up) and a test MSE."""
    c = run.config
    return (run.complete and all(saved_value(c, k) == v for k, v in REFERENCE.items())
            and run.mse("test_loss") is not None)


def reference_targets(runs_) -> dict[int, object]:
    """hidden size -> the reference run (``is_reference``) with the most epochs there."""
    out = {}
    for r in runs_:
        if is_reference(r) and (r.hidden not in out or r.epochs_done > out[r.hidden].epochs_done):
            out[r.hidden] = r
    return dict(sorted(out.items()))


def tracked(run) -> bool:
    """Whether the run holds a test MSE for every epoch."""
    s = run.mse_series("test")
    return bool(s) and all(v is not None for v in s)


def rows(runs_, references) -> list[dict]:
    """One dict per run with a per-epoch test MSE whose hidden size has a reference run:
    run, hidden, target (the reference's test MSE), reference, its epochs and training seconds,
    reach (``Reach`` or None), the run's last epoch and test MSE."""
    targets = reference_targets(references)
    out = []
    for r in runs_:
        ref = targets.get(r.hidden)
        if ref is None or not tracked(r):
            continue
        history = [{"epoch": m["epoch"], "seconds": m["seconds"], "test_loss": v}
                   for m, v in zip(r.metrics, r.mse_series("test"))]
        target = float(ref.mse("test_loss"))
        out.append({"run": r, "hidden": r.hidden, "target": target, "reference": ref,
                    "reference_epochs": ref.epochs_done,
                    "reference_seconds": sum(float(m["seconds"]) for m in ref.metrics) or None,
                    "reach": first_reach(history, target), "epochs": r.epochs_done,
                    "final": history[-1]["test_loss"]})
    out.sort(key=lambda x: (x["hidden"], str(x["run"].path)))
    return out
