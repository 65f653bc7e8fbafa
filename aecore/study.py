"""The study: the paper's hidden sizes with the default settings, an optimizer comparison at one
hidden size, then the report. Used by ``aecore study``.

``plan_study`` lists the runs (one per hidden size with TrainConfig's default optimizer, plus
one per other optimizer at ``compare_hidden``; the default optimizer's run at that size is
shared). ``inspect_run`` decides, from a run directory's own files, whether a run is to be
trained, resumed (interrupted, or complete with fewer epochs than asked) or skipped (complete;
diverged). ``estimate`` times a short warm-up of each run's model on the chosen device through
the engine and extrapolates to the epochs left. Training itself is ``aecore.trainer.train``,
the code path of ``aecore train``; ``train_runs`` trains the runs one after another or, with
``jobs`` > 1, that many at once, each in its own host thread. On a GPU each run's engine has
its own CUDA stream, so the runs' kernels share the GPU: at the paper's sizes one run's
kernels leave most of it idle (a step of a few small launches, latency-bound).
"""

from __future__ import annotations

import concurrent.futures as cf
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import devices, runs
from .checkpoint import save_checkpoint, save_model
from .errors import CheckpointError, DivergenceError
from .model import init_params
from .trainer import CHECKPOINT_EVERY, RESUME_FIXED, StopSignals, TrainConfig, TrainingInterrupted

WARMUP_BATCHES = 200  # timed batches per run for the estimate (after a few untimed ones)
EVAL_SAMPLES = 2000  # validation images timed for the per-epoch evaluation cost

@dataclass
class PlannedRun:
    config: TrainConfig
    dir: Path
    action: str = "train"  # train | resume | skip
    epochs_done: int = 0
    status: str = "new"  # new | complete | interrupted | running | diverged | started

    @property
    def epochs_left(self) -> int:
        return 0 if self.action == "skip" else max(self.config.epochs - self.epochs_done, 0)


def plan_study(hidden, optimizers, compare_hidden: int, out, epochs: int, device: str = "cpu",
               limit=None) -> list[PlannedRun]:
    """The study's runs, each with its TrainConfig and its run directory under ``out``. Only
    hidden size, optimizer, epochs, device and limit are set; everything else, the learning
    rate included, is TrainConfig's default (read now), as ``aecore train`` would use it."""
    default_opt = TrainConfig().optimizer
    wanted = [(h, default_opt) for h in hidden]
    if tuple(optimizers) != (default_opt,):
        wanted += [(compare_hidden, o) for o in optimizers]
    out = Path(out)
    plan, seen = [], set()
    for h, opt in wanted:
        if (h, opt) in seen:
            continue
        seen.add((h, opt))
        c = TrainConfig(hidden=h, optimizer=opt, epochs=epochs, device=device, limit=limit)
        plan.append(PlannedRun(c, out / runs.run_name(h, opt)))
    return plan


