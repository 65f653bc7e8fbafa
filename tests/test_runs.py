"""aecore.runs.RunDir: a run directory's files read back as the trainer wrote them, and the one
"must match to resume" check that train, --resume and study share."""

from __future__ import annotations

import numpy as np
import pytest

from aecore import runs
from aecore.config import TrainConfig
from aecore.errors import CheckpointError
from aecore.side_by_side import PlannedRun, train_side_by_side
from aecore.trainer import train

# constant rate: these runs are resumed with more epochs, which only a constant rate allows
CFG = TrainConfig(optimizer="sgd", hidden=12, epochs=2, batch_size=32, lr=0.3, val_size=96,
                  recon_epochs=(1,), lr_schedule="constant")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data):
    d = tmp_path_factory.mktemp("runs") / "h12-sgd"
    summary = train(CFG, d, tiny_data, progress=False)
    return runs.RunDir(d), summary


def test_a_trained_run_reads_back(run):
    rd, summary = run
    assert rd.is_run() and rd.existing_files() == list(runs.RUN_FILES)
    assert rd.config() == CFG == rd.checkpoint_config()
    assert rd.summary() == summary and rd.status() == "complete"
    rows = rd.metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["val_loss"] == summary["val_loss"]
    rec = rd.reconstructions()
    assert sorted(rec.by_epoch) == [1, 2] and rec.originals.shape == (10, 784)
    assert all(a.dtype == np.float32 and a.shape == (10, 784) for a in rec.by_epoch.values())


def test_missing_files_read_as_nothing(tmp_path):
    rd = runs.RunDir(tmp_path / "empty")
    assert not rd.is_run() and rd.info() is None and rd.summary() is None
    assert rd.metrics() == [] and rd.reconstructions() is None and rd.status() == "started"
    assert rd.data_dir() is None
    with pytest.raises(CheckpointError, match="config.json: file not found"):
        rd.config()


def test_a_json_file_that_is_not_an_object_is_a_one_line_error(tmp_path):
    (tmp_path / runs.SUMMARY).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="summary.json: expected a JSON object"):
        runs.RunDir(tmp_path).summary()


@pytest.mark.parametrize("change,match", [
    ({"lr": 0.1}, "holds a run with lr=0.3, not 0.1; cannot resume with a change"),
    ({"seed": 1}, "holds a run with seed=0, not 1; cannot resume with a change"),
    ({}, "already has 2 of 2 epochs; pass a larger --epochs"),
])
def test_resume_checkpoint_refuses_other_settings_and_no_epochs_left(run, change, match):
    rd, _ = run
    with pytest.raises(CheckpointError, match=match):
        rd.resume_checkpoint(TrainConfig(**{**CFG.to_dict(), **change}))
    more = TrainConfig(**{**CFG.to_dict(), "epochs": 3, "device": "cpu"})
    assert rd.resume_checkpoint(more).state["epoch"] == 2


def test_side_by_side_numbers_runs_as_they_start_and_resumes(tmp_path, tiny_data):
    plan = [PlannedRun(TrainConfig(**{**CFG.to_dict(), "hidden": h}), tmp_path / f"h{h}")
            for h in (8, 12)]
    started, said = [], []
    out = train_side_by_side(plan, tiny_data, jobs=2, on_start=lambda p, n: started.append(n),
                             echo=said.append, progress=False)
    assert [o.status for o in out] == ["complete", "complete"] and sorted(started) == [1, 2]
    assert len(said) == 1 and said[0].startswith("notice: --jobs 2 on the CPU")
    more = [PlannedRun(TrainConfig(**{**p.config.to_dict(), "epochs": 3}), p.dir, "resume")
            for p in plan]
    out = train_side_by_side(more, tiny_data, progress=False)
    assert [o.summary["epochs_done"] for o in out] == [3, 3]
