"""``aecore report`` and ``aecore study`` on tiny real runs: every figure is drawn, the table's
numbers are the run files' numbers, unfinished runs are reported, the study estimates, trains
through the trainer, survives Ctrl-C and resumes, and a rerun skips finished runs."""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from aecore import runs
from aecore.cli.main import main
from aecore.model import param_count
from aecore.config import TrainConfig

D = TrainConfig()  # aecore train's defaults (they may change; the tests follow them)
OPT = D.optimizer
OTHER = "sgd" if OPT != "sgd" else "adam"  # a second optimizer for the comparison


def name(h, opt=OPT):
    return runs.run_name(h, opt)

FIGS = ("fig1_classes.png", "fig5_loss.png", "fig6_reconstructions.png", "fig7_test_loss.png")
OPT_FIG = "fig_optimizers.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def md_table(text: str) -> list[dict]:
    """The report's results table, parsed here (not with aecore.report's own parser)."""
    lines = [ln.strip() for ln in text.splitlines()]
    i = next(k for k, ln in enumerate(lines) if ln.startswith("|") and "test MSE" in ln)
    head = [c.strip() for c in lines[i].strip("|").split("|")]
    assert set(lines[i + 1]) <= set("|-: ")
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, [c.strip() for c in ln.strip("|").split("|")])))
    return rows


