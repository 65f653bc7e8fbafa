"""The study: the paper's hidden sizes with the default settings, comparisons of optimizers,
activations, losses or learning-rate schedules at one hidden size, then the report. Used by
``aecore study``.

``plan_study`` lists the runs (one per hidden size with TrainConfig's defaults, plus one per
compared variant at ``compare_hidden``, ``aecore.comparisons``; the default run at that size is
shared). ``inspect_run`` decides, from a run directory's own files, whether a run is to be
trained, resumed (interrupted, or complete with fewer epochs than asked) or skipped (complete;
diverged). ``estimate`` times a short warm-up of each run's model on the chosen device through
the engine and extrapolates to the epochs left. Training the plan is
``aecore.side_by_side.train_side_by_side``, the code path of ``aecore train``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from . import comparisons as C
from . import cuda_path, devices, runs
from .config import TrainConfig
from .errors import CheckpointError
from .model import init_params
from .side_by_side import PlannedRun
from .trainer import CHECKPOINT_EVERY

WARMUP_BATCHES = 200  # timed batches per run for the estimate (after a few untimed ones)
EVAL_SAMPLES = 2000  # validation images timed for the per-epoch evaluation cost
COST_FIELDS = ("hidden", "optimizer", "batch_size", "activation", "loss")  # the timing's key


def plan_study(hidden, compare, compare_hidden: int, out, epochs: int, device: str = "cpu",
               limit=None, **settings) -> list[PlannedRun]:
    """The study's runs, each with its TrainConfig and its run directory under ``out``: one per
    hidden size with TrainConfig's defaults, then per compared kind one per variant at
    ``compare_hidden`` (``compare``: {kind: variants}, see ``aecore.comparisons``; a sequence
    of optimizer names means {"optimizers": names}). A run the plan holds already (the default
    run at ``compare_hidden`` is every comparison's default variant) is planned once. Only
    hidden size, the compared field, epochs, device, limit and ``settings`` (e.g. track_test)
    are set; everything else, the learning rate included, is TrainConfig's default (read now),
    as ``aecore train`` would use it. Names: ``comparisons.config_run_name``; a run that a study
    made before onecycle became the default (2026-12-02) holds under its name of then (a
    constant-rate run at ``h128-adam``) is continued there, unless another planned run has
    that name now."""
    common = dict(epochs=epochs, device=device, limit=limit, **settings)
    wanted = [TrainConfig(hidden=h, **common) for h in hidden]
    for kind, variants in C.as_comparisons(compare).items():
        field = C.KINDS[kind].field
        if tuple(variants) == (common.get(field, C.defaults()[field]),):
            continue  # the study's own choice alone: nothing to compare
        wanted += C.variant_configs(kind, variants, hidden=compare_hidden, **common)
    out = Path(out)
    wanted = list(dict.fromkeys(wanted))  # a run the plan holds already is planned once
    names = [C.config_run_name(c) for c in wanted]
    plan = []
    for c, name in zip(wanted, names):
        d = out / name
        old = out / C.config_run_name(c, before_onecycle=True)
        if old.name not in names and not runs.RunDir(d).is_run() and _holds(old, c.lr_schedule):
            d = old
        plan.append(PlannedRun(c, d, label=d.name))
    return plan


def _holds(d: Path, lr_schedule: str) -> bool:
    """Whether ``d`` holds a run (its config.json) trained with ``lr_schedule``."""
    try:
        return runs.RunDir(d).config().lr_schedule == lr_schedule
    except CheckpointError:
        return False


def inspect_run(p: PlannedRun) -> PlannedRun:
    """Set ``p.action`` from what ``p.dir`` holds. A run there with other settings (or more
    epochs than asked) is a CheckpointError naming the directory and the difference."""
    d = p.dir
    if d.exists() and not d.is_dir():
        raise CheckpointError(f"{d}: exists and is not a directory")
    runs.check_not_busy(d)
    rd = runs.RunDir(d)
    found = rd.existing_files() if d.is_dir() else []
    if not found:
        p.action, p.status, p.epochs_done = "train", "new", 0
        return p
    has_config = rd.file(runs.CONFIG).is_file()
    if has_config:
        saved = rd.config()
        if saved.lr_schedule == "constant" and p.config.lr_schedule == C.defaults()["lr_schedule"]:
            raise CheckpointError(  # most likely a study made while constant was the default
                f"{d} holds a constant-rate run, not the {p.config.lr_schedule} schedule this "
                f"study asks (the default since 2026-12-02); pass --lr-schedule constant to "
                f"continue that study, or choose another --out")
        rd.check_same_settings(p.config, saved, " as this study asks (made with other "
                               "settings); remove it or choose another --out")
    summary = rd.summary()
    has_ckpt = rd.file(runs.CHECKPOINT).is_file()
    status = (summary or {}).get("status", "started")
    done = int((summary or {}).get("epochs_done") or 0)
    p.status, p.epochs_done = status, done
    if not has_config and summary is None:
        raise CheckpointError(f"{d} holds files of a run ({', '.join(found)}) but no {runs.CONFIG} "
                              f"or {runs.SUMMARY}; remove it or choose another --out")
    if status == "diverged":
        p.action = "skip"  # deterministic: it would diverge again; the report shows it
    elif status == "complete":
        if done > p.config.epochs:
            raise CheckpointError(f"{d} holds a complete run of {done} epochs, more than the "
                                  f"{p.config.epochs} asked; pass --epochs {done} or another --out")
        sched = p.config.lr_schedule
        if done < p.config.epochs and sched != "constant":  # runs.RunDir.resume_checkpoint
            raise CheckpointError(f"{d} holds a complete run of {done} epochs whose {sched} "
                                  f"learning-rate schedule cannot be extended to "
                                  f"{p.config.epochs}; pass --epochs {done} or another --out")
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
    params = init_params(config.hidden, config.seed, config.slope, np.shape(train_images)[1])
    eng = devices.make_engine(device, params,
                              config.optim(), b, config.slope, cpu_split=config.cpu_split,
                              cpu_team=config.cpu_team, cuda_path=cuda_path.resolve(config),
                              activation=config.activation, loss=config.loss,
                              cpu_gemm=config.cpu_gemm)
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
            scratch = runs.RunDir(tmp)
            scratch.save_model(params, config.slope, config.activation, config.loss)
            scratch.save_checkpoint(params, eng.get_opt_state(), {"estimate": True})
            t_files = time.perf_counter() - t0
    return t_train, t_eval, t_files


def estimate(plan: list[PlannedRun], data, device: str, warm_batches: int = WARMUP_BATCHES,
             scratch_dir=None, timer=time_per_sample,
             checkpoint_every: float = CHECKPOINT_EVERY) -> dict[Path, float]:
    """Seconds each run still needs: its epochs left x (training set x time per sample +
    validation set, and with track_test the test set, x evaluation time per sample), the saves
    of its files (one per ``checkpoint_every`` seconds, at most one per epoch, and the last),
    plus one test evaluation."""
    out, cache = {}, {}
    for p in plan:
        if p.epochs_left <= 0:
            continue
        c = p.config
        train = data.train.images if c.limit is None else data.train.images[: c.limit]
        key = tuple(getattr(c, f, None) for f in COST_FIELDS)
        if key not in cache:
            cache[key] = timer(c, train, data.val.images, device, warm_batches, scratch_dir)
        t_tr, t_ev, t_files = cache[key]
        n_val, n_test = len(data.val.images), len(data.test.images)
        evaluated = n_val + (n_test if c.track_test else 0)
        compute = p.epochs_left * (len(train) * t_tr + evaluated * t_ev)
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
