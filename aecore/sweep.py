"""Hyperparameter sweeps on Ray Tune (``aecore sweep``; needs the ``aecore[sweep]`` extra).

The search space is a few of TrainConfig's fields (``SWEPT``), each a list of values (a grid
axis) or a range ``LO:HI`` (sampled: the learning rate, hidden size and batch size on a log
scale, the seed uniformly). Each trial is ``aecore.trainer.train`` run in-process in a Ray
worker: it writes a normal run directory under the sweep's ``out`` (named from its config,
``trial_name``) and reports each epoch's metrics row to Tune (``on_epoch``), so a scheduler
(ASHA) can stop it early. The dataset goes into Ray's object store once
(``tune.with_parameters``); each node fetches it once, not each trial from disk.

Tune's own state lives in ``out/tune``. Ctrl-C ends the sweep (Tune saves its state; each
running trial's run directory holds its last finished epoch, because sweeps save every
epoch by default); running the same sweep again restores Tune's state and each unfinished
trial resumes its run directory with aecore's exact resume. Ray is imported only here, lazily.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from . import runs
from .atomic import read_json, write_json
from .config import MAX_HIDDEN, TrainConfig, default_lr
from .errors import AecoreError, CheckpointError, DivergenceError

INSTALL_HINT = 'aecore sweep needs Ray Tune: pip install "aecore[sweep]" (or pip install "ray[tune]")'
SWEPT = ("hidden", "lr", "optimizer", "batch_size", "seed", "lr_schedule")
CHOICES = ("optimizer", "lr_schedule")  # named choices: comma lists only
LOG_SCALE = ("hidden", "lr", "batch_size")  # sampled on a log scale; the seed uniformly
EXPERIMENT = "tune"  # Tune's state: out/tune
SPEC_FILE = "sweep.json"  # the sweep's definition, to refuse continuing with another one
RESULTS_CSV = "sweep_results.csv"
FIGURE = "sweep_val_loss.png"


def ray_available() -> bool:
    try:
        import ray.tune  # noqa: F401
    except ImportError:
        return False
    return True


# --- the search space -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Axis:
    """One swept field: ``values`` (a grid axis, or one fixed value) or a range ``low``..``high``."""

    name: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None


def _number(name: str, text: str):
    kind = float if name == "lr" else int
    try:
        v = kind(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {'a number' if kind is float else 'an integer'}") from None
    if kind is float and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{text} must be a finite number > 0")
    lo = {"hidden": 1, "batch_size": 1, "seed": 0}.get(name)
    if lo is not None and v < lo:
        raise ValueError(f"{v} must be >= {lo}")
    if name == "hidden" and v > MAX_HIDDEN:
        raise ValueError(f"{v} is out of range: hidden sizes go from 1 to {MAX_HIDDEN}")
    return v


def parse_axis(name: str, text: str) -> Axis:
    """``"64,128"`` -> a grid axis; ``"1e-4:1e-2"`` -> a range (numbers only). ValueError names
    what is wrong."""
    text = str(text).strip()
    if ":" in text:
        if name in CHOICES:
            raise ValueError(f"{name.replace('_', ' ')}s are a comma list, not a range")
        lo, _, hi = text.partition(":")
        low, high = _number(name, lo.strip()), _number(name, hi.strip())
        if not low < high:
            raise ValueError(f"the range {text} must go from low to high")
        return Axis(name, low=low, high=high)
    parts = [p.strip() for p in text.split(",")]
    if name in CHOICES:
        from .optim import OPTIMIZERS
        from .schedules import SCHEDULES

        choices = OPTIMIZERS if name == "optimizer" else SCHEDULES
        for p in parts:
            if p not in choices:
                raise ValueError(f"unknown {name.replace('_', ' ')} {p!r}; choose from "
                                 f"{', '.join(choices)}")
        values = tuple(parts)
    else:
        values = tuple(_number(name, p) for p in parts)
    if len(set(values)) != len(values):
        raise ValueError(f"a value is given twice in {text!r}")
    return Axis(name, values=values)


def count_grid(axes: list[Axis]) -> int:
    n = 1
    for a in axes:
        n *= 1 if a.is_range else len(a.values)
    return n


def param_space(axes: list[Axis]) -> dict:
    """Tune's param_space: lists of several values -> grid_search, ranges -> distributions."""
    from ray import tune

    space = {}
    for a in axes:
        if a.is_range:
            if a.name == "lr":
                space[a.name] = tune.loguniform(a.low, a.high)
            elif a.name in LOG_SCALE:
                space[a.name] = tune.lograndint(a.low, a.high + 1)
            else:
                space[a.name] = tune.randint(a.low, a.high + 1)
        elif len(a.values) > 1:
            space[a.name] = tune.grid_search(list(a.values))
        else:
            space[a.name] = a.values[0]
    return space


