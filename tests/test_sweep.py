"""``aecore sweep`` on Ray Tune: a grid on a local Ray instance, ASHA early stopping, Ctrl-C and
continue, and a two-node Ray cluster on this host. Each sweep runs the CLI in a subprocess (its
own Ray instance, shut down when it ends) on a few hundred real Fashion-MNIST images."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aecore import runs
from aecore.sweep import FIGURE, INSTALL_HINT, RESULTS_CSV, parse_axis, trial_config, trial_name
from aecore.trainer import TrainConfig

AECORE = [sys.executable, "-c", "from aecore.cli.main import main; main()"]
RAY = str(Path(sys.executable).with_name("ray"))
try:
    import ray.tune  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="needs the aecore[sweep] extra (ray[tune])")


def _env(real_data_dir):
    # PYTHONFAULTHANDLER: a sweep process that crashes prints its threads' stacks. The two-node
    # test's sweep has twice (of ~8 clean-clone runs, 2026-12-03) finished its work, printed its
    # table and then died with SIGSEGV, stderr empty: cause not found yet.
    return {**os.environ, "AECORE_DATA": str(real_data_dir), "RAY_USAGE_STATS_ENABLED": "0",
            "MPLBACKEND": "Agg", "PYTHONFAULTHANDLER": "1"}


def sweep(real_data_dir, out, *args, check=True):
    return sweep_env(_env(real_data_dir), out, *args, check=check)


def sweep_env(env, out, *args, check=True):
    r = subprocess.run([*AECORE, "sweep", "--out", str(out), "--limit", "512", *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def results(out) -> list[dict]:
    with open(out / RESULTS_CSV) as f:
        return list(csv.DictReader(f))


# --- without Ray ----------------------------------------------------------------------------------

def test_on_epoch_gets_each_epochs_row_after_it_is_saved(tmp_path, tiny_data):
    from aecore.trainer import train

    seen = []

    def on_epoch(row):  # the files hold this epoch already (saved every epoch here)
        on_disk = runs.read_metrics(tmp_path / "r" / runs.METRICS)
        seen.append((row, on_disk[-1]["epoch"]))

    train(TrainConfig(hidden=8, epochs=3, batch_size=32), tmp_path / "r", tiny_data,
          progress=False, checkpoint_every=0, on_epoch=on_epoch)
    rows = runs.read_metrics(tmp_path / "r" / runs.METRICS)
    def losses(rs):
        return [(r["epoch"], r["train_loss"], r["val_loss"]) for r in rs]

    assert losses(r for r, _ in seen) == losses(rows) and [e for _, e in seen] == [1, 2, 3]


@needs_ray
def test_axes_parse_lists_and_ranges():
    assert parse_axis("hidden", "64,128").values == (64, 128)
    a = parse_axis("lr", "1e-4:1e-2")
    assert a.is_range and (a.low, a.high) == (1e-4, 1e-2)
    for name, text in [("hidden", "0"), ("lr", "-1"), ("lr", "1e-2:1e-4"), ("optimizer", "sgd:adam"),
                       ("optimizer", "adamw"), ("seed", "1,1"), ("batch_size", "x")]:
        with pytest.raises(ValueError):
            parse_axis(name, text)
    c = trial_config(TrainConfig(epochs=2), {"hidden": 64, "optimizer": "sgd"})
    assert (c.lr, trial_name(c)) == (50.0, "h64-sgd-lr50-b64-s0-onecycle")  # sgd's onecycle lr
    assert parse_axis("lr_schedule", "constant,onecycle").values == ("constant", "onecycle")
    for text in ("cosine:step", "linear"):
        with pytest.raises(ValueError, match="comma list|unknown lr schedule 'linear'"):
            parse_axis("lr_schedule", text)
    c = trial_config(TrainConfig(epochs=2), {"hidden": 64, "lr_schedule": "cosine"})
    assert (c.lr_schedule, trial_name(c)) == ("cosine", "h64-adam-lr0.002-b64-s0-cosine")  # its lr
    c = trial_config(TrainConfig(epochs=2, lr_schedule="constant"), {"hidden": 64})
    assert (c.lr, trial_name(c)) == (1e-3, "h64-adam-lr0.001-b64-s0")  # no suffix: as before


@needs_ray
def test_bad_options_are_one_line_usage_errors(tmp_path):
    for args in (["--lr", "abc"], ["--samples", "3"], ["--device", "cuda"],
                 ["--num-cpus", "1", "--address", "127.0.0.1:1"]):
        r = subprocess.run([*AECORE, "sweep", "--out", str(tmp_path), *args], capture_output=True,
                           text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([*AECORE, "sweep", "--out", str(tmp_path), "--address", "127.0.0.1:1"],
                       capture_output=True, text=True)  # nothing listens there: one line, fast
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "127.0.0.1:1" in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())


def test_without_ray_it_says_how_to_install(tmp_path):
    block = "import sys; sys.modules['ray'] = None; from aecore.cli.main import main; main()"
    r = subprocess.run([sys.executable, "-c", block, "sweep", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"Error: {INSTALL_HINT}"]


# --- on a local Ray instance ----------------------------------------------------------------------

@needs_ray
@pytest.mark.slow
def test_grid_sweep_four_trials(tmp_path, real_data_dir):
    out = tmp_path / "s"
    r = sweep(real_data_dir, out, "--hidden", "16,32", "--lr", "1e-3,3e-3", "--epochs", 2,
              "--num-cpus", 2)
    rows = results(out)
    names = {f"h{h}-adam-lr{lr}-b64-s0-onecycle" for h in (16, 32) for lr in ("0.001", "0.003")}
    assert {row["trial"] for row in rows} == names
    vals = [float(row["val_loss"]) for row in rows]
    assert vals == sorted(vals) and all(row["status"] == "complete" for row in rows)
    for name in names:  # normal run directories, trained for 2 epochs
        summary = runs.read_json(out / name / runs.SUMMARY)
        assert (summary["status"], summary["epochs_done"]) == ("complete", 2)
        assert set(runs.RUN_FILES) <= {p.name for p in (out / name).iterdir()}
        metrics = runs.read_metrics(out / name / runs.METRICS)
        row = next(x for x in rows if x["trial"] == name)
        assert float(row["val_loss"]) == metrics[-1]["val_loss"]  # what Tune got is the run's
    assert (out / FIGURE).stat().st_size > 10_000
    best = rows[0]["trial"]
    assert f"best: {best}" in r.stdout
    table = r.stdout[r.stdout.index("#  trial"):]
    assert [line.split()[1] for line in table.splitlines()[2:6]] == [x["trial"] for x in rows]
    again = sweep(real_data_dir, out, "--hidden", "16,32", "--lr", "1e-3,3e-3", "--epochs", 2,
                  "--num-cpus", 2)  # finished: the same command shows the same results
    assert "continuing" in again.stdout and results(out) == rows
    other = sweep(real_data_dir, out, "--hidden", "16", "--epochs", 2, "--num-cpus", 2, check=False)
    assert other.returncode == 1 and "holds another sweep" in other.stderr


@needs_ray
@pytest.mark.slow
def test_asha_stops_bad_trials_early(tmp_path, real_data_dir):
    out = tmp_path / "s"
    sweep(real_data_dir, out, "--hidden", "32", "--lr", "1e-2,3e-3,1e-5,1e-6", "--epochs", 4,
          "--scheduler", "asha", "--num-cpus", 2)
    rows = {row["trial"]: row for row in results(out)}
    stopped = [n for n, row in rows.items() if row["status"] == "stopped early"]
    assert stopped, rows
    for n in stopped:
        assert int(rows[n]["epochs_done"]) < 4
        assert runs.read_json(out / n / runs.SUMMARY)["epochs_done"] < 4
    assert rows["h32-adam-lr0.01-b64-s0-onecycle"]["status"] == "complete"


@needs_ray
@pytest.mark.slow
def test_interrupted_sweep_continues_to_the_same_results(tmp_path, real_data_dir):
    args = ["--hidden", "32,64", "--epochs", 12, "--num-cpus", 2]
    out = tmp_path / "s"
    p = subprocess.Popen([*AECORE, "sweep", "--out", str(out), "--limit", "2048", *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(real_data_dir), start_new_session=True)
    try:
        for line in p.stdout:  # Ctrl-C (to the whole process group) once a trial is under way
            if " epoch 2/12 " in line:
                os.killpg(p.pid, signal.SIGINT)
                break
        p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130
    done = [runs.read_json(d / runs.SUMMARY)["epochs_done"] for d in out.glob("h*")]
    assert min(done, default=0) < 12  # a trial was stopped in the middle
    r = sweep(real_data_dir, out, "--limit", 2048, *args)
    assert "continuing" in r.stdout
    rows = results(out)
    assert [row["status"] for row in rows] == ["complete"] * 2
    ref = tmp_path / "ref"  # the same runs, uninterrupted, by aecore train
    t = subprocess.run([*AECORE, "train", "--hidden", "32,64", "--epochs", "12", "--limit", "2048",
                        "--device", "cpu", "--out", str(ref)], capture_output=True, text=True,
                       env=_env(real_data_dir))
    assert t.returncode == 0, t.stderr[-2000:]
    for row in rows:
        mine = runs.read_metrics(Path(row["run_dir"]) / runs.METRICS)
        theirs = runs.read_metrics(ref / f"h{row['hidden']}-adam" / runs.METRICS)
        assert [(x["train_loss"], x["val_loss"]) for x in mine] == \
            [(x["train_loss"], x["val_loss"]) for x in theirs]  # bit for bit
        assert float(row["val_loss"]) == theirs[-1]["val_loss"]


# --- two Ray nodes on this host -------------------------------------------------------------------

def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_node(args, env):
    """A ``ray start --block`` process in its own session (so its whole group can be ended)."""
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats",
                             "--node-ip-address=127.0.0.1", *args],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(p):
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@needs_ray
@pytest.mark.slow
def test_two_nodes_on_this_host(tmp_path, real_data_dir):
    # both raylets on 127.0.0.1; no auth token to hand round on one host (README: clusters)
    env = {**_env(real_data_dir), "RAY_AUTH_MODE": "disabled"}
    head_port, *ports = _free_ports(7)
    nodes = []
    try:
        nodes.append(_ray_node(["--head", f"--port={head_port}", "--num-cpus=1",
                                "--include-dashboard=false",
                                '--resources={"aecore_head": 1}'], env))
        address = f"127.0.0.1:{head_port}"
        deadline = time.time() + 180
        while subprocess.run([RAY, "status", f"--address={address}"], capture_output=True,
                             env=env).returncode != 0:
            assert time.time() < deadline and nodes[0].poll() is None, "the head did not start"
            time.sleep(2)
        nodes.append(_ray_node([f"--address={address}", "--num-cpus=1",
                                '--resources={"aecore_worker": 1}',
                                f"--node-manager-port={ports[0]}",
                                f"--object-manager-port={ports[1]}",
                                f"--dashboard-agent-listen-port={ports[2]}",
                                f"--dashboard-agent-grpc-port={ports[3]}",
                                f"--metrics-export-port={ports[4]}",
                                f"--runtime-env-agent-port={ports[5]}",
                                "--min-worker-port=20002", "--max-worker-port=29999"],
                               env))
        while "aecore_worker" not in subprocess.run([RAY, "status", f"--address={address}"],
                                                    capture_output=True, text=True,
                                                    env=env).stdout:
            assert time.time() < deadline and nodes[1].poll() is None, "the worker did not join"
            time.sleep(2)
        out = tmp_path / "s"
        # four trials for two one-CPU nodes: while one trial holds a node's CPU the next goes to
        # the other node (two trials alone could run one after the other on one node)
        sweep_env(env, out, "--address", address, "--hidden", "8,16,24,32", "--epochs", 4,
                  "--limit", 8192)
        rows = results(out)
        assert len(rows) == 4 and all(row["status"] == "complete" for row in rows)
        assert len({row["node"] for row in rows}) == 2, rows  # trials on both nodes
        assert json.loads((out / "sweep.json").read_text())["base"]["epochs"] == 4
    finally:
        for p in reversed(nodes):
            _stop(p)
