"""Safetensors weights / checkpoints and the run-directory helpers."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save_file

from aecore import atomic, runs
from aecore.checkpoint import (load_checkpoint, load_weights, resolve_weights_path,
                               save_checkpoint, save_model, slope_of)
from aecore.errors import CheckpointError
from aecore.model import PARAM_NAMES, init_params


def opt_state(params, names=("exp_avg", "exp_avg_sq")):
    rng = np.random.default_rng(1)
    return {f"{p}.{n}": rng.standard_normal(params[p].shape).astype(np.float32)
            for p in PARAM_NAMES for n in names}


def test_checkpoint_roundtrip(tmp_path):
    p = init_params(8, 3)
    o = opt_state(p)
    rng_state = np.random.default_rng(7).bit_generator.state  # 128-bit integers survive JSON
    state = {"epoch": 2, "position": 64, "step": 17, "rng_state": rng_state, "loss_sum": 1.25,
             "metrics": [{"epoch": 1, "train_loss": 0.5}]}
    save_checkpoint(tmp_path / "c.safetensors", p, o, state)
    c = load_checkpoint(tmp_path / "c.safetensors", 8, ("exp_avg", "exp_avg_sq"))
    assert c.hidden == 8 and c.state == state
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(c.params[k], p[k])
    for k in o:
        np.testing.assert_array_equal(c.opt_state[k], o[k])
    g = np.random.default_rng()
    g.bit_generator.state = c.state["rng_state"]
    assert g.integers(1 << 62) == np.random.default_rng(7).integers(1 << 62)


def test_refuses_other_hidden_size_and_optimizer(tmp_path):
    p = init_params(8, 0)
    save_checkpoint(tmp_path / "c.safetensors", p, opt_state(p), {"epoch": 0})
    with pytest.raises(CheckpointError, match="hidden size 8, not 16"):
        load_checkpoint(tmp_path / "c.safetensors", 16)
    with pytest.raises(CheckpointError, match="optimizer buffers"):
        load_checkpoint(tmp_path / "c.safetensors", 8, ("momentum_buffer",))
    with pytest.raises(CheckpointError, match="optimizer buffers"):
        load_checkpoint(tmp_path / "c.safetensors", 8, ())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "header_len"])
def test_refuses_corrupt_file(tmp_path, damage):
    f = tmp_path / "c.safetensors"
    p = init_params(8, 0)
    save_checkpoint(f, p, {}, {"epoch": 0})
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        f.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    with pytest.raises(CheckpointError, match="c.safetensors"):
        load_checkpoint(f)
    with pytest.raises(CheckpointError, match="c.safetensors"):
        load_weights(f)


def test_refuses_other_models(tmp_path):
    p = init_params(8, 0)
    # another architecture: a deeper torch-style Sequential
    other = {**p, "4.weight": np.zeros((784, 784), np.float32)}
    save_file(other, tmp_path / "deep.safetensors", metadata={"format": "aecore-checkpoint",
                                                             "format_version": "1", "state": "{}"})
    with pytest.raises(CheckpointError, match="unexpected tensors 4.weight"):
        load_checkpoint(tmp_path / "deep.safetensors")
    # another input size: a model of its own (its width), refused where 784 is asked for
    small = {"0.weight": np.zeros((8, 100), np.float32), "0.bias": np.zeros(8, np.float32),
             "2.weight": np.zeros((100, 8), np.float32), "2.bias": np.zeros(100, np.float32)}
    save_file(small, tmp_path / "small.safetensors")
    assert load_weights(tmp_path / "small.safetensors").image_size == 100
    with pytest.raises(CheckpointError, match="images of 100 pixels, not 784"):
        load_weights(tmp_path / "small.safetensors", 784)
    # inconsistent shapes
    bad = {**p, "2.weight": np.zeros((784, 9), np.float32)}
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="'2.weight' has shape"):
        load_weights(tmp_path / "bad.safetensors")
    # not our names at all
    save_file({"encoder.weight": p["0.weight"]}, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="missing tensors"):
        load_weights(tmp_path / "x.safetensors")
    # float64 parameters
    save_file({k: v.astype(np.float64) for k, v in p.items()}, tmp_path / "f64.safetensors")
    with pytest.raises(CheckpointError, match="float64"):
        load_weights(tmp_path / "f64.safetensors")
    # a model file is not a resume checkpoint
    save_model(tmp_path / "model.safetensors", p)
    with pytest.raises(CheckpointError, match="not an aecore resume checkpoint"):
        load_checkpoint(tmp_path / "model.safetensors")


def test_load_weights_from_run_dir_and_files(tmp_path):
    p = init_params(8, 0)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_weights(tmp_path)
    save_checkpoint(tmp_path / runs.CHECKPOINT, p, {}, {"config": {"slope": 0.2}})
    assert resolve_weights_path(tmp_path).name == runs.CHECKPOINT
    assert slope_of(load_weights(tmp_path)) == 0.2
    save_model(tmp_path / runs.MODEL, p, slope=0.05)
    assert resolve_weights_path(tmp_path).name == runs.MODEL
    w = load_weights(tmp_path)
    assert w.hidden == 8 and slope_of(w) == 0.05
    with pytest.raises(CheckpointError, match="no such file"):
        load_weights(tmp_path / "missing.safetensors")


# --- atomic writes ---------------------------------------------------------------------------------

def test_atomic_write_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic.atomic_write_text(target, "old contents\n")

    def crash(f):
        f.write(b"new partial cont")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, crash)
    assert target.read_text() == "old contents\n"
    assert os.listdir(tmp_path) == ["metrics.csv"]  # the temp file was cleaned up


def test_hard_crash_mid_write_keeps_previous_checkpoint(tmp_path):
    """A process killed mid-write (no cleanup at all) leaves the old checkpoint loadable."""
    target = tmp_path / runs.CHECKPOINT
    p = init_params(8, 0)
    save_checkpoint(target, p, {}, {"epoch": 1})
    code = textwrap.dedent(f"""
        import os
        from safetensors.numpy import save
        from aecore import atomic
        from aecore.model import init_params
        data = save(init_params(8, 99))
        def write(f):
            f.write(data[: len(data) // 2])
            f.flush()
            os._exit(9)  # killed mid-write: no exception handling, no cleanup
        atomic.atomic_write({str(target)!r}, write)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    c = load_checkpoint(target, 8)
    assert c.state == {"epoch": 1}
    np.testing.assert_array_equal(c.params["0.weight"], p["0.weight"])
    leftovers = [n for n in os.listdir(tmp_path) if n != runs.CHECKPOINT]
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint.safetensors.")


def test_json_and_metrics_roundtrip(tmp_path):
    atomic.write_json(tmp_path / "s.json", {"a": float("nan"), "b": np.float32(0.5), "c": [1, 2]})
    assert atomic.read_json(tmp_path / "s.json") == {"a": None, "b": 0.5, "c": [1, 2]}
    rows = [{"epoch": e, "train_loss": 0.1 / e, "val_loss": 0.2 / e, "seconds": 1.0,
             "samples_per_s": 50000.0} for e in (1, 2)]
    runs.write_metrics(tmp_path / "m.csv", rows)
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == ",".join(runs.METRICS_HEADER)
    back = runs.read_metrics(tmp_path / "m.csv")
    assert [r["train_loss"] for r in back] == [r["train_loss"] for r in rows]  # exact (repr)
    (tmp_path / "corrupt.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt.json"):
        atomic.read_json(tmp_path / "corrupt.json")


def test_prepare_run_dir(tmp_path):
    d = tmp_path / "a" / "b"
    assert runs.prepare_run_dir(d).is_dir()
    runs.prepare_run_dir(d)  # empty directory: fine
    (d / runs.METRICS).write_text("x")
    (d / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="--overwrite"):
        runs.prepare_run_dir(d)
    assert (d / runs.METRICS).read_text() == "x"
    runs.prepare_run_dir(d, overwrite=True)
    assert not (d / runs.METRICS).exists() and (d / "keep.txt").read_text() == "mine"


def test_check_writable_read_only_dir(read_only_dir):
    with pytest.raises(CheckpointError, match="not writable"):
        runs.check_writable(read_only_dir / "run")


def test_atomic_write_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