def trial_config(base: TrainConfig, params: dict) -> TrainConfig:
    """``base`` with the trial's values; an unswept learning rate is the default of the trial's
    optimizer and schedule."""
    d = {**base.to_dict(), **{k: params[k] for k in SWEPT if k in params}}
    if "lr" not in params:
        d["lr"] = default_lr(d["optimizer"], d["lr_schedule"])
    return TrainConfig.from_dict(d)


def trial_name(c: TrainConfig) -> str:
    """The trial's run directory name, from its config: ``h64-adam-lr0.001-b64-s0`` (then
    ``-onecycle`` etc. for a schedule other than constant: the name says the schedule whatever
    the default, so the trials of sweeps made before onecycle became the default keep their
    names)."""
    sched = "" if c.lr_schedule == "constant" else f"-{c.lr_schedule}"
    return f"h{c.hidden}-{c.optimizer}-lr{c.lr:.4g}-b{c.batch_size}-s{c.seed}{sched}"


# --- one trial, in a Ray worker -------------------------------------------------------------------

def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    from . import devices

    return "cuda" if devices.real_gpu_present() and devices.cuda_usable()[0] else "cpu"


def run_trial(params: dict, data=None, base: dict | None = None, out: str = "",
              checkpoint_every: float = 0.0, unique: bool = False):
    """Tune's trainable: train (or resume, or replay) this trial's run directory, reporting
    each epoch's row plus ``run_dir`` and ``node`` to Tune."""
    import ray
    from ray import tune

    from .side_by_side import PlannedRun
    from .study import inspect_run
    from .trainer import train

    b = TrainConfig.from_dict(base)
    c = trial_config(TrainConfig(**{**b.to_dict(), "device": _device(b.device)}), params)
    name = trial_name(c)
    if unique:  # random draws can repeat a name: add the trial's number
        name += "-" + tune.get_context().get_trial_id().rsplit("_", 1)[-1]
    run_dir = Path(out) / name
    extra = {"run_dir": str(run_dir), "node": ray.get_runtime_context().get_node_id()[:12]}

    def report(row):
        tune.report({**row, **extra})

    plan = inspect_run(PlannedRun(c, run_dir))
    if plan.action == "skip":  # finished before an interruption reached Tune: replay its rows
        rows = runs.RunDir(run_dir).metrics()
        for row in rows:
            report(row)
        if plan.status == "diverged":
            report({"epoch": len(rows) + 1, "val_loss": math.inf, "diverged": True})
        return
    try:
        train(c, run_dir, data, resume=plan.action == "resume", progress=False,
              checkpoint_every=checkpoint_every, on_epoch=report)
    except DivergenceError:
        done = (runs.RunDir(run_dir).summary() or {}).get("epochs_done", 0)
        report({"epoch": done + 1, "val_loss": math.inf, "diverged": True})


# --- the driver -----------------------------------------------------------------------------------

