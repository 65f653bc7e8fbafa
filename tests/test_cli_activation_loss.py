"""--activation / --loss end to end: usage errors (exit 2), config.json / metrics / summary /
model metadata of a run, eval / reconstruct reading the run's activation, the model loading
as the matching torch nn.Sequential, and runs saved before the options existed loading as
leaky_relu / mse."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save as st_save

from aecore import runs
from aecore.checkpoint import activation_of, load_weights, loss_of, slope_of
from aecore.cli.main import main
from aecore.config import TrainConfig, config_problems
from aecore.devices import make_engine
from aecore.kernels.activations_reference import torch_activation
from aecore.model import init_params

pytestmark = pytest.mark.usefixtures("cwd_with_runs")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("cmd", ["train", "study"])
@pytest.mark.parametrize("args,option", [(["--activation", "swish"], "--activation"),
                                         (["--loss", "huber"], "--loss"),
                                         (["--activation", "tanh", "--cpu-split"], "--cpu-split")])
def test_bad_values_are_usage_errors(tmp_path, cmd, args, option):
    r = invoke(cmd, "--device", "cpu", "--out", tmp_path / "out", "--data-dir",
               tmp_path / "no-data", "--epochs", "1", "--yes" if cmd == "study" else "--limit",
               *([] if cmd == "study" else ["100"]), *args)
    assert r.exit_code == 2, r.output
    assert option in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_config_problems_name_the_field():
    assert config_problems(TrainConfig(activation="swish")) == [
        ("activation", "unknown activation 'swish'; choose one of leaky_relu, relu, tanh, "
                       "sigmoid, elu, gelu")]
    assert [f for f, _ in config_problems(TrainConfig(loss="huber"))] == ["loss"]
    assert config_problems(TrainConfig(activation="gelu", loss="l1")) == []


def test_runs_saved_before_the_options_load_as_leaky_relu_mse(tmp_path):
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("activation", "loss")}
    c = TrainConfig.from_dict(old)
    assert (c.activation, c.loss) == ("leaky_relu", "mse")
    p = init_params(4, 0)
    path = tmp_path / "old.safetensors"
    path.write_bytes(st_save(p, metadata={"format": "aecore-model", "hidden": "4",
                                          "slope": "0.2"}))
    w = load_weights(path)
    assert (activation_of(w), loss_of(w), slope_of(w)) == ("leaky_relu", "mse", 0.2)


@pytest.fixture(scope="module")
def tanh_bce_run(tmp_path_factory, real_data_dir):
    out = tmp_path_factory.mktemp("act") / "runs"
    r = invoke("train", "--device", "cpu", "--hidden", "16", "--epochs", "2", "--limit", "256",
               "--batch-size", "64", "--activation", "tanh", "--loss", "bce", "--out", out,
               "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    assert [d.name for d in out.iterdir()] == ["h16-act-tanh-loss-bce"]  # named by what differs
    return out / "h16-act-tanh-loss-bce"


def test_run_records_activation_and_loss(tanh_bce_run):
    config = json.loads((tanh_bce_run / runs.CONFIG).read_text())
    config = config.get("config", config)
    assert (config["activation"], config["loss"]) == ("tanh", "bce")
    summary = json.loads((tanh_bce_run / runs.SUMMARY).read_text())
    assert 0 < summary["test_loss"] < summary["test_bce"]  # the MSE, and the BCE
    metrics = runs.read_metrics(tanh_bce_run / runs.METRICS)
    assert len(metrics) == 2 and all(r["val_loss"] < r["val_bce"] for r in metrics)
    assert metrics[0]["train_loss"] > metrics[0]["val_loss"]  # BCE (~0.3+) vs MSE (~0.05)
    w = load_weights(tanh_bce_run / runs.MODEL)
    assert (activation_of(w), loss_of(w)) == ("tanh", "bce")
    assert (w.meta["activation"], w.meta["loss"]) == ("tanh", "bce")


def test_model_loads_as_the_torch_sequential(tanh_bce_run, tiny_data):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    w = load_weights(tanh_bce_run / runs.MODEL)
    model = torch.nn.Sequential(torch.nn.Linear(784, 16),
                                torch_activation(activation_of(w), slope_of(w)),
                                torch.nn.Linear(16, 784), torch.nn.Sigmoid())
    model.load_state_dict(load_file(tanh_bce_run / runs.MODEL))
    X = tiny_data.test.images[:6]
    with torch.no_grad():
        want = model(torch.from_numpy(X.astype(np.float32) / 255)).numpy()
    eng = make_engine("cpu", w.params, activation=activation_of(w))
    np.testing.assert_allclose(eng.reconstruct(X), want, rtol=1e-5, atol=1e-6)


def test_eval_uses_the_runs_activation(tanh_bce_run, real_data_dir):
    r = invoke("eval", tanh_bce_run, "--device", "cpu", "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    summary = json.loads((tanh_bce_run / runs.SUMMARY).read_text())
    # eval prints the test MSE; with leaky_relu weights read as tanh it would differ
    assert f"{summary['test_loss']:.6f}"[:7] in r.output, r.output


def test_the_summary_table_names_the_trained_loss():
    """train_loss is the loss trained: the table's column says which, MSE for today's runs."""
    from cli.train import format_table

    base = {"hidden": 8, "params": 12, "epochs": 1, "epochs_done": 1, "status": "complete",
            "train_loss": 0.5, "val_loss": 0.1, "test_loss": 0.1}
    assert "train MSE" in format_table([base])
    assert "train BCE" in format_table([{**base, "test_bce": 0.5}])
    assert "train loss" in format_table([base, {**base, "test_l1": 0.2}])
