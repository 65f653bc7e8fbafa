"""Several runs at once (``aecore.S.train_runs``, ``aecore study --jobs``): each run's
results are exactly those of training it alone, and a stop (Ctrl-C, or one run failing) makes
every run in progress save a checkpoint and stop, after which the same study resumes them.

These run the CPU engine in the worker threads (the threading, the shared stop flag and the
files are the same for every engine); the CUDA engine's side by side test, which needs a real
GPU, is in test_engine_cuda.py."""

from __future__ import annotations

import json
import re
import signal
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from aecore import runs
from aecore import side_by_side as S
from aecore.checkpoint import load_checkpoint
from aecore.cli.main import main
from aecore.config import TrainConfig
from aecore.errors import TrainingInterrupted
from aecore.trainer import train

from conftest import synthetic_data


# Every test runs from a temporary directory that already holds runs/ and study/ (conftest).
pytestmark = pytest.mark.usefixtures("cwd_with_runs")


def _plan(root, hidden_opts, epochs=2, cpu_gemm="blas"):
    return [S.PlannedRun(TrainConfig(hidden=h, optimizer=o, epochs=epochs, val_size=96,
                                     device="cpu", recon_epochs=(1,), cpu_gemm=cpu_gemm),
                         root / f"h{h}-{o}")
            for h, o in hidden_opts]


def _trainer(data, hooks=None, **kw):
    """train_one for train_runs: the real trainer; ``hooks`` maps a run name to its on_chunk."""
    def train_one(p, signals):
        hook = (hooks or {}).get(p.dir.name)
        on_chunk = None if hook is None else (lambda e, pos: hook(e, pos, signals))
        return train(p.config, p.dir, data, progress=False, signals=signals, on_chunk=on_chunk,
                     **kw)
    return train_one


def _wait_for_stop(signals, timeout=60.0):
    t0 = time.monotonic()
    while signals.received is None:
        assert time.monotonic() - t0 < timeout, "no stop arrived"
        time.sleep(0.005)


def _same_run(a, b):
    ca, cb = load_checkpoint(a / runs.CHECKPOINT), load_checkpoint(b / runs.CHECKPOINT)
    for k in ca.params:
        np.testing.assert_array_equal(ca.params[k], cb.params[k], err_msg=f"{a.name} {k}")
    for k in ca.opt_state:
        np.testing.assert_array_equal(ca.opt_state[k], cb.opt_state[k], err_msg=f"{a.name} {k}")
    ma, mb = runs.read_metrics(a / runs.METRICS), runs.read_metrics(b / runs.METRICS)
    assert [(r["train_loss"], r["val_loss"]) for r in ma] == \
        [(r["train_loss"], r["val_loss"]) for r in mb]


RUNS = [(8, "adam"), (16, "sgd"), (24, "momentum")]


@pytest.mark.parametrize("cpu_gemm", ["blas", "own"])
def test_runs_side_by_side_equal_runs_alone(tmp_path, cpu_gemm):
    """Either CPU step: both hand their halves to OpenBLAS's threads, which the runs share."""
    data = synthetic_data()
    one = S.train_runs(_plan(tmp_path / "seq", RUNS, cpu_gemm=cpu_gemm),
                       _trainer(data, chunk_samples=64), jobs=1)
    par = S.train_runs(_plan(tmp_path / "par", RUNS, cpu_gemm=cpu_gemm),
                       _trainer(data, chunk_samples=64), jobs=3)
    assert [o.status for o in one] == [o.status for o in par] == ["complete"] * 3
    for o, q in zip(one, par):
        _same_run(o.run.dir, q.run.dir)
        assert o.summary["test_loss"] == q.summary["test_loss"]


def test_a_failing_run_stops_the_others_with_checkpoints(tmp_path):
    data = synthetic_data()
    names = [f"h{h}-{o}" for h, o in RUNS]

    holding = threading.Event()

    def fail(epoch, pos, signals):  # only once the other run is training (else it is "not started")
        assert holding.wait(60), "the second run never started"
        raise RuntimeError("disk on fire")

    def hold(epoch, pos, signals):  # still in its first epoch when the other run fails
        holding.set()
        _wait_for_stop(signals)

    plan = _plan(tmp_path, RUNS)
    out = S.train_runs(plan, _trainer(data, {names[0]: fail, names[1]: hold}, chunk_samples=64),
                       jobs=2)
    assert [o.status for o in out] == ["failed", "interrupted", "not started"]
    assert isinstance(out[0].error, RuntimeError) and "disk on fire" in str(out[0].error)
    assert isinstance(out[1].error, TrainingInterrupted)
    assert "the failure of run " + names[0] in str(out[1].error)
    s = json.loads((plan[1].dir / runs.SUMMARY).read_text())
    assert s["status"] == "interrupted"
    ck = load_checkpoint(plan[1].dir / runs.CHECKPOINT)
    assert (ck.state["epoch"], ck.state["position"]) == (0, 64)  # after its first chunk
    assert not plan[2].dir.exists()


