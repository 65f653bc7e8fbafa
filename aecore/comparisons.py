"""The study's comparisons: one training choice varied at one hidden size, everything else at
TrainConfig's defaults (since 2026-12-02 the onecycle schedule: a constant-rate run is the
schedules comparison's ``constant`` variant, ``h128-sched-constant``).

``KINDS`` is the one table: kind -> the TrainConfig field it varies, all its choices, and the
variants ``aecore study --compare KIND`` trains when not narrowed. A variant is a TrainConfig
field override (``{"activation": "gelu"}``), so planning, run names, the estimate, resuming a
partly done study and the report all go through the same few functions here:

* ``parse_compare`` reads ``--compare`` values (``activations,losses`` or ``losses=bce,l1``);
* ``variant_configs`` turns a kind's variants into TrainConfigs;
* ``config_run_name`` names a run from its config, by what differs from the defaults
  (``h128-adam``, ``h128-sgd``, ``h128-act-gelu``, ``h128-sched-constant``): the default run of
  a hidden size is ``h<H>-<optimizer>`` and is shared by every comparison at that size;
  ``aecore train`` names its runs so too;
* ``variant_of`` / ``comparison_groups`` read the runs back for the report: which kind a run
  varies (from its config.json alone; a field config.json lacks reads as
  ``config.saved_value`` says: no lr_schedule is constant) and, per kind and hidden size, the
  runs to set side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from .config import ABSENT, TrainConfig, default_lr, saved_value
from .kernels.activations_reference import ACTIVATIONS
from .kernels.losses_reference import LOSSES
from .optim import OPTIMIZERS
from .schedules import SCHEDULES


@dataclass(frozen=True)
class Kind:
    name: str  # as --compare spells it: "activations"
    field: str  # the TrainConfig field it varies
    choices: tuple  # every value the field takes
    variants: tuple  # what --compare KIND trains when not narrowed
    tag: str  # in run names: h128-<tag>-<value>; "" for the optimizer (h128-sgd, as before)
    noun: str  # one variant, in sentences: "activation"


KINDS = {k.name: k for k in (
    Kind("optimizers", "optimizer", OPTIMIZERS, ("sgd", "momentum", "adam"), "", "optimizer"),
    Kind("activations", "activation", ACTIVATIONS, ACTIVATIONS, "act", "activation"),
    Kind("losses", "loss", LOSSES, LOSSES, "loss", "loss"),
    Kind("schedules", "lr_schedule", SCHEDULES, SCHEDULES, "sched", "learning-rate schedule"),
)}
# Fields that do not change what a run computes: runs differing only in these still compare.
NOT_COMPARED = ("device", "cuda_graphs", "cuda_path", "cpu_split", "recon_epochs", "track_test")


def defaults() -> dict:
    """TrainConfig's field defaults (lr stays None: it follows the optimizer)."""
    return {f.name: f.default for f in fields(TrainConfig)}


def kind_available(kind: Kind) -> bool:
    """Whether this TrainConfig has the field ``kind`` varies."""
    return kind.field in defaults()


def parse_compare(values) -> dict[str, tuple]:
    """``--compare`` values -> {kind: variants}, in the order given. Each value is a comma list
    of kinds (``activations,losses``: each with its default variants) or one kind narrowed to
    some of its choices (``losses=bce,l1``). ValueError (one line) on anything else."""
    out: dict[str, tuple] = {}
    for value in values:
        value = str(value).strip()
        if "=" in value:
            name, _, rest = value.partition("=")
            names = [name.strip()]
            chosen = tuple(v.strip() for v in rest.split(",") if v.strip())
        else:
            names = [v.strip() for v in value.split(",") if v.strip()]
            chosen = None
        if not names:
            raise ValueError(f"expected KIND[,KIND...] or KIND=CHOICE[,CHOICE...] with KIND in "
                             f"{', '.join(KINDS)}, got {value!r}")
        for name in names:
            kind = KINDS.get(name)
            if kind is None:
                raise ValueError(f"unknown comparison {name!r}: choose from {', '.join(KINDS)}")
            if name in out:
                raise ValueError(f"{name} is given twice")
            if not kind_available(kind):
                raise ValueError(f"{name}: this aecore has no TrainConfig.{kind.field} yet")
            variants = kind.variants if chosen is None else chosen
            bad = [v for v in variants if v not in kind.choices]
            if bad or not variants:
                raise ValueError(f"{name}: expected choices from {', '.join(kind.choices)}, "
                                 f"got {rest!r}")
            if len(set(variants)) != len(variants):
                raise ValueError(f"{name}: a choice is given twice in {rest!r}")
            out[name] = tuple(variants)
    return out


def as_comparisons(compare) -> dict[str, tuple]:
    """``compare`` as {kind: variants}: a mapping as it is, a sequence of optimizer names (the
    study's former argument) as {"optimizers": names}."""
    if isinstance(compare, Mapping):
        return {k: tuple(v) for k, v in compare.items()}
    return {"optimizers": tuple(compare)}


