"""Interruption and exact resume: real SIGINT / SIGTERM signals, in-process (sent from the
trainer's per-chunk hook, so the interruption point is deterministic) and to a real
``aecore train`` subprocess; refusal of checkpoints that do not match."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from aecore import progress, runs, trainer
from aecore.checkpoint import load_checkpoint
from aecore.errors import CheckpointError
from aecore.model import PARAM_NAMES
from aecore.config import TrainConfig
from aecore.errors import TrainingInterrupted
from aecore.trainer import train

from conftest import synthetic_data

# Every test runs from a temporary directory that already holds runs/ and study/ (conftest).
pytestmark = pytest.mark.usefixtures("cwd_with_runs")

AECORE = [sys.executable, "-c", "from aecore.cli.main import main; main()"]
CHUNK = 64  # samples per chunk: 6 chunks per epoch of the 384 tiny training images


def cfg(**kw):
    # constant rate unless a test asks for a schedule: these runs are resumed with more epochs
    base = dict(hidden=20, epochs=3, batch_size=16, optimizer="sgd", lr=0.3, val_size=96, recon_epochs=(1, 2),
                lr_schedule="constant")
    return TrainConfig(**{**base, **kw})


def interrupt_after(n_chunks, sig=signal.SIGINT):
    calls = []

    def hook(epoch, pos):
        calls.append((epoch, pos))
        if len(calls) == n_chunks:
            os.kill(os.getpid(), sig)

    return hook


def assert_same_run(a, b):
    ma, mb = load_file(a / runs.MODEL), load_file(b / runs.MODEL)
    for k in PARAM_NAMES:
        assert np.array_equal(ma[k], mb[k]), f"{k} differs"
    ca, cb = load_checkpoint(a / runs.CHECKPOINT), load_checkpoint(b / runs.CHECKPOINT)
    assert sorted(ca.opt_state) == sorted(cb.opt_state)
    for k in ca.opt_state:
        assert np.array_equal(ca.opt_state[k], cb.opt_state[k]), f"{k} differs"
    assert ca.state["step"] == cb.state["step"]
    ra, rb = runs.read_metrics(a / runs.METRICS), runs.read_metrics(b / runs.METRICS)
    assert [(r["epoch"], r["train_loss"], r["val_loss"]) for r in ra] == \
           [(r["epoch"], r["train_loss"], r["val_loss"]) for r in rb]
    with np.load(a / runs.RECONSTRUCTIONS) as za, np.load(b / runs.RECONSTRUCTIONS) as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            assert np.array_equal(za[k], zb[k]), k


@pytest.mark.parametrize("optimizer,n_chunks", [("sgd", 9), ("momentum", 4), ("nesterov", 13),
                                                ("adam", 8)])
def test_interrupt_and_resume_is_bitwise_exact(tmp_path, tiny_data, optimizer, n_chunks):
    c = cfg(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.3)
    ref = tmp_path / "ref"
    train(c, ref, tiny_data, progress=False, chunk_samples=CHUNK)

    run = tmp_path / "run"
    # Python's default handler, or SIG_IGN when pytest was started as a background job of a
    # non-interactive shell (`pytest &` in a script: the shell ignores SIGINT for it)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as ei:
        train(c, run, tiny_data, progress=False, chunk_samples=CHUNK,
              on_chunk=interrupt_after(n_chunks))
    assert ei.value.exit_code == 130
    epoch, pos = divmod(n_chunks * CHUNK, 384)
    st = load_checkpoint(run / runs.CHECKPOINT, 20).state
    assert (st["epoch"], st["position"]) == (epoch, pos)  # stopped right after that chunk
    assert json.loads((run / runs.SUMMARY).read_text())["status"] == "interrupted"
    assert len(runs.read_metrics(run / runs.METRICS)) == epoch
    assert signal.getsignal(signal.SIGINT) is before  # train put back the handler it found

    assert runs.RunDir(run).checkpoint_config() == c
    s = train(c, run, tiny_data, resume=True, progress=False)
    assert s["status"] == "complete" and s["epochs_done"] == 3
    assert_same_run(ref, run)


@pytest.mark.parametrize("optimizer,schedule,warmup,n_chunks", [
    ("sgd", "cosine", 0, 9), ("adam", "cosine", 1, 8), ("momentum", "step", 0, 13),
    ("adam", "step", 1, 4), ("nesterov", "onecycle", 0, 7), ("adam", "onecycle", 0, 10),
    ("sgd", "constant", 1, 5)])
def test_interrupt_and_resume_continues_the_schedule_exactly(tmp_path, tiny_data, optimizer,
                                                             schedule, warmup, n_chunks):
    c = cfg(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.3, lr_schedule=schedule,
            warmup_epochs=warmup)
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(c, ref, tiny_data, progress=False, chunk_samples=CHUNK)
    with pytest.raises(TrainingInterrupted):
        train(c, run, tiny_data, progress=False, chunk_samples=CHUNK,
              on_chunk=interrupt_after(n_chunks))
    train(c, run, tiny_data, resume=True, progress=False)
    assert_same_run(ref, run)
    rates = [r["lr"] for r in runs.read_metrics(run / runs.METRICS)]
    sched = c.schedule(384)
    assert rates == [r["lr"] for r in runs.read_metrics(ref / runs.METRICS)]
    assert rates == [sched.lr_at(24 * e - 1) for e in (1, 2, 3)]  # 24 steps per epoch
    if schedule != "constant":
        assert len(set(rates)) == 3


def test_sigterm_at_epoch_boundary_then_resume_twice(tmp_path, tiny_data):
    c = cfg(epochs=4)
    ref = tmp_path / "ref"
    train(c, ref, tiny_data, progress=False, chunk_samples=CHUNK)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):  # the 6th chunk ends epoch 1
        train(c, run, tiny_data, progress=False, chunk_samples=CHUNK,
              on_chunk=interrupt_after(6, signal.SIGTERM))
    st = load_checkpoint(run / runs.CHECKPOINT).state
    assert (st["epoch"], st["position"]) == (1, 0)
    with pytest.raises(TrainingInterrupted):  # interrupted again, inside epoch 3
        train(c, run, tiny_data, resume=True, progress=False, on_chunk=interrupt_after(8))
    st = load_checkpoint(run / runs.CHECKPOINT).state
    assert (st["epoch"], st["position"]) == (2, 2 * CHUNK)
    train(c, run, tiny_data, resume=True, progress=False)
    assert_same_run(ref, run)


def test_resume_can_extend_epochs(tmp_path, tiny_data):
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(cfg(epochs=3), ref, tiny_data, progress=False)
    train(cfg(epochs=2), run, tiny_data, progress=False)
    with pytest.raises(CheckpointError, match="larger --epochs"):
        train(cfg(epochs=2), run, tiny_data, resume=True, progress=False)
    train(cfg(epochs=3), run, tiny_data, resume=True, progress=False)
    ma, mb = load_file(ref / runs.MODEL), load_file(run / runs.MODEL)
    assert all(np.array_equal(ma[k], mb[k]) for k in PARAM_NAMES)


def test_resume_cannot_extend_a_schedule_but_a_constant_rate_with_warm_up(tmp_path, tiny_data):
    run = tmp_path / "run"
    train(cfg(epochs=2, lr_schedule="cosine"), run, tiny_data, progress=False)
    with pytest.raises(CheckpointError, match=r"cosine learning-rate schedule spans 2 epochs.*"
                       "--epochs cannot change on resume") as ei:
        train(cfg(epochs=3, lr_schedule="cosine"), run, tiny_data, resume=True, progress=False)
    assert "\n" not in str(ei.value)
    with pytest.raises(CheckpointError, match="finished its 2 epochs"):
        train(cfg(epochs=2, lr_schedule="cosine"), run, tiny_data, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="lr_schedule='cosine', not 'step'"):
        train(cfg(epochs=2, lr_schedule="step"), run, tiny_data, resume=True, progress=False)
    # a constant rate after a warm-up does not depend on the run's length: extending it is
    # the same as having asked for more epochs at the start
    ref, run = tmp_path / "ref", tmp_path / "warm"
    train(cfg(epochs=3, warmup_epochs=1), ref, tiny_data, progress=False)
    train(cfg(epochs=2, warmup_epochs=1), run, tiny_data, progress=False)
    with pytest.raises(CheckpointError, match="warmup_epochs=1, not 0"):
        train(cfg(epochs=3), run, tiny_data, resume=True, progress=False)
    train(cfg(epochs=3, warmup_epochs=1), run, tiny_data, resume=True, progress=False)
    assert_same_run(ref, run)


def test_a_run_from_before_the_schedules_resumes_at_its_constant_rate(tmp_path, tiny_data):
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(cfg(epochs=3), ref, tiny_data, progress=False)
    train(cfg(epochs=2), run, tiny_data, progress=False)
    ck = load_checkpoint(run / runs.CHECKPOINT)  # as the code before the schedules wrote it
    old = {k: v for k, v in ck.state["config"].items() if k not in ("lr_schedule", "warmup_epochs")}
    rows = [{k: v for k, v in r.items() if k != "lr"} for r in ck.state["metrics"]]
    runs.RunDir(run).save_checkpoint(ck.params, ck.opt_state,
                                     {**ck.state, "config": old, "metrics": rows})
    runs.write_metrics(run / runs.METRICS, rows)
    train(cfg(epochs=3), run, tiny_data, resume=True, progress=False)
    assert_same_run(ref, run)
    assert [r["lr"] for r in runs.read_metrics(run / runs.METRICS)] == [0.3] * 3


def test_resume_refuses_mismatches(tmp_path, tiny_data):
    run = tmp_path / "run"
    train(cfg(epochs=1), run, tiny_data, progress=False)
    with pytest.raises(CheckpointError, match="hidden size 20, not 32"):
        train(cfg(hidden=32, epochs=2), run, tiny_data, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="lr=0.3"):
        train(cfg(lr=0.1, epochs=2), run, tiny_data, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="optimizer buffers"):
        train(cfg(optimizer="adam", epochs=2), run, tiny_data, resume=True, progress=False)
    other = synthetic_data(seed=5)
    with pytest.raises(CheckpointError, match="training data differs"):
        train(cfg(epochs=2), run, other, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no such file|not found"):
        train(cfg(epochs=2), tmp_path / "nothing", tiny_data, resume=True, progress=False)
    ck = run / runs.CHECKPOINT
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        train(cfg(epochs=2), run, tiny_data, resume=True, progress=False)


# --- a real `aecore train` process, interrupted by a signal from outside ---------------------------

@pytest.mark.parametrize("every", [0, 1e9])
def test_signal_after_the_last_chunk_of_an_epoch_saves_that_epoch(tmp_path, tiny_data,
                                                                 monkeypatch, every):
    """SIGINT while an epoch's line is printed (after its last chunk, before the next epoch):
    with or without a save due at that epoch, the checkpoint on disk is that epoch's, and the
    resumed run ends as an uninterrupted one (seen by the CLI test on a loaded machine)."""

    real = progress.Progress.epoch

    def print_then_signal(self, row, *note):
        real(self, row, *note)
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    c = cfg(epochs=3)
    run = tmp_path / "run"
    monkeypatch.setattr(progress.Progress, "epoch", print_then_signal)
    with pytest.raises(TrainingInterrupted):
        train(c, run, tiny_data, progress=False, chunk_samples=CHUNK, checkpoint_every=every)
    st = load_checkpoint(run / runs.CHECKPOINT).state
    assert (st["epoch"], st["position"]) == (1, 0)
    assert len(runs.read_metrics(run / runs.METRICS)) == 1
    monkeypatch.setattr(progress.Progress, "epoch", real)
    train(c, run, tiny_data, resume=True, progress=False)
    ref = tmp_path / "ref"
    train(c, ref, tiny_data, progress=False, chunk_samples=CHUNK)
    assert_same_run(ref, run)


def test_cli_subprocess_sigint_then_resume(tmp_path, tiny_data, real_data_dir):
    """Start `aecore train`, send SIGINT once it is training, check exit 130 and the resume hint,
    resume it, and compare with an uninterrupted in-process run of the same configuration."""
    from aecore.data import load_fashion_mnist

    args = ["--device", "cpu", "--hidden", "32", "--epochs", "30", "--batch-size", "64",
            "--optimizer", "sgd", "--lr", "0.2", "--limit", "4096", "--val-size", "10000",
            "--data-dir", real_data_dir]
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*AECORE, "train", *args,
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()  # the first epoch line: it is training now
        assert "epoch" in line, line + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    run = out / "h32-sgd"
    assert f"--resume {run}" in stdout + stderr
    assert "Traceback" not in stdout + stderr
    st = load_checkpoint(run / runs.CHECKPOINT, 32).state
    assert 1 <= st["epoch"] < 30, stdout + stderr

    r = subprocess.run([*AECORE, "train", "--resume", str(run),
                        "--data-dir", real_data_dir], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((run / runs.SUMMARY).read_text())["epochs_done"] == 30

    ref = tmp_path / "ref"
    data = load_fashion_mnist(real_data_dir, val_size=10000, download=False, progress=False)
    train(runs.RunDir(run).checkpoint_config(), ref, data, progress=False)
    assert_same_run(ref, run)


# --- running out of GPU memory -------------------------------------------------------------------
# Without a GPU the out-of-memory error is injected: an engine for "cuda" whose allocation (put)
# or training step raises the error numba-cuda raises when cuMemAlloc fails.
CUDA_OOM = ("[CUresult.CUDA_ERROR_OUT_OF_MEMORY] Call to cuMemAlloc results in "
            "CUDA_ERROR_OUT_OF_MEMORY")


class _OomEngine:
    def __init__(self, real, where):
        self._real, self._where, self.device = real, where, "cuda"

    def __getattr__(self, name):
        return getattr(self._real, name)

    def put(self, images):
        if self._where == "put":
            raise RuntimeError(CUDA_OOM)
        return self._real.put(images)

    def train_steps(self, *a):
        if self._where == "step":
            raise RuntimeError(CUDA_OOM)
        return self._real.train_steps(*a)


@pytest.fixture
def oom_on_cuda(monkeypatch):
    from aecore import devices

    real_make = devices.make_engine
    where = {"at": "put"}

    def make(device, *a, **kw):
        if device == "cuda":
            return _OomEngine(real_make("cpu", *a, **kw), where["at"])
        return real_make(device, *a, **kw)

    monkeypatch.setattr(devices, "make_engine", make)
    return where


def test_cuda_oom_is_a_clear_error(tmp_path, tiny_data, oom_on_cuda):
    from aecore.errors import DeviceError

    with pytest.raises(DeviceError, match="cuda out of memory for hidden=20") as e:
        train(cfg(device="cuda"), tmp_path / "a", tiny_data, progress=False)
    assert e.value.exit_code == 2 and "--device cpu" in str(e.value)
    oom_on_cuda["at"] = "step"
    with pytest.raises(DeviceError, match="cuda out of memory in epoch 1"):
        train(cfg(device="cuda"), tmp_path / "b", tiny_data, progress=False)


def test_cuda_oom_with_auto_falls_back_to_cpu(tmp_path, tiny_data, oom_on_cuda, capsys):
    s = train(cfg(device="cuda"), tmp_path / "a", tiny_data, progress=False, fallback_cpu=True)
    assert s["status"] == "complete" and s["device"] == "cpu"
    assert "notice: CUDA ran out of memory" in capsys.readouterr().err


def test_broken_numba_cuda_is_a_one_line_reason():
    """numba-cuda 0.30.4 under numpy 2.5 imports but fails at its first compilation (seen on a
    GPU machine); cuda_usable() compiles a kernel to catch that, and says it in one line with
    the way out."""
    from aecore.devices import _compile_problem, compile_problem_message

    msg = compile_problem_message(AttributeError("module 'numpy' has no attribute 'row_stack'\n"
                                                 "  more lines"))
    assert "\n" not in msg
    assert msg.startswith("numba-cuda cannot compile kernels here (AttributeError: module")
    assert "numpy < 2.5" in msg
    assert "numpy" not in compile_problem_message(RuntimeError("NVVM is missing"))
    pytest.importorskip("numba.cuda")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or _gpu_here():
        assert _compile_problem() == ""  # this installation does compile kernels


def _gpu_here():
    from aecore.devices import real_gpu_present

    return real_gpu_present()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_interrupt_message_starts_a_line_after_the_progress_bar(tmp_path, tiny_data,
                                                                    monkeypatch):
    """On a terminal the bar has no newline. Ctrl-C during a chunk: the handler's notice, the
    bar drawn again at the chunk's end, then the stop; what the CLI prints next ("interrupted
    by SIGINT ...") must start a line of its own, not land on the end of the bar."""
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    draw = progress.Progress.chunk
    calls = []

    def chunk(self, *a):
        calls.append(a)
        if len(calls) == 3:  # the signal arrives while the chunk trains, before its bar
            os.kill(os.getpid(), signal.SIGINT)
        self.t_last = -1e9  # no 0.2 s throttle: the bar is drawn at every chunk of the tiny run
        return draw(self, *a)

    monkeypatch.setattr(progress.Progress, "chunk", chunk)
    with pytest.raises(TrainingInterrupted):
        train(cfg(), tmp_path / "r", tiny_data, progress=True, chunk_samples=CHUNK)
    text = term.getvalue()
    last = text.rsplit("\n", 1)[-1]
    assert "received" in text and "epoch 1/3 [" in last  # the bar was drawn after the notice
    assert last.endswith("\r\033[K")  # ... and then cleared: the next text starts a line


def test_the_first_epoch_line_says_it_includes_compiling(tmp_path, tiny_data, monkeypatch,
                                                         capsys):
    monkeypatch.setattr(trainer, "_COMPILED", set())  # as in a fresh process
    train(cfg(), tmp_path / "a", tiny_data, progress=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " epoch " in ln]
    assert len(lines) == 3 and "includes compiling" in lines[0]
    assert not any("compiling" in ln for ln in lines[1:])
    train(cfg(), tmp_path / "b", tiny_data, progress=True)  # compiled by now: no note
    assert "compiling" not in capsys.readouterr().out
