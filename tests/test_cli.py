"""The command line: usage errors (exit 2, the option named, no traceback), run-directory
safety, and real runs of train / eval / reconstruct / encode / info on Fashion-MNIST."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from aecore import blas_info, runs
from aecore.config import TrainConfig, auto_gemm_summary
from aecore.cli.main import main
from aecore.devices import real_gpu_present

# Every test runs from a temporary directory that already holds runs/ and study/ (conftest).
pytestmark = pytest.mark.usefixtures("cwd_with_runs")

AECORE = [sys.executable, "-c", "from aecore.cli.main import main; main()"]


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_usage_error(result, option):
    out = result.output
    assert result.exit_code == 2, out
    assert option in out, out
    assert "Traceback" not in out
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not an exception


@pytest.mark.parametrize("args,option", [
    (["--hidden", "0"], "--hidden"),
    (["--hidden", "-5"], "--hidden"),
    (["--hidden", "abc"], "--hidden"),
    (["--hidden", "1.5"], "--hidden"),
    (["--hidden", "100000"], "--hidden"),
    (["--hidden", "64,abc"], "--hidden"),
    (["--hidden", "64,64"], "--hidden"),
    (["--hidden", ""], "--hidden"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--batch-size", "50001"], "--batch-size"),  # 60000 - 10000 validation images
    (["--batch-size", "101", "--limit", "100"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "fast"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "two"], "--epochs"),
    (["--device", "tpu"], "--device"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--val-size", "60000"], "--val-size"),
    (["--val-size", "70000"], "--val-size"),
    (["--val-size", "0"], "--val-size"),
    (["--limit", "0"], "--limit"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--checkpoint-every", "nan"], "--checkpoint-every"),
    (["--limit", "55000"], "--limit"),
    (["--momentum", "1.0"], "--momentum"),
    (["--slope", "nan"], "--slope"),
    (["--seed", "-1"], "--seed"),
    (["--lr-schedule", "linear"], "--lr-schedule"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--warmup-epochs", "3", "--epochs", "3"], "--warmup-epochs"),
    (["--lr-schedule", "onecycle", "--warmup-epochs", "1", "--epochs", "5"], "--warmup-epochs"),
    (["--lr-schedule", "onecycle", "--epochs", "1", "--limit", "3", "--batch-size", "1"],
     "--lr-schedule"),  # 3 steps: OneCycleLR needs 4
])
def test_train_usage_errors(tmp_path, args, option):
    # A data dir that does not exist: every check must happen before the data is looked at.
    r = invoke("train", "--device", "cpu", "--out", tmp_path / "runs",
               "--data-dir", tmp_path / "no-data", *args)
    assert_usage_error(r, option)
    assert not (tmp_path / "runs").exists()


def test_resume_rejects_other_settings(tmp_path):
    r = invoke("train", "--resume", tmp_path, "--hidden", "64")
    assert_usage_error(r, "--hidden")
    r = invoke("train", "--resume", tmp_path / "missing")
    assert_usage_error(r, "--resume")
    for flag, value in (("--lr-schedule", "cosine"), ("--warmup-epochs", "1")):
        assert_usage_error(invoke("train", "--resume", tmp_path, flag, value), flag)


def test_train_records_the_schedule_and_each_epochs_rate(tmp_path, real_data_dir):
    from aecore.config import default_lr

    out = tmp_path / "runs"
    r = invoke("train", "--device", "cpu", "--hidden", "8", "--epochs", "3", "--limit", "256",
               "--batch-size", "64", "--lr-schedule", "cosine", "--warmup-epochs", "1",
               "--out", out, "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    run = out / "h8-sched-cosine"  # named by what differs from the defaults
    cfg = json.loads((run / runs.CONFIG).read_text())["config"]
    assert (cfg["lr_schedule"], cfg["warmup_epochs"]) == ("cosine", 1)
    lr = cfg["lr"]
    assert lr == default_lr("adam", "cosine")  # the schedule's own default rate, recorded
    sched = TrainConfig.from_dict(cfg).schedule(256)  # 4 steps per epoch
    rates = [row["lr"] for row in runs.read_metrics(run / runs.METRICS)]
    assert rates == [sched.lr_at(4 * e - 1) for e in (1, 2, 3)]
    # the last steps of the warm-up (3 of 4 steps up from lr/100) and of the cosine (7 of 8)
    assert rates[0] == pytest.approx(lr * (0.01 + 0.99 * 3 / 4), rel=1e-12)
    assert rates[2] == pytest.approx(lr * (1 + np.cos(np.pi * 7 / 8)) / 2, rel=1e-12)
    r = invoke("train", "--resume", run, "--epochs", "4", "--data-dir", real_data_dir)
    assert r.exit_code == 1 and "--epochs cannot change on resume" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_unwritable_out_reported_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = invoke("train", "--device", "cpu", "--out", blocker / "runs", "--data-dir",
               tmp_path / "no-data")
    assert_usage_error(r, "--out")
    assert "not a directory" in r.output


def test_read_only_out(read_only_dir, tmp_path):
    r = invoke("train", "--device", "cpu", "--out", read_only_dir, "--data-dir", tmp_path / "no-data")
    assert_usage_error(r, "--out")


def test_existing_run_not_overwritten(tmp_path):
    run = tmp_path / "runs" / "h64-adam"
    run.mkdir(parents=True)
    (run / runs.METRICS).write_text("precious")
    r = invoke("train", "--device", "cpu", "--hidden", "32,64", "--out", tmp_path / "runs",
               "--data-dir", tmp_path / "no-data")
    assert r.exit_code == 1 and "--overwrite" in r.output and "Traceback" not in r.output
    assert (run / runs.METRICS).read_text() == "precious"
    assert not (tmp_path / "runs" / "h32-adam").exists()  # nothing started


def test_device_cuda_without_gpu_is_a_usage_error():
    if real_gpu_present():
        pytest.skip("a real GPU is present")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}  # no simulator: what a user without a GPU has
    r = subprocess.run([*AECORE, "train", "--device", "cuda", "--epochs", "1", "--limit", "256"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--device" in r.stderr and "cuda" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert len([l for l in r.stderr.splitlines() if l.strip()]) <= 3  # usage line, hint, one-line error


def test_usage_error_in_a_real_process_has_no_traceback(tmp_path):
    r = subprocess.run([*AECORE, "train", "--lr", "nan"], capture_output=True, text=True)
    assert r.returncode == 2 and "--lr" in r.stderr and "Traceback" not in r.stderr


def test_help_explains_units_and_defaults():
    r = invoke("train", "--help")
    assert r.exit_code == 0
    for s in ("--hidden", "[default: 256]", "--lr", "--batch-size", "--resume", "mean squared",
              "--limit", "samples/s"):
        assert s in r.output
    for cmd in ("eval", "reconstruct", "encode", "info"):
        assert invoke(cmd, "--help").exit_code == 0


def test_eval_errors_are_clean(tmp_path):
    r = invoke("eval", tmp_path / "nothing.safetensors", "--device", "cpu")
    assert r.exit_code == 1 and "nothing.safetensors" in r.output and "Traceback" not in r.output
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    r = invoke("eval", tmp_path / "bad.safetensors", "--device", "cpu")
    assert r.exit_code == 1 and "bad.safetensors" in r.output
    r = invoke("encode", tmp_path, "--out", tmp_path / "x.txt", "--device", "cpu")
    assert_usage_error(r, "--out")


# --- real runs (need the data: $AECORE_DATA) -------------------------------------------------

@pytest.fixture(scope="module")
def full_run(tmp_path_factory, real_data_dir):
    """The one run on the whole training set: aecore train --device cpu --hidden 256 --epochs 1."""
    out = tmp_path_factory.mktemp("runs")
    r = invoke("train", "--device", "cpu", "--hidden", "256", "--epochs", "1", "--out", out,
               "--data-dir", real_data_dir)
    return r, out / "h256-adam"


def test_train_real_data_one_epoch(full_run):
    r, run = full_run
    assert r.exit_code == 0, r.output
    s = json.loads((run / runs.SUMMARY).read_text())
    assert s["status"] == "complete" and s["hidden"] == 256 and s["epochs_done"] == 1
    assert 0 < s["test_loss"] < 0.2 and s["device"] == "cpu"
    rows = runs.read_metrics(run / runs.METRICS)
    assert len(rows) == 1 and rows[0]["samples_per_s"] > 0
    cfg = json.loads((run / runs.CONFIG).read_text())
    assert cfg["data"]["train_images"] == 50000 and cfg["data"]["val_images"] == 10000
    assert "test MSE" in r.output and "h256" in r.output  # the final table


def test_eval_reconstruct_encode(full_run, tmp_path, real_data_dir):
    _, run = full_run
    test_loss = json.loads((run / runs.SUMMARY).read_text())["test_loss"]
    r = invoke("eval", run, "--device", "cpu", "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    mse = float(r.output.split("test MSE")[1].split()[0])
    assert mse == pytest.approx(test_loss, abs=1e-6)

    r = invoke("reconstruct", run / runs.MODEL, "--out", tmp_path / "grid.png", "--device", "cpu",
               "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    png = (tmp_path / "grid.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000

    r = invoke("encode", run, "--out", tmp_path / "z.npz", "--device", "cpu",
               "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "z.npz") as z:
        assert z["latents"].shape == (10000, 256) and z["latents"].dtype == np.float32
        assert z["labels"].shape == (10000,) and set(np.unique(z["labels"])) == set(range(10))
        assert (z["latents"].min(axis=1) < 0).any()  # LeakyReLU outputs: negatives allowed
        latents = z["latents"]
    r = invoke("encode", run, "--out", tmp_path / "z.npy", "--device", "cpu",
               "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    rec = np.load(tmp_path / "z.npy")
    assert rec.dtype.names == ("label", "latent") and rec["latent"].shape == (10000, 256)
    np.testing.assert_array_equal(rec["latent"], latents)


def test_sweep_table_and_divergence_exit(tmp_path, real_data_dir):
    out = tmp_path / "runs"
    r = invoke("train", "--device", "cpu", "--hidden", "16,32", "--epochs", "2", "--limit", "512",
               "--batch-size", "32", "--optimizer", "sgd", "--out", out, "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()  # one line per epoch, then the comparison table
    start = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["hidden"])
    table = lines[start:]
    assert table[0].split()[:3] == ["hidden", "params", "epochs"]
    assert [ln.split()[0] for ln in table[2:]] == ["16", "32"]
    assert all(ln.split()[-1] == "complete" for ln in table[2:])
    for h in (16, 32):
        assert len(runs.read_metrics(out / f"h{h}-sgd" / runs.METRICS)) == 2

    r = invoke("train", "--device", "cpu", "--hidden", "16", "--epochs", "3", "--limit", "512",
               "--optimizer", "adam", "--lr", "3e38", "--out", out, "--data-dir", real_data_dir)
    assert r.exit_code == 3, r.output
    assert "epoch 1" in r.output and "NaN" in r.output and "Traceback" not in r.output
    assert json.loads((out / "h16-adam" / runs.SUMMARY).read_text())["status"] == "diverged"


def test_auto_device_notice_and_overwrite(tmp_path, real_data_dir):
    out = tmp_path / "runs"
    args = ["train", "--hidden", "8", "--epochs", "1", "--limit", "256", "--out", out,
            "--data-dir", real_data_dir]
    r = invoke(*args, "--device", "auto")
    assert r.exit_code == 0, r.output
    if not real_gpu_present():
        assert "notice: --device auto" in r.stderr and "CPU" in r.stderr
    assert invoke(*args, "--device", "cpu").exit_code == 1
    r = invoke(*args, "--device", "cpu", "--overwrite")
    assert r.exit_code == 0, r.output


def test_info(real_data_dir):
    r = invoke("info", "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    for key in ("aecore", "numba", "numpy", "BLAS", "CPU", "CUDA", "data"):
        assert key in r.output
    assert real_data_dir in r.output
    assert "CPU GEMM (auto)" in r.output and auto_gemm_summary() in r.output


def test_bench_prints_the_table_and_writes_json(tmp_path, real_data_dir):
    """`aecore bench` on the CPU at a tiny size: the BLAS header, the table, the first-run line,
    the fraction of the FMA peak, bench.json with the floor ratio and the BLAS that ran, and the
    chart; --cpu-split both: a row for each engine variant."""
    r = invoke("bench", "--device", "cpu", "--hidden", "8,16", "--batch", "16", "--samples", "64",
               "--repeats", "1", "--no-torch", "--cpu-split", "both", "--data-dir", real_data_dir,
               "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "x floor" in r.output and "first run's extra time" in r.output
    assert "aecore's sgemm (scipy's): " in r.output and "-thread peak" in r.output
    meta = json.loads((tmp_path / "bench.json").read_text())["meta"]
    blas = meta["blas"]["aecore_sgemm"]
    assert blas["architecture"] and blas["version"] and blas["num_threads"] >= 1
    assert f"kernel {blas['architecture']}" in r.output
    assert meta["blas"]["env"] == blas_info.env_overrides()
    assert meta["fma_peak_gflops"]["1"] > 0 and 0 < meta["best_cpu_fraction_of_peak"]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(x["device"], x["hidden"], x["batch"], x["variant"]) for x in rows] == [
        ("cpu", 8, 16, ""), ("cpu", 8, 16, "split"), ("cpu", 16, 16, ""), ("cpu", 16, 16, "split")]
    assert "cpu split" in r.output and meta["cpu_split"] == "both"
    assert all(x["samples_per_s"] > 0 and x["floor_ratio"] > 0 and x["torch_ratio"] is None
               and x["first_run_extra_s"] >= 0 and "steal" in x for x in rows)
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_bench_cuda_path_reaches_the_engine(tmp_path, monkeypatch):
    """`aecore bench --cuda-path eager` (the GPU script's eager rows) builds engines with
    cuda_path="eager" (a CPU run: the real engine, its arguments seen)."""
    from aecore import bench as B

    seen, real = [], B.make_engine
    monkeypatch.setattr(B, "make_engine", lambda *a, **k: seen.append(k) or real(*a, **k))
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    rows = B.bench_one("cpu", 8, 16, images, 32, 1, with_torch=False, cuda_path="eager")
    assert rows and seen and all(k["cuda_path"] == "eager" for k in seen)
    assert "--cuda-path" in invoke("bench", "--help").output


# --- rough edges of a first try (issue 15) -----------------------------------------------------

# constant rate: a finished run's resume hint is "a larger --epochs" (a schedule cannot grow)
TINY = dict(optimizer="sgd", hidden=20, epochs=2, batch_size=16, lr=0.3, val_size=96,
            recon_epochs=(1,), lr_schedule="constant")


def _tiny_run(d, tiny_data, stop_in_epoch=None):
    """A run trained on the synthetic data (complete, or interrupted in ``stop_in_epoch``)."""
    from aecore.errors import TrainingInterrupted
    from aecore.stop import StopSignals
    from aecore.trainer import train

    sig = StopSignals()
    hook = (lambda e, p: sig.stop("a test") if e == stop_in_epoch else None)
    try:
        train(TrainConfig(**TINY), d, tiny_data, progress=False, signals=sig, on_chunk=hook,
              chunk_samples=64)
    except TrainingInterrupted:
        pass
    return d


def test_reconstruct_unknown_format_is_a_usage_error_naming_the_formats(tmp_path):
    from aecore.checkpoint import save_model
    from aecore.model import init_params

    model = tmp_path / "m.safetensors"
    save_model(model, init_params(8, 0))
    # the data dir does not exist: the check comes before anything is loaded
    r = invoke("reconstruct", model, "--out", tmp_path / "grid.xyz", "--device", "cpu",
               "--data-dir", tmp_path / "no-data")
    assert_usage_error(r, "--out")
    assert ".xyz" in r.output and ".png" in r.output and ".pdf" in r.output and ".svg" in r.output
    assert not (tmp_path / "grid.xyz").exists()


@pytest.mark.parametrize("cmd,name", [("reconstruct", "x.png"), ("encode", "x.npz")])
def test_out_into_a_missing_directory_is_a_usage_error(tmp_path, cmd, name):
    from aecore.checkpoint import save_model
    from aecore.model import init_params

    model = tmp_path / "m.safetensors"
    save_model(model, init_params(8, 0))
    r = invoke(cmd, model, "--out", tmp_path / "nonexistent" / "dir" / name, "--device", "cpu",
               "--data-dir", tmp_path / "no-data")
    assert_usage_error(r, "--out")
    assert "does not exist" in r.output
    assert not (tmp_path / "nonexistent").exists()  # no silent mkdir -p


def test_resume_a_parent_folder_says_it_holds_runs(tmp_path, tiny_data):
    _tiny_run(tmp_path / "runs" / "h20-sgd", tiny_data)
    r = invoke("train", "--resume", tmp_path / "runs", "--data-dir", tmp_path / "no-data")
    assert_usage_error(r, "--resume")
    assert "holds runs (h20-sgd)" in r.output and f"--resume {tmp_path / 'runs' / 'h20-sgd'}" in r.output


def test_resume_a_finished_run_gives_the_hint_and_no_failure(tmp_path, tiny_data):
    run = _tiny_run(tmp_path / "runs" / "h20-sgd", tiny_data)
    r = invoke("train", "--resume", run, "--data-dir", tmp_path / "no-data")
    assert r.exit_code == 1, r.output
    assert "already has 2 of 2 epochs" in r.output and "--epochs" in r.output
    assert "failed" not in r.output and "Traceback" not in r.output


def test_a_single_run_that_fails_is_reported_once(tmp_path, capsys):
    """The "<run> failed; stopped ..." line is for side-by-side runs; one run's error says it."""
    from aecore.errors import CheckpointError
    from aecore.side_by_side import PlannedRun, train_side_by_side

    # resuming a directory that is not there fails before the (absent) data is touched
    with pytest.raises(CheckpointError):
        train_side_by_side([PlannedRun(TrainConfig(), tmp_path / "h256-adam", "resume")], None)
    assert "failed" not in capsys.readouterr().err


def test_resume_finds_the_data_config_json_recorded(tmp_path, real_data_dir):
    mine = tmp_path / "my-data"
    mine.mkdir()
    for f in os.listdir(real_data_dir):
        (mine / f).symlink_to(os.path.join(real_data_dir, f))
    out = tmp_path / "runs"
    r = invoke("train", "--device", "cpu", "--hidden", "16", "--epochs", "1", "--limit", "512",
               "--lr-schedule", "constant", "--data-dir", mine, "--out", out)
    assert r.exit_code == 0, r.output  # constant: it is resumed with more epochs
    # nothing else would find the data: no $AECORE_DATA, an empty user cache, no download
    env = {"AECORE_DATA": None, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "AECORE_MIRROR": "http://127.0.0.1:9/", "NUMBA_CACHE_DIR": None}
    r = invoke("train", "--resume", out / "h16-sched-constant", "--epochs", "2", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "h16-sched-constant" / runs.SUMMARY).read_text())["epochs_done"] == 2