def check_spec(out: Path, spec: dict) -> bool:
    """Write ``out/sweep.json``, or check it matches ``spec``; True when a sweep is already
    there to continue."""
    path = out / SPEC_FILE
    if path.is_file():
        have = read_json(path)
        if have != spec:
            diff = sorted(k for k in set(have) | set(spec) if have.get(k) != spec.get(k))
            raise CheckpointError(f"{out} holds another sweep (it differs in {', '.join(diff)}); "
                                  "run the same command to continue it, or choose another --out")
        return True
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, spec)
    return False


def check_reachable(address: str) -> None:
    """Fail in seconds with one line, not after Ray's minutes of retries, when nothing listens
    at ``address`` (HOST:PORT of the head's GCS; "auto" is left to Ray)."""
    import socket

    host, _, port = address.rpartition(":")
    if address == "auto" or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise AecoreError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one "
                          "with `ray start --head` or leave out --address") from None


def _printer(epochs: int):
    from ray.tune import Callback

    class EpochLines(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            name = Path(result.get("run_dir", trial.trial_id)).name
            if result.get("diverged"):
                print(f"{name} diverged in epoch {result['epoch']}", flush=True)
            elif "val_loss" in result:
                print(f"{name} epoch {result['epoch']}/{epochs}  train {result['train_loss']:.6f}  "
                      f"val {result['val_loss']:.6f}  {result['seconds']:.2f}s", flush=True)

    return EpochLines()


def run_sweep(axes: list[Axis], base: TrainConfig, out, data, *, samples: int = 1,
              scheduler: str | None = None, address: str | None = None,
              num_cpus: int | None = None, cpus_per_trial: float = 1.0,
              gpus_per_trial: float = 0.0, checkpoint_every: float = 0.0,
              search_seed: int = 0, resources: dict | None = None):
    """Run (or continue) the sweep; returns ``(results, interrupted)`` where results are
    ``aecore.sweep_results.TrialResult``s. Starts a local Ray instance unless ``address``
    names a cluster (or Ray is already initialised); shuts down only what it started."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from .sweep_results import collect

    out = Path(out).resolve()
    spec = {"axes": [a.__dict__ | {"values": list(a.values)} for a in axes], "samples": samples,
            "scheduler": scheduler, "search_seed": search_seed, "base": base.to_dict()}
    spec = json.loads(json.dumps(spec))
    again = check_spec(out, spec)
    unique = samples > 1 and any(a.is_range for a in axes)
    if address:
        check_reachable(address)
    started = not ray.is_initialized()
    if started:  # "local": a new instance here, even when `ray start` left a cluster running
        try:
            ray.init(address=address or "local", num_cpus=None if address else num_cpus,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AecoreError(f"cannot start or join {where}: {msg}") from None
    try:
        trainable = tune.with_parameters(run_trial, data=data, base=base.to_dict(), out=str(out),
                                         checkpoint_every=checkpoint_every, unique=unique)
        trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial,
                                                    **(resources or {})})
        path = out / EXPERIMENT
        if again and tune.Tuner.can_restore(str(path)):
            print(f"continuing the sweep in {out}", flush=True)
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            sched = None
            if scheduler == "asha":
                sched = ASHAScheduler(time_attr="epoch", max_t=base.epochs, grace_period=1,
                                      reduction_factor=2)
            tuner = tune.Tuner(
                trainable, param_space=param_space(axes),
                tune_config=tune.TuneConfig(
                    metric="val_loss", mode="min", num_samples=samples, scheduler=sched,
                    search_alg=BasicVariantGenerator(random_state=search_seed),
                    reuse_actors=True),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=0,
                                          callbacks=[_printer(base.epochs)]))
        grid = tuner.fit()

        def describe(trial):
            c = trial_config(base, trial.config)
            suffix = "-" + trial.trial_id.rsplit("_", 1)[-1] if unique else ""
            return trial_name(c) + suffix, c.to_dict()

        from ray.tune import ExperimentAnalysis

        saved = {t.trial_id: t.status for t in ExperimentAnalysis(str(path)).trials}
        return collect(grid, base.epochs, describe, saved)
    finally:
        if started:
            ray.shutdown()