def variant_configs(kind: str, variants, **settings) -> list[TrainConfig]:
    """One TrainConfig per variant: ``settings`` (hidden, epochs, ...) plus the kind's field."""
    field = KINDS[kind].field
    return [TrainConfig(**{**settings, field: v}) for v in variants]


def config_run_name(c: TrainConfig, before_onecycle: bool = False) -> str:
    """The run directory name: ``h<hidden>-<optimizer>`` for the defaults, and for every compared
    field off its default ``-<tag>-<value>`` instead of the default optimizer's name:
    h128-adam, h128-sgd, h128-act-gelu, h128-sgd-act-gelu, h128-sched-constant.
    ``before_onecycle``: the name it had while the constant schedule was the default (before
    2026-12-02: h128-adam for constant-rate Adam, h128-sched-onecycle), to find older runs."""
    d = {**defaults(), **(ABSENT if before_onecycle else {})}
    tags = [f"{k.tag}-{getattr(c, k.field)}" for k in KINDS.values()
            if k.tag and k.field in d and getattr(c, k.field) != d[k.field]]
    if not tags or c.optimizer != d["optimizer"]:
        tags.insert(0, c.optimizer)
    return "-".join([f"h{c.hidden}", *tags])


# --- reading runs back (the report) ---------------------------------------------------------------

def variant_of(config: Mapping, ignore=()) -> tuple[str | None, object] | None:
    """Which comparison a run's config (config.json's "config") belongs to: (kind, value) when
    exactly one compared field is off its default, (None, None) for the default run (every
    comparison's reference), None when several are off. A field the config does not hold reads
    as ``config.saved_value`` says (no lr_schedule: constant). Fields in ``ignore`` do not
    count (``shared``)."""
    d = defaults()
    off = [k for k in KINDS.values() if k.field in d and k.field not in ignore
           and saved_value(config, k.field) != d[k.field]]
    if not off:
        return None, None
    if len(off) > 1:
        return None
    return off[0].name, saved_value(config, off[0].field)


def shared(kind: str) -> tuple:
    """The compared fields that ``kind``'s runs share, whatever their value, instead of having
    them at the default: the schedule, in every comparison but the schedules', so that a
    study's runs all at the constant rate (made while it was the default, or with
    --lr-schedule constant) still compare their optimizers, activations and losses."""
    return () if kind == "schedules" else ("lr_schedule",)


def is_default_run(config: Mapping, kind: str) -> bool:
    """Whether a run is the default run of ``kind``'s comparison (its *vs default* base): every
    compared field at its default (but ``shared(kind)``) and the default learning rate."""
    return variant_of(config, shared(kind)) == (None, None) and has_default_lr(config)


def setting_key(config: Mapping) -> tuple:
    """What runs compared side by side share: the config without the compared fields, the
    learning rate (optimizers have their own) and the fields that do not change results."""
    d = defaults()
    skip = {k.field for k in KINDS.values()} | {"lr"} | set(NOT_COMPARED)
    return tuple((k, _hashable(saved_value(config, k))) for k in d if k not in skip)


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def comparison_groups(runs_, kind: str) -> dict[int, list]:
    """hidden size -> the runs (report.Run) that compare ``kind`` there: same settings apart
    from the kind's field (and sharing a schedule, ``shared``), at least two different values
    of it. The default run counts as the default value's variant. A learning rate other than
    the default of the run's optimizer and schedule is part of a variant (in its label)."""
    k = KINDS[kind]
    if not kind_available(k):
        return {}
    by_setting: dict[tuple, list] = {}
    for r in runs_:
        v = variant_of(r.config, shared(kind))
        if v is None or v[0] not in (None, kind):
            continue
        key = setting_key(r.config) + tuple(saved_value(r.config, f) for f in shared(kind))
        by_setting.setdefault(key, []).append(r)
    out: dict[int, list] = {}
    for rs in by_setting.values():
        values = {variant_value(r.config, k) for r in rs}
        if len(values) > 1:
            out.setdefault(rs[0].hidden, []).extend(rs)
    for h, rs in out.items():
        order = {v: i for i, v in enumerate(k.choices)}
        rs.sort(key=lambda r: (order.get(variant_value(r.config, k), len(order)), str(r.path)))
    return dict(sorted(out.items()))


def variant_value(config: Mapping, kind: Kind):
    return saved_value(config, kind.field)


def has_default_lr(config: Mapping) -> bool:
    """Whether a saved config's learning rate is the default of its optimizer and schedule."""
    return config.get("lr") == default_lr(saved_value(config, "optimizer"),
                                          saved_value(config, "lr_schedule"))


def variant_label(run, kind: str) -> str:
    """A run's name within its comparison: the value, plus its learning rate where that is not
    the default of its optimizer and schedule (for the optimizers and the schedules, always:
    each has its own)."""
    k = KINDS[kind]
    c = run.config
    label = str(variant_value(c, k))
    lr = c.get("lr")
    if lr is not None and (kind in ("optimizers", "schedules") or not has_default_lr(c)):
        label += f", lr {lr:g}"
    return label
