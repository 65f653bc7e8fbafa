"""The study's comparisons (``aecore study --compare``) and time to quality: planning with each
kind, run names, resuming a partly done comparison, the report's comparison figures (checked
on the figures' artists: lines, bars from zero with their values written on them), runs with
another loss compared on MSE, time to quality on synthetic histories, and usage errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aecore import comparisons as C
from aecore import figures as F
from aecore import report as rep
from aecore import runs
from aecore import study as S
from aecore import time_to_quality as T
from aecore.cli.main import main
from aecore.config import TrainConfig, default_lr
from aecore.side_by_side import train_side_by_side
from aecore.stop import StopSignals
from aecore.tables import fmt_num
from aecore.trainer import train

D = TrainConfig()
AVAILABLE = list(C.KINDS)  # every kind's field is in TrainConfig


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- planning --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(C.KINDS))
def test_plan_each_kind_names_and_shares_the_default_run(kind, tmp_path):
    k = C.KINDS[kind]
    plan = S.plan_study((64, 128), {kind: k.choices}, 128, tmp_path, epochs=5, limit=100,
                        track_test=True)
    default = getattr(D, k.field)
    names = [p.dir.name for p in plan]
    # the default runs first; at h=128 the default variant is the h128 run, not trained twice
    assert names[:2] == ["h64-adam", "h128-adam"]
    others = [v for v in k.choices if v != default]
    want = [f"h128-{v}" if kind == "optimizers" else f"h128-{k.tag}-{v}" for v in others]
    assert names[2:] == want
    assert len(set(names)) == len(names)
    for p, v in zip(plan[2:], others):
        c = p.config
        assert getattr(c, k.field) == v and c.hidden == 128 and c.epochs == 5 and c.limit == 100
        assert c.track_test and p.dir == tmp_path / p.dir.name and p.label == p.dir.name
        # everything else at TrainConfig's defaults (the optimizer's own learning rate)
        want_c = TrainConfig(**{"hidden": 128, "epochs": 5, "limit": 100, "track_test": True,
                                k.field: v})
        assert c == want_c
        assert C.variant_of(c.to_dict()) == (kind, v)
        assert C.config_run_name(c) == p.dir.name


def test_plan_keeps_todays_optimizer_study(tmp_path):
    # today's call: a tuple of optimizers, the default alone compares nothing
    plan = S.plan_study((8, 16), ("adam",), 128, tmp_path, epochs=2)
    assert [p.dir.name for p in plan] == ["h8-adam", "h16-adam"]
    plan = S.plan_study((8, 16), ("sgd", "momentum", "adam"), 16, tmp_path, epochs=2)
    assert [p.dir.name for p in plan] == ["h8-adam", "h16-adam", "h16-sgd", "h16-momentum"]
    assert [p.config.lr for p in plan] == [default_lr(o, D.lr_schedule)
                                           for o in ("adam", "adam", "sgd", "momentum")]
    assert not any(p.config.track_test for p in plan)  # the default: today's runs cost the same
    # several kinds at once share the default run at the comparison size
    kinds = {k: C.KINDS[k].variants for k in AVAILABLE}
    plan = S.plan_study((128,), kinds, 128, tmp_path, epochs=2)
    names = [p.dir.name for p in plan]
    assert names.count("h128-adam") == 1 and len(set(names)) == len(names)
    assert len(plan) == 1 + sum(len([v for v in C.KINDS[k].variants
                                     if v != getattr(D, C.KINDS[k].field)]) for k in AVAILABLE)


def test_parse_compare():
    assert C.parse_compare(["optimizers"]) == {"optimizers": ("sgd", "momentum", "adam")}
    assert C.parse_compare(["optimizers=adam,nesterov"]) == {"optimizers": ("adam", "nesterov")}
    for bad, why in [("colours", "unknown comparison"), ("optimizers=rmsprop", "rmsprop"),
                     ("optimizers=", "expected choices"), ("optimizers=sgd,sgd", "twice"),
                     ("optimizers,optimizers", "twice"), (",", "expected KIND")]:
        with pytest.raises(ValueError, match=why):
            C.parse_compare([bad])


def test_parse_several_kinds():
    got = C.parse_compare(["activations,schedules", "optimizers=adam,sgd"])
    assert got == {"activations": C.KINDS["activations"].choices,
                   "schedules": C.KINDS["schedules"].choices, "optimizers": ("adam", "sgd")}
    assert C.parse_compare(["schedules=cosine"]) == {"schedules": ("cosine",)}


def test_run_names_from_the_config():
    assert C.config_run_name(TrainConfig(hidden=256)) == "h256-adam"
    assert C.config_run_name(TrainConfig(hidden=64, optimizer="sgd")) == "h64-sgd"
    for kind in AVAILABLE:
        k = C.KINDS[kind]
        if k.tag:
            v = next(x for x in k.choices if x != getattr(D, k.field))
            assert C.config_run_name(TrainConfig(hidden=128, **{k.field: v})) == f"h128-{k.tag}-{v}"
            both = TrainConfig(hidden=128, optimizer="sgd", **{k.field: v})
            assert C.config_run_name(both) == f"h128-sgd-{k.tag}-{v}"
            assert C.variant_of(both.to_dict()) is None  # two choices off: no comparison


def test_estimate_counts_the_test_evaluations(tmp_path):
    class Split:
        def __init__(self, n):
            import numpy as np
            self.images = np.zeros((n, 784), "uint8")

    class Data:
        train, val, test = Split(1000), Split(100), Split(50)

    plan = S.plan_study((8,), {}, 8, tmp_path, epochs=10, track_test=True)
    timer = lambda *a: (1e-3, 1e-4, 0.0)  # noqa: E731
    est = S.estimate(plan, Data(), "cpu", timer=timer, checkpoint_every=0)
    assert est[plan[0].dir] == pytest.approx(10 * (1000 * 1e-3 + 150 * 1e-4) + 50 * 1e-4)


# --- training and resuming a comparison --------------------------------------------------------------

def test_partly_done_comparison_resumes_and_tracks_the_test_loss(tmp_path, tiny_data):
    compare = {"optimizers": ("adam", "sgd")}
    plan = S.plan_study((8,), compare, 8, tmp_path, epochs=3, track_test=True)
    assert [p.dir.name for p in plan] == ["h8-adam", "h8-sgd"]
    # the first run completes; the second is stopped in its second epoch (as Ctrl-C does)
    train(plan[0].config, plan[0].dir, tiny_data, progress=False)
    sig = StopSignals()
    with pytest.raises(Exception, match="interrupted"):
        train(plan[1].config, plan[1].dir, tiny_data, progress=False, signals=sig,
              chunk_samples=128,
              on_chunk=lambda e, pos: sig.stop("the test") if e == 2 else None)
    again = [S.inspect_run(p) for p in S.plan_study((8,), compare, 8, tmp_path, epochs=3,
                                                    track_test=True)]
    assert [(p.action, p.status) for p in again] == [("skip", "complete"),
                                                     ("resume", "interrupted")]
    assert again[1].epochs_done == 1
    todo = [p for p in again if p.action != "skip"]
    outcomes = train_side_by_side(todo, tiny_data, echo=lambda _: None, progress=False)
    assert [o.status for o in outcomes] == ["complete"]
    # the resumed run equals one trained without a stop, its test loss per epoch included
    whole = tmp_path / "whole"
    train(plan[1].config, whole, tiny_data, progress=False)
    for d in (plan[0].dir, plan[1].dir):
        cfg = json.loads((d / runs.CONFIG).read_text())["config"]
        assert cfg["track_test"] is True
        m = runs.read_metrics(d / runs.METRICS)
        assert [r["epoch"] for r in m] == [1, 2, 3] and all("test_loss" in r for r in m)
        s = json.loads((d / runs.SUMMARY).read_text())
        assert m[-1]["test_loss"] == pytest.approx(s["test_loss"], rel=1e-6)
    got, want = (runs.read_metrics(d / runs.METRICS) for d in (plan[1].dir, whole))
    for a, b in zip(got, want):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    # a rerun asking for another track_test is refused, naming the setting
    other = S.plan_study((8,), compare, 8, tmp_path, epochs=3)
    with pytest.raises(Exception, match="track_test"):
        S.inspect_run(other[0])


def test_train_without_track_test_writes_todays_metrics(tmp_path, tiny_data):
    train(TrainConfig(hidden=8, epochs=1), tmp_path / "r", tiny_data, progress=False)
    head = (tmp_path / "r" / runs.METRICS).read_text().splitlines()[0]
    assert tuple(head.split(",")) == runs.METRICS_HEADER


# --- the report's comparisons ----------------------------------------------------------------------

def fake_run(root, name, val, test, status="complete", test_series=None, seconds=1.0, **cfg):
    config = {"hidden": 128, "optimizer": "adam", "lr": 1e-3, "epochs": len(val),
              "batch_size": 64, "seed": 0, "slope": 0.01, "val_size": 1000, "limit": None, **cfg}
    metrics = [{"epoch": i + 1, "train_loss": v * 0.9, "val_loss": v, "seconds": seconds,
                "samples_per_s": 1000.0} for i, v in enumerate(val)]
    for row, t in zip(metrics, test_series or []):
        row["test_loss"] = t
    summary = {"status": status, "epochs_done": len(val), "train_loss": val[-1] * 0.9,
               "val_loss": val[-1], "test_loss": test, "wall_time_s": len(val) * seconds,
               "device": "cpu"}
    return rep.Run(root / name, {"config": config, "device": "cpu"}, summary, metrics)


@pytest.fixture
def figures_drawn(monkeypatch):
    """The figures' matplotlib Figure objects, kept as they are saved (files still written)."""
    kept = []
    real = F._save

    def save(fig, path, dpi=110):
        kept.append(fig)
        real(fig, path, dpi)

    monkeypatch.setattr(F, "_save", save)
    return kept