def test_train_runs_installs_the_ctrl_c_handler_when_given_none(tmp_path):
    data = synthetic_data()
    names = [f"h{h}-{o}" for h, o in RUNS]

    def ctrl_c(epoch, pos, signals):
        signal.raise_signal(signal.SIGINT)
        _wait_for_stop(signals)

    def hold(epoch, pos, signals):
        _wait_for_stop(signals)

    before = signal.getsignal(signal.SIGINT)
    out = S.train_runs(_plan(tmp_path, RUNS), _trainer(data, {names[0]: ctrl_c, names[1]: hold},
                                                       chunk_samples=64), jobs=2)
    assert [o.status for o in out] == ["interrupted", "interrupted", "not started"]
    assert "SIGINT" in str(out[0].error)
    assert signal.getsignal(signal.SIGINT) is before  # put back afterwards


def test_cli_jobs_ctrl_c_saves_every_run_and_the_rerun_resumes_them(tmp_path, real_data_dir,
                                                                    monkeypatch):

    base = ["study", "--device", "cpu", "--hidden", "8,16,24", "--epochs", "2", "--limit", "512",
            "--optimizers", TrainConfig().optimizer, "--data-dir", real_data_dir, "--yes"]
    ref, out = tmp_path / "ref", tmp_path / "st"
    r = CliRunner().invoke(main, base + ["--out", str(ref)])  # one at a time, uninterrupted
    assert r.exit_code == 0, r.output

    real_train = S.train_run
    started = []

    def ctrl_c_in_first_chunks(config, run_dir, data, **kw):
        started.append(run_dir.name)
        signals = kw["signals"]
        first = len(started) == 1

        def on_chunk(epoch, pos):
            if epoch == 1 and pos == 64 and first:
                signal.raise_signal(signal.SIGINT)  # what Ctrl-C does (here from a worker)
            _wait_for_stop(signals)

        return real_train(config, run_dir, data, on_chunk=on_chunk, chunk_samples=64, **kw)

    monkeypatch.setattr(S, "train_run", ctrl_c_in_first_chunks)
    threads_before = threading.active_count()  # a pytest-xdist worker has threads of its own
    r = CliRunner().invoke(main, base + ["--out", str(out), "--jobs", "2"])
    assert r.exit_code == 130, r.output
    assert threading.active_count() == threads_before  # the workers are gone
    assert len(started) == 2  # the third run was not started
    for name in started:
        s = json.loads((out / name / runs.SUMMARY).read_text())
        assert s["status"] == "interrupted", name
        assert load_checkpoint(out / name / runs.CHECKPOINT).state["position"] == 64
    assert "run the same aecore study command again" in r.output.lower()

    monkeypatch.setattr(S, "train_run", real_train)
    r = CliRunner().invoke(main, base + ["--out", str(out), "--jobs", "3"])
    assert r.exit_code == 0, r.output
    assert "3 at once, the runs' own wall times add up to" in r.output
    for h in (8, 16, 24):
        name = runs.run_name(h, TrainConfig().optimizer)
        _same_run(out / name, ref / name)  # resumed mid-epoch, side by side: the same run


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_cli_jobs_usage_errors(tmp_path, bad):
    r = CliRunner().invoke(main, ["study", "--jobs", bad, "--out", str(tmp_path / "st"),
                                  "--data-dir", str(tmp_path / "none"), "--yes"])
    assert r.exit_code == 2 and "--jobs" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "st").exists()


def test_cli_train_sweep_with_jobs_equals_one_at_a_time(tmp_path, real_data_dir):
    base = ["train", "--device", "cpu", "--hidden", "8,16", "--epochs", "2", "--limit", "512",
            "--data-dir", real_data_dir]
    for out, jobs in ((tmp_path / "one", "1"), (tmp_path / "two", "2")):
        r = CliRunner().invoke(main, base + ["--out", str(out), "--jobs", jobs])
        assert r.exit_code == 0, r.output
        assert r.output.count("complete") == 2  # the comparison table, both runs
        lines = [ln for ln in r.output.splitlines() if " epoch " in ln]
        assert len(lines) == 4 and all(re.fullmatch(r"h(8|16) epoch +[12]/2  train .* samples/s",
                                                    ln) for ln in lines), lines
    for h in (8, 16):
        name = runs.run_name(h, TrainConfig().optimizer)
        _same_run(tmp_path / "two" / name, tmp_path / "one" / name)
    r = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "one" / name), "--jobs", "2"])
    assert r.exit_code == 2 and "--jobs" in r.output
