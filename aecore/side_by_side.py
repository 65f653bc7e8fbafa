"""Training several planned runs: one after another, or ``jobs`` at once, each in its own host
thread, under one Ctrl-C / SIGTERM handler. Used by ``aecore train`` (a list of hidden sizes,
or ``--resume``) and ``aecore study``.

On a GPU each run's engine has its own CUDA stream, so the runs' kernels share the GPU: at the
paper's sizes one run's kernels leave most of it idle (a step of a few small launches,
latency-bound). With ``cuda_path`` "persistent" the runs that can share a launch (same batch
size, data and chunks) are a group trained by one persistent kernel launch per chunk
(aecore/engine_persistent.py); every run then trains in its own thread, whatever ``jobs``. Each
run's results are those of training it alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

from . import cuda_path, runs
from .config import TrainConfig
from .errors import DivergenceError, TrainingInterrupted
from .stop import StopSignals
from .trainer import CHUNK_SAMPLES
from .trainer import train as train_run


@dataclass
class PlannedRun:
    config: TrainConfig
    dir: Path
    action: str = "train"  # train | resume | skip
    epochs_done: int = 0
    status: str = "new"  # new | complete | interrupted | running | diverged | started
    label: str | None = None  # starts its progress lines (default h<hidden>)

    @property
    def epochs_left(self) -> int:
        return 0 if self.action == "skip" else max(self.config.epochs - self.epochs_done, 0)


@dataclass
class Outcome:
    """How one run ended: ``status`` complete | diverged | interrupted | failed | not started;
    ``summary`` (complete) or ``error`` (the exception otherwise)."""

    run: PlannedRun
    status: str
    summary: dict | None = None
    error: BaseException | None = None


def train_runs(todo: list[PlannedRun], train_one, jobs: int = 1,
               signals: StopSignals | None = None, not_started=None) -> list[Outcome]:
    """Run ``train_one(run, signals)`` for each of ``todo``, ``jobs`` at a time, and return one
    Outcome per run, in order.

    ``signals`` (installed by the caller in the main thread; if None, one is installed here for
    the duration) is shared by all runs. A diverged run is reported and the others go on.
    Ctrl-C / SIGTERM, or a run failing with any other error, stops them all: every run in
    progress saves a checkpoint and stops after its current chunk (``status`` interrupted), the
    runs not begun are not started (``not_started(run)`` is called for each), and training the
    same plan again resumes them all. With ``jobs`` > 1 the runs train in worker threads while
    the main thread waits, so the signals still reach it."""
    if signals is None:
        with StopSignals() as installed:
            return train_runs(todo, train_one, jobs, installed, not_started)

    def one(p: PlannedRun) -> Outcome:
        if signals.received is not None:
            if not_started is not None:
                not_started(p)
            return Outcome(p, "not started")
        try:
            return Outcome(p, "complete", summary=train_one(p, signals))
        except DivergenceError as e:
            return Outcome(p, "diverged", error=e)
        except TrainingInterrupted as e:
            return Outcome(p, "interrupted", error=e)
        except Exception as e:  # noqa: BLE001 -- the others stop and save first; re-raised later
            signals.stop(f"the failure of run {p.dir.name}")
            return Outcome(p, "failed", error=e)

    if jobs <= 1 or len(todo) <= 1:
        return [one(p) for p in todo]
    with cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="aecore-run") as pool:
        futures = [pool.submit(one, p) for p in todo]
        pending = set(futures)
        while pending:  # short waits: the main thread stays free to run the signal handler
            _, pending = cf.wait(pending, timeout=0.2)
        return [f.result() for f in futures]


def persistent_groups(todo: list[PlannedRun], chunk_samples: int) -> dict:
    """{run dir: RunGroup} of the runs on the persistent CUDA path, grouped by what must be
    equal to share a launch (engine_persistent.group_key); a resumed run by its checkpoint's
    position and chunk. Empty when no run takes that path."""
    on = [p for p in todo if p.config.device == "cuda" and cuda_path.resolve(p.config) ==
          "persistent"]
    if not on:
        return {}
    from .devices import make_engine
    from .engine_persistent import RunGroup, group_key

    keys = {}
    for p in on:
        c = p.config
        position, chunk = 0, max(1, chunk_samples // c.batch_size) * c.batch_size
        if p.action == "resume":
            try:
                st = runs.RunDir(p.dir).checkpoint().state
                position, chunk = st["position"], st["chunk"]
            except Exception:  # noqa: BLE001 -- the trainer reports a bad checkpoint itself
                position = chunk = -1
        keys.setdefault(group_key(c, position, chunk), []).append(p.dir)
    out = {}
    for dirs in keys.values():
        group = RunGroup(dirs, fallback=make_engine)  # a member that falls back to the CPU
        out.update({d: group for d in dirs})
    return out


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_side_by_side(todo: list[PlannedRun], data, jobs: int = 1, on_start=None,
                       echo=_stderr, **options) -> list[Outcome]:
    """Train (``action`` "resume": continue) the planned runs with ``aecore.trainer.train`` on
    ``data``, ``jobs`` at a time (``train_runs``). ``options`` go to every run's ``train``
    (overwrite, fallback_cpu, checkpoint_every...). ``on_start(run, n)`` is called as the n-th
    run (from 1) begins; ``echo(line)`` prints this function's notices.

    A run that failed is re-raised once every other run has saved and stopped; otherwise the
    outcomes are returned (complete, diverged, interrupted, not started)."""
    groups = persistent_groups(todo, options.get("chunk_samples", CHUNK_SAMPLES))
    if groups:  # a group's members train together: one thread each
        jobs = len(todo)
    jobs = max(1, min(jobs, len(todo)))
    if jobs > 1 and todo[0].config.device == "cpu":
        echo(f"notice: --jobs {jobs} on the CPU: the runs compete for the cores that each run's "
             "matrix products already use (it helps on a GPU)")
    started = itertools.count(1)  # next() is atomic under the GIL: one number per run

    def train_one(p: PlannedRun, signals: StopSignals) -> dict:
        group = groups.get(p.dir)
        extra = {} if group is None else {"engine_factory": group.engine_factory(p.dir)}
        try:
            if on_start is not None:
                on_start(p, next(started))
            return train_run(p.config, p.dir, data, resume=p.action == "resume",
                             signals=signals if group is None else group.signals_for(signals),
                             label=p.label, progress_bar=jobs == 1, **extra, **options)
        finally:
            if group is not None:
                group.leave(p.dir)

    def leave(p: PlannedRun):  # a group's member that will not train: the others go on
        if p.dir in groups:
            groups[p.dir].leave(p.dir)

    outcomes = train_runs(todo, train_one, jobs, not_started=leave)  # one Ctrl-C handler
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and len(outcomes) > 1:  # a single run's error says it all
        stopped = [o.run.dir.name for o in outcomes if o.status in ("interrupted", "not started")]
        echo(f"{failed[0].run.dir.name} failed"
             + (f"; stopped {', '.join(stopped)} (checkpoints saved where begun)" if stopped else ""))
    if failed:
        raise failed[0].error
    return outcomes