def test_comparison_figures_bars_from_zero_with_values(tmp_path, figures_drawn):
    rs = [fake_run(tmp_path, "h128-adam", [0.03, 0.02, 0.01], 0.0101),
          fake_run(tmp_path, "h128-sgd", [0.05, 0.04, 0.03], 0.0302, optimizer="sgd", lr=20.0),
          fake_run(tmp_path, "h128-momentum", [0.04, 0.03], None, status="interrupted",
                   optimizer="momentum", lr=3.0, epochs=3),
          fake_run(tmp_path, "h64-adam", [0.05, 0.04, 0.03], 0.031, hidden=64)]
    rep.label_runs(rs)
    curves, bars = F.compare_figure_names("optimizers")
    assert curves == "fig_optimizers.png"  # today's name kept
    result = rep.write_report(rs, tmp_path / "report")
    made = {p.name for p in result["figures"]}
    assert {curves, bars} <= made
    for name in (curves, bars):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    by_title = {ax.get_title(): ax for fig in figures_drawn for ax in fig.axes}
    ax = by_title["Optimizers at h=128"]  # one line per variant, the validation MSE
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in ax.lines}
    assert lines == {"sgd, lr 20": [0.05, 0.04, 0.03],
                     "momentum, lr 3 (interrupted)": [0.04, 0.03],
                     "adam, lr 0.001": [0.03, 0.02, 0.01]}
    ax = by_title["Optimizers at h=128: test MSE"]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [0.0302, 0.0101]  # sgd, adam; momentum has none
    assert all(p.get_y() == 0 for p in ax.patches) and ax.get_ylim()[0] == 0
    assert ax.get_yscale() == "linear"
    texts = [t.get_text() for t in ax.texts]
    assert fmt_num(0.0302) in texts and fmt_num(0.0101) in texts
    assert any("no test MSE" in t and "interrupted" in t for t in texts)

    md = (tmp_path / "report" / "report.md").read_text()
    assert "### Optimizers" in md and f"]({curves})" in md and f"]({bars})" in md
    section = md[md.index("### Optimizers"):]
    row = next(ln for ln in section.splitlines() if ln.startswith("| h128-sgd"))
    assert f"{0.0302 / 0.0101:.3f}x" in row and fmt_num(0.0302) in row
    # no other comparison here: none of their figures
    for kind in set(C.KINDS) - {"optimizers"}:
        assert not set(F.compare_figure_names(kind)) & made