def test_eval_of_an_interrupted_run_says_it_is_incomplete(tmp_path, tiny_data, real_data_dir):
    run = _tiny_run(tmp_path / "r", tiny_data, stop_in_epoch=2)
    assert json.loads((run / runs.SUMMARY).read_text())["status"] == "interrupted"
    r = invoke("eval", run, "--device", "cpu", "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    assert "incomplete run (interrupted, 1 of 2 epochs done)" in r.output
    full = _tiny_run(tmp_path / "full", tiny_data)
    r = invoke("eval", full, "--device", "cpu", "--data-dir", real_data_dir)
    assert r.exit_code == 0 and "incomplete" not in r.output


@pytest.mark.parametrize("value,bad", [("tpu", "'tpu'"), ("cpu,tpu", "'tpu'"), ("cpu,", "''")])
def test_bench_device_is_a_choice_or_a_list_of_choices(tmp_path, value, bad):
    r = invoke("bench", "--device", value, "--data-dir", tmp_path / "no-data", "--out", tmp_path)
    assert_usage_error(r, "--device")
    assert bad in r.output and "'auto', 'cpu', 'cuda'" in r.output
    assert "auto|cpu|cuda" in invoke("bench", "--help").output


def test_bench_chart_linear_from_zero_with_values_and_ratios(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aecore.bench import BenchRow, plot

    figs, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    rows = [BenchRow("cpu", 64, 64, 60000, 0.5, 120000.0, 1.0, 0.4, 1.25),
            BenchRow("cuda", 64, 64, 60000, 0.2, 300000.0, 1.0, None, 0.3)]
    plot(rows, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 0
    ax = figs[-1].axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    labels = {t.get_text() for t in ax.texts}
    assert {"120k", "300k", "48k", "200k"} <= labels  # every bar carries its value
    title = ax.get_title()
    assert "aecore cuda vs cpu: h=64 2.50x" in title
    assert "aecore cpu vs PyTorch cpu: h=64 2.50x" in title
    close(figs[-1])


@pytest.mark.parametrize("flag,first", [("cpu-split", True), ("cpu-team", True)])
def test_engine_flags_are_recorded_in_config_json(tmp_path, real_data_dir, flag, first):
    """--cpu-split (--cuda-path: tests/test_engine_persistent.py): recorded in config.json,
    changed on --resume (the run
    trains either way)."""
    key = flag.replace("-", "_")
    out = tmp_path / "runs"
    args = ("--device", "cpu", "--data-dir", real_data_dir)
    opt = lambda on: f"--{'' if on else 'no-'}{flag}"  # noqa: E731
    r = invoke("train", "--hidden", "8", "--epochs", "1", "--limit", "64", "--batch-size", "32",
               "--lr-schedule", "constant", opt(first), "--out", out, *args)
    assert r.exit_code == 0, r.output  # constant: it is resumed with more epochs
    run = out / "h8-sched-constant"
    assert json.loads((run / runs.CONFIG).read_text())["config"][key] is first
    r = invoke("train", "--resume", run, "--epochs", "2", opt(not first), *args)
    assert r.exit_code == 0, r.output
    assert json.loads((run / runs.CONFIG).read_text())["config"][key] is (not first)
    assert f"--no-{flag}" in invoke("study", "--help").output


def test_cpu_gemm_is_recorded_changed_on_resume_and_checked(tmp_path, real_data_dir):
    """--cpu-gemm own: trains, recorded in config.json, changed on --resume; with --cpu-team
    a one-line usage error (exit 2) before any data is read."""
    out = tmp_path / "runs"
    args = ("--device", "cpu", "--data-dir", real_data_dir)
    r = invoke("train", "--hidden", "8", "--epochs", "1", "--limit", "64", "--batch-size", "32",
               "--optimizer", "sgd", "--lr-schedule", "constant", "--cpu-gemm", "own",
               "--out", out, *args)
    assert r.exit_code == 0, r.output
    (run,) = [p for p in out.iterdir() if (p / runs.CONFIG).exists()]
    assert json.loads((run / runs.CONFIG).read_text())["config"]["cpu_gemm"] == "own"
    r = invoke("train", "--resume", run, "--epochs", "2", "--cpu-gemm", "blas", *args)
    assert r.exit_code == 0, r.output
    assert json.loads((run / runs.CONFIG).read_text())["config"]["cpu_gemm"] == "blas"
    r = invoke("train", "--hidden", "8", "--epochs", "1", "--limit", "64", "--cpu-team",
               "--cpu-gemm", "own", "--out", tmp_path / "other", *args)
    assert r.exit_code == 2
    assert "own cannot be combined with cpu_team" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "other").exists()


def test_study_cpu_gemm_is_recorded_and_checked(tmp_path, real_data_dir):
    """aecore study --cpu-gemm: every run's config.json records it (and the warm-up estimate
    times that engine); with --cpu-split a one-line usage error (exit 2) before any data is
    read."""
    args = ("study", "--device", "cpu", "--hidden", "8", "--compare-hidden", "8", "--optimizers",
            TrainConfig().optimizer, "--epochs", "1", "--limit", "256", "--data-dir",
            real_data_dir, "--yes")
    r = invoke(*args, "--cpu-gemm", "own", "--out", tmp_path / "st")
    assert r.exit_code == 0, r.output
    (run,) = [p for p in (tmp_path / "st").iterdir() if (p / runs.CONFIG).exists()]
    assert json.loads((run / runs.CONFIG).read_text())["config"]["cpu_gemm"] == "own"
    r = invoke(*args, "--cpu-gemm", "own", "--cpu-split", "--out", tmp_path / "other")
    assert r.exit_code == 2
    assert "own cannot be combined with cpu_split" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "other").exists()