def inspect_run(p: PlannedRun) -> PlannedRun:
    """Set ``p.action`` from what ``p.dir`` holds. A run there with other settings (or more
    epochs than asked) is a CheckpointError naming the directory and the difference."""
    d = p.dir
    if d.exists() and not d.is_dir():
        raise CheckpointError(f"{d}: exists and is not a directory")
    runs.check_not_busy(d)
    found = runs.existing_run_files(d) if d.is_dir() else []
    if not found:
        p.action, p.status, p.epochs_done = "train", "new", 0
        return p
    saved = None
    if (d / runs.CONFIG).is_file():
        info = runs.read_json(d / runs.CONFIG)
        try:
            saved = TrainConfig.from_dict(info["config"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{d / runs.CONFIG}: no usable config ({e})") from None
        for name in RESUME_FIXED:
            have, want = getattr(saved, name), getattr(p.config, name)
            if have != want:
                raise CheckpointError(
                    f"{d} holds a run with {name}={have!r}, not {want!r} as this study asks "
                    "(made with other settings); remove it or choose another --out")
    summary = runs.read_json(d / runs.SUMMARY) if (d / runs.SUMMARY).is_file() else None
    has_ckpt = (d / runs.CHECKPOINT).is_file()
    status = (summary or {}).get("status", "started")
    done = int((summary or {}).get("epochs_done") or 0)
    p.status, p.epochs_done = status, done
    if saved is None and summary is None:
        raise CheckpointError(f"{d} holds files of a run ({', '.join(found)}) but no {runs.CONFIG} "
                              f"or {runs.SUMMARY}; remove it or choose another --out")
    if status == "diverged":
        p.action = "skip"  # deterministic: it would diverge again; the report shows it
    elif status == "complete":
        if done > p.config.epochs:
            raise CheckpointError(f"{d} holds a complete run of {done} epochs, more than the "
                                  f"{p.config.epochs} asked; pass --epochs {done} or another --out")
        p.action = "skip" if done == p.config.epochs else "resume"
    elif has_ckpt:
        p.action = "resume"
    else:
        raise CheckpointError(f"{d} holds an unfinished run ({status}) without "
                              f"{runs.CHECKPOINT}; remove it or choose another --out")
    if p.action == "resume" and not has_ckpt:
        raise CheckpointError(f"{d}: cannot extend the run: {runs.CHECKPOINT} is missing")
    return p


# --- the estimate ---------------------------------------------------------------------------------

def time_per_sample(config: TrainConfig, train_images, val_images, device: str,
                    warm_batches: int = WARMUP_BATCHES,
                    scratch_dir=None) -> tuple[float, float, float]:
    """Seconds per training sample, per evaluated sample, and per save of the files the
    trainer writes (model + checkpoint, written into a temporary directory in ``scratch_dir``),
    for ``config``'s model on ``device``: a short warm-up through the
    engine, with a fresh model; no run is touched."""
    b = config.batch_size
    n = min(len(train_images), warm_batches * b)
    eng = devices.make_engine(device, init_params(config.hidden, config.seed, config.slope),
                              config.optim(), b, config.slope, graphs=config.cuda_graphs)
    x = eng.put(np.ascontiguousarray(train_images[:n]))
    perm = np.arange(n, dtype=np.int64)
    first = min(n, 4 * b)  # compile / first-call costs stay out of the timing
    eng.train_steps(x, perm, 0, first)
    eng.take_loss_sum()
    reps = 1 if n >= 50 * b else max(1, (50 * b) // n)  # tiny training sets: time a few passes
    t0 = time.perf_counter()
    for _ in range(reps):
        eng.train_steps(x, perm, 0, n)
        eng.take_loss_sum()  # a device->host copy: waits for the GPU
    t_train = (time.perf_counter() - t0) / (reps * n)
    nv = min(len(val_images), EVAL_SAMPLES)
    v = eng.put(np.ascontiguousarray(val_images[:nv]))
    eng.evaluate(v)
    t0 = time.perf_counter()
    eng.evaluate(v)
    t_eval = (time.perf_counter() - t0) / nv
    t_files = 0.0
    if scratch_dir is not None:
        with tempfile.TemporaryDirectory(prefix=".aecore-estimate.", dir=scratch_dir) as tmp:
            t0 = time.perf_counter()
            params = eng.get_params()
            save_model(Path(tmp) / runs.MODEL, params, config.slope)
            save_checkpoint(Path(tmp) / runs.CHECKPOINT, params, eng.get_opt_state(),
                            {"estimate": True})
            t_files = time.perf_counter() - t0
    return t_train, t_eval, t_files


def estimate(plan: list[PlannedRun], data, device: str, warm_batches: int = WARMUP_BATCHES,
             scratch_dir=None, timer=time_per_sample,
             checkpoint_every: float = CHECKPOINT_EVERY) -> dict[Path, float]:
    """Seconds each run still needs: its epochs left x (training set x time per sample +
    validation set x evaluation time per sample), the saves of its files (one per
    ``checkpoint_every`` seconds, at most one per epoch, and the last), plus one test
    evaluation."""
    out, cache = {}, {}
    for p in plan:
        if p.epochs_left <= 0:
            continue
        c = p.config
        train = data.train.images if c.limit is None else data.train.images[: c.limit]
        key = (c.hidden, c.optimizer, c.batch_size)
        if key not in cache:
            cache[key] = timer(c, train, data.val.images, device, warm_batches, scratch_dir)
        t_tr, t_ev, t_files = cache[key]
        n_val, n_test = len(data.val.images), len(data.test.images)
        compute = p.epochs_left * (len(train) * t_tr + n_val * t_ev)
        saves = min(p.epochs_left, 1 + compute / checkpoint_every) if checkpoint_every > 0 \
            else p.epochs_left
        out[p.dir] = compute + saves * t_files + n_test * t_ev
    return out


def fmt_duration(seconds: float) -> str:
    s = max(float(seconds), 0.0)
    if s < 90:
        return f"{max(1, round(s))} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    return f"{s / 3600:.1f} h"


# --- training the plan ----------------------------------------------------------------------------

@dataclass
class Outcome:
    """How one run of ``train_runs`` ended: ``status`` complete | diverged | interrupted |
    failed | not started; ``summary`` (complete) or ``error`` (the exception otherwise)."""

    run: PlannedRun
    status: str
    summary: dict | None = None
    error: BaseException | None = None


def train_runs(todo: list[PlannedRun], train_one, jobs: int = 1,
               signals: StopSignals | None = None) -> list[Outcome]:
    """Train ``todo`` with ``train_one(run, signals)`` (``aecore.trainer.train`` with the
    study's settings), ``jobs`` runs at a time, and return one Outcome per run, in order.

    ``signals`` (installed by the caller in the main thread; if None, one is installed here for
    the duration) is shared by all runs. A diverged run is reported and the others go on. Ctrl-C / SIGTERM, or a run
    failing with any other error, stops the study: every run in progress saves a checkpoint and
    stops after its current chunk (``status`` interrupted), the runs not begun are not started,
    and rerunning the study resumes them all. With ``jobs`` > 1 the runs train in worker
    threads while the main thread waits, so the signals still reach it."""
    if signals is None:
        with StopSignals() as installed:
            return train_runs(todo, train_one, jobs, installed)

    def one(p: PlannedRun) -> Outcome:
        if signals.received is not None:
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