def test_another_loss_is_compared_on_mse(tmp_path):
    # as the trainer records a bce run: val_loss / test_loss the MSE, val_bce beside them,
    # train_loss the trained loss (no train MSE)
    mse = fake_run(tmp_path, "h128-adam", [0.03, 0.02], 0.021)
    bce = fake_run(tmp_path, "h128-loss-bce", [0.031, 0.019], 0.0195, loss="bce")
    for m, v in zip(bce.metrics, [0.30, 0.25]):
        m["val_bce"], m["train_loss"] = v, v * 1.1
    assert mse.mse("test_loss") == 0.021 and mse.mse_series("val") == [0.03, 0.02]
    assert mse.mse_series("train") == pytest.approx([0.027, 0.018])
    assert bce.mse_series("val") == [0.031, 0.019] and bce.mse("test_loss") == 0.0195
    assert bce.mse("train_loss") is None and bce.mse_series("train") is None
    row = rep.table_rows([bce])[0]
    assert row["test MSE"] == fmt_num(0.0195) and row["val MSE"] == fmt_num(0.019)
    assert row["train MSE"] == "-"


def test_activation_comparison_in_the_report(tmp_path, figures_drawn):
    rs = [fake_run(tmp_path, "h128-adam", [0.03, 0.02], 0.021),
          fake_run(tmp_path, "h128-act-gelu", [0.025, 0.015], 0.016, activation="gelu"),
          fake_run(tmp_path, "h128-sgd-act-gelu", [0.025, 0.015], 0.016, activation="gelu",
                   optimizer="sgd", lr=20.0)]  # two choices off: in no comparison
    groups = C.comparison_groups(rs, "activations")
    assert {h: [r.name for r in g] for h, g in groups.items()} == {
        128: ["h128-adam", "h128-act-gelu"]}
    rep.label_runs(rs)
    result = rep.write_report(rs, tmp_path / "report")
    assert {p.name for p in result["figures"]} >= set(F.compare_figure_names("activations"))
    ax = next(ax for f in figures_drawn for ax in f.axes
              if ax.get_title() == "Activations at h=128: test MSE")
    assert [p.get_height() for p in ax.patches] == [0.021, 0.016]


