"""A model of another image width than Fashion-MNIST's 784 pixels (49: 7 x 7 images): the
trainer, the run directory, the checkpoints and a resume take the width from the data and the
parameters. Stopped and resumed, such a run ends bitwise as the uninterrupted one (CPU); its
losses are per pixel of its own width; checkpoints whose shapes disagree, and a resume on data
of another width, are one-line errors that leave the run as it was."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from safetensors.numpy import save_file

from aecore import runs
from aecore.checkpoint import load_checkpoint, load_weights, save_checkpoint
from aecore.config import TrainConfig
from aecore.errors import CheckpointError, DataError, TrainingInterrupted
from aecore.figures import fig_reconstructions, image_shape
from aecore.model import PARAM_NAMES, init_params, param_count
from aecore.report import load_run
from aecore.trainer import train

from conftest import synthetic_data

WIDTH = 49  # 7 x 7 pixels


def _data(side=7, seed=0):
    return synthetic_data(n_train=96, n_val=32, n_test=32, seed=seed, side=side)


def _config(**kw):
    base = dict(hidden=8, epochs=3, batch_size=16, optimizer="adam", lr=0.01, val_size=32,
                recon_epochs=(1, 3), lr_schedule="cosine", device="cpu")
    return TrainConfig(**{**base, **kw})


def _interrupt_after(n_chunks):
    calls = []

    def hook(epoch, pos):
        calls.append((epoch, pos))
        if len(calls) == n_chunks:
            os.kill(os.getpid(), signal.SIGINT)

    return hook


def _files(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def _forward_mse(params, images):
    """The MSE per pixel of the model on ``images``, in float64 NumPy (the reference)."""
    x = images.astype(np.float64) / 255.0
    z = x @ params["0.weight"].T.astype(np.float64) + params["0.bias"]
    h = np.where(z > 0, z, 0.01 * z)
    y = 1.0 / (1.0 + np.exp(-(h @ params["2.weight"].T.astype(np.float64) + params["2.bias"])))
    return float(np.mean((y - x) ** 2))


def test_a_49_pixel_model_trains_stops_and_resumes_bitwise_as_uninterrupted(tmp_path):
    data, c = _data(), _config()
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(c, ref, data, progress=False, chunk_samples=32)
    with pytest.raises(TrainingInterrupted):  # mid-epoch 2, between two chunks
        train(c, run, data, progress=False, chunk_samples=32, on_chunk=_interrupt_after(4))
    st = load_checkpoint(run / runs.CHECKPOINT, 8, image_size=WIDTH).state
    assert (st["epoch"], st["position"]) == (1, 32)
    s = train(c, run, data, resume=True, progress=False)
    assert s["status"] == "complete" and s["params"] == param_count(8, WIDTH)

    a, b = load_checkpoint(ref / runs.CHECKPOINT), load_checkpoint(run / runs.CHECKPOINT)
    assert a.image_size == b.image_size == WIDTH and a.state["step"] == b.state["step"] == 18
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
        np.testing.assert_array_equal(load_weights(run).params[k], b.params[k], err_msg=k)
    assert sorted(a.opt_state) == sorted(b.opt_state) and a.opt_state
    for k in a.opt_state:
        np.testing.assert_array_equal(a.opt_state[k], b.opt_state[k], err_msg=k)
    ma, mb = runs.read_metrics(ref / runs.METRICS), runs.read_metrics(run / runs.METRICS)
    assert [(r["epoch"], r["train_loss"], r["val_loss"], r["lr"]) for r in ma] == \
           [(r["epoch"], r["train_loss"], r["val_loss"], r["lr"]) for r in mb]
    with np.load(ref / runs.RECONSTRUCTIONS) as za, np.load(run / runs.RECONSTRUCTIONS) as zb:
        assert sorted(za.files) == sorted(zb.files) == ["epoch_1", "epoch_3", "labels",
                                                        "originals", "test_indices"]
        assert za["originals"].shape == za["epoch_3"].shape == (10, WIDTH)
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    for d in (ref, run):
        info = json.loads((d / runs.CONFIG).read_text())
        assert (info["image_size"], info["params"]) == (WIDTH, param_count(8, WIDTH))
    # the losses are per pixel of the model's own width: the last validation loss is the
    # NumPy forward pass's mean over the 32 x 49 pixels of the validation split
    assert mb[-1]["val_loss"] == pytest.approx(_forward_mse(b.params, data.val.images),
                                               rel=1e-5)
    assert s["test_loss"] == pytest.approx(_forward_mse(b.params, data.test.images), rel=1e-5)
    # and the training loss too (an epoch's running mean: near the validation loss, where
    # a mean over 784 pixels would be 16 times smaller)
    assert 0.5 < mb[-1]["train_loss"] / mb[-1]["val_loss"] < 2
    # the report's figure draws the 7 x 7 images
    assert image_shape(WIDTH) == (7, 7) and image_shape(784) == (28, 28)
    assert image_shape(50) == (1, 50)
    assert fig_reconstructions([load_run(run)], tmp_path / "recon.png")
    assert (tmp_path / "recon.png").stat().st_size > 0


def test_checkpoint_shapes_must_agree_with_each_other_and_the_width_asked_for(tmp_path):
    p = init_params(8, 0, image_size=WIDTH)
    save_checkpoint(tmp_path / "c.safetensors", p, {}, {"epoch": 0})
    assert load_checkpoint(tmp_path / "c.safetensors").image_size == WIDTH
    assert load_checkpoint(tmp_path / "c.safetensors", 8, image_size=WIDTH).hidden == 8
    with pytest.raises(CheckpointError, match="images of 49 pixels, not 784") as ei:
        load_checkpoint(tmp_path / "c.safetensors", image_size=784)
    assert "\n" not in str(ei.value)
    with pytest.raises(CheckpointError, match="images of 49 pixels, not 784"):
        load_weights(tmp_path / "c.safetensors", 784)
    # each tensor of the 784-pixel model in a 49-pixel one: named, with what it should be
    big = init_params(8, 0)
    for name, want in (("2.weight", (49, 8)), ("2.bias", (49,))):
        save_file({**p, name: big[name]}, tmp_path / f"{name}.safetensors")
        with pytest.raises(CheckpointError) as ei:
            load_weights(tmp_path / f"{name}.safetensors")
        msg = str(ei.value)
        assert f"'{name}' has shape {big[name].shape}, expected {want}" in msg, msg
        assert "image width 49" in msg and "\n" not in msg
    save_file({**p, "0.weight": np.zeros(49, np.float32)}, tmp_path / "flat.safetensors")
    with pytest.raises(CheckpointError, match=r"'0.weight' has shape \(49,\), expected \(h, "):
        load_weights(tmp_path / "flat.safetensors")


def test_resuming_on_data_of_another_width_is_a_one_line_error_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), run, _data(), progress=False)
    before = _files(run)
    for data, now in ((_data(side=28), 784), (_data(side=8), 64)):
        with pytest.raises(CheckpointError) as ei:
            train(_config(epochs=1, lr_schedule="constant"), run, data, resume=True,
                  progress=False)
        msg = str(ei.value)
        assert "\n" not in msg and f"images of {WIDTH} pixels" in msg and f"has {now}" in msg
        assert _files(run) == before
    # splits of different widths: a DataError before anything in the directory is touched
    mixed = _data()
    mixed.val = _data(side=8).val
    with pytest.raises(DataError, match="differ in width .*train 49 pixels, val 64 pixels"):
        train(_config(epochs=2), run, mixed, resume=True, progress=False)
    with pytest.raises(DataError, match="differ in width"):
        train(_config(), tmp_path / "new", mixed, progress=False)
    assert not (tmp_path / "new").exists() or not runs.existing_run_files(tmp_path / "new")
    assert _files(run) == before


def test_the_cli_refuses_a_49_pixel_run_on_fashion_mnist_in_one_line(tmp_path, real_data_dir):
    """aecore train --resume and aecore eval read Fashion-MNIST (784 pixels): a run of 49-pixel
    images is a one-line error, exit code 1, and its files stay as they were."""
    from click.testing import CliRunner

    from cli.main import main

    run = tmp_path / "run"
    train(_config(epochs=1, lr_schedule="constant"), run, _data(), progress=False)
    before = _files(run)
    common = ("--device", "cpu", "--data-dir", real_data_dir)
    for args in (("train", "--resume", run, "--epochs", "2", *common),
                 ("eval", run, *common)):
        r = CliRunner().invoke(main, [*map(str, args)])
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output and "49 pixels" in r.output, r.output
        errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and r.output.strip().endswith(errors[0]), r.output
        assert _files(run) == before
