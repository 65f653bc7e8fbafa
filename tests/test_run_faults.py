"""Faults around the run directory: two runs into one directory (one is refused, naming the
holder; a killed holder blocks nothing), and write failures (disk full, I/O error, read-only,
the directory removed) that end the run with one line while the last checkpoint stays
resumable."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aecore import runs
from aecore.checkpoint import load_checkpoint
from aecore.errors import RunDirBusyError, RunWriteError
from aecore.config import TrainConfig
from aecore.trainer import train

pytestmark = pytest.mark.usefixtures("cwd_with_runs")

TESTS = Path(__file__).resolve().parent
AECORE = [sys.executable, "-c", "from aecore.cli.main import main; main()"]
CFG = TrainConfig(optimizer="sgd", hidden=20, epochs=3, batch_size=16, lr=0.3, val_size=96,
                  recon_epochs=(1, 2))


def run_files(d):
    return sorted(p.name for p in Path(d).iterdir())


# --- one run per directory -----------------------------------------------------------------------

# Each process loads everything, says it is ready, waits for the other, then trains into the same
# directory (the holder slowly, so that the lock is certainly held when the other asks).
RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import synthetic_data
    from aecore.errors import AecoreError
    from aecore.config import TrainConfig
    from aecore.trainer import train
    me, run, lr, epochs = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    data = synthetic_data()
    (run.parent / f"ready-{{me}}").touch()
    while len(list(run.parent.glob("ready-*"))) < 2:
        time.sleep(0.01)
    c = TrainConfig(optimizer="sgd", hidden=20, epochs=epochs, batch_size=16, lr=lr, val_size=96)
    try:
        train(c, run, data, progress=False, overwrite=True, chunk_samples=64,
              checkpoint_every=0, on_chunk=lambda e, p: time.sleep(0.1))
    except AecoreError as e:
        print(f"refused: {{e}}", file=sys.stderr)
        sys.exit(1)
""")


