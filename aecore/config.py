"""What defines a training run: ``TrainConfig`` (every default lives here), the default
learning rate per optimizer and schedule (``DEFAULT_LR``), what a saved config without a field
means (``ABSENT``), and ``config_problems``, the one check of a configuration's values.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass, fields

import numpy as np

from .cuda_path import path_problem
from .kernels.activations_reference import ACTIVATIONS
from .kernels.losses_reference import LOSSES
from .optim import OPTIMIZERS, OptimConfig
from .schedules import SCHEDULES, LRSchedule

DEFAULT_RECON_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200)
MAX_HIDDEN = 65536


# Learning rate when --lr is not given, per optimizer and learning-rate schedule: the best of
# scans at h=128, batch 64, 30 epochs, test MSE (README, "Defaults, and why"): constant rates in
# 2026-11, Adam's cosine and step rates in the first schedule scan, the onecycle rates (its
# max_lr) in the second, 2026-12-02 (Adam's also at h=64..512). None: not scanned (sgd /
# momentum / nesterov with cosine or step), the constant rate is used. The loss is the mean
# over the batch's B*784 pixels, so plain SGD's gradients are small and its best rate is large.
DEFAULT_LR = {
    "sgd":      dict(constant=20.0, onecycle=50.0, cosine=None, step=None),
    "momentum": dict(constant=3.0, onecycle=20.0, cosine=None, step=None),
    "nesterov": dict(constant=3.0, onecycle=20.0, cosine=None, step=None),
    "adam":     dict(constant=1e-3, onecycle=5e-3, cosine=2e-3, step=3e-3),
}
# What a field absent from a saved config (config.json, a checkpoint's state) means: the value
# runs had before the field existed. Runs saved before the schedules trained at a constant rate
# (onecycle became the default on 2026-12-02; every config saved since records lr_schedule);
# the other fields added since were added with today's default.
# Runs saved before cpu_gemm existed ran OpenBLAS's sgemm.
ABSENT = {"lr_schedule": "constant", "cpu_gemm": "blas"}
# TrainConfig.cpu_gemm: OpenBLAS's sgemm, aecore's own (kernels/own_step.py), or auto:
# own where it was measured faster (``own_gemm_wins``), else blas. bench/RESULTS.md, sessions
# 13 and 15, own over the OpenBLAS step's time: 0.67-0.93 at batch 64 for h = 64-512, 0.77-0.92
# at 128; at 256 0.88-0.96 for h <= 128 and 1.00-1.11 for h >= 256; session 18 (k-blocks of
# 128, the 8 x 3 tile): at 256 0.90-0.91 for h = 256 and 0.99-1.00 for h = 512 (a tie: blas);
# session 19 (its data on 64-byte lines), `aecore bench --cpu-split blas,own`: own faster at
# every h = 64-512 from 256 to 1024 rows (0.73-0.86 of blas's time at h <= 256, 0.93-0.95 at
# h = 512), a tie at 2048 for h = 512 and slower at 4096 (1.07). Compiled for AVX2 (the 6 x 16
# tile; numba and OpenBLAS told the CPU is a Haswell, on the same host): own 0.86-0.97 at
# h = 64 and 128 up to 1024 rows and at h = 512 B = 64, 1.02-1.17 at h >= 256 from 128 rows.
ENGINE_GEMMS = ("blas", "own")  # what a CpuEngine runs (make_engine resolves auto)
CPU_GEMMS = ("auto", *ENGINE_GEMMS)
OWN_GEMM_MAX_BATCH = 1024  # own at any h up to this many rows a batch (AVX-512)
OWN_GEMM_AVX2 = (128, 128)  # without AVX-512: own at any h up to 128 rows, above where h <= 128


def own_gemm_wins(batch_size: int, hidden: int, avx512: bool) -> bool:
    """Whether aecore's own GEMM step was measured faster than OpenBLAS's at this shape, on a
    CPU with AVX-512 (its 8 x 48 tile) or without (6 x 16)."""
    if batch_size > OWN_GEMM_MAX_BATCH:
        return False
    return avx512 or batch_size <= OWN_GEMM_AVX2[0] or hidden <= OWN_GEMM_AVX2[1]


_X86 = ("x86_64", "amd64")  # platform.machine() of the CPUs the own GEMM was measured on


def _compiles_for_avx512() -> bool:
    from .kernels.cpu_gemm import compiles_for_avx512  # (numba: imported where it is used)

    return compiles_for_avx512()


def auto_gemm_summary(machine: str | None = None, avx512: bool | None = None) -> str:
    """One line: what ``cpu_gemm`` auto runs on this machine (for ``aecore info``)."""
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in _X86:
        return f"OpenBLAS's sgemm (aecore's own GEMM is measured on x86-64 only; {machine})"
    if _compiles_for_avx512() if avx512 is None else avx512:
        return (f"aecore's own GEMM up to {OWN_GEMM_MAX_BATCH} rows a batch (AVX-512); "
                "OpenBLAS's sgemm above")
    return (f"aecore's own GEMM up to {OWN_GEMM_AVX2[0]} rows a batch, and up to "
            f"{OWN_GEMM_MAX_BATCH} where h <= {OWN_GEMM_AVX2[1]} (no AVX-512); OpenBLAS's "
            "sgemm elsewhere")


def resolve_cpu_gemm(choice: str, batch_size: int | None, hidden: int, cpu_split: bool = False,
                     cpu_team: bool = False, machine: str | None = None,
                     avx512: bool | None = None) -> str:
    """blas | own: whose products a CPU step of ``batch_size`` rows and ``hidden`` units runs
    for ``choice`` (TrainConfig.cpu_gemm). ``auto`` depends on the shape and the CPU
    (``machine``, default ``platform.machine()``: own on x86-64 only, where it was measured;
    ``avx512``, default whether numba compiles for AVX-512 here), so a resumed run on the same
    kind of machine takes the same path."""
    if choice != "auto":
        return choice
    if batch_size is None or cpu_split or cpu_team:
        return "blas"
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in _X86:
        return "blas"
    avx512 = _compiles_for_avx512() if avx512 is None else avx512
    return "own" if own_gemm_wins(batch_size, hidden, avx512) else "blas"


def default_lr(optimizer: str, lr_schedule: str = "constant") -> float | None:
    """The learning rate a run of ``optimizer`` with ``lr_schedule`` gets when none is given
    (DEFAULT_LR; not scanned or an unknown schedule: the constant rate); None for an unknown
    optimizer."""
    rates = DEFAULT_LR.get(optimizer)
    if rates is None:
        return None
    return rates.get(lr_schedule) or rates["constant"]


def saved_value(config, name: str):
    """Field ``name`` of a saved config (a mapping, e.g. config.json's "config"): its value, or
    what a config without it means (ABSENT, else TrainConfig's default)."""
    if name in config:
        return config[name]
    if name in ABSENT:
        return ABSENT[name]
    return next(f.default for f in fields(TrainConfig) if f.name == name)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. The defaults live here and nowhere else."""

    hidden: int = 256  # hidden units h of the 784 -> h -> 784 model
    epochs: int = 200  # passes over the training set
    batch_size: int = 64  # samples per optimizer step
    lr: float | None = None  # learning rate; None -> default_lr(optimizer, lr_schedule)
    optimizer: str = "adam"  # sgd | momentum | nesterov | adam
    momentum: float = 0.9  # for momentum / nesterov (Adam's beta1 stays 0.9)
    slope: float = 0.01  # LeakyReLU negative slope
    seed: int = 0  # initial weights and the shuffles
    val_size: int = 10000  # training images held out for validation
    device: str = "cpu"  # cpu | cuda (the CLI resolves "auto")
    recon_epochs: tuple = DEFAULT_RECON_EPOCHS  # epochs whose reconstructions are saved
    limit: int | None = None  # train on the first `limit` training images only (quick tests)
    cuda_path: str = "auto"  # CUDA: auto | persistent | graphs | eager (aecore/cuda_path.py)
    cpu_split: bool = False  # CPU: each step split between two aecore threads (cpu_pair.py)
    lr_schedule: str = "onecycle"  # onecycle | constant | cosine | step (aecore/schedules.py)
    warmup_epochs: int = 0  # epochs of linear warm-up from lr / 100 (not with onecycle)
    activation: str = "leaky_relu"  # hidden activation (kernels.activations_reference)
    loss: str = "mse"  # trained loss on the Sigmoid output: mse | bce | l1
    cpu_team: bool = False  # CPU: BLAS's jobs and the epilogues' halves on one team (cpu_team.py)
    track_test: bool = False  # also evaluate the test split after every epoch (time to quality)
    cpu_gemm: str = "auto"  # CPU: whose products the step runs, auto | blas | own (above)

    def __post_init__(self):
        if self.lr is None and self.optimizer in DEFAULT_LR:
            object.__setattr__(self, "lr", default_lr(self.optimizer, self.lr_schedule))

    def optim(self) -> OptimConfig:
        return OptimConfig(name=self.optimizer, lr=self.lr, momentum=self.momentum)

    def schedule(self, n_train: int) -> LRSchedule:
        """The learning rate of every optimizer step, for a training set of ``n_train`` images
        (steps per epoch: ceil(n_train / batch_size), the short last batch included)."""
        return LRSchedule(self.lr_schedule, self.lr, self.epochs, -(-n_train // self.batch_size),
                          self.warmup_epochs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["recon_epochs"] = list(self.recon_epochs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw.update({k: v for k, v in ABSENT.items() if k not in d})  # saved before the field
        if "cuda_graphs" in d and "cuda_path" not in d:  # runs saved before cuda_path
            kw["cuda_path"] = "graphs" if d["cuda_graphs"] else "eager"
        if "recon_epochs" in kw:
            kw["recon_epochs"] = tuple(kw["recon_epochs"])
        return cls(**kw)

    def saved_epochs(self) -> list[int]:
        """The epochs whose reconstructions are saved: the chosen ones <= epochs, and the last."""
        return sorted({e for e in self.recon_epochs if 1 <= e <= self.epochs} | {self.epochs})


def config_problems(c: TrainConfig, n_train: int | None = None) -> list[tuple[str, str]]:
    """(field, message) for each invalid setting; ``n_train`` is the training set's size (after
    the validation split and --limit) when known."""
    out = []

    def bad(name, msg):
        out.append((name, msg))

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(c.hidden) or not 1 <= c.hidden <= MAX_HIDDEN:
        bad("hidden", f"must be an integer from 1 to {MAX_HIDDEN}, got {c.hidden!r}")
    if not is_int(c.epochs) or c.epochs < 1:
        bad("epochs", f"must be an integer >= 1, got {c.epochs!r}")
    if not is_int(c.batch_size) or c.batch_size < 1:
        bad("batch_size", f"must be an integer >= 1, got {c.batch_size!r}")
    elif n_train is not None and c.batch_size > n_train:
        bad("batch_size", f"{c.batch_size} is larger than the training set ({n_train} images)")
    for name in ("lr", "slope", "momentum"):
        v = getattr(c, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            bad(name, f"must be a finite number, got {v!r}")
    if isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr <= 0:
        bad("lr", f"must be > 0, got {c.lr!r}")
    if isinstance(c.momentum, (int, float)) and not 0 <= c.momentum < 1:
        bad("momentum", f"must be in [0, 1), got {c.momentum!r}")
    if c.optimizer not in OPTIMIZERS:
        bad("optimizer", f"unknown optimizer {c.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    for name in ("cpu_split", "cpu_team"):
        if not isinstance(getattr(c, name), bool):
            bad(name, f"must be true or false, got {getattr(c, name)!r}")
    if c.cpu_split is True and c.cpu_team is True:
        bad("cpu_team", "cannot be combined with cpu_split; choose one")
    if c.activation not in ACTIVATIONS:
        bad("activation", f"unknown activation {c.activation!r}; choose one of "
                          f"{', '.join(ACTIVATIONS)}")
    if c.loss not in LOSSES:
        bad("loss", f"unknown loss {c.loss!r}; choose one of {', '.join(LOSSES)}")
    if c.cpu_gemm not in CPU_GEMMS:
        bad("cpu_gemm", f"unknown CPU GEMM {c.cpu_gemm!r}; choose one of {', '.join(CPU_GEMMS)}")
    elif c.cpu_gemm == "own" and (c.cpu_split is True or c.cpu_team is True):
        other = "cpu_split" if c.cpu_split is True else "cpu_team"
        bad("cpu_gemm", f"own cannot be combined with {other}")
    for name in ("cpu_split", "cpu_team"):
        if getattr(c, name) is True and (c.activation, c.loss) != ("leaky_relu", "mse"):
            bad(name, f"the {name.split('_')[1]} CPU step runs leaky_relu with mse only")
    why = path_problem(c)
    if why:
        bad("cuda_path", why)
    if not isinstance(c.track_test, bool):
        bad("track_test", f"must be true or false, got {c.track_test!r}")
    if c.device not in ("cpu", "cuda"):
        bad("device", f"unknown device {c.device!r}; choose cpu or cuda")
    if not is_int(c.val_size) or c.val_size < 1:
        bad("val_size", f"must be an integer >= 1, got {c.val_size!r}")
    if c.limit is not None and (not is_int(c.limit) or c.limit < 1):
        bad("limit", f"must be an integer >= 1, got {c.limit!r}")
    if not is_int(c.seed) or c.seed < 0:
        bad("seed", f"must be an integer >= 0, got {c.seed!r}")
    _schedule_problems(c, n_train, bad, is_int)
    return out


def _schedule_problems(c: TrainConfig, n_train, bad, is_int) -> None:
    """lr_schedule / warmup_epochs: what LRSchedule would refuse, as one-line messages."""
    if c.lr_schedule not in SCHEDULES:
        bad("lr_schedule", f"unknown learning-rate schedule {c.lr_schedule!r}; choose one of "
                           f"{', '.join(SCHEDULES)}")
        return
    w = c.warmup_epochs
    if not is_int(w) or w < 0:
        bad("warmup_epochs", f"must be an integer >= 0, got {w!r}")
    elif is_int(c.epochs) and c.epochs >= 1 and w >= c.epochs:
        bad("warmup_epochs", f"{w} leaves no epoch after the warm-up: give fewer than "
                             f"--epochs ({c.epochs})")
    elif c.lr_schedule == "onecycle" and w:
        bad("warmup_epochs", "must be 0 with the onecycle schedule, which has its own warm-up "
                             "(the first 30% of the steps)")
    elif c.lr_schedule == "onecycle" and n_train and is_int(c.epochs) and is_int(c.batch_size) \
            and 1 <= c.batch_size <= n_train and c.epochs * -(-n_train // c.batch_size) < 4:
        # (a batch larger than the training set is reported as that, above)
        bad("lr_schedule", "onecycle needs at least 4 optimizer steps in the whole run; "
                           "train more epochs, use smaller batches or --lr-schedule constant")
