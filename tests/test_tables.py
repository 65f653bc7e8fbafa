"""Golden outputs of the three tables (aecore train's summary, aecore bench's, the report's)
and of report.md, saved from the code before the table formatter was shared (issue #14):
the printed text must stay the same, character for character."""

from __future__ import annotations

from pathlib import Path

from aecore import report as rep
from aecore.bench import BenchRow, format_table as bench_table
from aecore.cli.train import format_table as train_table

SUMMARIES = [
    dict(hidden=64, params=101200, epochs_done=3, epochs=3, train_loss=0.0123456789, val_loss=0.0134,
         test_loss=0.0135, best_epoch=3, wall_time_s=12.345, samples_per_s=123456.7, status="complete"),
    dict(hidden=512, params=803600, epochs_done=1, epochs=20, train_loss=0.05, val_loss=None,
         test_loss=None, best_epoch=None, wall_time_s=None, samples_per_s=None, status="interrupted"),
]
BENCH = [
    BenchRow("cpu", 64, 128, 8192, 0.03, 273066.7, 12.9, 0.025, 0.06, 1.5),
    BenchRow("cpu", 512, 128, 8192, 0.2, 40960.0, 80.1, None, None, None),
    BenchRow("cuda", 256, 1024, 60000, 0.01, 6000000.0, 1204.3, 0.008, None, 3.25),
]


def runs_(root: Path):
    """Four runs as report.Run objects: complete, interrupted and never finished an epoch."""
    out = []
    specs = [("h64-adam", 64, "adam", 1e-3, "complete", [0.05, 0.03, 0.02], 0.021),
             ("h128-adam", 128, "adam", 1e-3, "complete", [0.04, 0.025, 0.018], 0.019),
             ("h64-sgd", 64, "sgd", 0.5, "interrupted", [0.09], None),
             ("h256-adam", 256, "adam", 1e-3, None, [], None)]
    for name, h, opt, lr, status, losses, test in specs:
        p = root / name
        cfg = {"config": {"hidden": h, "optimizer": opt, "lr": lr, "epochs": 3, "batch_size": 64,
                          "seed": 0, "slope": 0.01, "val_size": 1000, "limit": 512 if h == 128 else None},
               "params": 1568 * h + h + 784, "device": "cpu"}
        metrics = [{"epoch": i + 1, "train_loss": l, "val_loss": l * 1.1, "seconds": 1.0,
                    "samples_per_s": 1000.0 * (i + 1)} for i, l in enumerate(losses)]
        summary = None
        if status:
            summary = {"status": status, "epochs_done": len(losses), "train_loss": losses[-1],
                       "val_loss": losses[-1] * 1.1, "best_epoch": len(losses),
                       "best_val_loss": losses[-1] * 1.1, "wall_time_s": 3.21 * len(losses),
                       "params": cfg["params"], "device": "cpu"}
            if test is not None:
                summary["test_loss"] = test
        out.append(rep.Run(p, cfg, summary, metrics))
    rep.label_runs(out)
    return out


TRAIN = (
    "hidden   params  epochs  train MSE   val MSE  test MSE  best ep   time  samples/s       status\n"
    "------  -------  ------  ---------  --------  --------  -------  -----  ---------  -----------\n"
    "    64  101,200     3/3   0.012346  0.013400  0.013500        3  12.3s    123,457     complete\n"
    "   512  803,600    1/20   0.050000         -         -        -      -          -  interrupted"
)

BENCH_TABLE = (
    "device hidden batch   samples/s  GFLOP/s  x floor  x torch\n"
    "----------------------------------------------------------\n"
    "cpu        64   128     273,067     12.9     1.20     0.50\n"
    "cpu       512   128      40,960     80.1        -        -\n"
    "cuda      256  1024   6,000,000   1204.3     1.25        -\n"
    "x floor: aecore time / the five products alone (same BLAS); x torch: aecore time / PyTorch eager time (same device). Lower is better.\n"
    "first run's extra time (compilation or numba's disk cache, allocation): cpu 1.5 s, cuda 3.2 s"
)

REPORT_TABLE = (
    "| run       | hidden | params | optimizer |    lr | epochs | train MSE | val MSE | test MSE | best epoch | best val MSE | wall time (s) | device | samples/s | status      |\n"
    "|-----------|-------:|-------:|-----------|------:|--------|----------:|--------:|---------:|-----------:|-------------:|--------------:|--------|----------:|-------------|\n"
    "| h64-adam  |     64 | 101200 | adam      | 0.001 | 3/3    |      0.02 |   0.022 |    0.021 |          3 |        0.022 |          9.63 | cpu    |      2000 | complete    |\n"
    "| h128-adam |    128 | 201616 | adam      | 0.001 | 3/3    |     0.018 |  0.0198 |    0.019 |          3 |       0.0198 |          9.63 | cpu    |      2000 | complete    |\n"
    "| h64-sgd   |     64 | 101200 | sgd       |   0.5 | 1/3    |      0.09 |   0.099 |        - |          1 |        0.099 |          3.21 | cpu    |      1000 | interrupted |\n"
    "| h256-adam |    256 | 402448 | adam      | 0.001 | 0/3    |         - |       - |        - |          - |            - |             - | cpu    |         - | started     |"
)