def test_two_processes_into_one_directory_exactly_one_runs(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(tests=str(TESTS)))
    run = tmp_path / "r"
    settings = {"a": ("0.3", "3"), "b": ("0.05", "2")}
    procs = {me: subprocess.Popen([sys.executable, str(script), me, str(run), lr, ep],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, (lr, ep) in settings.items()}
    out = {me: (p.communicate(timeout=300), p.returncode, p.pid) for me, p in procs.items()}
    winners = [me for me, (_, rc, _) in out.items() if rc == 0]
    assert len(winners) == 1, out
    loser = "b" if winners == ["a"] else "a"
    (_, err), rc, _ = out[loser]
    assert rc == 1 and "is in use by pid" in err, err
    assert f"pid {out[winners[0]][2]} " in err  # names the process that holds it
    assert "Traceback" not in err
    # the directory holds the winner's run alone: config, metrics and summary agree
    lr, epochs = float(settings[winners[0]][0]), int(settings[winners[0]][1])
    config = json.loads((run / runs.CONFIG).read_text())["config"]
    summary = json.loads((run / runs.SUMMARY).read_text())
    assert (config["lr"], config["epochs"]) == (lr, epochs)
    assert (summary["lr"], summary["epochs_done"], summary["status"]) == (lr, epochs, "complete")
    assert len(runs.read_metrics(run / runs.METRICS)) == epochs
    assert run_files(run) == sorted(runs.RUN_FILES)  # no lock or temp file left behind


def test_a_refused_run_changes_nothing(tmp_path, tiny_data):
    run = tmp_path / "r"
    train(CFG, run, tiny_data, progress=False)
    before = {n: (run / n).read_bytes() for n in run_files(run)}
    with runs.lock_run_dir(run):
        for kw in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(RunDirBusyError, match="in use by another run in this process"):
                train(TrainConfig(**{**CFG.to_dict(), "epochs": 5}), run, tiny_data,
                      progress=False, **kw)
    assert {n: (run / n).read_bytes() for n in run_files(run)} == before


def test_threads_of_one_process_never_share_a_directory(tmp_path, tiny_data):
    run = tmp_path / "r"
    inside, leave = threading.Event(), threading.Event()
    errors = []

    def hold():
        def hook(epoch, pos):
            inside.set()
            leave.wait(60)

        try:
            train(CFG, run, tiny_data, progress=False, on_chunk=hook, signals=_NoSignals())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(120)
        with pytest.raises(RunDirBusyError, match="this process"):
            train(CFG, run, tiny_data, progress=False, overwrite=True, signals=_NoSignals())
    finally:
        leave.set()
        t.join(120)
    assert not errors and json.loads((run / runs.SUMMARY).read_text())["status"] == "complete"


class _NoSignals:
    received = None


def test_cli_second_train_refused_then_a_killed_holder_blocks_nothing(tmp_path, real_data_dir):
    out = tmp_path / "runs"
    # constant rate: the killed run is resumed with other --epochs at the end
    args = ["train", "--device", "cpu", "--hidden", "16", "--optimizer", "sgd", "--limit", "2048",
            "--lr-schedule", "constant", "--checkpoint-every", "0", "--data-dir", real_data_dir,
            "--out", str(out)]
    holder = subprocess.Popen([*AECORE, *args, "--epochs", "500", "--lr", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = holder.stdout.readline()  # its first epoch: it is training, the lock is held
        assert "epoch" in line, line + holder.stderr.read()
        run = out / "h16-sgd-sched-constant"
        config = (run / runs.CONFIG).read_bytes()
        r = subprocess.run([*AECORE, *args, "--epochs", "2", "--lr", "0.5", "--overwrite"],
                           capture_output=True, text=True)
        assert r.returncode == 1, r.stdout + r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(err) == 1 and f"in use by pid {holder.pid} " in err[0], r.stderr
        assert "train" in err[0] and "Traceback" not in r.stderr
        r = subprocess.run([*AECORE, "train", "--resume", str(run), "--data-dir", real_data_dir],
                           capture_output=True, text=True)
        assert r.returncode == 1 and f"pid {holder.pid} " in r.stderr, r.stderr
        assert (run / runs.CONFIG).read_bytes() == config  # the holder's run, untouched
        holder.send_signal(signal.SIGKILL)
        holder.wait(60)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    assert (run / runs.LOCK).exists()  # left by the killed process: it must not block
    done = load_checkpoint(run / runs.CHECKPOINT).state["epoch"]
    r = subprocess.run([*AECORE, "train", "--resume", str(run), "--epochs", str(done + 1),
                        "--data-dir", real_data_dir], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((run / runs.SUMMARY).read_text())["epochs_done"] == done + 1
    assert not (run / runs.LOCK).exists()


# --- write failures ------------------------------------------------------------------------------

def fail_writes(monkeypatch, target: str, code=errno.ENOSPC):
    """Make the fsync of ``target``'s temp file fail with ``code`` once ``armed["on"]`` is set
    (a full disk shows up at write or fsync time): every writer goes through aecore.atomic.atomic_write."""
    real = os.fsync
    armed = {"on": False, "failed": 0}

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if armed["on"] and name.startswith(f".{target}."):
            armed["failed"] += 1
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return armed


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


@needs_proc
@pytest.mark.parametrize("target", [n for n in runs.RUN_FILES if n != runs.CONFIG])
def test_a_failed_write_stops_the_run_and_the_last_checkpoint_resumes(tmp_path, tiny_data,
                                                                      monkeypatch, target):
    run, ref = tmp_path / "r", tmp_path / "ref"
    armed = fail_writes(monkeypatch, target)

    def hook(epoch, pos):
        armed["on"] = epoch == 2  # the files saved after epoch 2 fail

    with pytest.raises(RunWriteError) as e:
        train(CFG, run, tiny_data, progress=False, checkpoint_every=0, on_chunk=hook)
    msg = str(e.value)
    assert armed["failed"] == 1 and "\n" not in msg
    assert f"cannot write {run / target}: No space left on device" in msg
    assert f"aecore train --resume {run}" in msg
    assert not list(run.glob(".*.tmp")) and not (run / runs.LOCK).exists()
    st = load_checkpoint(run / runs.CHECKPOINT).state
    assert st["epoch"] in (1, 2) and f"epoch {st['epoch']} is intact" in msg
    monkeypatch.undo()  # space again: the run resumes and ends as an uninterrupted one
    train(CFG, run, tiny_data, progress=False, resume=True)
    train(CFG, ref, tiny_data, progress=False)
    a, b = load_checkpoint(run / runs.CHECKPOINT), load_checkpoint(ref / runs.CHECKPOINT)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@needs_proc
@pytest.mark.parametrize("code", [errno.EIO, errno.EROFS])
def test_other_write_errors_name_the_cause(tmp_path, tiny_data, monkeypatch, code):
    run = tmp_path / "r"
    armed = fail_writes(monkeypatch, runs.CHECKPOINT, code)
    armed["on"] = True  # the very first save: no checkpoint exists yet
    with pytest.raises(RunWriteError, match=os.strerror(code)) as e:
        train(CFG, run, tiny_data, progress=False)
    assert "No checkpoint was saved" in str(e.value)
    assert not (run / runs.CHECKPOINT).exists() and not list(run.glob(".*.tmp"))


@needs_proc
def test_config_write_failure(tmp_path, tiny_data, monkeypatch):
    fail_writes(monkeypatch, runs.CONFIG)["on"] = True
    with pytest.raises(RunWriteError, match="config.json: No space left on device"):
        train(CFG, tmp_path / "r", tiny_data, progress=False)


def test_run_directory_removed_under_a_running_run(tmp_path, tiny_data):
    run = tmp_path / "r"

    def hook(epoch, pos):
        if epoch == 2 and run.exists():
            shutil.rmtree(run)

    with pytest.raises(RunWriteError, match=f"the directory {run} no longer exists"):
        train(CFG, run, tiny_data, progress=False, checkpoint_every=0, on_chunk=hook)


@needs_proc
def test_cli_disk_full_is_one_line_with_the_resume_command(tmp_path, real_data_dir, monkeypatch):
    from aecore.cli.main import main
    from aecore import trainer

    armed = fail_writes(monkeypatch, runs.CHECKPOINT)
    real_keep = trainer._Run.keep

    def keep(self, engine, epoch_done, *a):  # arm after epoch 1 is kept: its save fails
        armed["on"] = epoch_done >= 2
        return real_keep(self, engine, epoch_done, *a)

    monkeypatch.setattr(trainer._Run, "keep", keep)
    out = tmp_path / "runs"
    r = CliRunner().invoke(main, ["train", "--device", "cpu", "--hidden", "16", "--epochs", "3",
                                  "--limit", "512", "--checkpoint-every", "0", "--data-dir",
                                  real_data_dir, "--out", str(out)])
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], r.output
    assert f"--resume {out / 'h16-adam'}" in errors[0]
    assert "Traceback" not in r.output and "failed" not in r.output
    assert isinstance(r.exception, SystemExit)
    assert load_checkpoint(out / "h16-adam" / runs.CHECKPOINT).state["epoch"] == 1


def test_a_file_system_without_locks_trains_with_a_warning(tmp_path, tiny_data, monkeypatch,
                                                          capsys):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    s = train(CFG, tmp_path / "r", tiny_data, progress=False)
    assert s["status"] == "complete" and "has no file locks" in capsys.readouterr().err