def check_png(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 8000, (path, len(data))  # a real picture, not an empty canvas
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300, img.shape
    assert float(np.std(img[..., :3])) > 0.02  # not a blank image


def assert_clean_error(r, code, *needles):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit), r.exception
    err_lines = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(err_lines) == 1, r.output
    for n in needles:
        assert str(n) in err_lines[0], r.output


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, real_data_dir):
    out = tmp_path_factory.mktemp("report") / "runs"
    r = invoke("train", "--device", "cpu", "--hidden", "8,16", "--epochs", "3", "--limit", "512",
               "--out", out, "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    return out


def _near(cell: str, value) -> bool:
    return (float(cell) == pytest.approx(float(value), rel=1e-5)
            and cell == format(float(value), ".6g"))


def test_report_figures_and_table_match_the_run_files(two_runs):
    dirs = [two_runs / name(8), two_runs / name(16)]
    r = invoke("report", *dirs)
    assert r.exit_code == 0, r.output
    rep = two_runs / "report"  # default: the common parent's report/
    for f in FIGS:
        check_png(rep / f)
    assert not (rep / OPT_FIG).exists()  # one optimizer only
    assert f"not drawn: {OPT_FIG}" in r.output
    assert str(rep / "report.md") in r.output

    md = (rep / "report.md").read_text()
    for f in FIGS:
        assert f"]({f})" in md
    rows = md_table(md)
    assert [row["run"] for row in rows] == [name(8), name(16)]
    assert md_table(r.output) == rows  # the command prints the same table
    for row, d in zip(rows, dirs):
        s = json.loads((d / runs.SUMMARY).read_text())
        m = runs.read_metrics(d / runs.METRICS)
        h = int(row["hidden"])
        assert h == s["hidden"] and int(row["params"]) == param_count(h) == s["params"]
        assert row["optimizer"] == OPT and row["lr"] == format(D.lr, ".6g")
        assert row["epochs"] == "3/3" and row["status"] == "complete"
        assert row["device"] == s["device"] == "cpu"
        assert _near(row["train MSE"], s["train_loss"])
        assert _near(row["train MSE"], m[-1]["train_loss"])
        assert _near(row["val MSE"], s["val_loss"]) and _near(row["val MSE"], m[-1]["val_loss"])
        assert _near(row["test MSE"], s["test_loss"])
        best = min(m, key=lambda x: x["val_loss"])
        assert int(row["best epoch"]) == best["epoch"] == s["best_epoch"]
        assert _near(row["best val MSE"], best["val_loss"])
        assert _near(row["wall time (s)"], s["wall_time_s"])
        assert _near(row["samples/s"], np.median([x["samples_per_s"] for x in m]))

    # the monotonicity line is computed from the files, whichever way it comes out
    t8, t16 = (json.loads((d / runs.SUMMARY).read_text())["test_loss"] for d in dirs)
    line = next(ln for ln in md.splitlines() if ln.startswith("Test MSE"))
    assert ("does NOT decrease" in line) == (not t16 < t8), line
    assert format(t8, ".6g") in line and format(t16, ".6g") in line

    # --out elsewhere; a parent directory stands for its runs; duplicates count once
    r = invoke("report", two_runs, dirs[0], "--out", two_runs.parent / "elsewhere")
    assert r.exit_code == 0, r.output
    assert [row["run"] for row in md_table(r.output)] == [name(8), name(16)]
    assert (two_runs.parent / "elsewhere" / "report.md").is_file()


def test_report_errors_are_one_line_usage_errors(two_runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("report", two_runs / name(8), empty)
    assert_clean_error(r, 2, empty, "not a run directory")
    r = invoke("report", tmp_path / "missing")
    assert_clean_error(r, 2, tmp_path / "missing")
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = invoke("report", f)
    assert_clean_error(r, 2, f)
    assert invoke("report").exit_code == 2  # RUN_DIR is required

    bad = tmp_path / name(8)
    shutil.copytree(two_runs / name(8), bad)
    (bad / runs.SUMMARY).write_text("{ not json")
    r = invoke("report", bad)
    assert_clean_error(r, 1, bad / runs.SUMMARY)

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    r = invoke("report", two_runs / name(8), "--out", blocker / "rep")
    assert_clean_error(r, 2, "--out")

    for cmd in ("report", "study"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "--out" in r.output


@pytest.mark.parametrize("args,option", [
    (["--optimizers", "rmsprop"], "--optimizers"),
    (["--optimizers", "sgd,sgd"], "--optimizers"),
    (["--hidden", "0"], "--hidden"),
    (["--epochs", "0"], "--epochs"),
    (["--limit", "60000"], "--limit"),
    (["--compare-hidden", "0"], "--compare-hidden"),
    (["--device", "tpu"], "--device"),
    (["--optimizers", ""], "--optimizers"),
    (["--lr-schedule", "linear"], "--lr-schedule"),
    (["--warmup-epochs", "2", "--epochs", "2"], "--warmup-epochs"),
    (["--lr-schedule", "onecycle", "--warmup-epochs", "1"], "--warmup-epochs"),
])
def test_study_usage_errors(tmp_path, args, option):
    r = invoke("study", "--out", tmp_path / "st", "--data-dir", tmp_path / "no-data", "--yes",
               *args)
    assert r.exit_code == 2, r.output
    assert option in r.output and "Traceback" not in r.output
    assert not (tmp_path / "st").exists()


def test_study_runs_estimates_resumes_and_skips(tmp_path, real_data_dir, monkeypatch):
    import aecore.cli.study as study_cli
    import aecore.side_by_side as side_by_side

    out = tmp_path / "st"
    args = ["study", "--device", "cpu", "--hidden", "8,16", "--epochs", "2", "--limit", "512",
            "--optimizers", f"{OPT},{OTHER}", "--compare-hidden", "8", "--out", out,
            "--data-dir", real_data_dir, "--yes"]
    a8, a16, b8 = name(8), name(16), name(8, OTHER)  # the default optimizer's h8 run is shared
    real_train = side_by_side.train_run
    calls = []

    def ctrl_c_in_second_run(config, run_dir, data, **kw):
        calls.append((run_dir.name, kw.get("resume")))

        def on_chunk(epoch, pos):
            if len(calls) == 2 and epoch == 1:
                signal.raise_signal(signal.SIGINT)  # what Ctrl-C does

        return real_train(config, run_dir, data, on_chunk=on_chunk, **kw)

    # 1. Ctrl-C in the second run: exit 130, a checkpoint, the first run complete.
    monkeypatch.setattr(side_by_side, "train_run", ctrl_c_in_second_run)
    r = invoke(*args)
    assert r.exit_code == 130, r.output
    assert "estimated" in r.output and " on cpu" in r.output
    assert calls == [(a8, False), (a16, False)]
    s8 = json.loads((out / a8 / runs.SUMMARY).read_text())
    s16 = json.loads((out / a16 / runs.SUMMARY).read_text())
    assert s8["status"] == "complete" and s16["status"] == "interrupted"
    assert not (out / b8).exists()

    # 2. The report keeps the interrupted run, with its status.
    r = invoke("report", out)
    assert r.exit_code == 0, r.output
    rows = {row["run"]: row for row in md_table(r.output)}
    assert rows[a16]["status"] == "interrupted" and rows[a16]["epochs"] == "1/2"
    assert rows[a16]["test MSE"] == "-"
    md = (out / "report" / "report.md").read_text()
    assert f"{a16}`: interrupted, 1/2 epochs" in md

    # 3. The same command again: a8 skipped, a16 resumed, b8 trained, then the report.
    calls.clear()
    monkeypatch.setattr(side_by_side, "train_run", lambda *a, **kw: (calls.append(a[1].name),
                                                                  real_train(*a, **kw))[1])
    mtime8 = (out / a8 / runs.MODEL).stat().st_mtime_ns
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert calls == [a16, b8]
    assert f"{a8} " in r.output and "complete, skipped" in r.output
    assert (out / a8 / runs.MODEL).stat().st_mtime_ns == mtime8
    for n, opt in ((a8, OPT), (a16, OPT), (b8, OTHER)):
        s = json.loads((out / n / runs.SUMMARY).read_text())
        assert s["status"] == "complete" and s["epochs_done"] == 2, n
        cfg = TrainConfig.from_dict(json.loads((out / n / runs.CONFIG).read_text())["config"])
        want = TrainConfig(optimizer=opt)  # aecore train's defaults for that optimizer
        assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.seed, cfg.slope, cfg.val_size) == (
            opt, want.lr, want.batch_size, want.seed, want.slope, want.val_size)
    # the resumed run is the run aecore train makes with the same epochs (the default onecycle
    # schedule spans the run: a 3-epoch run's first 2 epochs differ)
    r = invoke("train", "--device", "cpu", "--hidden", "16", "--epochs", "2", "--limit", "512",
               "--out", tmp_path / "ref", "--data-dir", real_data_dir)
    assert r.exit_code == 0, r.output
    m_study = runs.read_metrics(out / a16 / runs.METRICS)
    m_train = runs.read_metrics(tmp_path / "ref" / a16 / runs.METRICS)
    for x, y in zip(m_study, m_train):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-6)
    rep = out / "report"
    for f in (*FIGS, OPT_FIG):
        check_png(rep / f)
    assert {row["run"] for row in md_table((rep / "report.md").read_text())} == {a8, a16, b8}

    # 4. Once more: nothing to train, no warm-up, no data loaded; just the report.
    monkeypatch.setattr(side_by_side, "train_run", lambda *a, **kw: pytest.fail("trained again"))
    monkeypatch.setattr(study_cli, "load_data", lambda *a, **kw: pytest.fail("loaded data"))
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert r.output.count("complete, skipped") == 3 and "warm-up" not in r.output

    # 5. Other settings in the same --out are refused, naming the run and the setting.
    r = invoke(*[x if x != "512" else "640" for x in args])
    assert_clean_error(r, 1, out / a8, "limit")


def test_estimate_arithmetic(tmp_path):
    from aecore import study as S

    class Split:
        def __init__(self, n):
            self.images = np.zeros((n, 784), np.uint8)

    class Data:
        train, val, test = Split(1000), Split(100), Split(50)

    plan = S.plan_study((8, 16), (OPT, OTHER), 16, tmp_path, epochs=10, limit=500)
    assert [p.dir.name for p in plan] == [name(8), name(16), name(16, OTHER)]  # shared h16 run
    assert plan[2].config.lr == TrainConfig(optimizer=OTHER).lr
    for p in plan:
        S.inspect_run(p)
    plan[1].action, plan[1].epochs_done = "resume", 4  # 6 epochs left
    plan[0].action = "skip"
    seen = []

    def timer(config, train, val, device, warm, scratch):
        seen.append((config.hidden, config.optimizer, len(train)))
        return 1e-3, 1e-4, 0.5

    est = S.estimate(plan, Data(), "cpu", timer=timer, checkpoint_every=0)  # files every epoch
    assert seen == [(16, OPT, 500), (16, OTHER, 500)]
    per_epoch = 500 * 1e-3 + 100 * 1e-4 + 0.5
    assert est == {plan[1].dir: pytest.approx(6 * per_epoch + 50 * 1e-4),
                   plan[2].dir: pytest.approx(10 * per_epoch + 50 * 1e-4)}
    compute = 500 * 1e-3 + 100 * 1e-4  # per epoch; files once per 2 s of it, and at the end
    est = S.estimate(plan, Data(), "cpu", timer=timer, checkpoint_every=2.0)
    assert est == {plan[1].dir: pytest.approx(6 * compute + (1 + 6 * compute / 2) * 0.5 + 50 * 1e-4),
                   plan[2].dir: pytest.approx(10 * compute + (1 + 10 * compute / 2) * 0.5 + 50 * 1e-4)}
    assert S.fmt_duration(14 * 60) == "14 min" and S.fmt_duration(5) == "5 s"
    assert S.fmt_duration(3 * 3600) == "3.0 h"


def test_study_refuses_to_extend_a_scheduled_run_before_training(tmp_path, tiny_data):
    from aecore import study as S
    from aecore.errors import CheckpointError
    from aecore.trainer import train

    plan = S.plan_study((8,), (OPT,), 8, tmp_path, epochs=2, lr_schedule="cosine")
    c = TrainConfig(**{**plan[0].config.to_dict(), "batch_size": 64, "val_size": 96})
    plan[0].config = c
    train(c, plan[0].dir, tiny_data, progress=False)
    assert S.inspect_run(plan[0]).action == "skip"
    plan[0].config = TrainConfig(**{**c.to_dict(), "epochs": 3})
    with pytest.raises(CheckpointError, match="cosine learning-rate schedule cannot be extended "
                                              "to 3; pass --epochs 2"):
        S.inspect_run(plan[0])