# --- time to quality --------------------------------------------------------------------------------

def test_first_reach_on_a_synthetic_history():
    hist = [{"epoch": e, "seconds": 2.0, "test_loss": v}
            for e, v in enumerate([0.05, 0.03, 0.0101, 0.0099, 0.0098, 0.0102], start=1)]
    r = T.first_reach(hist, 0.01)
    assert (r.epoch, r.seconds, r.value) == (4, 8.0, 0.0099)
    assert T.first_reach(hist, 0.0101).epoch == 3  # at the target counts
    assert T.first_reach(hist, 0.001) is None
    assert T.first_reach(list(reversed(hist)), 0.01).epoch == 4  # epoch order, not row order
    assert T.first_reach([{"epoch": 1, "seconds": 1.0}], 1.0) is None  # no test loss recorded


def test_time_to_quality_rows_and_report_section(tmp_path):
    ref = fake_run(tmp_path / "ref", "h128-adam", [0.02] * 4, 0.012, seconds=5.0)
    ref64 = fake_run(tmp_path / "ref", "h64-adam", [0.03] * 4, 0.02, hidden=64)
    not_ref = fake_run(tmp_path / "ref", "h128-sgd", [0.02] * 8, 0.001, optimizer="sgd", lr=20.0)
    fast = fake_run(tmp_path, "h128-fast", [0.02] * 3, 0.0115, test_series=[0.03, 0.0119, 0.0115],
                    seconds=3.0, lr=2e-3)
    slow = fake_run(tmp_path, "h128-slow", [0.02] * 2, 0.013, test_series=[0.03, 0.013])
    untracked = fake_run(tmp_path, "h128-untracked", [0.02] * 2, 0.001)
    refs = [ref, ref64, not_ref]
    assert T.reference_targets(refs) == {64: ref64, 128: ref}
    assert not T.is_reference(not_ref) and not T.is_reference(fast)  # lr 2e-3 is no reference
    rows = T.rows([fast, slow, untracked], refs)
    assert [x["run"].name for x in rows] == ["h128-fast", "h128-slow"]
    assert rows[0]["target"] == 0.012 and rows[0]["reference_seconds"] == 20.0
    assert (rows[0]["reach"].epoch, rows[0]["reach"].seconds) == (2, 6.0)
    assert rows[1]["reach"] is None

    for r in (fast, slow, untracked):
        r.label = r.name
    md = rep.report_markdown([fast, slow, untracked], tmp_path / "report", [], [], refs)
    section = md[md.index("## Time to quality"):md.index("## Runs")]
    line = next(ln for ln in section.splitlines() if ln.startswith("|") and "h128-fast" in ln)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:8] == ["128", "0.012", "h128-adam (4 epochs)", "h128-fast", "2", "6", "20",
                         "0.0115 (3 epochs)"]
    assert "not reached" in section
    # without references at its h, or without tracked runs, it says why
    md = rep.report_markdown([fast], tmp_path / "report", [], [], [ref64])
    assert "are at no hidden size with a reference" in md
    md = rep.report_markdown([untracked], tmp_path / "report", [], [], refs)
    assert "no run has a test MSE per epoch" in md
    md = rep.report_markdown([untracked], tmp_path / "report", [], [])
    assert "Time to quality" not in md  # nothing tracked, no references given: no section
    rep.write_report([untracked], tmp_path / "r2")
    assert "Time to quality" not in (tmp_path / "r2" / "report.md").read_text()
    rep.write_report([fast], tmp_path / "r3", refs)
    assert "| h128-fast" in (tmp_path / "r3" / "report.md").read_text()