REPORT_MD = (
    "# Fashion-MNIST autoencoder study\n"
    "\n"
    "784 -> h -> 784 autoencoder (LeakyReLU hidden layer, Sigmoid output), trained with MSE. Losses are mean squared errors per pixel (pixels in [0, 1]); numbers have 6 significant digits, as in the runs' metrics.csv / summary.json. Final train / val MSE are those of the last epoch; *best epoch* is the one with the lowest validation MSE; samples/s is the median over the epochs.\n"
    "\n"
    "## Results\n"
    "\n"
    "| run       | hidden | params | optimizer |    lr | epochs | train MSE | val MSE | test MSE | best epoch | best val MSE | wall time (s) | device | samples/s | status      |\n"
    "|-----------|-------:|-------:|-----------|------:|--------|----------:|--------:|---------:|-----------:|-------------:|--------------:|--------|----------:|-------------|\n"
    "| h64-adam  |     64 | 101200 | adam      | 0.001 | 3/3    |      0.02 |   0.022 |    0.021 |          3 |        0.022 |          9.63 | cpu    |      2000 | complete    |\n"
    "| h128-adam |    128 | 201616 | adam      | 0.001 | 3/3    |     0.018 |  0.0198 |    0.019 |          3 |       0.0198 |          9.63 | cpu    |      2000 | complete    |\n"
    "| h64-sgd   |     64 | 101200 | sgd       |   0.5 | 1/3    |      0.09 |   0.099 |        - |          1 |        0.099 |          3.21 | cpu    |      1000 | interrupted |\n"
    "| h256-adam |    256 | 402448 | adam      | 0.001 | 0/3    |         - |       - |        - |          - |            - |             - | cpu    |         - | started     |\n"
    "\n"
    "Test MSE decreases monotonically with hidden size (adam): h=64: 0.021 > h=128: 0.019. Not included: h256-adam (started).\n"
    "\n"
    "**Runs that did not finish** (reported as they are):\n"
    "\n"
    "- `h64-sgd`: interrupted, 1/3 epochs - continue with `aecore train --resume {resume}` (or rerun its aecore study)\n"
    "- `h256-adam`: started, 0/3 epochs\n"
    "\n"
    "## Figures\n"
    "\n"
    "![Figure 5: training (solid) and validation (dashed) MSE per epoch.](fig5_loss.png)\n"
    "\n"
    "*Figure 5: training (solid) and validation (dashed) MSE per epoch.*\n"
    "\n"
    "- fig1_classes.png not drawn: none.\n"
    "\n"
    "## Comparisons\n"
    "\n"
    "Each comparison varies one choice (the model's activation, the loss it trains, the optimizer, the learning-rate schedule) at one hidden size, everything else at the defaults; all are compared on the validation and test MSE, which every run records whatever loss it trains. *vs default*: test MSE over that of the default run (every choice at its default).\n"
    "\n"
    "### Optimizers\n"
    "\n"
    "At h=64:\n"
    "\n"
    "| run      | variant        | epochs | val MSE | best val MSE | best epoch | test MSE | vs default | wall time (s) | status      |\n"
    "|----------|----------------|--------|--------:|-------------:|-----------:|---------:|-----------:|--------------:|-------------|\n"
    "| h64-sgd  | sgd, lr 0.5    | 1/3    |   0.099 |        0.099 |          1 |        - |          - |          3.21 | interrupted |\n"
    "| h64-adam | adam, lr 0.001 | 3/3    |   0.022 |        0.022 |          3 |    0.021 |     1.000x |          9.63 | complete    |\n"
    "\n"
    "## Runs\n"
    "\n"
    "- `h64-adam` (../h64-adam): hidden 64, adam lr 0.001, batch 64, 3 epochs, seed 0, slope 0.01, val size 1000, device cpu\n"
    "- `h128-adam` (../h128-adam): hidden 128, adam lr 0.001, batch 64, 3 epochs, seed 0, slope 0.01, val size 1000, first 512 training images, device cpu\n"
    "- `h64-sgd` (../h64-sgd): hidden 64, sgd lr 0.5, batch 64, 3 epochs, seed 0, slope 0.01, val size 1000, device cpu\n"
    "- `h256-adam` (../h256-adam): hidden 256, adam lr 0.001, batch 64, 3 epochs, seed 0, slope 0.01, val size 1000, device cpu\n"
    "\n"
    "Generated by aecore 0.1.0 `aecore report` from the run directories' own files.\n"
    ""
)


def test_train_summary_table_is_unchanged():
    assert train_table(SUMMARIES) == TRAIN


def test_bench_table_is_unchanged():
    assert bench_table(BENCH) == BENCH_TABLE


def test_report_table_and_markdown_are_unchanged(tmp_path):
    root = tmp_path / "runs"
    rs = runs_(root)
    assert rep.format_table(rs) == REPORT_TABLE
    md = rep.report_markdown(rs, root / "report", ["fig5_loss.png"],
                             [("fig_optimizers.png", "x"), ("fig1_classes.png", "none")])
    assert md == REPORT_MD.replace("{resume}", str(root / "h64-sgd"))
