"""The default schedule and learning rates (issue 18: onecycle, chosen by the scan in the README's
"Defaults, and why"), and how runs saved before that default read back: a config without
lr_schedule is a constant-rate run, named and compared as such, and still the time-to-quality
reference."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aecore import comparisons as C
from aecore import report as rep
from aecore import runs
from aecore import study as S
from aecore import time_to_quality as T
from aecore.cli.main import main
from aecore.config import (DEFAULT_LR, OWN_GEMM_AVX2, OWN_GEMM_MAX_BATCH, TrainConfig,
                           auto_gemm_summary, default_lr, resolve_cpu_gemm, saved_value)
from aecore.errors import CheckpointError
from aecore.optim import OPTIMIZERS
from aecore.schedules import SCHEDULES

# config.json of a run made before the schedules existed (aecore 2026-11): no lr_schedule,
# warmup_epochs, activation, loss or track_test
OLD_CONFIG = {"hidden": 8, "epochs": 2, "batch_size": 64, "lr": 0.001, "optimizer": "adam",
              "momentum": 0.9, "slope": 0.01, "seed": 0, "val_size": 10000, "device": "cpu",
              "recon_epochs": [1, 2], "limit": 256, "cuda_path": "auto", "cpu_split": False}


def old_run(d, test_loss=0.05):
    """A complete run directory as aecore wrote it before the schedules (config + summary)."""
    d.mkdir(parents=True)
    (d / runs.CONFIG).write_text(json.dumps({"config": OLD_CONFIG, "device": "cpu"}))
    (d / runs.SUMMARY).write_text(json.dumps({"status": "complete", "epochs_done": 2, "hidden": 8,
                                              "test_loss": test_loss, "val_loss": 0.05}))
    return d


def test_the_defaults_are_the_scans_choice():
    d = TrainConfig()
    assert (d.optimizer, d.lr_schedule, d.lr, d.warmup_epochs, d.epochs) == (
        "adam", "onecycle", 5e-3, 0, 200)
    want = {"constant": {"sgd": 20.0, "momentum": 3.0, "nesterov": 3.0, "adam": 1e-3},
            "onecycle": {"sgd": 50.0, "momentum": 20.0, "nesterov": 20.0, "adam": 5e-3},
            "cosine": {"sgd": 20.0, "momentum": 3.0, "nesterov": 3.0, "adam": 2e-3},
            "step": {"sgd": 20.0, "momentum": 3.0, "nesterov": 3.0, "adam": 3e-3}}
    assert set(DEFAULT_LR) == set(OPTIMIZERS)
    for sched in SCHEDULES:
        for opt in OPTIMIZERS:
            assert default_lr(opt, sched) == want[sched][opt]
            assert TrainConfig(optimizer=opt, lr_schedule=sched).lr == want[sched][opt]
    assert TrainConfig(lr=0.02).lr == 0.02  # a given rate is kept
    assert default_lr("rmsprop") is None
    # config.json records the resolved rate and schedule
    assert (TrainConfig().to_dict()["lr"], TrainConfig().to_dict()["lr_schedule"]) == (
        5e-3, "onecycle")


def test_help_shows_the_defaults():
    out = CliRunner().invoke(main, ["train", "--help"], terminal_width=200).output
    assert "[default: onecycle]" in out
    flat = " ".join(out.split())
    assert "onecycle: sgd 50, momentum 20, nesterov 20, adam 0.005" in flat
    assert "constant: sgd 20, momentum 3, nesterov 3, adam 0.001" in flat
    assert "cosine: adam 0.002 (sgd, momentum, nesterov: their constant rates, not scanned)" in flat


def test_an_old_config_json_reads_as_a_constant_rate_run(tmp_path):
    d = old_run(tmp_path / "h8-adam")
    c = runs.RunDir(d).config()
    assert (c.lr_schedule, c.lr, c.warmup_epochs, c.activation) == ("constant", 0.001, 0,
                                                                    "leaky_relu")
    assert c.cpu_gemm == "blas"  # what it ran: no own GEMM then, and auto would pick own here
    assert saved_value(OLD_CONFIG, "lr_schedule") == "constant"
    assert saved_value({**OLD_CONFIG, "lr_schedule": "cosine"}, "lr_schedule") == "cosine"
    # named, compared and used as the time-to-quality reference as a constant-rate run
    assert C.config_run_name(c) == "h8-sched-constant"
    assert C.config_run_name(c, before_onecycle=True) == "h8-adam"
    run = rep.load_run(d)
    assert C.variant_of(run.config) == ("schedules", "constant")
    assert T.is_reference(run)


def test_the_reference_is_constant_rate_adam_1e3_not_the_default(tmp_path):
    def run(**cfg):
        r = rep.load_run(old_run(tmp_path / str(len(list(tmp_path.iterdir())))))
        r.info["config"] = {**r.config, **cfg}
        return r

    assert T.is_reference(run(lr_schedule="constant", warmup_epochs=0))
    assert not T.is_reference(run(**TrainConfig(hidden=8).to_dict()))  # the default: onecycle
    assert not T.is_reference(run(lr_schedule="constant", warmup_epochs=1))
    assert not T.is_reference(run(lr_schedule="constant", lr=5e-3))
    assert not T.is_reference(run(lr_schedule="constant", activation="gelu"))


def test_run_names_follow_the_defaults():
    name = C.config_run_name
    assert name(TrainConfig(hidden=128)) == "h128-adam"  # onecycle, the default
    assert name(TrainConfig(hidden=128, lr_schedule="constant")) == "h128-sched-constant"
    assert name(TrainConfig(hidden=128, optimizer="sgd", lr_schedule="constant")) == \
        "h128-sgd-sched-constant"
    assert name(TrainConfig(hidden=256, activation="gelu")) == "h256-act-gelu"
    # while constant was the default
    assert name(TrainConfig(hidden=128, lr_schedule="constant"), before_onecycle=True) == \
        "h128-adam"
    assert name(TrainConfig(hidden=128), before_onecycle=True) == "h128-sched-onecycle"


def test_a_study_made_before_onecycle_continues_with_lr_schedule_constant(tmp_path):
    old_run(tmp_path / "h8-adam")
    # the default study wants its onecycle run there: refused, saying how to continue
    plan = S.plan_study((8,), (), 8, tmp_path, epochs=2, limit=256)
    assert [p.dir.name for p in plan] == ["h8-adam"]
    with pytest.raises(CheckpointError, match="constant-rate run.*--lr-schedule constant"):
        S.inspect_run(plan[0])
    # with --lr-schedule constant the run is found under its old name, complete: skipped
    plan = S.plan_study((8,), (), 8, tmp_path, epochs=2, limit=256, lr_schedule="constant")
    assert [p.dir.name for p in plan] == ["h8-adam"]
    assert S.inspect_run(plan[0]).action == "skip"
    # unless a planned run has that name now (the schedules comparison's onecycle run)
    plan = S.plan_study((8,), {"schedules": ("onecycle",)}, 8, tmp_path, epochs=2, limit=256,
                        lr_schedule="constant")
    assert [p.dir.name for p in plan] == ["h8-sched-constant", "h8-adam"]


# --- cpu_gemm auto (issue 16) --------------------------------------------------------------------

def test_cpu_gemm_auto_is_own_where_it_was_measured_faster():
    assert TrainConfig().cpu_gemm == "auto"
    assert (OWN_GEMM_MAX_BATCH, OWN_GEMM_AVX2) == (1024, (128, 128))
    for machine in ("x86_64", "AMD64"):
        def pick(b, h, avx512):
            return resolve_cpu_gemm("auto", b, h, machine=machine, avx512=avx512)

        # AVX-512: own up to 1024 rows at every h
        assert [pick(b, 512, True) for b in (1, 64, 256, 1024, 1025)] == ["own"] * 4 + ["blas"]
        # without: own at every h up to 128 rows, above it where h <= 128 (up to 1024)
        assert [pick(b, 512, False) for b in (64, 128, 129, 1024)] == ["own"] * 2 + ["blas"] * 2
        assert [pick(b, 128, False) for b in (129, 1024, 1025)] == ["own", "own", "blas"]
        assert [pick(256, h, False) for h in (64, 128, 129, 256)] == ["own"] * 2 + ["blas"] * 2
    assert resolve_cpu_gemm("auto", 64, 64, machine="aarch64") == "blas"  # not measured there
    assert resolve_cpu_gemm("auto", 64, 64, cpu_split=True, machine="x86_64") == "blas"
    assert resolve_cpu_gemm("auto", 64, 64, cpu_team=True, machine="x86_64") == "blas"
    assert resolve_cpu_gemm("auto", None, 64, machine="x86_64") == "blas"  # evaluation only
    assert "own GEMM up to 1024 rows a batch (AVX-512)" in auto_gemm_summary("x86_64", True)
    assert "up to 128 rows a batch, and up to 1024 where h <= 128" in auto_gemm_summary(
        "x86_64", False)
    assert auto_gemm_summary("aarch64").startswith("OpenBLAS's sgemm")
    for choice in ("blas", "own"):
        assert resolve_cpu_gemm(choice, 64, 64, machine="aarch64") == choice
        assert resolve_cpu_gemm(choice, 1024, 512, machine="x86_64", avx512=False) == choice


def test_make_engine_resolves_auto_by_the_shape():
    from aecore.devices import make_engine
    from aecore.model import init_params
    from aecore.optim import OptimConfig

    params, opt = init_params(8, seed=0), OptimConfig("sgd", lr=0.1)
    here = resolve_cpu_gemm("auto", 64, 8)  # own on x86-64 (this machine's architecture)
    assert make_engine("cpu", params, opt, 64).gemm == here
    assert make_engine("cpu", params, opt, 1024).gemm == here  # h = 8
    assert make_engine("cpu", init_params(257, seed=0), opt, 1024).gemm == resolve_cpu_gemm(
        "auto", 1024, 257)  # own with AVX-512, blas without
    assert make_engine("cpu", params, opt, 1025).gemm == "blas"
    assert make_engine("cpu", params, opt, 64, cpu_gemm="blas").gemm == "blas"
    assert make_engine("cpu", params).gemm == "blas"  # evaluation only: no step
    with pytest.raises(ValueError, match="make_engine resolves 'auto'"):
        from aecore.engine_cpu import CpuEngine

        CpuEngine(params, opt, 64, gemm="auto")


def test_a_default_run_records_auto_and_the_products_it_ran(tmp_path, real_data_dir):
    """config.json keeps the choice (auto) and, under "kernels", whose products ran; the
    default run's weights are those of the same run with that choice given explicitly."""
    import numpy as np

    from aecore.checkpoint import load_weights

    ran = resolve_cpu_gemm("auto", 32, 8)  # own on x86-64 (this machine's architecture)
    args = ("train", "--device", "cpu", "--hidden", "8", "--epochs", "1", "--limit", "256",
            "--batch-size", "32", "--data-dir", str(real_data_dir))
    weights = {}
    for name, extra in (("auto", ()), ("given", ("--cpu-gemm", ran)), ("other", (
            "--cpu-gemm", "blas" if ran == "own" else "own"))):
        r = CliRunner().invoke(main, [*args, *extra, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        (run,) = [p for p in (tmp_path / name).iterdir() if (p / runs.CONFIG).exists()]
        info = json.loads((run / runs.CONFIG).read_text())
        assert info["config"]["cpu_gemm"] == ("auto" if name == "auto" else extra[1])
        assert info["kernels"] == {"cpu_gemm": ran if name != "other" else extra[1]}
        weights[name] = load_weights(run).params
    for k in weights["auto"]:
        np.testing.assert_array_equal(weights["auto"][k], weights["given"][k])
    assert any(not np.array_equal(weights["auto"][k], weights["other"][k]) for k in weights["auto"])