# --- the command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--compare", "colours"], "unknown comparison"),
    (["--compare", "optimizers=rmsprop"], "rmsprop"),
    (["--compare", "optimizers", "--compare", "optimizers"], "twice"),
    (["--compare", "optimizers=sgd", "--optimizers", "sgd,adam"], "not both"),
    (["--compare", "losses=hinge"], "hinge"),
    (["--compare", "schedules=cosine,cosine"], "twice"),
])
def test_study_compare_usage_errors(tmp_path, args, needle):
    r = invoke("study", "--out", tmp_path / "st", "--data-dir", tmp_path / "no-data", "--yes",
               *args)
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not (tmp_path / "st").exists()


def test_report_reference_runs_usage_error(tmp_path):
    run = fake_run(tmp_path, "h8-adam", [0.1], 0.1)
    d = tmp_path / "h8-adam"
    d.mkdir()
    (d / runs.CONFIG).write_text(json.dumps(run.info))
    (d / runs.SUMMARY).write_text(json.dumps({**run.summary, "hidden": 8}))
    r = invoke("report", d, "--reference-runs", tmp_path / "missing")
    assert r.exit_code == 2 and "--reference-runs" in r.output and "Traceback" not in r.output
    r = invoke("train", "--resume", d, "--track-test")
    assert r.exit_code == 2 and "--track-test" in r.output


def test_cli_study_compare_with_track_test_and_reference_runs(tmp_path, real_data_dir):
    out = tmp_path / "st"
    # the default runs are onecycle; the schedules comparison's constant run is the reference
    r = invoke("study", "--device", "cpu", "--hidden", "8", "--compare-hidden", "8",
               "--compare", "optimizers=adam,sgd", "--compare", "schedules=constant",
               "--epochs", "2", "--limit", "256",
               "--track-test", "--out", out, "--data-dir", real_data_dir, "--yes")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if p.name != "report") == [
        "h8-adam", "h8-sched-constant", "h8-sgd"]
    for name in ("h8-adam", "h8-sgd"):
        assert "test_loss" in runs.read_metrics(out / name / runs.METRICS)[0]
        assert json.loads((out / name / runs.CONFIG).read_text())["config"]["track_test"]
    md = (out / "report" / "report.md").read_text()
    assert "### Optimizers" in md and "## Time to quality" in md
    ttq = md[md.index("## Time to quality"):md.index("## Runs")]
    assert "h8-sched-constant (2 epochs)" in ttq and "| h8-sgd" in ttq and "| h8-adam" in ttq
    # the sgd run alone, against the constant-rate adam run given as the reference
    r = invoke("report", out / "h8-sgd", "--out", tmp_path / "rep", "--reference-runs",
               out / "h8-sched-constant")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    ttq = md[md.index("## Time to quality"):md.index("## Runs")]
    assert "h8-sched-constant (2 epochs)" in ttq and "| h8-sgd" in ttq
    # the default (onecycle) run is no reference
    r = invoke("report", out / "h8-sgd", "--out", tmp_path / "rep2", "--reference-runs",
               out / "h8-adam")
    assert r.exit_code == 0, r.output
    assert "Not assessed: no reference run" in (tmp_path / "rep2" / "report.md").read_text()
